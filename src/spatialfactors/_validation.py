"""Shared input checks and the single place where tools write their results.

Validators are named for what they assert and fail with a message that says how to fix the
input. Tools compute everything first and then call :func:`_save_results` once, so an error
leaves the AnnData untouched.
"""

from __future__ import annotations

import time
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
    """``adata.X`` or ``adata.layers[layer]``, with a clear error for a missing layer."""
    if layer is None:
        x = adata.X
        if x is None:
            raise ValueError("`adata.X` is empty; pass `layer=` naming the matrix to use.")
        return x
    if layer not in adata.layers:
        raise KeyError(f"Layer {layer!r} not found in `adata.layers`; available layers: {sorted(adata.layers)}.")
    return adata.layers[layer]


def _assert_nonnegative_finite(x, what: str = "The data") -> None:
    """Fail on NaN/inf or negative entries (dense or sparse)."""
    values = x.data if sp.issparse(x) else np.asarray(x)
    if not np.issubdtype(values.dtype, np.number) or np.issubdtype(values.dtype, np.complexfloating):
        raise TypeError(f"{what} must be real numbers, got dtype {values.dtype}.")
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
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"`{name}` must be an integer, got {value!r}.")
    if value < low or (high is not None and value > high):
        upper = f" and at most {high}" if high is not None else ""
        raise ValueError(f"`{name}` must be at least {low}{upper}, got {value}.")


def _assert_choice(name: str, value, choices: Iterable) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}.")


def _save_results(adata: AnnData, writes: list[tuple[str, str, object]], start: float | None = None) -> None:
    """Write every result in one step and log it like scanpy (``Adding adata.obsm['X_...']``)."""
    for attr, key, value in writes:
        getattr(adata, attr)[key] = value
    keys = ", ".join(f"`adata.{attr}[{key!r}]`" for attr, key, _ in writes)
    logg.info(f"finished ({time.perf_counter() - start:.1f}s)" if start is not None else "finished")
    logg.hint(f"added {keys}")


def _graph_hint(library_key: str | None) -> str:
    lib = f", library_key={library_key!r}" if library_key else ""
    return f"`sq.gr.spatial_neighbors_delaunay(adata{lib})` (or `sq.gr.spatial_neighbors_knn` / `_radius`)"


def _get_graph(adata: AnnData, connectivity_key: str, library_key: str | None = None) -> sp.csr_matrix:
    """Return ``.obsp[connectivity_key]`` checked to be a usable spatial graph.

    The graph must be square over the cells, finite, non-negative, symmetric and without
    self-loops; with ``library_key``, no edge may join two fields of view.
    """
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
    a = sp.csr_matrix(a, dtype=np.float64)
    if not np.isfinite(a.data).all() or (a.data < 0).any():
        raise ValueError(f"`adata.obsp[{connectivity_key!r}]` has negative, NaN or infinite weights.")
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
    a.eliminate_zeros()
    if library_key is not None:
        codes = adata.obs[library_key].cat.codes.to_numpy()
        coo = a.tocoo()
        if (codes[coo.row] != codes[coo.col]).any():
            raise ValueError(
                f"`adata.obsp[{connectivity_key!r}]` has edges between fields of view of `{library_key}`; "
                f"build the graph per field of view with {_graph_hint(library_key)}."
            )
    return a


def _assert_categorical(adata: AnnData, key: str, what: str = "library_key") -> None:
    """Fail unless ``adata.obs[key]`` exists and is categorical."""
    if key not in adata.obs:
        raise KeyError(f"`{what}={key!r}` is not a column of `adata.obs`; available: {list(adata.obs.columns)}.")
    if not isinstance(adata.obs[key].dtype, pd.CategoricalDtype):
        raise TypeError(
            f"`adata.obs[{key!r}]` must be categorical; convert it with "
            f"`adata.obs[{key!r}] = adata.obs[{key!r}].astype('category')`."
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
    basis = f"X_{key}"
    if basis not in adata.obsm:
        raise KeyError(
            f"`adata.obsm[{basis!r}]` not found: {key!r} is not a factorisation result. Run "
            f"`sf.tl.stanmf(adata, key_added={key!r})` or `sf.tl.spicemix(adata, key_added={key!r})` first. "
            f"Available: {sorted(adata.obsm)}."
        )
    p = np.asarray(adata.obsm[basis], dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != adata.n_obs:
        raise ValueError(f"`adata.obsm[{basis!r}]` must be (n_obs, K), got shape {p.shape}.")
    if not np.isfinite(p).all():
        raise ValueError(f"`adata.obsm[{basis!r}]` has NaN or infinite values.")
    return p


def _get_region_ids(adata: AnnData, region_key: str) -> np.ndarray:
    """Return ``obs[region_key]`` as int64 structure ids (0 = no region), checked."""
    if region_key not in adata.obs:
        raise KeyError(
            f"`region_key={region_key!r}` is not a column of `adata.obs`; voxel data read by `sf.io.read_aba` "
            f"carry the annotation in `obs['region_id']`. Available: {list(adata.obs.columns)}."
        )
    values = adata.obs[region_key]
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype(values.cat.categories.dtype)
    arr = values.to_numpy()
    if arr.dtype.kind == "f" and np.isfinite(arr).all() and (arr == np.round(arr)).all():
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"`adata.obs[{region_key!r}]` must hold integer structure ids, got dtype {arr.dtype}.")
    arr = arr.astype(np.int64)
    if (arr < 0).any():
        raise ValueError(f"`adata.obs[{region_key!r}]` has negative structure ids; 0 marks voxels in no region.")
    return arr
