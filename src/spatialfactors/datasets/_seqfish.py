"""seqFISH+ mouse cortex and subventricular zone (Eng et al. 2019): counts, centroids, FOVs, louvain labels.

Two forms of the data are read. The full original (CaiGroup/seqFISH-PLUS ``sourcedata.zip``: 913
cells x 10,000 genes in 7 fields of view) and the field-of-view-0 subset that Giotto's data
repository distributes (118 cells x 1,774 genes). Files come from a local folder or are
downloaded once (pooch) into ``<root>/seqfishplus_cortex/``.
"""

from __future__ import annotations

import csv
import os
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from spatialfactors._validation import _assert_choice

from ._fetch import GITHUB_RAW, _dataset_folder, _derived, _download, _Remote, _require, _root, _zip_member

PUBLICATION = (
    "Eng CHL, Lawson M, Zhu Q, et al. Transcriptome-scale super-resolved imaging in tissues by RNA seqFISH+. "
    "Nature 568, 235-239 (2019). doi:10.1038/s41586-019-1049-y"
)
SEQFISH_DIR = "seqfishplus_cortex"

_CAIGROUP = ("CaiGroup/seqFISH-PLUS", "ee6c416006fe09262526eb364c6f66edd35adc88")
_DRIESLAB = ("drieslab/spatial-datasets", "12a495fe6b2394a703f570615b3470d3b3d2bec8")
# The rotated centroids were removed from drieslab/spatial-datasets later; this is their last commit.
_DRIESLAB_2020 = ("drieslab/spatial-datasets", "e7fc4a541263aef4b1fc8645023babf7dd20a179")

LABELS_FILE = "cortex_svz_cell_type_annotations.csv"
LABELS_ARCHIVE = "celltype_annotations.zip"
LABELS_SOURCE = _Remote(
    *_CAIGROUP, "celltype_annotations.zip", sha256="eaab1b9ea1cae5b48650e47be1c6a868fbf475a941ad6d40aad6c9a5e1b5a92d"
)
LABELS_SHA256 = "4cb55cb3999aea0d58432effb83ff3a54c8495cd9e07c2be19c674e8e1121680"
CELL_TYPES_FILE = "cortex_svz_centroids_annot.txt"

# Full original: CaiGroup's source data archive. It was too large to be checked here, so its
# content is pinned by its git object id in that commit instead of a SHA256.
COUNTS_FILE = "cortex_svz_counts.csv"
CENTROIDS_FILE = "cortex_svz_cellcentroids.csv"
FULL_ARCHIVE = "sourcedata.zip"
FULL_SOURCE = _Remote(*_CAIGROUP, "sourcedata.zip", git_blob="ca02b7a49f9d8539b8cec511e4bf6da5d6838d9b")

# Field-of-view-0 subset (Giotto's "mini seqFISH"), with drieslab's rotated centroids of all cells.
EXPR_FILE = "seqfish_field_expr.txt.gz"
LOCS_FILE = "seqfish_field_locs.txt"
ROTATED_FILE = "cortex_svz_centroids_rotated.csv"
FILES = {
    EXPR_FILE: _Remote(
        *_DRIESLAB,
        "data/2022_miniseqFISH/seqfish_field_expr.txt.gz",
        sha256="6ce2e2c7c709bb1154e36d0b98f8f4abe63e7092fa05ca83f35222076a5fff71",
    ),
    LOCS_FILE: _Remote(
        *_DRIESLAB,
        "data/2022_miniseqFISH/seqfish_field_locs.txt",
        sha256="5ad2c52f50fbb016be41c9472204a7473ccd0b979570abeea3ae7aa8f029b7a5",
    ),
    ROTATED_FILE: _Remote(
        *_DRIESLAB_2020,
        "data/2019_seqfish_plus_SScortex/cell_locations/cortex_svz_centroids_rotated.csv",
        sha256="6eb2c83f7f933b64affd51185171d2d13ca17c01969878e2f9c389de4ad5d45e",
    ),
    CELL_TYPES_FILE: _Remote(
        *_DRIESLAB,
        "data/2019_seqfish_plus_SScortex/cell_locations/cortex_svz_centroids_annot.txt",
        sha256="625c62e6ab5dc2bec06aacf4d0331d35413010fa1b38e3df1df5db4699a18408",
    ),
}
# Eng et al.: fields of view 0-4 image the cortex, 5-6 the subventricular zone.
REGIONS = {0: "cortex", 1: "cortex", 2: "cortex", 3: "cortex", 4: "cortex", 5: "SVZ", 6: "SVZ"}
_COORD_TOL = 0.011  # the files round the same centroids to 2 decimals


def _full_files(folder: Path) -> dict[str, Path] | None:
    """Find the two files of the full original in ``folder`` or its ``sourcedata/`` (the archive's layout)."""
    for base in (folder, folder / "sourcedata"):
        if (base / COUNTS_FILE).is_file() and (base / CENTROIDS_FILE).is_file():
            return {COUNTS_FILE: base / COUNTS_FILE, CENTROIDS_FILE: base / CENTROIDS_FILE}
    return None


def _local_files(path, subset: str) -> tuple[str, dict[str, Path]]:
    folder = _dataset_folder(path, SEQFISH_DIR, [LABELS_FILE, EXPR_FILE, COUNTS_FILE, "sourcedata"])
    full = _full_files(folder)
    if subset == "full" or (subset == "auto" and full is not None):
        if full is None:
            raise FileNotFoundError(
                f"seqFISH+ cortex (full): files {COUNTS_FILE!r} and {CENTROIDS_FILE!r} not found in {folder} "
                f"(nor in its sourcedata/ folder); they are in CaiGroup's {FULL_ARCHIVE}."
            )
        files = {**full, **_require(folder, [LABELS_FILE], "seqFISH+ cortex (full)")}
        mode = "full"
    else:
        files = _require(folder, [EXPR_FILE, LOCS_FILE, ROTATED_FILE, LABELS_FILE], "seqFISH+ cortex (FOV 0 subset)")
        mode = "fov0"
    if (folder / CELL_TYPES_FILE).is_file():
        files[CELL_TYPES_FILE] = folder / CELL_TYPES_FILE
    return mode, files


def _downloaded_files(subset: str, base_url: str, progress: bool) -> tuple[str, dict[str, Path]]:
    folder = _root(None) / SEQFISH_DIR
    full = _full_files(folder)
    mode = "full" if subset == "full" or (subset == "auto" and full is not None) else "fov0"
    files = {}
    if mode == "full":
        if full is None:
            archive = _download(FULL_SOURCE, FULL_ARCHIVE, folder, base_url, progress)
            full = {
                name: _derived(folder, name, None, lambda name=name: _zip_member(archive, name), FULL_ARCHIVE)
                for name in (COUNTS_FILE, CENTROIDS_FILE)
            }
        files.update(full)
    else:
        files.update(
            {n: _download(FILES[n], n, folder, base_url, progress) for n in (EXPR_FILE, LOCS_FILE, ROTATED_FILE)}
        )

    def labels():
        return _zip_member(_download(LABELS_SOURCE, LABELS_ARCHIVE, folder, base_url, progress), LABELS_FILE)

    files[LABELS_FILE] = _derived(folder, LABELS_FILE, LABELS_SHA256, labels, LABELS_ARCHIVE)
    files[CELL_TYPES_FILE] = _download(FILES[CELL_TYPES_FILE], CELL_TYPES_FILE, folder, base_url, progress)
    return mode, files


# What reading a damaged table raises: pandas' ParserError/EmptyDataError and decoding errors
# (ValueError subclasses), the csv module's errors, and for .gz files gzip's and zlib's.
_TABLE_ERRORS = (ValueError, UnicodeError, OverflowError, csv.Error, EOFError, OSError, zlib.error)


def _read_table(path: Path, **kwargs) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **kwargs)
    except _TABLE_ERRORS as err:
        raise ValueError(f"Cannot read {path.name}: {type(err).__name__}: {err}") from None


def _assert_rows_fit_header(table: pd.DataFrame, path: Path) -> None:
    # Rows with one field more than the header make pandas take the first column as the index.
    if not isinstance(table.index, pd.RangeIndex):
        raise ValueError(f"{path.name}: the rows have more fields than the header line names.")


def _drop_row_index(table: pd.DataFrame) -> pd.DataFrame:
    # A first column without a name that counts 0, 1, ... is a written-out row index, not data.
    first = table.columns[0]
    if str(first) == "" or str(first).startswith("Unnamed: 0"):
        if np.array_equal(table[first].to_numpy(), np.arange(len(table))):
            return table.drop(columns=first)
    return table


def _integer_counts(table: pd.DataFrame, name: str) -> np.ndarray:
    if not all(pd.api.types.is_integer_dtype(t) for t in table.dtypes):
        bad = [c for c, t in table.dtypes.items() if not pd.api.types.is_integer_dtype(t)][:5]
        raise ValueError(
            f"{name} must hold integer counts with one value per gene in every row; columns {bad} have missing or "
            "non-integer values (is a row shorter or longer than the gene list?)."
        )
    counts = table.to_numpy()
    if counts.size and counts.min() < 0:
        raise ValueError(f"{name} has negative counts.")
    return counts


def _read_labels(path: Path, n_cells: int) -> pd.Series:
    table = _read_table(path)
    _assert_rows_fit_header(table, path)
    if "louvain" not in table.columns or table.shape[1] != 2:
        raise ValueError(
            f"{path.name} must have two columns, the cell index and `louvain`; found {list(table.columns)}."
        )
    index = table.drop(columns="louvain").iloc[:, 0].to_numpy()
    if len(table) != n_cells:
        raise ValueError(f"{path.name} labels {len(table)} cells but the centroids list {n_cells}.")
    if not np.array_equal(index, np.arange(n_cells)):
        raise ValueError(f"{path.name}: the cell index must be 0, 1, ... in the order of the centroids.")
    if not pd.api.types.is_integer_dtype(table["louvain"]):
        raise ValueError(f"{path.name}: `louvain` must be the integer cluster of every cell.")
    return table["louvain"]


def _read_centroids(path: Path) -> pd.DataFrame:
    table = _read_table(path)
    _assert_rows_fit_header(table, path)
    table = _drop_row_index(table)
    needed = ["Field of View", "X", "Y"]
    if not set(needed) <= set(table.columns):
        raise ValueError(f"{path.name} must have the columns {needed} (and `Cell ID`); found {list(table.columns)}.")
    if "Cell ID" not in table.columns:
        table.insert(1, "Cell ID", np.arange(1, len(table) + 1))  # cells numbered 1, 2, ... as in the original
    if not table["Cell ID"].is_unique:
        raise ValueError(f"{path.name}: `Cell ID` repeats values.")
    for column in ("Field of View", "Cell ID"):
        if not pd.api.types.is_integer_dtype(table[column]):
            raise ValueError(f"{path.name}: `{column}` must be an integer in every row.")
    for column in ("X", "Y"):
        values = table[column]
        if not pd.api.types.is_numeric_dtype(values) or not np.isfinite(values.to_numpy(dtype=np.float64)).all():
            raise ValueError(f"{path.name}: `{column}` must be a finite number in every row.")
    return table


def _cell_types(path: Path, centroids: pd.DataFrame, labels: pd.Series, labels_name: str) -> pd.Series:
    """Giotto's cell type names (drieslab), checked against the centroids and the louvain clusters."""
    table = _read_table(path, sep="\t")
    _assert_rows_fit_header(table, path)
    if not {"ID", "FOV", "cell_types"} <= set(table.columns):
        raise ValueError(f"{path.name} must have the columns ID, FOV, cell_types; found {list(table.columns)}.")
    table = table.set_index("ID")
    ids = [f"cell_{i}" for i in centroids["Cell ID"]]
    missing = [i for i in ids if i not in table.index]
    if missing:
        raise ValueError(f"{path.name} has no row for {len(missing)} cells of the centroids, e.g. {missing[:3]}.")
    table = table.loc[ids]
    if not np.array_equal(table["FOV"].to_numpy(), centroids["Field of View"].to_numpy()):
        raise ValueError(f"{path.name} puts cells in other fields of view than the centroids.")
    # Each published louvain cluster is one cell type; a shifted label file would break that.
    n_types = pd.Series(table["cell_types"].to_numpy()).groupby(labels.to_numpy()).nunique()
    if (n_types > 1).any():
        raise ValueError(
            f"{labels_name} and {path.name} disagree: louvain clusters {n_types[n_types > 1].index.tolist()} hold "
            "several cell types, so the labels are not aligned with the cells."
        )
    return pd.Series(table["cell_types"].to_numpy(), index=centroids.index)


def _check_fov0_alignment(expr: pd.DataFrame, locs: np.ndarray, rotated: pd.DataFrame) -> pd.Index:
    """Rows of ``rotated`` of the expression columns, checked by matching their coordinates."""
    if locs.ndim != 2 or locs.shape[1] != 2:
        raise ValueError(f"{LOCS_FILE} must have two columns (x, y per cell), got shape {locs.shape}.")
    if locs.shape[0] != expr.shape[1]:
        raise ValueError(f"{EXPR_FILE} has {expr.shape[1]} cells but {LOCS_FILE} has {locs.shape[0]} coordinates.")
    by_id = pd.Series(rotated.index, index=[f"cell_{i}" for i in rotated["Cell ID"]])
    unknown = [c for c in expr.columns if c not in by_id.index]
    if unknown:
        raise ValueError(f"{EXPR_FILE} has cells not in {ROTATED_FILE}, e.g. {unknown[:3]}.")
    rows = pd.Index(by_id.loc[expr.columns].to_numpy())
    # Giotto's subset stores (x, -y) of drieslab's rotated centroids.
    xy = rotated.loc[rows, ["X", "Y"]].to_numpy(dtype=np.float64)
    off = np.abs(xy - locs * np.array([1.0, -1.0])).max() if len(rows) else 0.0
    if off > _COORD_TOL:
        raise ValueError(
            f"{EXPR_FILE} and {LOCS_FILE} do not match the centroids of those cells in {ROTATED_FILE} "
            f"(largest difference {off:.3g} px): the files are not aligned."
        )
    return rows


def seqfish_plus_cortex(
    path: str | os.PathLike | None = None,
    *,
    subset: Literal["auto", "full", "fov0"] = "auto",
    base_url: str = GITHUB_RAW,
    progress: bool = False,
) -> AnnData:
    """seqFISH+ mouse cortex and SVZ: counts, centroids, fields of view and the published louvain clusters.

    The seqFISH+ data of Eng et al. (Nature 2019) that SpiceMix analyses
    (:cite:`chidester2023spicemix`): 913 cells in 7 fields of view (0-4 cortex, 5-6 subventricular
    zone), 10,000 genes. Two forms are read:

    ``subset="full"``: the original files of ``CaiGroup/seqFISH-PLUS`` (its ``sourcedata.zip``),
    ``cortex_svz_counts.csv`` (a header of gene names, then one row of integer counts per cell;
    913 x 10,000) and ``cortex_svz_cellcentroids.csv`` (columns ``Field of View``, ``Cell ID``,
    ``X``, ``Y``, one row per cell in the same order), in the folder or in its ``sourcedata/``.
    A written-out row index (an unnamed first column 0, 1, ...) is dropped; other extra centroid
    columns are kept in ``obs``.

    ``subset="fov0"``: the field-of-view-0 subset distributed by Giotto (``drieslab/spatial-datasets``,
    MIT): ``seqfish_field_expr.txt.gz`` (genes x cells, space separated, 1,774 genes x 118 cells
    ``cell_1`` ...), ``seqfish_field_locs.txt`` (their x and -y), and drieslab's
    ``cortex_svz_centroids_rotated.csv`` of all 913 cells (``Field of View``, ``Cell ID``, ``X``,
    ``Y``; the original centroids turned by 90 degrees, which changes no distance). Cells are
    matched to the centroids by ``Cell ID`` and checked by their coordinates. Only these genes and
    cells are available this way: the subset is not the full data.

    Both use CaiGroup's ``cortex_svz_cell_type_annotations.csv`` (columns ``index``, ``louvain``:
    the published cluster of each of the 913 cells, in centroid order) and, when present, Giotto's
    ``cortex_svz_centroids_annot.txt`` (``ID``, ``FOV``, ``cell_types``): its cell type names are
    added and checked to nest the louvain clusters, which fails if labels and cells are shifted.
    ``"auto"`` reads the full files when present, else the subset.

    ``path=None`` looks in ``$SPATIALFACTORS_DATA/seqfishplus_cortex/`` (else the pooch cache) and
    downloads what is missing, from ``<base_url>/<repository>/<commit>/<path>``:
    ``CaiGroup/seqFISH-PLUS`` at ``ee6c4160`` (``celltype_annotations.zip``, SHA256-checked, and its
    member ``cortex_svz_cell_type_annotations.csv``, checked too; with ``subset="full"`` also
    ``sourcedata.zip``, checked against its git object id because it was too large to be checked
    here, and its two members), ``drieslab/spatial-datasets`` at ``12a495fe``
    (``data/2022_miniseqFISH/`` and ``data/2019_seqfish_plus_SScortex/cell_locations/cortex_svz_centroids_annot.txt``)
    and at ``e7fc4a54`` (``.../cortex_svz_centroids_rotated.csv``), each SHA256-checked. The
    full-data path could not be run here: the archive's member names and columns follow CaiGroup's
    layout as other readers of it use it, and the reading is tested on files written in that layout.
    CaiGroup's files are free for academic, non-commercial use.

    Parameters
    ----------
    path
        Folder with the files (or a data root with a ``seqfishplus_cortex/`` folder); no download then.
    subset
        ``"full"``, ``"fov0"`` or ``"auto"`` (full files if present, else the FOV-0 subset).
    base_url
        Host of the raw GitHub files.
    progress
        Show download progress bars.

    Returns
    -------
    Cells x genes AnnData: ``X`` integer counts as sparse CSR float32; ``obs`` ``fov``
    (categorical ``'0'``-``'6'``, for ``library_key``), ``region`` (cortex or SVZ), ``louvain``
    (categorical, the published clusters ``'1'``-``'26'``) and ``cell_type`` (Giotto's names, when
    available); names ``cell_<Cell ID>``; ``obsm['spatial']`` the centroids' ``X``, ``Y`` in
    pixels (CaiGroup's frame for the full data, drieslab's rotated frame for the subset);
    ``uns['provenance']`` with the form read, the sources and the publication.

    Examples
    --------
    >>> import spatialfactors as sf
    >>> adata = sf.datasets.seqfish_plus_cortex(subset="fov0")  # doctest: +SKIP
    >>> adata.shape, adata.obs["fov"].unique().tolist()  # doctest: +SKIP
    ((118, 1774), ['0'])
    """
    _assert_choice("subset", subset, ("auto", "full", "fov0"))
    if path is not None:
        mode, files = _local_files(path, subset)
    else:
        mode, files = _downloaded_files(subset, base_url, progress)

    if mode == "full":
        counts_table = _read_table(files[COUNTS_FILE])
        _assert_rows_fit_header(counts_table, files[COUNTS_FILE])
        counts_table = _drop_row_index(counts_table)
        counts = _integer_counts(counts_table, COUNTS_FILE)
        genes = counts_table.columns.astype(str)
        centroids = _read_centroids(files[CENTROIDS_FILE])
        if len(centroids) != counts.shape[0]:
            raise ValueError(
                f"{COUNTS_FILE} has {counts.shape[0]} cells but {CENTROIDS_FILE} has {len(centroids)} centroids."
            )
        rows = pd.RangeIndex(len(centroids))
        coordinates = "CaiGroup original (cortex_svz_cellcentroids.csv X, Y)"
    else:
        expr = _read_table(files[EXPR_FILE], sep=" ", index_col=0)
        genes = expr.index.astype(str)
        counts = _integer_counts(expr.T, EXPR_FILE)
        centroids = _read_centroids(files[ROTATED_FILE])
        try:
            locs = np.loadtxt(files[LOCS_FILE], dtype=np.float64, ndmin=2)
        except ValueError as err:
            raise ValueError(f"Cannot read {LOCS_FILE}: {err}") from err
        rows = _check_fov0_alignment(expr, locs, centroids)
        coordinates = "drieslab rotated (cortex_svz_centroids_rotated.csv X, Y)"

    labels = _read_labels(files[LABELS_FILE], len(centroids))
    cell_types = None
    if CELL_TYPES_FILE in files:
        cell_types = _cell_types(files[CELL_TYPES_FILE], centroids, labels, LABELS_FILE)

    cells = centroids.loc[rows]
    fov = cells["Field of View"].astype(int)
    obs = pd.DataFrame(
        {
            "fov": pd.Categorical(
                fov.astype(str), categories=[str(f) for f in sorted(centroids["Field of View"].unique())]
            ),
            "region": pd.Categorical(fov.map(REGIONS), categories=["cortex", "SVZ"]),
            "louvain": pd.Categorical(
                labels.loc[rows].astype(str), categories=[str(c) for c in sorted(labels.unique())]
            ),
        }
    )
    if cell_types is not None:
        obs["cell_type"] = pd.Categorical(cell_types.loc[rows])
    for column in cells.columns:
        if column not in ("Field of View", "Cell ID", "X", "Y"):
            obs[column] = cells[column].to_numpy()
    obs.index = [f"cell_{i}" for i in cells["Cell ID"]]
    adata = AnnData(
        sp.csr_matrix(counts.astype(np.float32)),
        obs=obs,
        var=pd.DataFrame(index=pd.Index(genes)),
        obsm={"spatial": cells[["X", "Y"]].to_numpy(dtype=np.float64)},
    )
    sources = {LABELS_FILE: f"{LABELS_SOURCE.url()} (member)"}
    if mode == "full":
        sources.update({n: f"{FULL_SOURCE.url()} (member sourcedata/{n})" for n in (COUNTS_FILE, CENTROIDS_FILE)})
    else:
        sources.update({n: FILES[n].url() for n in (EXPR_FILE, LOCS_FILE, ROTATED_FILE)})
    if cell_types is not None:
        sources[CELL_TYPES_FILE] = FILES[CELL_TYPES_FILE].url()
    adata.uns["provenance"] = {
        "dataset": "seqFISH+ mouse cortex and subventricular zone"
        + (" (all 7 fields of view)" if mode == "full" else " (field of view 0 subset, Giotto)"),
        "subset": mode,
        "publication": PUBLICATION,
        "source": sources,
        "coordinates": coordinates,
        "units": "pixels",
    }
    if not adata.var_names.is_unique:
        adata.var_names_make_unique()
    return adata
