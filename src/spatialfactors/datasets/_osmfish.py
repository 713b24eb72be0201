"""osmFISH mouse somatosensory cortex (Codeluppi et al. 2018): counts of 33 genes, cell types and anatomical regions.

Read from the authors' loom file as Giotto's data repository distributes it, from a local folder or
downloaded once (pooch, SHA256) into ``<root>/osmfish_cortex/`` (root: ``$SPATIALFACTORS_DATA``,
else ``pooch.os_cache("spatialfactors")``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from spatialfactors._validation import _assert_bool, _assert_str

from ._fetch import GITHUB_RAW, _local_or_download, _Remote
from ._starmap import _DRIESLAB

PUBLICATION = (
    "Codeluppi S, Borm LE, Zeisel A, et al. Spatial organization of the somatosensory cortex revealed by osmFISH. "
    "Nature Methods 15, 932-935 (2018). doi:10.1038/s41592-018-0175-z"
)
OSMFISH_DIR = "osmfish_cortex"
LOOM_FILE = "osmFISH_SScortex_mouse_all_cells.loom"
LOOM_SOURCE = _Remote(
    *_DRIESLAB,
    f"data/2018_osmFISH_SScortex/raw_data/{LOOM_FILE}",
    sha256="6153b56b300280e0cbd2eb45377eea4a5e85606bed739c96eb02feee5f53bc63",
)
#: The Region of the cells the authors left out of the analysis (outside the cortex section's regions).
EXCLUDED = "Excluded"
#: The 11 anatomical regions of the file, from the pia to the ventricle: the order of the categories.
REGIONS = (
    "Pia Layer 1",
    "Layer 2-3 lateral",
    "Layer 2-3 medial",
    "Layer 3-4",
    "Layer 4",
    "Layer 5",
    "Layer 6",
    "White matter",
    "Internal Capsule Caudoputamen",
    "Hippocampus",
    "Ventricle",
)
_GENES = "row_attrs/Gene"
_COLUMNS = ("CellID", "X", "Y", "ClusterName", "Region", "Valid", "size_um2")
# Deflate compresses at most about 1032:1; a dataset claiming more than this many bytes per byte of
# the file comes from a damaged header, and is refused before it is allocated.
_MAX_EXPANSION = 1100


def _damaged(path: Path, reason: str) -> ValueError:
    return ValueError(
        f"{path}: {reason}; the file is damaged, truncated or not the authors' loom file. Delete it and load again "
        "(with `path=None` the original is downloaded and checked against its SHA256)."
    )


def _read_loom(path: Path) -> dict[str, np.ndarray]:
    """Return the datasets of the loom file that are used, as numpy arrays (HDF5 read with h5py)."""
    import h5py

    names = ["matrix", _GENES, *(f"col_attrs/{c}" for c in _COLUMNS)]
    limit = _MAX_EXPANSION * path.stat().st_size + 2**20
    values: dict[str, np.ndarray] = {}
    missing: list[str] = []
    oversized = None
    try:
        with h5py.File(path, "r") as f:
            for name in names:
                dataset = f.get(name)
                if not isinstance(dataset, h5py.Dataset):
                    missing.append(name)
                    continue
                claimed = math.prod(dataset.shape or ()) * dataset.dtype.itemsize
                if claimed > limit:
                    oversized = (name, claimed)
                    break
                values[name] = np.asarray(dataset[()])
    except (OSError, RuntimeError, KeyError, ValueError, TypeError, AttributeError, SystemError, OverflowError) as err:
        # h5py's errors on damaged files: OSError ("truncated file", "inflate() failed", "bad symbol
        # table"), KeyError/RuntimeError/ValueError from a damaged object header, TypeError for unknown types.
        raise _damaged(path, f"cannot be read as HDF5 (loom) ({type(err).__name__}: {err})") from None
    if oversized is not None:
        raise _damaged(path, f"`{oversized[0]}` claims {oversized[1]} bytes, more than the file can hold")
    if missing:
        raise _damaged(
            path,
            f"has no loom dataset(s) {missing} (a loom file of the osmFISH data has `matrix`, genes x cells, "
            f"`{_GENES}` and `col_attrs/` {list(_COLUMNS)})",
        )
    return values


def _strings(values: np.ndarray, what: str, path: Path) -> np.ndarray:
    """Loom text (fixed-length bytes or variable-length strings) as str; integer ids as their digits."""
    if values.dtype.kind in "iu":
        return values.astype(str).astype(object)
    if values.dtype.kind not in "SOU":
        raise ValueError(f"{path.name}: `{what}` must hold text, got dtype {values.dtype}.")
    try:
        return np.array([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values], dtype=object)
    except UnicodeDecodeError as err:
        raise ValueError(f"{path.name}: `{what}` is not UTF-8 text ({err}).") from None


def _numbers(values: np.ndarray, what: str, path: Path, *, finite: bool = True) -> np.ndarray:
    if values.dtype.kind not in "iuf":
        raise ValueError(f"{path.name}: `{what}` must hold numbers, got dtype {values.dtype}.")
    values = values.astype(np.float64)
    if finite and not np.isfinite(values).all():
        raise ValueError(f"{path.name}: `{what}` has NaN or infinite values.")
    return values


def _region_categories(present) -> list[str]:
    present = set(present)
    known = [r for r in REGIONS if r in present]
    return known + sorted(present - set(REGIONS) - {EXCLUDED}) + ([EXCLUDED] if EXCLUDED in present else [])


def osmfish_cortex(
    path: str | os.PathLike | None = None,
    *,
    filter_excluded: bool = True,
    base_url: str = GITHUB_RAW,
    progress: bool = False,
) -> AnnData:
    """Mouse somatosensory cortex by osmFISH: counts of 33 genes, cell types and the 11 anatomical regions.

    The osmFISH data of Codeluppi et al. (Nature Methods 2018): 6,471 segmented cells of a coronal
    section of the mouse somatosensory cortex and hippocampus, 33 genes, with the authors' cell type
    (``ClusterName``) and anatomical region (``Region``) of every cell. The spatial-domain benchmark
    of the field (SDMBench) uses the 4,839 cells whose Region is not ``'Excluded'`` and their 11
    regions as ground truth. Read from the authors' loom file ``osmFISH_SScortex_mouse_all_cells.loom``
    (HDF5, read with h5py): ``matrix`` (genes x cells, molecule counts), ``row_attrs/Gene`` and the
    ``col_attrs`` ``CellID``, ``X``, ``Y``, ``ClusterName``, ``Region``, ``Valid``, ``size_um2``.

    ``path=None`` looks in ``$SPATIALFACTORS_DATA/osmfish_cortex/`` (else the pooch cache) and
    downloads the file if missing from Giotto's data repository (``drieslab/spatial-datasets``,
    MIT; the data are the authors' public release),
    ``<base_url>/drieslab/spatial-datasets/12a495fe6b2394a703f570615b3470d3b3d2bec8/data/2018_osmFISH_SScortex/raw_data/osmFISH_SScortex_mouse_all_cells.loom``,
    checked against its SHA256.

    Parameters
    ----------
    path
        Folder with the loom file (or a data root with an ``osmfish_cortex/`` folder); no download
        then.
    filter_excluded
        Keep the 4,839 cells of the 11 regions, dropping the 1,632 whose Region is ``'Excluded'``
        (their ``Valid`` is 0 and their ClusterName ``'Excluded'`` too). ``False`` keeps all 6,471
        cells, with ``'Excluded'`` as the last region category.
    base_url
        Host of the raw GitHub files (a mirror serving ``<owner>/<repo>/<commit>/<path>``).
    progress
        Show a download progress bar.

    Returns
    -------
    Cells x genes AnnData:

    - ``X``: the molecule counts as a sparse CSR float32 matrix (every value exact);
    - ``obs``: ``region`` (categorical, the 11 regions ordered from the pia to the ventricle:
      ``Pia Layer 1``, ``Layer 2-3 lateral``, ``Layer 2-3 medial``, ``Layer 3-4``, ``Layer 4``,
      ``Layer 5``, ``Layer 6``, ``White matter``, ``Internal Capsule Caudoputamen``,
      ``Hippocampus``, ``Ventricle``), ``cell_type`` (categorical, the published ClusterName),
      ``valid`` (bool, the file's ``Valid``), ``size_um2`` (cell area); names ``cell_<CellID>``,
      in file order;
    - ``obsm['spatial']``: the cell centroids ``X``, ``Y`` as in the file, in pixels of the
      stitched image (``size_um2`` / ``size_pix`` = 0.004225 um^2 in the file, i.e. 0.065 um per pixel);
    - ``uns['provenance']``: data set, publication, source file, the filter applied.

    Examples
    --------
    >>> import spatialfactors as sf
    >>> adata = sf.datasets.osmfish_cortex()  # doctest: +SKIP
    >>> adata.shape  # doctest: +SKIP
    (4839, 33)
    >>> adata.obs["region"].value_counts().head(3).to_dict()  # doctest: +SKIP
    {'Layer 6': 1015, 'Layer 4': 1002, 'White matter': 877}
    """
    _assert_bool("filter_excluded", filter_excluded)
    _assert_str("base_url", base_url)
    _assert_bool("progress", progress)
    file = _local_or_download(path, OSMFISH_DIR, LOOM_FILE, LOOM_SOURCE, "osmFISH cortex", base_url, progress)

    raw = _read_loom(file)
    matrix = raw["matrix"]
    if matrix.ndim != 2 or matrix.dtype.kind not in "iuf":
        raise ValueError(
            f"{file.name}: `matrix` must be a numeric genes x cells matrix, got shape {matrix.shape} of dtype "
            f"{matrix.dtype}."
        )
    n_genes, n_cells = matrix.shape
    for name, values in raw.items():
        expected = n_genes if name == _GENES else n_cells
        if name != "matrix" and (values.ndim != 1 or len(values) != expected):
            raise ValueError(
                f"{file.name}: `{name}` has shape {values.shape}, but `matrix` has {n_genes} genes x {n_cells} cells; "
                f"expected ({expected},)."
            )
    counts = matrix.astype(np.float64)
    if not np.isfinite(counts).all() or (counts < 0).any() or (counts != np.round(counts)).any():
        raise ValueError(f"{file.name}: `matrix` must hold molecule counts (finite whole numbers >= 0).")
    if (counts >= 2**24).any():
        raise ValueError(f"{file.name}: `matrix` has counts of 2**24 or more, not exact in float32.")
    genes = _strings(raw[_GENES], _GENES, file)
    if not all(genes) or len(set(genes)) != n_genes:
        raise ValueError(f"{file.name}: `{_GENES}` must name every gene once (empty or repeated names found).")
    cell_ids = _strings(raw["col_attrs/CellID"], "col_attrs/CellID", file)
    if len(set(cell_ids)) != n_cells:
        raise ValueError(f"{file.name}: `col_attrs/CellID` repeats cell ids.")
    region = _strings(raw["col_attrs/Region"], "col_attrs/Region", file)
    cell_type = _strings(raw["col_attrs/ClusterName"], "col_attrs/ClusterName", file)
    xy = np.column_stack([_numbers(raw[f"col_attrs/{c}"], f"col_attrs/{c}", file) for c in ("X", "Y")])
    valid = _numbers(raw["col_attrs/Valid"], "col_attrs/Valid", file)
    if not np.isin(valid, (0, 1)).all():
        raise ValueError(f"{file.name}: `col_attrs/Valid` must be 0 or 1 for every cell.")
    size = _numbers(raw["col_attrs/size_um2"], "col_attrs/size_um2", file, finite=False)

    keep = region != EXCLUDED if filter_excluded else np.ones(n_cells, dtype=bool)
    obs = pd.DataFrame(
        {
            "region": pd.Categorical(region[keep], categories=_region_categories(region[keep])),
            "cell_type": pd.Categorical(cell_type[keep], categories=sorted(set(cell_type[keep]))),
            "valid": valid[keep].astype(bool),
            "size_um2": size[keep],
        },
        index=pd.Index([f"cell_{c}" for c in cell_ids[keep]]),
    )
    adata = AnnData(
        sp.csr_matrix(counts.T[keep].astype(np.float32)),
        obs=obs,
        var=pd.DataFrame(index=pd.Index(list(genes))),
        obsm={"spatial": xy[keep]},
    )
    adata.uns["provenance"] = {
        "dataset": "osmFISH mouse somatosensory cortex, 33 genes (osmFISH_SScortex_mouse_all_cells)",
        "publication": PUBLICATION,
        "source": {LOOM_FILE: LOOM_SOURCE.url()},
        "n_cells_file": int(n_cells),
        "filter": f"Region != '{EXCLUDED}'" if filter_excluded else "none",
        "units": "pixels of the stitched image (0.065 um per pixel)",
    }
    return adata
