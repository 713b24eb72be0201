"""Shared input checks and the single place where tools write their results.

Validators are named for what they assert and fail with a message that says how to fix the
input. Tools compute everything first and then call :func:`_save_results` once, so an error
leaves the AnnData untouched.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterable

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scanpy import logging as logg


def _extract_adata(data, table_key: str | None = None) -> AnnData:
    """Return the AnnData of ``data``, resolving a SpatialData to its table ``table_key``."""
    if isinstance(data, AnnData):
        return data
    tables = getattr(data, "tables", None)
    if tables is not None:
        if table_key is None:
            raise ValueError(f"A SpatialData needs `table_key=` to name its table; available tables: {sorted(tables)}.")
        if table_key not in tables:
            raise KeyError(f"Table {table_key!r} not found in the SpatialData; available: {sorted(tables)}.")
        return tables[table_key]
    raise TypeError(f"Expected an AnnData or a SpatialData, got {type(data).__name__}.")


def _get_matrix(adata: AnnData, layer: str | None):
    """``adata.X`` or ``adata.layers[layer]``, checked to be a non-empty 2-D matrix.

    Sparse formats other than CSR/CSC (COO, LIL, ... : AnnData refuses them, but they can reach
    a tool through a SpatialData table or ``adata._X``) are read as CSR; ``np.matrix`` as an array.
    """
    if layer is not None and not isinstance(layer, str):
        raise TypeError(f"`layer` must be the name of a layer (a string) or None for `.X`, got {layer!r}.")
    if layer is None:
        x = adata.X
        if x is None:
            raise ValueError("`adata.X` is empty; pass `layer=` naming the matrix to use.")
    else:
        if layer not in adata.layers:
            raise KeyError(f"Layer {layer!r} not found in `adata.layers`; available layers: {sorted(adata.layers)}.")
        x = adata.layers[layer]
    _assert_not_empty(adata)
    _assert_in_memory(x, adata, layer)
    if sp.issparse(x):
        if x.format not in ("csr", "csc"):
            x = sp.csr_matrix(x)
    elif isinstance(x, np.matrix):
        x = np.asarray(x)
    return x


def _assert_in_memory(x, adata: AnnData, layer: str | None) -> None:
    """Fail on a matrix still on disk (backed AnnData: an h5py dataset or a backed sparse dataset)."""
    if isinstance(x, np.ndarray | np.matrix) or sp.issparse(x) or not getattr(adata, "isbacked", False):
        return
    where = "`adata.X`" if layer is None else f"`adata.layers[{layer!r}]`"
    raise TypeError(
        f"{where} is read from the file `{adata.filename}` (AnnData opened with `backed='r'`), not held in "
        "memory; load it first with `adata = adata.to_memory()` (or subset it: `adata[mask].to_memory()`)."
    )


def _assert_copy(adata: AnnData, copy) -> None:
    """Check ``copy``: True or False, and not True on a backed AnnData (which cannot be copied in memory)."""
    _assert_bool("copy", copy)
    if copy and getattr(adata, "isbacked", False):
        raise ValueError(
            f"`copy=True` needs an AnnData in memory, but `adata` is backed by the file `{adata.filename}`; load it "
            "first with `adata = adata.to_memory()`, or pass `copy=False` to write the results into `adata`."
        )


def _assert_device(device) -> str:
    """Return ``device`` as a torch device name, checked to exist on this machine.

    Accepts ``'cpu'``, ``'cuda'``, ``'cuda:<index>'``, ``'mps'`` or a :class:`torch.device`; fails with the fix
    (``device='cpu'``) when torch has no such device here, before anything is computed.
    """
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str) or not device:
        raise TypeError(f"`device` must be a torch device name such as 'cpu', 'cuda' or 'cuda:0', got {device!r}.")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(
            f"`device={device!r}` is not a torch device name; use 'cpu', 'cuda' (or 'cuda:<index>') or 'mps'."
        ) from None
    if dev.type == "cpu":
        return device
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            why = "this torch build has no CUDA support" if torch.version.cuda is None else "no GPU is visible"
            raise ValueError(f"`device={device!r}`: no CUDA device is available ({why}); use device='cpu'.")
        if dev.index is not None and dev.index >= n:
            raise ValueError(
                f"`device={device!r}`: this machine has {n} CUDA device(s), 'cuda:0' ... 'cuda:{n - 1}'; "
                "use one of them or device='cpu'."
            )
        return device
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"`device={device!r}`: no MPS (Apple GPU) device is available; use device='cpu'.")
        return device
    raise ValueError(f"`device={device!r}`: device type {dev.type!r} is not supported; use 'cpu', 'cuda' or 'mps'.")


class UndefinedScoreWarning(RuntimeWarning):
    """A score of the result is undefined (stored as NaN), e.g. a correlation with a constant vector."""


def _warn_undefined(score: str, why: str, fix: str | None = None) -> None:
    """Warn that ``score`` is stored as NaN because ``why`` (and how to avoid it): no NaN goes out without a word."""
    text = f"{score} is undefined (stored as NaN): {why}"
    warnings.warn(text + (f"; {fix}." if fix else "."), UndefinedScoreWarning, stacklevel=3)


def _constant_columns(values: np.ndarray) -> np.ndarray:
    """Return the indices of the constant columns of a 2-D array (a correlation with them is undefined)."""
    values = np.asarray(values)
    if values.shape[0] == 0:
        return np.arange(values.shape[1])
    return np.flatnonzero((values == values[:1]).all(axis=0))


def _assert_not_empty(adata: AnnData) -> None:
    """Fail when ``adata`` has no observations or no variables."""
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(
            f"`adata` is empty ({adata.n_obs} obs x {adata.n_vars} genes); check the filtering or subsetting "
            "that produced it, e.g. `adata[mask].copy()` with a mask that selects something."
        )


def _matrix_label(layer: str | None, what: str = "The data") -> str:
    return what if layer is None else f"`adata.layers[{layer!r}]`"


def _fix_dtype_hint(layer: str | None) -> str:
    target = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    return f"convert it, e.g. `{target} = {target}.astype(np.float32)`"


def _assert_real_dtype(x, what: str = "The data", hint: str = "convert it, e.g. `x.astype(np.float32)`") -> None:
    """Fail unless ``x`` holds real numbers (not strings, objects, booleans or complex numbers)."""
    dtype = x.dtype
    if dtype.kind not in "iuf":
        kinds = {"b": "booleans", "c": "complex numbers", "O": "Python objects", "U": "strings", "S": "bytes"}
        got = kinds.get(dtype.kind, f"dtype {dtype}")
        raise TypeError(f"{what} must be real numbers, got {got} (dtype {dtype}); {hint}.")


def _assert_nonnegative_finite(
    x, what: str = "The data", hint: str = "convert it to float, e.g. `adata.X = adata.X.astype(np.float32)`"
) -> None:
    """Fail on a non-real dtype, NaN/inf or negative entries (dense or sparse)."""
    values = x.data if sp.issparse(x) else np.asarray(x)
    _assert_real_dtype(values, what, hint)
    if not np.isfinite(values).all():
        n_bad = int((~np.isfinite(values)).sum())
        raise ValueError(
            f"{what} contain {n_bad} NaN or infinite values; impute or remove them first "
            "(for Allen voxel grids: `sf.pp.impute_voxels(adata)`)."
        )
    if values.size and values.min() < 0:
        raise ValueError(
            f"{what} contain negative values (minimum {values.min():.4g}); non-negative factorisation needs "
            "counts or normalised expression without centring or scaling."
        )


def _assert_no_empty_lines(x, obs_label: str = "obs", var_label: str = "genes") -> None:
    """Fail when a row (obs) or a column (gene) is all zero."""
    nz = (x != 0) if sp.issparse(x) else (np.asarray(x) != 0)
    rows = np.asarray(nz.sum(axis=1)).ravel() == 0
    cols = np.asarray(nz.sum(axis=0)).ravel() == 0
    if cols.any():
        raise ValueError(
            f"{int(cols.sum())} {var_label} are zero in all {obs_label}; "
            "remove them first, e.g. `sc.pp.filter_genes(adata, min_cells=1)`."
        )
    if rows.any():
        raise ValueError(
            f"{int(rows.sum())} {obs_label} have no expression; "
            "remove them first, e.g. `sc.pp.filter_cells(adata, min_counts=1)`."
        )


def _assert_int_range(name: str, value, low: int, high: int | None = None) -> None:
    if not _is_int(value):
        raise TypeError(f"`{name}` must be an integer, got {value!r}.")
    if value < low or (high is not None and value > high):
        upper = f" and at most {high}" if high is not None else ""
        raise ValueError(f"`{name}` must be at least {low}{upper}, got {value}.")


def _assert_choice(name: str, value, choices: Iterable) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}.")


def _is_int(value) -> bool:
    """Tell whether `value` is a Python or numpy integer (booleans excluded)."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _renamed(old: str, new: str, old_value, new_value, *, default=None, where: str):
    """Return the value of a renamed keyword: the new one, or the old one with a FutureWarning naming the new.

    ``where`` names the function (``"sf.tl.stanmf"``); ``default`` is the new keyword's default:
    passing both the old keyword and a non-default new one is an error.
    """
    if old_value is None:
        return new_value
    if new_value is not default and new_value is not None:
        raise TypeError(f"`{where}` got both `{new}` and its old name `{old}`; pass `{new}` only.")
    warnings.warn(
        f"`{old}` of `{where}` is renamed to `{new}`; pass `{new}=` (`{old}` will be removed).",
        FutureWarning,
        stacklevel=3,
    )
    return old_value


def _assert_bool(name: str, value) -> None:
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"`{name}` must be True or False, got {value!r}.")


def _assert_str(name: str, value, *, optional: bool = False) -> None:
    """Fail unless ``value`` is a non-empty string (or None when ``optional``)."""
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise TypeError(f"`{name}` must be a non-empty string{' or None' if optional else ''}, got {value!r}.")


def _assert_n_jobs(n_jobs) -> None:
    if n_jobs is None:
        return
    if not _is_int(n_jobs) or n_jobs == 0:
        raise ValueError(f"`n_jobs` must be a non-zero integer (-1: all cores) or None, got {n_jobs!r}.")


def _int_list(name: str, values, low: int, high: int | None = None) -> list[int]:
    """Return an integer or an iterable of integers as a sorted list of unique ints in [low, high]."""
    if _is_int(values):
        values = [values]
    elif not isinstance(values, Iterable) or isinstance(values, str | bytes):
        raise TypeError(f"`{name}` must be an integer or a sequence of integers, got {values!r}.")
    # Checked item by item as they come: a huge range (or an endless iterator) fails at its first
    # value out of bounds instead of being listed whole.
    items: set[int] = set()
    for n_seen, v in enumerate(values):
        _assert_int_range(name, v, low, high)
        items.add(int(v))
        if n_seen >= _MAX_LIST:
            raise ValueError(f"`{name}` has over {_MAX_LIST} values; pass a short sequence such as `range(2, 10)`.")
    if not items:
        raise ValueError(f"`{name}` is empty; pass an integer or a range such as `range(2, 10)`.")
    return sorted(items)


#: Most values :func:`_int_list` reads from one argument.
_MAX_LIST = 1_000_000


#: Environment variable with the number of bytes of memory to assume available (overrides the system's).
MEMORY_ENV = "SPATIALFACTORS_AVAILABLE_MEMORY"


def _available_memory() -> int | None:
    """Bytes of memory available now: ``SPATIALFACTORS_AVAILABLE_MEMORY``, psutil, /proc/meminfo or sysconf."""
    override = os.environ.get(MEMORY_ENV)
    if override:
        try:
            return int(float(override))
        except ValueError:
            raise ValueError(f"`{MEMORY_ENV}` must be a number of bytes, got {override!r}.") from None
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None  # unknown: no guard


def _format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


def _assert_fits_memory(n_bytes: float, what: str, hint: str) -> None:
    """Fail before allocating ``n_bytes`` for ``what`` when that exceeds the memory available now.

    The message gives both sizes and ``hint`` (how to need less); set
    ``SPATIALFACTORS_AVAILABLE_MEMORY`` (bytes) to override the system's figure.
    """
    available = _available_memory()
    if available is None or n_bytes <= available:
        return
    raise MemoryError(
        f"{what} needs {_format_bytes(n_bytes)} but only {_format_bytes(available)} of memory are available; "
        f"{hint}. To override the available figure, set the environment variable `{MEMORY_ENV}` (bytes)."
    )


def _get_obsm(adata: AnnData, key: str, *, hint: str, finite: bool = True) -> np.ndarray:
    """Return ``.obsm[key]`` as a float64 (n_obs, k) array, checked; ``hint`` says how to compute it."""
    _assert_str("basis", key)
    if key not in adata.obsm:
        raise KeyError(f"`adata.obsm[{key!r}]` not found; {hint}. Available keys: {sorted(adata.obsm)}.")
    value = adata.obsm[key]
    value = value.toarray() if sp.issparse(value) else np.asarray(value)
    if value.dtype.kind not in "iufb":
        raise TypeError(f"`adata.obsm[{key!r}]` must hold real numbers, got dtype {value.dtype}.")
    value = value.astype(np.float64)
    if value.ndim != 2 or value.shape[0] != adata.n_obs or value.shape[1] == 0:
        raise ValueError(f"`adata.obsm[{key!r}]` must be (n_obs, K) with K >= 1, got shape {value.shape}.")
    if finite and not np.isfinite(value).all():
        raise ValueError(
            f"`adata.obsm[{key!r}]` has {int((~np.isfinite(value)).sum())} NaN or infinite values; recompute it."
        )
    return value


#: Every slot a factorisation (``sf.tl.stanmf``, ``sf.tl.spicemix``) may write under ``key_added``.
def _factorisation_slots(key: str) -> list[tuple[str, str]]:
    return [
        ("obsm", f"X_{key}"),
        ("obsm", f"X_{key}_pca"),
        ("varm", f"{key}_loadings"),
        ("varm", f"{key}_metagenes"),
        ("uns", key),
    ]


def _is_factorisation_entry(adata: AnnData, key: str) -> bool:
    """Tell whether ``.uns[key]`` is the record of a factorisation (staNMF or SpiceMix) run."""
    entry = adata.uns.get(key)
    if not isinstance(entry, dict):
        return False
    return "loadings_key" in entry or "k" in entry  # "k": the record of a run before "loadings_key"


def _assert_result_key(adata: AnnData, key: str, *, factorisation: bool, tool: str) -> None:
    """Fail before computing when writing ``.uns[key]`` would overwrite another kind of tool's result.

    A factorisation may replace a factorisation under the same key (its old slots are all removed
    when it writes); it may not replace another tool's ``.uns`` entry, and other tools may not
    replace a factorisation's record (the patterns under that key would lose their loadings' record).
    """
    if key not in adata.uns:
        return
    if _is_factorisation_entry(adata, key) == factorisation:
        return
    owner = "a factorisation (`sf.tl.stanmf` / `sf.tl.spicemix`)" if not factorisation else "another tool"
    raise ValueError(
        f"`key_added={key!r}` would overwrite `adata.uns[{key!r}]`, the result of {owner}; pass another "
        f"`key_added` to `{tool}`, or delete the old result first (`del adata.uns[{key!r}]`)."
    )


def _save_results(
    adata: AnnData,
    writes: list[tuple[str, str | None, object]],
    start: float | None = None,
    *,
    remove: Iterable[tuple[str, str]] = (),
) -> None:
    """Write every result in one step and log it like scanpy (``Adding adata.obsm['X_...']``).

    ``writes`` holds ``(attr, key, value)``; ``("X", None, value)`` replaces ``.X``. ``remove``
    names slots ``(attr, key)`` of an earlier result under the same key that this one does not
    overwrite: they are deleted, so nothing stale stays beside the new result. Should one
    assignment fail (AnnData refuses a shape), the ones before it are undone, so ``adata`` is
    either fully updated or untouched.
    """
    missing = object()
    undo: list[tuple[str, str | None, object]] = []
    written = {(attr, key) for attr, key, _ in writes}
    try:
        for attr, key in remove:
            store = getattr(adata, attr)
            if (attr, key) not in written and key in store:
                old = store[key]
                del store[key]
                undo.append((attr, key, old))
        for attr, key, value in writes:
            if key is None:
                old = getattr(adata, attr)
                setattr(adata, attr, value)
            else:
                store = getattr(adata, attr)
                old = store[key] if key in store else missing
                store[key] = value
            undo.append((attr, key, old))  # only once the write has happened
    except Exception:
        for attr, key, old in reversed(undo):
            if key is None:
                setattr(adata, attr, old)
            elif old is missing:
                del getattr(adata, attr)[key]
            else:
                getattr(adata, attr)[key] = old
        raise
    keys = ", ".join(f"`adata.{attr}`" if key is None else f"`adata.{attr}[{key!r}]`" for attr, key, _ in writes)
    logg.info(f"finished ({time.perf_counter() - start:.1f}s)" if start is not None else "finished")
    logg.hint(f"added {keys}")


def _graph_hint(library_key: str | None) -> str:
    lib = f", library_key={library_key!r}" if library_key else ""
    return f"`sq.gr.spatial_neighbors_delaunay(adata{lib})` (or `sq.gr.spatial_neighbors_knn` / `_radius`)"


def _distances_key(connectivity_key: str) -> str:
    """Squidpy's name of the distances beside a graph: ``<prefix>_connectivities`` -> ``<prefix>_distances``."""
    return connectivity_key.removesuffix("_connectivities") + "_distances"


def _get_graph(
    adata: AnnData,
    connectivity_key: str,
    library_key: str | None = None,
    *,
    require_edges: bool = True,
    max_distance: float | None = None,
) -> sp.csr_matrix:
    """Return ``.obsp[connectivity_key]`` checked to be a usable spatial graph.

    The graph must be square over the cells, real, finite, non-negative, symmetric and without
    self-loops, with at least one edge (unless not ``require_edges``); with ``library_key``, no
    edge may join two fields of view. Isolated nodes are allowed (the caller decides). With
    ``max_distance``, edges longer than it (squidpy's ``.obsp['<prefix>_distances']``) are dropped
    from the returned copy; ``adata`` is not changed.
    """
    _assert_str("connectivity_key", connectivity_key)
    if max_distance is not None:
        _assert_real_range("max_distance", max_distance, 0, low_open=True)
    if connectivity_key not in adata.obsp:
        raise KeyError(
            f"`adata.obsp[{connectivity_key!r}]` not found: build the spatial graph first, e.g. "
            f"{_graph_hint(library_key)}; available keys: {sorted(adata.obsp)}."
        )
    a = adata.obsp[connectivity_key]
    if a.shape != (adata.n_obs, adata.n_obs):
        raise ValueError(
            f"`adata.obsp[{connectivity_key!r}]` has shape {a.shape}, expected ({adata.n_obs}, {adata.n_obs}); "
            f"rebuild it on this AnnData with {_graph_hint(library_key)}."
        )
    dtype = a.dtype
    if dtype.kind not in "iufb":
        raise TypeError(
            f"`adata.obsp[{connectivity_key!r}]` must hold real edge weights, got dtype {dtype}; "
            f"rebuild it with {_graph_hint(library_key)}."
        )
    a = sp.csr_matrix(a, dtype=np.float64)
    if not np.isfinite(a.data).all() or (a.data < 0).any():
        raise ValueError(
            f"`adata.obsp[{connectivity_key!r}]` has negative, NaN or infinite weights; "
            f"rebuild it with {_graph_hint(library_key)}."
        )
    if a.diagonal().any():
        raise ValueError(
            f"`adata.obsp[{connectivity_key!r}]` has {int((a.diagonal() != 0).sum())} self-loops; remove them, "
            "e.g. `A.setdiag(0); A.eliminate_zeros()`."
        )
    asym = abs(a - a.T)
    if asym.nnz and asym.max() > 1e-8 * max(abs(a).max(), 1e-300):
        raise ValueError(
            f"`adata.obsp[{connectivity_key!r}]` is not symmetric; symmetrise it, e.g. `A = A.maximum(A.T)`."
        )
    if max_distance is not None:
        a = _prune_edges(adata, a, connectivity_key, max_distance)
    a.eliminate_zeros()
    if require_edges and a.nnz == 0:
        raise ValueError(
            f"`adata.obsp[{connectivity_key!r}]` has no edges: every cell is isolated. Build the graph from the "
            f"cells' coordinates with {_graph_hint(library_key)}."
        )
    if library_key is not None:
        codes = adata.obs[library_key].cat.codes.to_numpy()
        coo = a.tocoo()
        if (codes[coo.row] != codes[coo.col]).any():
            raise ValueError(
                f"`adata.obsp[{connectivity_key!r}]` has edges between fields of view of `{library_key}`; "
                f"build the graph per field of view with {_graph_hint(library_key)}."
            )
    return a


def _prune_edges(adata: AnnData, a: sp.csr_matrix, connectivity_key: str, max_distance: float) -> sp.csr_matrix:
    key = _distances_key(connectivity_key)
    if key == connectivity_key or key not in adata.obsp:
        raise KeyError(
            f"`max_distance` needs the edge lengths in `adata.obsp[{key!r}]`, beside `{connectivity_key}`; squidpy's "
            "graph builders write both (e.g. `sq.gr.spatial_neighbors_delaunay(adata)`)."
        )
    dist = adata.obsp[key]
    if dist.shape != a.shape:
        raise ValueError(f"`adata.obsp[{key!r}]` has shape {dist.shape}, expected {a.shape}; rebuild the graph.")
    dist = sp.csr_matrix(dist, dtype=np.float64)
    coo = a.tocoo()
    # An edge without a stored length (a zero distance) counts as short.
    length = np.asarray(dist[coo.row, coo.col]).ravel()
    if not np.isfinite(length).all():
        raise ValueError(f"`adata.obsp[{key!r}]` has NaN or infinite edge lengths; rebuild the graph.")
    keep = length <= max_distance
    if not keep.any():
        raise ValueError(
            f"`max_distance={max_distance}` drops every edge of `{connectivity_key}` (shortest edge "
            f"{length.min():.4g}); pass a larger value, in the units of `adata.obsm['spatial']`."
        )
    return sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=a.shape)


def _assert_obs_key(adata: AnnData, name: str, key: str | None) -> None:
    """Fail unless ``key`` (when given) is a column of ``adata.obs``."""
    if key is not None and key not in adata.obs:
        raise KeyError(f"`{name}={key!r}` is not a column of `adata.obs`; available: {list(adata.obs.columns)}.")


def _assert_categorical(adata: AnnData, key: str, what: str = "library_key") -> None:
    """Fail unless ``adata.obs[key]`` exists and is categorical."""
    if key not in adata.obs:
        raise KeyError(f"`{what}={key!r}` is not a column of `adata.obs`; available: {list(adata.obs.columns)}.")
    if not isinstance(adata.obs[key].dtype, pd.CategoricalDtype):
        raise TypeError(
            f"`adata.obs[{key!r}]` must be categorical; convert it with "
            f"`adata.obs[{key!r}] = adata.obs[{key!r}].astype('category')`."
        )
    n_missing = int(adata.obs[key].isna().sum())
    if n_missing:
        raise ValueError(
            f"`adata.obs[{key!r}]` is missing for {n_missing} obs; every obs needs a category: drop them, e.g. "
            f"`adata = adata[adata.obs[{key!r}].notna()].copy()`."
        )


def _assert_real_range(name: str, value, low: float, high: float | None = None, *, low_open: bool = False) -> None:
    """Fail unless ``value`` is a real number in [low, high] (or (low, high] when ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"`{name}` must be a number, got {value!r}.")
    bad_low = value <= low if low_open else value < low
    if not np.isfinite(value) or bad_low or (high is not None and value > high):
        bounds = f"{'>' if low_open else '>='} {low}" + (f" and <= {high}" if high is not None else "")
        raise ValueError(f"`{name}` must be {bounds}, got {value}.")


def _get_patterns(adata: AnnData, key: str) -> np.ndarray:
    """Return the obs x K weights ``.obsm['X_<key>']`` of a factorisation (stanmf, spicemix), checked."""
    _assert_str("key", key)
    basis = f"X_{key}"
    if basis not in adata.obsm:
        raise KeyError(
            f"`adata.obsm[{basis!r}]` not found: {key!r} is not a factorisation result. Run "
            f"`sf.tl.stanmf(adata, key_added={key!r})` or `sf.tl.spicemix(adata, key_added={key!r})` first. "
            f"Available: {sorted(adata.obsm)}."
        )
    return _get_obsm(adata, basis, hint=f"run `sf.tl.stanmf(adata, key_added={key!r})` first")


def _get_region_ids(adata: AnnData, region_key: str) -> np.ndarray:
    """Return ``obs[region_key]`` as int64 structure ids (0 = no region), checked."""
    _assert_str("region_key", region_key)
    if region_key not in adata.obs:
        raise KeyError(
            f"`region_key={region_key!r}` is not a column of `adata.obs`; voxel data read by `sf.io.read_aba` "
            f"carry the annotation in `obs['region_id']`. Available: {list(adata.obs.columns)}."
        )
    values = adata.obs[region_key]
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype(values.cat.categories.dtype)
    arr = values.to_numpy()
    if arr.dtype.kind == "f" and np.isfinite(arr).all() and (arr == np.round(arr)).all() and (abs(arr) < 2**63).all():
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise TypeError(
            f"`adata.obs[{region_key!r}]` must hold integer structure ids (0: no region), got dtype {arr.dtype}; "
            "with acronyms, map them to ids first, e.g. with `sf.io.read_ontology(path).id_of(acronym)`."
        )
    from spatialfactors.io._ontology import _structure_ids  # io imports this module: import when called

    return _structure_ids(arr, f"`adata.obs[{region_key!r}]`")
