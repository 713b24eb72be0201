"""Visium human dorsolateral prefrontal cortex (Maynard, Collado-Torres et al. 2021): sample 151510 and its layers.

Read from the R Seurat object that DR.SC ships as package data (``dlpfc151510.rda``), from a local
folder or downloaded once (pooch, SHA256) into ``<root>/dlpfc_visium/`` (root:
``$SPATIALFACTORS_DATA``, else ``pooch.os_cache("spatialfactors")``). The R object is read with
the ``rdata`` package.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from spatialfactors._validation import _assert_bool, _assert_str

from ._fetch import GITHUB_RAW, _local_or_download, _Remote

PUBLICATION = (
    "Maynard KR, Collado-Torres L, Weber LM, et al. Transcriptome-scale spatial gene expression in the human "
    "dorsolateral prefrontal cortex. Nature Neuroscience 24, 425-436 (2021). doi:10.1038/s41593-020-00787-0"
)
DLPFC_DIR = "dlpfc_visium"

# feiyoung/DR.SC (GPL-3), package data: a Seurat object of one DLPFC sample (500 genes, raw UMI counts,
# Visium array coordinates and the authors' manual layer annotation).
_DRSC = ("feiyoung/DR.SC", "64d95135ab79e3e42e86e4a2e31724d17bec29d5")
SAMPLES = {
    "151510": _Remote(
        *_DRSC,
        "data/dlpfc151510.rda",
        sha256="ea00a1d0ab39724db7454cd364055264061c7a531265fc7bc06b169062f746b4",
    ),
}

#: Visium: spot centres 100 um apart on a hexagonal lattice. Neighbouring spots of one array row
#: differ by 2 in the array column, spots of neighbouring rows by 1 in row and 1 in column, so
#: x = column * 50 um and y = row * 50 * sqrt(3) um put all six neighbours 100 um away.
SPOT_SPACING_UM = 100.0
_X_PER_COL = SPOT_SPACING_UM / 2
_Y_PER_ROW = SPOT_SPACING_UM / 2 * math.sqrt(3)

# A compact R sequence (ALTREP ``1:n``) is expanded by the reader; a damaged file can claim any
# length. The Seurat object holds none; longer ones are refused before they are allocated.
_MAX_SEQUENCE = 1 << 22
_NA_INTEGER = -(2**31)  # R's NA_integer_


def _assert_sample(sample) -> None:
    if not isinstance(sample, str):
        raise TypeError(f"`sample` must be the sample id as a string, e.g. '151510', got {sample!r}.")
    if sample not in SAMPLES:
        raise ValueError(
            f"DLPFC sample {sample!r} is not available; available: {list(SAMPLES)} (the sample DR.SC ships as "
            "package data). The other 11 samples of the study are not distributed in this form."
        )


def _file_name(sample: str) -> str:
    return f"dlpfc{sample}.rda"


def _damaged(path: Path, reason: str) -> ValueError:
    return ValueError(
        f"{path}: {reason}; the file is damaged, truncated or not DR.SC's Seurat object. Delete it and load again "
        "(with `path=None` the original is downloaded and checked against its SHA256)."
    )


def _bounded_sequence(constructor):
    """Wrap an ALTREP expander so that it refuses sequences longer than :data:`_MAX_SEQUENCE`."""

    def expand(state):
        n = float(state.value[0])
        if not 0 <= n <= _MAX_SEQUENCE:
            raise ValueError(f"an R sequence claims {n:g} elements")
        return constructor(state)

    return expand


def _factor(codes, attrs) -> pd.Categorical:
    """Return an R factor as a categorical; its codes must be 1..n_levels or NA (``rdata`` maps 0 to the last level)."""
    codes = getattr(codes, "values", codes) if hasattr(codes, "dims") else codes  # a named vector: xarray
    levels = attrs.get("levels")
    levels = np.asarray(levels) if levels is not None else np.array([], dtype=str)
    if levels.ndim != 1 or levels.dtype.kind != "U":
        raise ValueError("a factor has no character levels")
    data = np.asarray(np.ma.getdata(codes)).astype(np.int64)
    missing = np.asarray(np.ma.getmaskarray(codes)) | (data == _NA_INTEGER)
    if data.ndim != 1 or ((data < 1) | (data > len(levels)))[~missing].any():
        raise ValueError(f"a factor has codes outside its {len(levels)} levels")
    return pd.Categorical.from_codes(np.where(missing, -1, data - 1), categories=levels.tolist())


def _read_r_objects(path: Path) -> dict:
    """Return the objects of an .rda file converted by ``rdata``; any failure of the parser names the file."""
    import rdata
    from rdata.conversion import DEFAULT_CLASS_MAP
    from rdata.parser import DEFAULT_ALTREP_MAP

    altrep = dict(DEFAULT_ALTREP_MAP)
    for name in (b"compact_intseq", b"compact_realseq"):
        altrep[name] = _bounded_sequence(altrep[name])
    try:
        with warnings.catch_warnings():
            # S4 classes (Seurat, Assay, dgCMatrix) have no Python constructor: their slots are
            # returned as a namespace, which is what is read below.
            warnings.simplefilter("ignore")
            objects = rdata.read_rda(
                path, altrep_constructor_dict=altrep, constructor_dict={**DEFAULT_CLASS_MAP, "factor": _factor}
            )
    except Exception as err:  # noqa: BLE001 - the parser of a third-party format: any failure is a bad file
        raise _damaged(path, f"cannot be read as R data ({type(err).__name__}: {err})") from None
    if not isinstance(objects, dict):
        raise _damaged(path, "does not hold named R objects")
    return objects


def _classes(obj) -> list[str]:
    if not isinstance(obj, SimpleNamespace):
        return []
    value = vars(obj).get("class")
    try:
        return [str(c) for c in np.atleast_1d(value)] if value is not None else []
    except TypeError:
        return []


def _slot(obj, name: str, what: str, path: Path):
    if not isinstance(obj, SimpleNamespace) or name not in vars(obj):
        raise _damaged(path, f"{what} has no `{name}` slot")
    return vars(obj)[name]


def _int_vector(value, what: str, path: Path) -> np.ndarray:
    array = np.asarray(value) if isinstance(value, np.ndarray) else None
    if array is None or array.ndim != 1 or array.dtype.kind not in "iu":
        raise _damaged(path, f"{what} is not an integer vector")
    return array.astype(np.int64)


def _names(value, n: int, what: str, path: Path) -> list[str]:
    array = np.asarray(value) if isinstance(value, np.ndarray) else None
    if array is None or array.ndim != 1 or array.dtype.kind != "U" or len(array) != n:
        raise _damaged(path, f"{what} must be {n} names")
    names = array.tolist()
    if not all(names) or len(set(names)) != n:
        raise _damaged(path, f"{what} has empty or repeated names")
    return names


def _counts(matrix, path: Path) -> tuple[sp.csr_matrix, list[str], list[str]]:
    """Spots x genes CSR float32 of a genes x spots ``dgCMatrix`` (its CSC arrays are the CSR of the transpose)."""
    what = "the count matrix (`assays$RNA@counts`)"
    if "dgCMatrix" not in _classes(matrix):
        raise _damaged(path, f"{what} is not a sparse dgCMatrix (classes {_classes(matrix)})")
    dims = _int_vector(_slot(matrix, "Dim", what, path), f"{what}@Dim", path)
    if len(dims) != 2 or (dims < 0).any():
        raise _damaged(path, f"{what}@Dim must be two sizes, got {dims.tolist()}")
    n_genes, n_spots = (int(d) for d in dims)
    i = _int_vector(_slot(matrix, "i", what, path), f"{what}@i", path)
    p = _int_vector(_slot(matrix, "p", what, path), f"{what}@p", path)
    x = np.asarray(_slot(matrix, "x", what, path))
    if x.ndim != 1 or x.dtype.kind not in "iuf" or len(x) != len(i):
        raise _damaged(path, f"{what}@x must be {len(i)} numbers, one per entry of @i")
    if len(p) != n_spots + 1 or (len(p) and (p[0] != 0 or p[-1] != len(i))) or (np.diff(p) < 0).any():
        raise _damaged(path, f"{what}@p is not a column pointer of {n_spots} columns and {len(i)} entries")
    if len(i) and (i.min() < 0 or i.max() >= n_genes):
        raise _damaged(path, f"{what}@i has row indices outside 0..{n_genes - 1}")
    if not np.isfinite(x).all() or (x < 0).any() or (x != np.round(x)).any() or (x >= 2**24).any():
        raise _damaged(path, f"{what} must hold UMI counts (whole numbers 0 <= x < 2**24)")
    dimnames = _slot(matrix, "Dimnames", what, path)
    if not isinstance(dimnames, list) or len(dimnames) != 2:
        raise _damaged(path, f"{what}@Dimnames must be the gene and spot names")
    genes = _names(dimnames[0], n_genes, "the gene names (rownames of the counts)", path)
    barcodes = _names(dimnames[1], n_spots, "the spot barcodes (colnames of the counts)", path)
    counts = sp.csr_matrix((x.astype(np.float32), i.astype(np.int32), p.astype(np.int32)), shape=(n_spots, n_genes))
    if not counts.has_canonical_format:  # row indices sorted and unique within each column, as R keeps them
        raise _damaged(path, f"{what} repeats or misorders row indices within a column")
    return counts, genes, barcodes


def _whole_column(meta: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    values = meta[column]
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values) or values.isna().any():
        raise _damaged(path, f"meta.data column `{column}` must be an integer per spot")
    array = values.to_numpy(dtype=np.float64)
    if not np.isfinite(array).all() or (array != np.round(array)).any() or (np.abs(array) > 2**31).any():
        raise _damaged(path, f"meta.data column `{column}` must be an integer per spot")
    return array.astype(np.int64)


def _layers(values: pd.Series, path: Path) -> pd.Categorical:
    """Return the manual annotation as a categorical: R's factor levels kept in order, NA spots as NaN."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        categories = [str(c) for c in values.cat.categories]
        labels = values.astype(object).where(values.notna())
    elif pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values):
        labels = values.astype(object).where(values.notna())
        if not all(isinstance(v, str) for v in labels.dropna()):
            raise _damaged(path, "meta.data column `annotation` must hold layer names")
        categories = sorted(set(labels.dropna()))
    else:
        raise _damaged(path, f"meta.data column `annotation` must hold layer names, got dtype {values.dtype}")
    labels = [None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in labels]
    if len(set(categories)) != len(categories):
        raise _damaged(path, "meta.data column `annotation` repeats a layer name among its levels")
    return pd.Categorical(labels, categories=categories)


def _read_seurat(path: Path, sample: str) -> tuple[str, sp.csr_matrix, list[str], list[str], pd.DataFrame]:
    objects = _read_r_objects(path)
    found = {name: obj for name, obj in objects.items() if "Seurat" in _classes(obj)}
    if len(found) > 1 and f"dlpfc{sample}" in found:
        found = {f"dlpfc{sample}": found[f"dlpfc{sample}"]}
    if len(found) != 1:
        raise _damaged(
            path, f"holds {len(found)} Seurat objects among its R objects {[str(n) for n in objects][:10]}, not one"
        )
    ((name, seurat),) = found.items()
    assays = _slot(seurat, "assays", "the Seurat object", path)
    if not isinstance(assays, dict) or "RNA" not in assays:
        keys = [str(k) for k in assays] if isinstance(assays, dict) else []
        raise _damaged(path, f"the Seurat object has no RNA assay (assays: {keys})")
    counts, genes, barcodes = _counts(_slot(assays["RNA"], "counts", "the RNA assay", path), path)
    meta = _slot(seurat, "meta.data", "the Seurat object", path)
    if not isinstance(meta, pd.DataFrame):
        raise _damaged(path, "the Seurat object's meta.data is not a data frame")
    missing = [c for c in ("row", "col", "annotation") if c not in meta.columns]
    if missing:
        raise _damaged(path, f"meta.data lacks the column(s) {missing}; found {[str(c) for c in meta.columns]}")
    if len(meta) != len(barcodes) or [str(b) for b in meta.index] != barcodes:
        raise _damaged(path, "the rows of meta.data are not the spots of the count matrix in the same order")
    obs = pd.DataFrame(
        {
            "layer": _layers(meta["annotation"], path),
            "row": _whole_column(meta, "row", path),
            "col": _whole_column(meta, "col", path),
        },
        index=pd.Index(barcodes),
    )
    return str(name), counts, genes, barcodes, obs


def visium_dlpfc(
    path: str | os.PathLike | None = None,
    *,
    sample: str = "151510",
    base_url: str = GITHUB_RAW,
    progress: bool = False,
) -> AnnData:
    """Visium human DLPFC, sample 151510: raw UMI counts of 500 genes, array coordinates and the manual layers.

    One of the 12 Visium sections of the human dorsolateral prefrontal cortex of Maynard,
    Collado-Torres et al. (Nature Neuroscience 2021), the standard real benchmark of spatial domain
    methods: 4,634 spots, each labelled by hand by the authors as one of six cortical layers or
    white matter. Read from the R Seurat object ``dlpfc151510.rda`` that the R package DR.SC ships
    as data (``feiyoung/DR.SC``, GPL-3): the RNA assay's raw counts (a ``dgCMatrix`` of 500 genes,
    DR.SC's selection of spatially variable genes, named by Ensembl id) and ``meta.data`` columns
    ``row``, ``col`` (Visium array coordinates) and ``annotation`` (the layer). The R object is
    read with the `rdata <https://rdata.readthedocs.io>`_ package. The annotation agrees spot for
    spot with the authors' own ``barcode_level_layer_map.tsv`` (``LieberInstitute/HumanPilot``);
    the 39 spots without a layer there are NA here.

    ``path=None`` looks in ``$SPATIALFACTORS_DATA/dlpfc_visium/`` (else the pooch cache) and
    downloads the file if missing, from
    ``<base_url>/feiyoung/DR.SC/64d95135ab79e3e42e86e4a2e31724d17bec29d5/data/dlpfc151510.rda``,
    checked against its SHA256.

    Parameters
    ----------
    path
        Folder with ``dlpfc151510.rda`` (or a data root with a ``dlpfc_visium/`` folder); no
        download then.
    sample
        The DLPFC sample. Only ``"151510"`` is available (the one DR.SC ships).
    base_url
        Host of the raw GitHub files (a mirror serving ``<owner>/<repo>/<commit>/<path>``).
    progress
        Show a download progress bar.

    Returns
    -------
    Spots x genes AnnData:

    - ``X``: the raw UMI counts as a sparse CSR float32 matrix (every value exact);
    - ``var_names``: Ensembl gene ids (the object has no gene symbols); ``obs_names``: spot barcodes;
    - ``obs['layer']``: the manual annotation, categorical ``Layer1`` ... ``Layer6``, ``WM``
      (white matter); NaN for the 39 spots without a layer;
    - ``obs['row']``, ``obs['col']``: Visium array row (0-77) and column (0-127);
    - ``obsm['spatial']``: spot positions in micrometres from the array coordinates, on the
      hexagonal lattice of the Visium slide, ``x = col * 50``, ``y = row * 50 * sqrt(3)``: the six
      neighbours of a spot are all 100 um away (the nominal centre-to-centre distance), so
      distance-based graphs (``sq.gr.spatial_neighbors_knn(adata, n_neighs=6)`` or a radius of about
      100) find the Visium neighbourhood; ``y`` grows downwards on the tissue image, like image rows;
    - ``uns['provenance']``: data set, sample, publication, source file, coordinates, number of
      spots without a layer.

    Examples
    --------
    >>> import spatialfactors as sf
    >>> adata = sf.datasets.visium_dlpfc()  # doctest: +SKIP
    >>> adata.shape  # doctest: +SKIP
    (4634, 500)
    >>> adata.obs["layer"].value_counts(dropna=False).to_dict()  # doctest: +SKIP
    {'Layer3': 1774, 'Layer1': 1180, 'Layer2': 650, 'Layer4': 318, 'Layer5': 310, 'WM': 184, 'Layer6': 179, nan: 39}
    """
    _assert_sample(sample)
    _assert_str("base_url", base_url)
    _assert_bool("progress", progress)
    fname = _file_name(sample)
    file = _local_or_download(path, DLPFC_DIR, fname, SAMPLES[sample], "Visium DLPFC", base_url, progress)

    name, counts, genes, barcodes, obs = _read_seurat(file, sample)
    spatial = np.column_stack([obs["col"] * _X_PER_COL, obs["row"] * _Y_PER_ROW]).astype(np.float64)
    adata = AnnData(counts, obs=obs, var=pd.DataFrame(index=pd.Index(genes)), obsm={"spatial": spatial})
    adata.uns["provenance"] = {
        "dataset": f"Visium human dorsolateral prefrontal cortex, sample {sample} (500 genes selected by DR.SC)",
        "sample": sample,
        "publication": PUBLICATION,
        "source": {fname: SAMPLES[sample].url()},
        "r_object": name,
        "n_spots_without_layer": int(obs["layer"].isna().sum()),
        "coordinates": "x = array col * 50, y = array row * 50 * sqrt(3) (hexagonal lattice, 100 um spot spacing)",
        "units": "micrometres (nominal)",
    }
    return adata
