"""STARmap mouse visual cortex (Wang et al. 2018): the 1,020-gene sample and the 28-gene 3D volume.

Read from the original public files, from a local folder or downloaded once (pooch, SHA256) into
``<root>/starmap_visual_1020/`` and ``<root>/starmap_3d_cortex/`` (root: ``$SPATIALFACTORS_DATA``,
else ``pooch.os_cache("spatialfactors")``).
"""

from __future__ import annotations

import bz2
import csv
import gzip
import lzma
import math
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ._fetch import GITHUB_RAW, _dataset_folder, _derived, _download, _Remote, _require, _root

PUBLICATION = (
    "Wang X, Allen WE, Wright MA, et al. Three-dimensional intact-tissue sequencing of single-cell "
    "transcriptional states. Science 361, eaat5691 (2018). doi:10.1126/science.aat5691"
)

# xzhoulab/SRTsim-Analysis `rawdata/STARmap/`: the STARmap release `visual_1020/20180410-BY3_1kgenes`
# (the sample SpiceMix analyses). Its gene names are only in the repository's Seurat object.
_SRTSIM = ("xzhoulab/SRTsim-Analysis", "d369f9c0c062c5af0bb47491557b31adcdccfbef")
VISUAL_DIR = "starmap_visual_1020"
COUNTS_FILE = "cell_barcode_count.csv"
GENES_FILE = "genes_from_rds.csv"
LABELS_FILE = "class_labels.csv"
CENTROIDS_FILE = "Centriods_extracted.csv"  # sic, the original name
VISUAL_FILES = {
    COUNTS_FILE: _Remote(
        *_SRTSIM,
        "rawdata/STARmap/cell_barcode_count.csv",
        sha256="891253229fc73a5699f655b0c5431fc896747ceb64306515c3e2e091d71d3ff1",
    ),
    LABELS_FILE: _Remote(
        *_SRTSIM,
        "rawdata/STARmap/class_labels.csv",
        sha256="76ad47f70ab968729d9bf4453db86a8fcc3e80bda95ab0b0db4e0a67a804528d",
    ),
    CENTROIDS_FILE: _Remote(
        *_SRTSIM,
        "rawdata/STARmap/Centriods_extracted.csv",
        sha256="682959cb365571e6136ebb64dc1e10376632b3894ca5562fd4d808c8d46a6d4d",
    ),
}
GENES_RDS = "starmap_1020_0410_seurat_filter_layer.rds"
GENES_SOURCE = _Remote(
    *_SRTSIM,
    "CCI_analysis/starmap_1020_0410_seurat_filter_layer.rds",
    sha256="03e0cb116a986d7228f19accf24455e5ca44b10d971a970492a4c4a0f4dd4835",
)
# The gene list written from that object, one name a line, exactly as in the shared data folder.
GENES_SHA256 = "f990438e773209119af69c11ffeb29b731079118b976458da3ddd812c13f9c68"

# drieslab/spatial-datasets `data/2018_starmap_3D_cortex/raw_data/`.
_DRIESLAB = ("drieslab/spatial-datasets", "12a495fe6b2394a703f570615b3470d3b3d2bec8")
VOLUME_DIR = "starmap_3d_cortex"
MAT_FILE = "20180123_BS10_light.mat"
GENE_NAMES_FILE = "gene_names.csv"
VOLUME_FILES = {
    MAT_FILE: _Remote(
        *_DRIESLAB,
        "data/2018_starmap_3D_cortex/raw_data/20180123_BS10_light.mat",
        sha256="63bef960e09980050e673da5d8367469aa0a5bed86ff26538130ca4aa4a4df18",
    ),
    GENE_NAMES_FILE: _Remote(
        *_DRIESLAB,
        "data/2018_starmap_3D_cortex/raw_data/gene_names.csv",
        sha256="0bd984d431cd2ba6607c8d74e0cdefb8aa4d15c99d287b5222240afebe88f372",
    ),
}

# MAT-file level 5 ("MAT-File Format", MathWorks): data types of the elements and the numeric array classes.
_MI_TYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
_MI_MATRIX, _MI_COMPRESSED = 14, 15
_MX_CLASSES = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4", 14: "i8", 15: "u8"}


class _MatError(ValueError):
    pass


def _mat_tag(buf: bytes, pos: int, end: int, order: str) -> tuple[int, int, int, int]:
    """Return the data type, byte count, data offset and next offset of the element at ``pos``."""
    if pos + 8 > end:
        raise _MatError(f"an element tag at byte {pos} runs past the end of its data")
    word, count = struct.unpack_from(order + "II", buf, pos)
    if word >> 16:  # small data element: type and count in one word, data in the next 4 bytes
        word, count = word & 0xFFFF, word >> 16
        if count > 4:
            raise _MatError(f"a small data element at byte {pos} claims {count} bytes")
        return word, count, pos + 4, pos + 8
    if count > end - pos - 8:
        raise _MatError(f"the element at byte {pos} claims {count} bytes but {end - pos - 8} remain")
    return word, count, pos + 8, pos + 8 + count + (-count % 8)


def _mat_numeric(buf: bytes, start: int, end: int, order: str) -> tuple[str, np.ndarray]:
    """Name and values of the content of one miMATRIX element (``buf[start:end]``)."""
    kind, count, data, pos = _mat_tag(buf, start, end, order)
    if kind != 6 or count != 8:
        raise _MatError("a matrix does not start with its array flags")
    flags = struct.unpack_from(order + "I", buf, data)[0]
    mx_class, is_complex = flags & 0xFF, bool(flags & 0x0800)
    kind, count, data, pos = _mat_tag(buf, pos, end, order)
    if kind != 5 or count % 4 or count < 8:
        raise _MatError("a matrix has no valid dimensions")
    dims = struct.unpack_from(f"{order}{count // 4}i", buf, data)
    if any(d < 0 for d in dims):
        raise _MatError(f"a matrix has negative dimensions {dims}")
    kind, count, data, pos = _mat_tag(buf, pos, end, order)
    if kind not in (1, 2):
        raise _MatError("a matrix has no name")
    name = buf[data : data + count].decode("ascii", errors="replace")
    if mx_class not in _MX_CLASSES or is_complex:
        return name, np.empty(0, dtype=object)  # not a real numeric array: the caller says what it needs
    kind, count, data, pos = _mat_tag(buf, pos, end, order)
    if kind not in _MI_TYPES:
        raise _MatError(f"matrix {name!r} stores its values with the unknown data type {kind}")
    stored = np.dtype(_MI_TYPES[kind]).newbyteorder(order)
    n = math.prod(dims)
    if count != n * stored.itemsize:  # checked before anything of the declared size is allocated
        raise _MatError(f"matrix {name!r} of shape {dims} has {count} bytes of values, expected {n * stored.itemsize}")
    # The type the values are stored with, as scipy.io.loadmat returns them (MATLAB stores whole
    # doubles as integers); the class only has to be numeric.
    values = np.frombuffer(buf, dtype=stored, count=n, offset=data).astype(stored.newbyteorder("="))
    return name, values.reshape(dims, order="F")


def _mat_inflate(stream: bytes, order: str) -> bytes:
    """Inflate the miMATRIX element of a compressed element, no further than its declared size."""
    inflate = zlib.decompressobj()
    try:
        head = inflate.decompress(stream, 8)
        if len(head) < 8:
            raise _MatError("a compressed element is truncated")
        kind, count = struct.unpack(order + "II", head)
        if kind != _MI_MATRIX:
            raise _MatError("a compressed element does not hold a matrix")
        body = inflate.decompress(inflate.unconsumed_tail, count)
    except zlib.error as err:
        raise _MatError(f"a compressed element cannot be decompressed ({err})") from None
    if len(body) < count:
        raise _MatError(f"a compressed element holds {len(body)} of the {count} bytes it declares")
    return body


def _read_mat5(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Real numeric matrices ``names`` of a MATLAB level 5 file (plain or compressed elements).

    A small reader instead of :func:`scipy.io.loadmat`, which crashes the interpreter on some
    damaged files (segmentation faults) and allocates what a damaged header claims. Every size
    is checked against the bytes present before it is used.
    """
    buf = path.read_bytes()
    if len(buf) < 128 or buf[126:128] not in (b"IM", b"MI"):
        raise ValueError(f"{path.name} is not a MATLAB 5 file (no MAT-file header with an endian indicator).")
    order = "<" if buf[126:128] == b"IM" else ">"
    found: dict[str, np.ndarray] = {}
    pos = 128
    try:
        while pos < len(buf) and not set(names) <= set(found):
            kind, count, data, pos = _mat_tag(buf, pos, len(buf), order)
            if kind == _MI_COMPRESSED:
                pos = data + count  # compressed elements are not padded
                element = _mat_inflate(buf[data:pos], order)
                name, values = _mat_numeric(element, 0, len(element), order)
            elif kind == _MI_MATRIX:
                name, values = _mat_numeric(buf, data, data + count, order)
            else:
                raise _MatError(f"unexpected data type {kind} at the top level")
            found.setdefault(name, values)
    except _MatError as err:
        raise ValueError(f"Cannot read the MATLAB file {path.name}: {err}.") from None
    return {name: found[name] for name in names if name in found}


# SpiceMix's cell filter on this sample (its public data notebook): 200 < total counts <= 3000.
MIN_COUNTS_EXCLUSIVE = 200
MAX_COUNTS = 3000


def _rds_payload(path: Path) -> bytes:
    raw = path.read_bytes()
    # saveRDS compresses with gzip by default; bzip2 and xz are its other choices.
    codecs = {b"\x1f\x8b": ("gzip", gzip.decompress), b"BZh": ("bzip2", bz2.decompress)}
    codecs[b"\xfd7zXZ\x00"] = ("xz", lzma.decompress)
    for magic, (codec, decompress) in codecs.items():
        if raw.startswith(magic):
            try:
                raw = decompress(raw)
            except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as err:
                raise ValueError(
                    f"{path.name}: the {codec} stream of the R object is truncated or damaged ({err})."
                ) from None
            break
    # saveRDS writes the serialisation as it is; save() (an .RData file) puts "RDX2\n"/"RDX3\n" before it.
    if raw[:5] in (b"RDX2\n", b"RDX3\n"):
        raw = raw[5:]
    if not raw.startswith(b"X\n"):
        raise ValueError(f"{path.name} is not an R object in XDR serialisation (an .rds or .RData file).")
    return raw


def _rds_character_vectors(path: Path, length: int) -> list[list[str]]:
    """Every character vector of exactly ``length`` elements in an ``.rds`` file.

    R's XDR serialisation ("R Internals", Serialization Formats) writes an object as a big-endian
    32-bit flags word whose low byte is its type, then its content: a character vector (type 16,
    STRSXP) is its length followed by that many strings (type 9, CHARSXP), each a flags word, a byte
    length (-1 for NA) and the bytes. A Seurat object stores its gene names as such a vector
    (the dimnames of its matrices), so the vectors of the right length are found without a full
    R reader: every candidate position is parsed and kept only if all its elements are strings.
    """
    raw = _rds_payload(path)
    # A lookahead, so that overlapping candidates are all tried.
    header = re.compile(rb"(?=\x00[\x00-\xff][\x00-\xff]\x10" + re.escape(struct.pack(">i", length)) + rb")", re.S)
    found = []
    for match in header.finditer(raw):
        pos, names = match.start() + 8, []
        for _ in range(length):
            if pos + 8 > len(raw):
                break
            flags, size = struct.unpack_from(">ii", raw, pos)
            if flags & 0xFF != 9 or size < -1 or pos + 8 + max(size, 0) > len(raw):
                break
            if size == -1:
                break  # an NA is not a gene name
            names.append(raw[pos + 8 : pos + 8 + size].decode("utf-8", errors="replace"))
            pos += 8 + size
        if len(names) == length:
            found.append(names)
    return found


def _genes_from_rds(rds: Path, n_genes: int) -> bytes:
    vectors = {tuple(v) for v in _rds_character_vectors(rds, n_genes)}
    if len(vectors) != 1:
        raise ValueError(
            f"Expected one character vector of {n_genes} gene names in {rds.name}, found {len(vectors)}; "
            f"cannot tell the gene names of {COUNTS_FILE}."
        )
    genes = vectors.pop()
    # Written one a line and read back with str.splitlines, a name must be one non-empty line.
    broken = [g for g in genes if g.splitlines() != [g]]
    if broken:
        raise ValueError(
            f"{rds.name}: empty gene names or names with line breaks, e.g. {broken[0]!r}; the R object is damaged."
        )
    return "".join(f"{g}\n" for g in genes).encode()


def _n_columns(path: Path) -> int:
    with open(path) as fh:
        return len(fh.readline().rstrip("\r\n").split(","))


def _visual_files(path, base_url: str, progress: bool) -> dict[str, Path]:
    names = [COUNTS_FILE, GENES_FILE, LABELS_FILE, CENTROIDS_FILE]
    if path is not None:
        return _require(_dataset_folder(path, VISUAL_DIR, names), names, "STARmap visual cortex")
    folder = _root(None) / VISUAL_DIR
    files = {name: _download(remote, name, folder, base_url, progress) for name, remote in VISUAL_FILES.items()}

    def make():
        rds = _download(GENES_SOURCE, GENES_RDS, folder, base_url, progress)
        return _genes_from_rds(rds, _n_columns(files[COUNTS_FILE]))

    files[GENES_FILE] = _derived(folder, GENES_FILE, GENES_SHA256, make, GENES_RDS)
    return files


def _read_table(path: Path, **kwargs) -> pd.DataFrame:
    """``pd.read_csv`` whose parser and decoding errors name the file."""
    try:
        return pd.read_csv(path, **kwargs)
    except (ValueError, UnicodeError, OverflowError, csv.Error) as err:  # ParserError, EmptyDataError, ...
        raise ValueError(f"Cannot read {path.name}: {type(err).__name__}: {err}") from None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path.name} is not UTF-8 text ({err}).") from None


def _read_counts(path: Path) -> np.ndarray:
    table = _read_table(path, header=None)
    if not all(pd.api.types.is_integer_dtype(t) for t in table.dtypes):
        raise ValueError(f"{path.name} must hold integer counts (cells x genes, no header), found non-integer values.")
    counts = table.to_numpy()
    if counts.size and counts.min() < 0:
        raise ValueError(f"{path.name} has negative counts.")
    return counts


def _read_names(path: Path) -> list[str]:
    # One name a line; the Seurat object carries one with a trailing space ("Eef1akmt1 ").
    names = [line.strip() for line in _read_text(path).splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names or not all(names):
        raise ValueError(f"{path.name} must list one gene name a line, without empty lines.")
    return names


def _read_centroids(path: Path, n_cells: int, counts_name: str) -> np.ndarray:
    table = _read_table(path, sep=r"\s+")
    if table.shape[1] != 2 or not all(pd.api.types.is_numeric_dtype(t) for t in table.dtypes):
        raise ValueError(f"{path.name} must have two numeric columns (a header line, then x y per cell).")
    if len(table) != n_cells:
        raise ValueError(f"{path.name} has {len(table)} centroids but {counts_name} has {n_cells} cells.")
    centroids = table.to_numpy(dtype=np.float64)
    if not np.isfinite(centroids).all():
        raise ValueError(f"{path.name} has missing or infinite coordinates.")
    return centroids


def _read_labels(path: Path, n_cells: int, counts_name: str) -> pd.DataFrame:
    table = _read_table(path)
    needed = ["CellID", "ClusterID", "ClusterName"]
    if not set(needed) <= set(table.columns):
        raise ValueError(f"{path.name} must have the columns {needed}, found {list(table.columns)}.")
    if len(table) != n_cells:
        raise ValueError(f"{path.name} labels {len(table)} cells but {counts_name} has {n_cells} cells.")
    if not np.array_equal(table["CellID"].to_numpy(), np.arange(n_cells)):
        raise ValueError(f"{path.name}: CellID must be 0, 1, ... in the row order of {counts_name}.")
    if not pd.api.types.is_integer_dtype(table["ClusterID"]):
        raise ValueError(f"{path.name}: ClusterID must be an integer per cell (-1 for cells without a type).")
    # Every cluster id has one name and every name one id: they become the categories.
    typed = table[table["ClusterID"] != -1]
    if typed["ClusterName"].isna().any():
        raise ValueError(f"{path.name}: cells with a ClusterID other than -1 need a ClusterName.")
    pairs = typed[["ClusterID", "ClusterName"]].astype({"ClusterName": str}).drop_duplicates()
    if pairs["ClusterID"].duplicated().any() or pairs["ClusterName"].duplicated().any():
        raise ValueError(f"{path.name}: each ClusterID must have one ClusterName and each name one id.")
    return table


def starmap_visual_cortex(
    path: str | os.PathLike | None = None,
    *,
    filter_cells: bool = True,
    base_url: str = GITHUB_RAW,
    progress: bool = False,
) -> AnnData:
    """STARmap mouse visual cortex, 1,020 genes: counts, centroids and the published cell types.

    The STARmap sample ``visual_1020/20180410-BY3_1kgenes`` of Wang et al. (Science 2018), the one
    SpiceMix analyses (:cite:`chidester2023spicemix`): 973 segmented cells, 1,020 genes. Files
    (originals, unchanged):

    - ``cell_barcode_count.csv``: counts, cells x genes, no header;
    - ``genes_from_rds.csv``: the gene names in column order, one a line (surrounding whitespace
      is stripped);
    - ``class_labels.csv``: ``CellID``, ``ClusterID``, ``ClusterName``, the published cell types
      (``ClusterID`` -1 for the 43 cells without a type);
    - ``Centriods_extracted.csv``: cell centroids, space separated, header ``0 1``.

    ``path=None`` looks in ``$SPATIALFACTORS_DATA/starmap_visual_1020/`` (else the pooch cache) and
    downloads what is missing from ``xzhoulab/SRTsim-Analysis`` at commit ``d369f9c0``
    (``<base_url>/xzhoulab/SRTsim-Analysis/d369f9c0c062c5af0bb47491557b31adcdccfbef/rawdata/STARmap/<file>``),
    each checked against its SHA256. The repository has the gene names only inside its Seurat object
    ``CCI_analysis/starmap_1020_0410_seurat_filter_layer.rds``; it is downloaded (SHA256-checked), its
    vector of 1,020 gene names is read and written as ``genes_from_rds.csv``, which must match the
    known SHA256 too. The repository has no licence file: use the data for research and tests.

    Parameters
    ----------
    path
        Folder with the four files (or a data root with a ``starmap_visual_1020/`` folder); no
        download then. ``None``: data root and download as above.
    filter_cells
        Keep SpiceMix's 930 cells, those with 200 < total counts <= 3000 (exactly the cells with
        a published type). ``False`` keeps all 973.
    base_url
        Host of the raw GitHub files (a mirror serving ``<owner>/<repo>/<commit>/<path>``).
    progress
        Show download progress bars.

    Returns
    -------
    Cells x genes AnnData:

    - ``X``: the integer counts as a sparse CSR float32 matrix (72% zeros; float so that
      :func:`scanpy.pp.normalize_total` works in place, every value exact);
    - ``obs``: ``ClusterID`` and ``ClusterName`` (categorical, NaN for ClusterID -1),
      ``total_counts``, ``passes_filter`` (200 < total counts <= 3000); names ``cell_<CellID>``;
    - ``obsm['spatial']``: centroids (n, 2) in image pixels, the file's two columns in order
      (the second runs across the cortical layers: the hippocampus is near 0);
    - ``uns['provenance']``: data set, publication, source files, the filter applied.

    Examples
    --------
    >>> import spatialfactors as sf
    >>> adata = sf.datasets.starmap_visual_cortex()  # doctest: +SKIP
    >>> adata.shape  # doctest: +SKIP
    (930, 1020)
    >>> adata.obs["ClusterName"].value_counts().head(3).to_dict()  # doctest: +SKIP
    {'eL4': 138, 'Oligo': 124, 'eL2/3': 116}
    """
    if not isinstance(filter_cells, bool):
        raise TypeError(f"`filter_cells` must be True or False, got {filter_cells!r}.")
    files = _visual_files(path, base_url, progress)
    counts = _read_counts(files[COUNTS_FILE])
    genes = _read_names(files[GENES_FILE])
    if counts.shape[1] != len(genes):
        raise ValueError(f"{COUNTS_FILE} has {counts.shape[1]} gene columns but {GENES_FILE} lists {len(genes)} genes.")
    n_cells = counts.shape[0]
    centroids = _read_centroids(files[CENTROIDS_FILE], n_cells, COUNTS_FILE)
    labels = _read_labels(files[LABELS_FILE], n_cells, COUNTS_FILE)

    total = counts.sum(axis=1)
    passes = (total > MIN_COUNTS_EXCLUSIVE) & (total <= MAX_COUNTS)
    ids = labels["ClusterID"].to_numpy()
    named = ids != -1
    # Categories in the order of the published cluster ids (0 HPC, 1 eL2/3, ...).
    order = labels[named].drop_duplicates("ClusterID").sort_values("ClusterID")
    obs = pd.DataFrame(
        {
            "ClusterID": pd.Categorical(np.where(named, ids, -1), categories=order["ClusterID"].tolist()),
            "ClusterName": pd.Categorical(
                labels["ClusterName"].where(named), categories=order["ClusterName"].astype(str).tolist()
            ),
            "total_counts": total.astype(np.int64),
            "passes_filter": passes,
        },
        index=[f"cell_{i}" for i in labels["CellID"]],
    )
    adata = AnnData(
        sp.csr_matrix(counts.astype(np.float32)),
        obs=obs,
        var=pd.DataFrame(index=pd.Index(genes, name=None)),
        obsm={"spatial": centroids},
    )
    source = {name: VISUAL_FILES[name].url() for name in VISUAL_FILES}
    source[GENES_FILE] = f"read from {GENES_SOURCE.url()}"
    adata.uns["provenance"] = {
        "dataset": "STARmap mouse visual cortex, 1,020 genes, sample visual_1020/20180410-BY3_1kgenes",
        "publication": PUBLICATION,
        "source": source,
        "n_cells_file": int(n_cells),
        "filter": (f"{MIN_COUNTS_EXCLUSIVE} < total counts <= {MAX_COUNTS} (SpiceMix)" if filter_cells else "none"),
        "units": "image pixels",
    }
    if filter_cells:
        adata = adata[passes].copy()
    if not adata.var_names.is_unique:
        adata.var_names_make_unique()
    return adata


def _read_gene_names_csv(path: Path) -> list[str]:
    # "<index>,<name>" per line, no header; one line of the original reads "16,Calb2,".
    names = []
    for i, line in enumerate(_read_text(path).splitlines()):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 2 or fields[0] != str(i) or not fields[1]:
            raise ValueError(f"{path.name} line {i + 1} must read '{i},<gene name>', got {line!r}.")
        names.append(fields[1])
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{path.name} lists the gene name(s) {repeated[:5]} more than once.")
    return names


def starmap_3d_cortex(
    path: str | os.PathLike | None = None,
    *,
    base_url: str = GITHUB_RAW,
    progress: bool = False,
) -> AnnData:
    """STARmap 3D mouse visual cortex, 28 genes in 33,598 cells: expression and 3D cell positions.

    The 3D STARmap volume of Wang et al. (Science 2018) as distributed by Giotto's data repository
    (``drieslab/spatial-datasets``, ``data/2018_starmap_3D_cortex/raw_data/``, MIT): the MATLAB file
    ``20180123_BS10_light.mat`` with ``expr`` (cells x 28 genes, int32) and ``goodLocs`` (cells x 3
    cell positions), and ``gene_names.csv`` (``index,name`` per line, in column order).

    ``path=None`` looks in ``$SPATIALFACTORS_DATA/starmap_3d_cortex/`` (else the pooch cache) and
    downloads what is missing from
    ``<base_url>/drieslab/spatial-datasets/12a495fe6b2394a703f570615b3470d3b3d2bec8/data/2018_starmap_3D_cortex/raw_data/<file>``,
    each checked against its SHA256.

    Parameters
    ----------
    path
        Folder with the two files (or a data root with a ``starmap_3d_cortex/`` folder); no
        download then.
    base_url
        Host of the raw GitHub files.
    progress
        Show download progress bars.

    Returns
    -------
    Cells x genes AnnData: ``X`` dense float32, the values of ``expr`` as they are (whole numbers,
    per-cell totals around 10^5, not small read counts; every value exact in float32);
    ``obsm['spatial']`` (n, 3) the ``goodLocs`` columns in order (voxel positions in the image
    stack; the third is the depth plane); names ``cell_<row>``; ``uns['provenance']``.

    Examples
    --------
    >>> import spatialfactors as sf
    >>> adata = sf.datasets.starmap_3d_cortex()  # doctest: +SKIP
    >>> adata.shape, adata.obsm["spatial"].shape  # doctest: +SKIP
    ((33598, 28), (33598, 3))
    """
    names = [MAT_FILE, GENE_NAMES_FILE]
    if path is not None:
        files = _require(_dataset_folder(path, VOLUME_DIR, names), names, "STARmap 3D cortex")
    else:
        folder = _root(None) / VOLUME_DIR
        files = {name: _download(remote, name, folder, base_url, progress) for name, remote in VOLUME_FILES.items()}
    mat = _read_mat5(files[MAT_FILE], ("expr", "goodLocs"))
    missing = [v for v in ("expr", "goodLocs") if v not in mat]
    if missing:
        raise ValueError(f"{MAT_FILE} lacks the variable(s) {missing}; expected `expr` and `goodLocs`.")
    expr, locs = np.asarray(mat["expr"]), np.asarray(mat["goodLocs"])
    for var, values in (("expr", expr), ("goodLocs", locs)):
        if values.ndim != 2 or values.dtype.kind not in "iuf":
            raise ValueError(
                f"{MAT_FILE}: `{var}` must be a real numeric matrix, got shape {values.shape} of dtype {values.dtype}."
            )
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise ValueError(f"{MAT_FILE}: `{var}` has NaN or infinite values.")
    genes = _read_gene_names_csv(files[GENE_NAMES_FILE])
    if expr.shape[1] != len(genes):
        raise ValueError(
            f"{MAT_FILE}: `expr` has {expr.shape[1]} gene columns but {GENE_NAMES_FILE} lists {len(genes)}."
        )
    if locs.shape != (expr.shape[0], 3):
        raise ValueError(
            f"{MAT_FILE}: `goodLocs` has shape {locs.shape} but `expr` has {expr.shape[0]} cells; expected "
            f"({expr.shape[0]}, 3)."
        )
    adata = AnnData(
        expr.astype(np.float32),
        obs=pd.DataFrame(index=[f"cell_{i}" for i in range(expr.shape[0])]),
        var=pd.DataFrame(index=pd.Index(genes)),
        obsm={"spatial": locs.astype(np.float64)},
    )
    adata.uns["provenance"] = {
        "dataset": "STARmap 3D mouse visual cortex, 28 genes (20180123_BS10_light)",
        "publication": PUBLICATION,
        "source": {name: VOLUME_FILES[name].url() for name in VOLUME_FILES},
        "units": "image voxels (x, y, plane)",
    }
    return adata
