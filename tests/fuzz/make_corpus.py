"""Write the seed corpus of the reader fuzz targets (``corpus/<format>/``): tiny synthetic files.

Every seed is a valid file in the layout of the real data (the same columns, separators, header
keys and byte layouts), made up here, a few hundred bytes each. Run from the repository root::

    python tests/fuzz/make_corpus.py

The output is deterministic (fixed zip timestamps, gzip mtime 0), so rerunning it leaves the
committed corpus unchanged.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse
from _fuzzing import ZIP64_CLAIM, zip_with_claims

CORPUS = Path(__file__).parent / "corpus"
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)


def _mhd(dims, etype, data_file, *, msb=False, extra="") -> str:
    n = len(dims)
    return (
        f"ObjectType = Image\nNDims = {n}\nBinaryData = True\nBinaryDataByteOrderMSB = {msb}\n{extra}"
        f"ElementSpacing = {' '.join(['200'] * n)}\nDimSize = {' '.join(map(str, dims))}\n"
        f"ElementType = {etype}\nElementDataFile = {data_file}\n"
    )


def _zip(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = compression
            zf.writestr(info, data)


def metaimage(folder: Path) -> None:
    vol = np.arange(24, dtype="<f4").reshape((2, 3, 4), order="F") - 5
    (folder / "grid.mhd").write_text(_mhd((2, 3, 4), "MET_FLOAT", "grid.raw"))
    (folder / "grid.raw").write_bytes(vol.tobytes(order="F"))
    short = np.arange(6, dtype=">i2").reshape((3, 2), order="F") - 2
    (folder / "big_endian.mhd").write_text(_mhd((3, 2), "MET_SHORT", "big_endian.raw", msb=True))
    (folder / "big_endian.raw").write_bytes(short.tobytes(order="F"))
    # Data after 8 bytes of a file header (HeaderSize).
    (folder / "offset.mhd").write_text(_mhd((4,), "MET_INT", "offset.raw", extra="HeaderSize = 8\n"))
    (folder / "offset.raw").write_bytes(b"HEADER!!" + np.arange(4, dtype="<i4").tobytes())
    # .mha: data inline after the header; one plain, one zlib-compressed.
    (folder / "inline.mha").write_bytes(_mhd((5,), "MET_UCHAR", "LOCAL").encode() + bytes(range(5)))
    data = np.linspace(0, 1, 6).astype("<f8").tobytes()
    packed = zlib.compress(data)
    extra = f"CompressedData = True\nCompressedDataSize = {len(packed)}\n"
    (folder / "compressed.mha").write_bytes(_mhd((2, 3), "MET_DOUBLE", "LOCAL", extra=extra).encode() + packed)


def metaimage_zip(folder: Path) -> None:
    """Allen's grid downloads: one .mhd/.raw pair (and other members) in a zip archive."""
    energy = np.linspace(-1, 3, 2 * 3 * 2).astype("<f4")
    _zip(
        folder / "Gene_P56_coronal_1_200um.zip",
        {
            "energy.mhd": _mhd((2, 3, 2), "MET_FLOAT", "energy.raw").encode(),
            "energy.raw": energy.tobytes(),
            "data_set.xml": b"<?xml version='1.0'?><data-set><id>1</id></data-set>\n",
        },
    )
    ids = np.array([0, 8, 997, 8, 0, 315], dtype="<u4")
    _zip(
        folder / "gridAnnotation.zip",
        {
            "gridAnnotation/": b"",
            "gridAnnotation/gridAnnotation.mhd": _mhd((3, 2), "MET_UINT", "gridAnnotation.raw").encode(),
            "gridAnnotation/gridAnnotation.raw": ids.tobytes(),
        },
        compression=zipfile.ZIP_STORED,
    )


def metaimage_zip_refused(folder: Path) -> None:
    """Archives of a few KB that every reader must refuse without allocating what they claim.

    The zip64 directory of each ``*_zip64_*`` archive claims 64 GiB for ``energy.raw`` (its header's
    DimSize asks for as much); the others are damaged the way downloads are: a bad CRC in
    ``data_set.xml``, cut short, or not a zip at all.
    """
    mhd = _mhd((2048, 2048, 4096), "MET_FLOAT", "energy.raw").encode()  # 2**34 floats: 64 GiB
    members = [("energy.mhd", mhd), ("energy.raw", bytes(12_000))]
    for method, name, claim in [
        (zipfile.ZIP_STORED, "stored", (ZIP64_CLAIM, ZIP64_CLAIM)),
        (zipfile.ZIP_DEFLATED, "deflated", (ZIP64_CLAIM, None)),
        (zipfile.ZIP_BZIP2, "bzip2", (ZIP64_CLAIM, None)),
    ]:
        archive = zip_with_claims(members, compression=method, claims={"energy.raw": claim})
        (folder / f"Gene_P56_coronal_1_zip64_{name}.zip").write_bytes(archive)
    energy = np.linspace(-1, 3, 2 * 3 * 2).astype("<f4")
    xml = b"<?xml version='1.0'?><data-set><id>1</id></data-set>\n"
    valid = zip_with_claims(
        [("energy.mhd", _mhd((2, 3, 2), "MET_FLOAT", "energy.raw").encode()), ("energy.raw", energy.tobytes())]
        + [("data_set.xml", xml)],
        compression=zipfile.ZIP_STORED,
    )
    at = valid.index(b"<data-set>")
    (folder / "Gene_P56_coronal_2_bad_crc.zip").write_bytes(valid[:at] + b"<dAta-set>" + valid[at + 10 :])
    (folder / "Gene_P56_coronal_3_truncated.zip").write_bytes(valid[: len(valid) // 2])
    (folder / "Gene_P56_coronal_4_random.zip").write_bytes(np.random.default_rng(0).bytes(2_000))


ONTOLOGY_ROWS = [
    # id, acronym, name, parent, path, color, graph_order
    (997, "root", "root", "", "/997/", "FFFFFF", 0),
    (8, "grey", "Basic cell groups and regions", 997, "/997/8/", "BFDAE3", 1),
    (567, "CH", "Cerebrum", 8, "/997/8/567/", "B0F0FF", 2),
    (315, "Isocortex", "Isocortex", 567, "/997/8/567/315/", "70FF71", 3),
    (320, "MOp1", "Primary motor area, Layer 1", 315, "/997/8/567/315/320/", "1F9D5A", 4),
    (1009, "fiber tracts", "fiber tracts", 997, "/997/1009/", "CCCCCC", 5),
]


def ontology(folder: Path) -> None:
    header = "id,acronym,name,parent_structure_id,structure_id_path,color_hex_triplet,graph_order\n"
    body = "".join(f'{i},{a},"{n}",{p},{s},{c},{g}\n' for i, a, n, p, s, c, g in ONTOLOGY_ROWS)
    (folder / "structures.csv").write_text(header + body)
    # Parents only, with the background row and a colour that lost its leading zero.
    body = "".join(f'{i},{a},"{n}",{p}\n' for i, a, n, p, *_ in ONTOLOGY_ROWS)
    (folder / "parents.csv").write_text("id,acronym,name,parent_structure_id\n0,void,void,\n" + body)
    # Paths only, the allensdk spelling of the id column and rgb triplets.
    body = "".join(f'{i},{a},"{n}",{s},"[{int(c[:2], 16)}, {int(c[2:4], 16)}, {int(c[4:], 16)}]"\n'
                   for i, a, n, _, s, c, _ in ONTOLOGY_ROWS)  # fmt: skip
    (folder / "paths_rgb.csv").write_text("structure_id,acronym,name,structure_id_path,rgb_triplet\n" + body)


def starmap_visual(folder: Path) -> None:
    counts = np.array([[120, 90, 0, 3], [0, 250, 5, 1], [40, 0, 300, 0], [2, 1, 0, 0], [500, 600, 700, 800]])
    (folder / "cell_barcode_count.csv").write_text("".join(",".join(map(str, r)) + "\n" for r in counts))
    (folder / "genes_from_rds.csv").write_text("Slc17a7\nMgp \nGad1\nCalb2\n")
    (folder / "class_labels.csv").write_text(
        "CellID,ClusterID,ClusterName\n0,1,eL2/3\n1,5,eL6-2\n2,1,eL2/3\n3,-1,\n4,0,HPC\n"
    )
    (folder / "Centriods_extracted.csv").write_text("0 1\n35.42 14117.27\n53.99 5090.07\n10.5 200.25\n0 0\n1e3 2.5e2\n")


def _strsxp(names: list[str]) -> bytes:
    # R's XDR serialisation of a character vector: STRSXP, length, CHARSXP (UTF-8 flag) elements.
    out = struct.pack(">ii", 16, len(names))
    for name in names:
        raw = name.encode()
        out += struct.pack(">ii", 0x00008009, len(raw)) + raw
    return out


def rds(folder: Path) -> None:
    """Small R objects holding a 4-gene character vector (the STARmap gene names are read like this)."""
    body = b"X\n" + struct.pack(">iii", 3, 0x040102, 0x030500) + b"\x00\x00\x00\x05UTF-8"
    body += struct.pack(">i", 0x0313) + _strsxp(["a", "b", "c"])  # another vector, of another length
    body += struct.pack(">i", 0x0313) + _strsxp(["Slc17a7", "Mgp ", "Gad1", "Calb2"])
    (folder / "genes_gzip.rds").write_bytes(gzip.compress(body, mtime=0))
    (folder / "genes_plain.rds").write_bytes(body)
    (folder / "genes_bzip2.rds").write_bytes(bz2.compress(body))
    (folder / "genes_xz.rds").write_bytes(lzma.compress(body))
    (folder / "genes_save.RData").write_bytes(gzip.compress(b"RDX2\n" + body, mtime=0))


def starmap_3d(folder: Path) -> None:
    expr = np.array([[1, 2, 0], [3, 4, 10], [0, 5, 7], [9, 9, 9]], dtype=np.int32)
    locs = np.array([[1.0, 2, 3], [4, 5, 6], [7, 8, 9], [0, 0, 1]])
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"expr": expr, "goodLocs": locs})
    # The MAT header text carries the creation time; a fixed one keeps the seed file reproducible.
    text = b"MATLAB 5.0 MAT-file, written by tests/fuzz/make_corpus.py".ljust(116)
    (folder / "20180123_BS10_light.mat").write_bytes(text + buf.getvalue()[116:])
    (folder / "gene_names.csv").write_text("0,Slc17a7\n1,Mgp\n2,Calb2,\n")


_CELLS = [  # fov, x, y, louvain, cell type; cells are numbered 1, 2, ... across all fields
    (0, 1632.02, 1305.70, 13, "Excitatory neuron"),
    (0, 1589.47, 669.51, 3, "Astrocyte"),
    (0, 1539.89, 1185.90, 13, "Excitatory neuron"),
    (1, 200.5, 10.25, 7, "Microglia"),
    (5, 12.0, 1.5, 3, "Astrocyte"),
]
_GENES = ["Aanat", "Gad1", "Mgp"]


def _seqfish_common(folder: Path) -> None:
    (folder / "cortex_svz_cell_type_annotations.csv").write_text(
        "index,louvain\n" + "".join(f"{k},{c[3]}\n" for k, c in enumerate(_CELLS))
    )
    (folder / "cortex_svz_centroids_annot.txt").write_text(
        "ID\tFOV\tcell_types\n" + "".join(f"cell_{k + 1}\t{c[0]}\t{c[4]}\n" for k, c in enumerate(_CELLS))
    )


def seqfish_fov0(folder: Path) -> None:
    """Giotto's field-of-view-0 subset layout; cells numbered 1.. across all fields as drieslab does."""
    _seqfish_common(folder)
    (folder / "cortex_svz_centroids_rotated.csv").write_text(
        "Field of View,Cell ID,X,Y\n" + "".join(f"{c[0]},{k + 1},{c[1]:.2f},{c[2]:.2f}\n" for k, c in enumerate(_CELLS))
    )
    fov0 = [k for k, c in enumerate(_CELLS) if c[0] == 0]
    counts = [[0, 2, 1], [5, 0, 0], [1, 1, 7]]
    expr = " ".join(f"cell_{k + 1}" for k in fov0) + "\n"
    expr += "".join(
        f"{g} " + " ".join(str(counts[k][i]) for k in range(len(fov0))) + "\n" for i, g in enumerate(_GENES)
    )
    (folder / "seqfish_field_expr.txt.gz").write_bytes(gzip.compress(expr.encode(), mtime=0))
    (folder / "seqfish_field_locs.txt").write_text("".join(f"{_CELLS[k][1]} {-_CELLS[k][2]}\n" for k in fov0))


def seqfish_full(folder: Path) -> None:
    """CaiGroup's source data layout: ``sourcedata/`` with counts (header of genes) and centroids."""
    _seqfish_common(folder)
    source = folder / "sourcedata"
    source.mkdir()
    rows = [[0, 2, 1], [5, 0, 0], [1, 1, 7], [0, 0, 0], [3, 9, 2]]
    (source / "cortex_svz_counts.csv").write_text(
        ",".join(_GENES) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows)
    )
    (source / "cortex_svz_cellcentroids.csv").write_text(
        "Field of View,Cell ID,X,Y,Region\n"
        + "".join(f"{c[0]},{k + 1},{c[1]},{c[2]},{'SVZ' if c[0] >= 5 else 'Cortex'}\n" for k, c in enumerate(_CELLS))
    )


class _S4:
    """An R S4 object (class name and slots), written by :func:`_s4_to_r` through ``rdata``."""

    def __init__(self, cls: str, **slots):
        self.cls, self.slots = cls, slots


def _s4_to_r(data: _S4, converter):
    from rdata.conversion.to_r import build_r_object
    from rdata.parser import RObjectType

    attributes = converter.convert_to_r_attributes({**data.slots, "class": np.array([data.cls])})
    return build_r_object(RObjectType.S4, is_object=True, attributes=attributes)


def _factor_to_r(data, converter):
    # rdata writes the code of a missing value as 0; R's is NA_integer_ (-2**31).
    from rdata.conversion.to_r import build_r_object
    from rdata.parser import RObjectType

    attributes = converter.convert_to_r_attributes({"levels": np.asarray(data.categories), "class": "factor"})
    codes = data.codes.astype(np.int64)
    codes = np.where(codes < 0, -(2**31), codes + 1).astype(np.int32)
    return build_r_object(RObjectType.INT, value=codes, is_object=True, attributes=attributes)


def write_rda(path: Path, objects: dict, *, compress=lambda b: gzip.compress(b, mtime=0)) -> None:
    """Write R objects (``_S4`` objects among them) as R's ``save()`` does: XDR, gzip (mtime 0 here).

    ``rdata`` converts the objects; its XDR writer lacks S4 objects, which have no data of their
    own: their header (type 25, object and attribute bits) and their attributes (slots, class).
    """
    from rdata.conversion import convert_python_to_r_data
    from rdata.conversion.to_r import DEFAULT_CLASS_MAP
    from rdata.parser import RObjectType
    from rdata.unparser import UnparserXDR

    class Unparser(UnparserXDR):
        def unparse_r_object(self, obj) -> None:
            if obj.info.type != RObjectType.S4:
                return super().unparse_r_object(obj)
            self.unparse_int(RObjectType.S4.value | 1 << 8 | 1 << 9)
            self.unparse_r_object(obj.attributes)
            return None

    import pandas as pd

    constructors = {**DEFAULT_CLASS_MAP, pd.Categorical: _factor_to_r, _S4: _s4_to_r}
    r_data = convert_python_to_r_data(objects, constructor_dict=constructors, file_type="rda")
    buffer = io.BytesIO()
    buffer.write(f"RDX{r_data.versions.format}\n".encode())
    Unparser(buffer).unparse_r_data(r_data)
    path.write_bytes(compress(buffer.getvalue()))


#: A hexagonal patch of 7 Visium spots: (array row, array col, layer); None: a spot without a layer.
DLPFC_SPOTS = [(0, 0, "Layer1"), (0, 2, "Layer1"), (0, 4, "Layer2"), (1, 1, "WM"), (1, 3, None), (2, 0, "Layer2"),
               (2, 2, "Layer1")]  # fmt: skip
DLPFC_GENES = ["ENSG00000187608", "ENSG00000162545", "ENSG00000142676", "ENSG00000117632"]


def dlpfc_seurat(counts: np.ndarray | None = None, **meta_columns) -> _S4:
    """A Seurat object laid out as DR.SC's ``dlpfc151510`` (RNA assay with a dgCMatrix, meta.data), made up here."""
    import pandas as pd

    if counts is None:  # genes x spots, one empty spot column
        counts = np.array([[3, 0, 1, 0, 0, 2, 1], [0, 5, 0, 2, 0, 1, 0], [1, 1, 0, 0, 0, 0, 7], [0, 0, 4, 9, 0, 1, 0]])
    barcodes = [f"AAAC{i:04d}GTATCTCC-1" for i in range(len(DLPFC_SPOTS))]
    csc = scipy.sparse.csc_matrix(counts.astype(np.float64))
    matrix = _S4(
        "dgCMatrix",
        i=csc.indices.astype(np.int32),
        p=csc.indptr.astype(np.int32),
        Dim=np.array(counts.shape, dtype=np.int32),
        Dimnames=[np.array(DLPFC_GENES), np.array(barcodes)],
        x=csc.data,
        factors=[],
    )
    assay = _S4("Assay", counts=matrix, data=matrix, key=np.array(["rna_"]))
    meta = pd.DataFrame(
        {
            "orig.ident": pd.Categorical(["SeuratProject"] * len(barcodes)),
            "nCount_RNA": counts.sum(0).astype(np.float64),
            "row": np.array([r for r, _, _ in DLPFC_SPOTS], dtype=np.int32),
            "col": np.array([c for _, c, _ in DLPFC_SPOTS], dtype=np.int32),
            "annotation": pd.Categorical([a for *_, a in DLPFC_SPOTS], categories=["Layer1", "Layer2", "WM"]),
        },
        index=barcodes,
    )
    for column, values in meta_columns.items():
        meta[column] = values
    return _S4("Seurat", assays={"RNA": assay}, **{"meta.data": meta}, **{"active.assay": np.array(["RNA"])})


def dlpfc_visium(folder: Path) -> None:
    """DR.SC's layout: ``dlpfc151510.rda`` holding the Seurat object ``dlpfc151510``."""
    write_rda(folder / "dlpfc151510.rda", {"dlpfc151510": dlpfc_seurat()})


#: osmFISH cells: CellID, X, Y, ClusterName, Region, Valid, size_um2.
OSMFISH_CELLS = [
    ("778", 18171.23, 24590.79, "Inhibitory CP", "Layer 6", 1, 257.35),
    ("1409", 19838.08, 6456.14, "Astrocyte Gfap", "Internal Capsule Caudoputamen", 1, 134.27),
    ("3642", 11247.43, 36626.89, "pyramidal L4", "Layer 4", 1, 186.50),
    ("12", -6565.45, 0.0, "Excluded", "Excluded", 0, 76.74),
    ("7925", 3390.91, 49626.24, "pyramidal L4", "Layer 4", 1, 157.82),
    ("5", 200.5, 1000.25, "Excluded", "Excluded", 0, 98.1),
]
OSMFISH_GENES = ["Gad2", "Slc32a1", "Crhbp", "Cnr1"]


def write_loom(path: Path, matrix: np.ndarray, row_attrs: dict, col_attrs: dict, *, chunks=None) -> None:
    """A loom file (HDF5: ``matrix`` genes x cells, ``row_attrs/``, ``col_attrs/``) without time stamps."""
    import h5py

    with h5py.File(path, "w", libver="latest") as f:
        kwargs = {"chunks": chunks, "compression": "gzip"} if chunks else {}
        f.create_dataset("matrix", data=matrix, track_times=False, **kwargs)
        for group, attrs in (("row_attrs", row_attrs), ("col_attrs", col_attrs)):
            g = f.create_group(group)
            for name, values in attrs.items():
                g.create_dataset(name, data=values, track_times=False)
        f.create_group("layers")
        f.attrs["description"] = b"osmFISH-like test file"


def osmfish_attrs() -> tuple[np.ndarray, dict, dict]:
    matrix = np.array([[0, 2, 1, 0, 5, 0], [3, 0, 0, 1, 0, 0], [12, 7, 0, 0, 1, 2], [0, 0, 9, 4, 2, 0]], dtype=np.int64)
    cols = list(zip(*OSMFISH_CELLS, strict=True))
    col_attrs = {
        "CellID": np.array(cols[0], dtype="S"),
        "X": np.array(cols[1]),
        "Y": np.array(cols[2]),
        "ClusterName": np.array(cols[3], dtype="S"),
        "Region": np.array(cols[4], dtype="S"),
        "Valid": np.array(cols[5], dtype=np.int64),
        "size_um2": np.array(cols[6]),
        "Total_molecules": matrix.sum(0),
    }
    return matrix, {"Gene": np.array(OSMFISH_GENES, dtype="S")}, col_attrs


def osmfish(folder: Path) -> None:
    """The authors' loom layout (``osmFISH_SScortex_mouse_all_cells.loom``), chunked and gzip-compressed like it."""
    matrix, row_attrs, col_attrs = osmfish_attrs()
    write_loom(folder / "osmFISH_SScortex_mouse_all_cells.loom", matrix, row_attrs, col_attrs, chunks=(4, 4))


def aba(folder: Path) -> None:
    """Allen's experiment manifest (gene lookup offline) and an API answer of the experiment query."""
    (folder / "experiments_manifest.csv").write_text(
        "acronym,cutting_plane,Section_Data_ID,URL,entrez.id,homologous_human_ID\n"
        "0610005G16Rik*,sagittal,74357755,http://x/grid_data/download/74357755?include=energy,NA,NA\n"
        "Nrp1,coronal,74272479,http://x/grid_data/download/74272479?include=energy,18186,8829\n"
        "Nrp1,sagittal,1234,http://x/grid_data/download/1234?include=energy,18186,8829\n"
        "Pdyn,coronal,71717084,http://x/grid_data/download/71717084?include=energy,18610,5173\n"
    )
    answer = {"success": True, "id": 0, "start_row": 0, "num_rows": 2, "total_rows": 2}
    answer["msg"] = [{"id": 74272479, "failed": False}, {"id": 74272480, "failed": False}]
    (folder / "query.json").write_text(json.dumps(answer))


def main() -> None:
    makers = {
        "metaimage": metaimage,
        "metaimage_zip": metaimage_zip,
        "metaimage_zip_refused": metaimage_zip_refused,
        "ontology": ontology,
        "starmap_visual": starmap_visual,
        "rds": rds,
        "starmap_3d": starmap_3d,
        "seqfish_fov0": seqfish_fov0,
        "seqfish_full": seqfish_full,
        "aba": aba,
        "dlpfc_visium": dlpfc_visium,
        "osmfish": osmfish,
    }
    for name, make in makers.items():
        folder = CORPUS / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        make(folder)
    total = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    print(f"corpus: {sum(1 for p in CORPUS.rglob('*') if p.is_file())} files, {total} bytes")


if __name__ == "__main__":
    main()
