"""One test per crash the reader fuzz targets found, with the smallest input that showed it.

Each input made a reader fail with an internal error (or a huge allocation, a wrong result, a
segmentation fault) before the fix; now each gets a clear error naming the file.
"""

import bz2
import gzip
import io
import lzma
import shutil
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import scipy.io

import spatialfactors as sf
from spatialfactors.datasets import _aba, _starmap

CORPUS = Path(__file__).parent / "corpus"


def _peak_allocation(read) -> int:
    tracemalloc.start()
    try:
        read()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


# -- MetaImage -----------------------------------------------------------------------------------


def test_huge_dimsize_is_refused_before_allocating(tmp_path):
    # DimSize 2**31-1 of MET_INT asked numpy for 8 GiB before the payload size was compared.
    (tmp_path / "g.mhd").write_text("NDims = 1\nDimSize = 2147483647\nElementType = MET_INT\nElementDataFile = g.raw\n")
    (tmp_path / "g.raw").write_bytes(b"\x00" * 4)
    with pytest.raises(ValueError, match=r"g\.raw' is truncated: it has 4 bytes .* \(8589934588 bytes\)"):
        sf.io.read_mhd(tmp_path / "g.mhd")
    assert _peak_allocation(lambda: pytest.raises(ValueError, sf.io.read_mhd, tmp_path / "g.mhd")) < 2**20


def test_huge_dimsize_of_compressed_data_is_refused_before_allocating(tmp_path):
    header = "NDims = 3\nDimSize = 4096 4096 4096\nElementType = MET_DOUBLE\nCompressedData = True\n"
    (tmp_path / "g.mha").write_bytes(f"{header}ElementDataFile = LOCAL\n".encode() + zlib.compress(b"\x00" * 16))
    with pytest.raises(
        ValueError, match=r"g\.mha: the data file 'g\.mha' decompresses to 16 bytes, but DimSize 4096 x 4096 x 4096"
    ):
        sf.io.read_mhd(tmp_path / "g.mha")
    assert _peak_allocation(lambda: pytest.raises(ValueError, sf.io.read_mhd, tmp_path / "g.mha")) < 2**20


def test_truncated_compressed_stream(tmp_path):
    header = "NDims = 1\nDimSize = 4\nElementType = MET_FLOAT\nCompressedData = True\nElementDataFile = LOCAL\n"
    (tmp_path / "g.mha").write_bytes(header.encode() + zlib.compress(b"\x00" * 16)[:-6])
    with pytest.raises(ValueError, match=r"g\.mha: the compressed data in .* end early"):
        sf.io.read_mhd(tmp_path / "g.mha")


def _energy_zip(compression=zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as zf:
        zf.writestr("energy.mhd", "NDims = 1\nDimSize = 2\nElementType = MET_FLOAT\nElementDataFile = energy.raw\n")
        zf.writestr("energy.raw", np.array([1.5, 2.5], dtype="<f4").tobytes())
    return buffer.getvalue()


def test_zip_member_with_bad_crc(tmp_path):
    # A damaged stored member raised zipfile.BadZipFile ("Bad CRC-32") from inside zipfile.
    archive = bytearray(_energy_zip())
    at = archive.index(np.array([1.5], dtype="<f4").tobytes())
    archive[at] ^= 1
    (tmp_path / "g.zip").write_bytes(bytes(archive))
    with pytest.raises(ValueError, match=r"g\.zip: damaged or unsupported zip archive \(BadZipFile: Bad CRC-32"):
        sf.io.read_mhd(tmp_path / "g.zip")


def test_zip_lzma_member_is_refused(tmp_path):
    # An LZMA member's dictionary size (4 GiB when damaged) was allocated by the decompressor.
    (tmp_path / "g.zip").write_bytes(_energy_zip(zipfile.ZIP_LZMA))
    with pytest.raises(ValueError, match=r"g\.zip: member 'energy\.mhd' uses zip compression method 14"):
        sf.io.read_mhd(tmp_path / "g.zip")
    (tmp_path / "ok.zip").write_bytes(_energy_zip(zipfile.ZIP_DEFLATED))
    np.testing.assert_array_equal(sf.io.read_mhd(tmp_path / "ok.zip")[0], [1.5, 2.5])


# -- ontology ------------------------------------------------------------------------------------


def test_ontology_empty_file(tmp_path):
    (tmp_path / "s.csv").write_text("")
    with pytest.raises(ValueError, match=r"s\.csv: not a readable CSV \(EmptyDataError"):
        sf.io.read_ontology(tmp_path / "s.csv")


def test_ontology_missing_rgb_triplet(tmp_path):
    # An empty rgb_triplet raised TypeError "'float' object is not iterable" without the file name.
    (tmp_path / "s.csv").write_text(
        'id,acronym,name,structure_id_path,rgb_triplet\n997,root,root,/997/,\n8,grey,grey,/997/8/,"[1, 2, 255]"\n'
    )
    onto = sf.io.read_ontology(tmp_path / "s.csv")
    assert onto.df["color_hex_triplet"].tolist() == ["", "0102FF"]
    (tmp_path / "s.csv").write_text('id,acronym,name,structure_id_path,rgb_triplet\n997,root,root,/997/,"[1, 2]"\n')
    with pytest.raises(ValueError, match=r"s\.csv: `rgb_triplet` \[1, 2\] is not three integers 0-255"):
        sf.io.read_ontology(tmp_path / "s.csv")


def test_ontology_non_integer_ids(tmp_path):
    # Fractional ids were silently truncated by astype(int64); text ids failed without naming the column.
    (tmp_path / "s.csv").write_text("id,acronym,name,parent_structure_id\n997.5,root,root,\n")
    with pytest.raises(ValueError, match=r"s\.csv: `id` must hold integer structure ids; found \[997\.5\]"):
        sf.io.read_ontology(tmp_path / "s.csv")
    (tmp_path / "s.csv").write_text("id,acronym,name,parent_structure_id\n997,root,root,\n8,grey,grey,x\n")
    with pytest.raises(ValueError, match=r"`parent_structure_id` must hold integer structure ids; found \['x'\]"):
        sf.io.read_ontology(tmp_path / "s.csv")


def test_ontology_of_only_the_background_row(tmp_path):
    # Only the 'void' row (id 0, dropped): an empty Ontology whose repr raised.
    (tmp_path / "s.csv").write_text("id,acronym,name,parent_structure_id\n0,void,void,\n")
    with pytest.raises(ValueError, match=r"s\.csv: The ontology table has no structures"):
        sf.io.read_ontology(tmp_path / "s.csv")


# -- STARmap visual cortex -----------------------------------------------------------------------


@pytest.fixture
def visual(tmp_path):
    folder = tmp_path / "starmap"
    shutil.copytree(CORPUS / "starmap_visual", folder)
    return folder


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        # Two ids named alike: "Categorical categories must be unique".
        ("CellID,ClusterID,ClusterName\n0,1,A\n1,2,A\n2,1,A\n3,-1,\n4,0,B\n", "each ClusterID must have one"),
        # A typed cell without a name: "Categorical categories cannot be null".
        ("CellID,ClusterID,ClusterName\n0,1,\n1,5,C\n2,1,\n3,-1,\n4,0,B\n", "need a ClusterName"),
        # An unbalanced quote: pandas ParserError.
        ('CellID,ClusterID,ClusterName\n0,1,"A\n', r"Cannot read class_labels\.csv: ParserError"),
        ("", r"Cannot read class_labels\.csv: EmptyDataError"),
        ("CellID,ClusterID,ClusterName\n0,1.5,A\n1,5,C\n2,1,A\n3,-1,\n4,0,B\n", "ClusterID must be an integer"),
    ],
)
def test_starmap_bad_labels(visual, labels, message):
    (visual / "class_labels.csv").write_text(labels)
    with pytest.raises(ValueError, match=message):
        sf.datasets.starmap_visual_cortex(visual)


def test_starmap_gene_list_not_utf8(visual):
    (visual / "genes_from_rds.csv").write_bytes(b"\xffSlc17a7\nMgp\nGad1\nCalb2\n")
    with pytest.raises(ValueError, match=r"genes_from_rds\.csv is not UTF-8 text"):
        sf.datasets.starmap_visual_cortex(visual)


def test_starmap_centroids_empty_or_missing_values(visual):
    (visual / "Centriods_extracted.csv").write_text("")
    with pytest.raises(ValueError, match=r"Cannot read Centriods_extracted\.csv: EmptyDataError"):
        sf.datasets.starmap_visual_cortex(visual)
    (visual / "Centriods_extracted.csv").write_text("0 1\n1 2\n3 nan\n4 5\n6 7\n8 9\n")
    with pytest.raises(ValueError, match=r"Centriods_extracted\.csv has missing or infinite coordinates"):
        sf.datasets.starmap_visual_cortex(visual)


# -- STARmap .rds gene vector --------------------------------------------------------------------


def _rds_body() -> bytes:
    return _starmap._rds_payload(CORPUS / "rds" / "genes_plain.rds")


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("truncated_gzip", lambda b: gzip.compress(b, mtime=0)[:-10]),  # EOFError
        ("gzip_crc", lambda b: gzip.compress(b, mtime=0)[:-8] + b"\x00" * 8),  # BadGzipFile
        ("gzip_deflate", lambda b: gzip.compress(b, mtime=0)[:10] + b"\xff" * 20),  # zlib.error
        ("truncated_bzip2", lambda b: bz2.compress(b)[:-10]),  # ValueError without the file name
        ("bzip2_stream", lambda b: bz2.compress(b)[:10] + b"\x00" * 40),  # OSError
        ("truncated_xz", lambda b: lzma.compress(b)[:-12]),  # LZMAError
        ("xz_data", lambda b: lzma.compress(b)[:20] + b"\xff" * 40),  # LZMAError
    ],
)
def test_rds_damaged_compression(tmp_path, name, damage):
    path = tmp_path / f"{name}.rds"
    path.write_bytes(damage(_rds_body()))
    with pytest.raises(
        ValueError, match=rf"{name}\.rds: the (gzip|bzip2|xz) stream of the R object is truncated or damaged"
    ):
        _starmap._genes_from_rds(path, 4)


# -- STARmap 3D ----------------------------------------------------------------------------------


@pytest.fixture
def volume(tmp_path):
    folder = tmp_path / "volume"
    shutil.copytree(CORPUS / "starmap_3d", folder)
    return folder


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (145, 0x7F, "`expr` must be a real numeric matrix"),  # scipy.io.loadmat: segmentation fault
        (177, 0x7F, "Cannot read the MATLAB file"),  # scipy.io.loadmat: bus error
        (144, 0x00, "`expr` must be a real numeric matrix"),  # scipy.io.loadmat: UnboundLocalError
        (127, 0x00, "not a MATLAB 5 file"),  # read as MATLAB 4: 1.6 GiB allocated
    ],
)
def test_mat_single_byte_damage(volume, offset, value, message):
    mat = volume / "20180123_BS10_light.mat"
    raw = bytearray(mat.read_bytes())
    raw[offset] = value
    mat.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=message):
        sf.datasets.starmap_3d_cortex(volume)


def test_mat_prefixed_byte_is_not_read_as_matlab4(volume):
    # One byte before the header made scipy read a MATLAB 4 file whose header asked for 1.6 GiB.
    mat = volume / "20180123_BS10_light.mat"
    mat.write_bytes(b"\x00" + mat.read_bytes())
    with pytest.raises(ValueError, match=r"20180123_BS10_light\.mat is not a MATLAB 5 file"):
        assert _peak_allocation(lambda: sf.datasets.starmap_3d_cortex(volume)) < 2**24


def test_mat_nan_or_complex_expression(volume):
    mat = volume / "20180123_BS10_light.mat"
    locs = np.ones((2, 3))
    scipy.io.savemat(mat, {"expr": np.array([[1.0, np.nan, 2], [0, 1, 2]]), "goodLocs": locs})
    with pytest.raises(ValueError, match=r"`expr` has NaN or infinite values"):
        sf.datasets.starmap_3d_cortex(volume)
    scipy.io.savemat(mat, {"expr": np.ones((2, 3), dtype=complex), "goodLocs": locs})
    with pytest.raises(ValueError, match=r"`expr` must be a real numeric matrix"):
        sf.datasets.starmap_3d_cortex(volume)


def test_mat_reader_agrees_with_scipy(volume):
    for compression in (False, True):
        values = {"expr": np.arange(12, dtype=np.int32).reshape(4, 3), "goodLocs": np.linspace(0, 1, 12).reshape(4, 3)}
        scipy.io.savemat(volume / "20180123_BS10_light.mat", {"other": "x", **values}, do_compression=compression)
        adata = sf.datasets.starmap_3d_cortex(volume)
        np.testing.assert_array_equal(adata.X, values["expr"])
        np.testing.assert_array_equal(adata.obsm["spatial"], values["goodLocs"])


# -- seqFISH+ ------------------------------------------------------------------------------------


@pytest.fixture
def fov0(tmp_path):
    folder = tmp_path / "seqfish"
    shutil.copytree(CORPUS / "seqfish_fov0", folder)
    return folder


@pytest.mark.parametrize("cut", [10, -6])
def test_seqfish_truncated_expression_gzip(fov0, cut):
    # pd.read_csv let EOFError / BadGzipFile out of gzip.
    path = fov0 / "seqfish_field_expr.txt.gz"
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(ValueError, match=r"Cannot read seqfish_field_expr\.txt\.gz: (EOFError|BadGzipFile)"):
        sf.datasets.seqfish_plus_cortex(fov0)


@pytest.fixture
def full(tmp_path):
    folder = tmp_path / "seqfish"
    shutil.copytree(CORPUS / "seqfish_full", folder)
    return folder


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("0,1,True,1305.7,Cortex", r"`X` must be a finite number in every row"),  # "could not convert string"
        ("0,1,,1305.7,Cortex", r"`X` must be a finite number in every row"),  # NaN coordinates accepted
        ('0,1,1632.02,1305.7,"Cortex', r"Cannot read cortex_svz_cellcentroids\.csv: ParserError"),
        ("x,1,1632.02,1305.7,Cortex", r"`Field of View` must be an integer in every row"),
    ],
)
def test_seqfish_bad_centroid_row(full, row, message):
    path = full / "sourcedata" / "cortex_svz_cellcentroids.csv"
    lines = path.read_text().splitlines()
    lines[1] = row
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message):
        sf.datasets.seqfish_plus_cortex(full)


def test_seqfish_non_integer_louvain(full):
    path = full / "cortex_svz_cell_type_annotations.csv"
    path.write_text(path.read_text().replace("0,13", "0,x"))
    with pytest.raises(ValueError, match=r"cortex_svz_cell_type_annotations\.csv: `louvain` must be the integer"):
        sf.datasets.seqfish_plus_cortex(full)


# -- Allen manifest and API answer ---------------------------------------------------------------

MANIFEST = "acronym,cutting_plane,Section_Data_ID\nNrp1,coronal,74272479\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"m\.csv is not a readable CSV \(EmptyDataError"),
        ('acronym,cutting_plane,Section_Data_ID\n"Nrp1,coronal,1\n', r"m\.csv is not a readable CSV \(ParserError"),
        (
            "acronym,cutting_plane,Section_Data_ID\nNrp1,coronal,\n",
            r"m\.csv has a Section_Data_ID that is not an integer",
        ),
        (
            "acronym,cutting_plane,Section_Data_ID\nNrp1,coronal,x\n",
            r"m\.csv has a Section_Data_ID that is not an integer",
        ),
    ],
)
def test_manifest_damage(tmp_path, text, message):
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(ValueError, match=message):
        _aba._from_manifest(["Nrp1"], "coronal", tmp_path / "m.csv")


def test_manifest_row_with_one_field_too_many(tmp_path):
    # pandas then indexes the table by its first column; the row masks held NA ("Cannot mask with
    # non-boolean array containing NA / NaN values").
    (tmp_path / "m.csv").write_text("acronym,cutting_plane,Section_Data_ID\n,Nrp1,coronal,1\nNrp1,coronal,2\n")
    assert _aba._from_manifest(["Nrp1"], "coronal", tmp_path / "m.csv") == {"Nrp1": 1}


def test_manifest_not_utf8(tmp_path):
    (tmp_path / "m.csv").write_bytes(MANIFEST.encode("utf-16"))
    with pytest.raises(ValueError, match=r"m\.csv is not a readable CSV \(UnicodeDecodeError"):
        _aba._from_manifest(["Nrp1"], "coronal", tmp_path / "m.csv")


@pytest.mark.parametrize(
    "msg", ['[{"failed": false}]', '["x"]', '[{"id": "x"}]', '[{"id": true}]', "7", '[{"id": null}]']
)
def test_api_answer_without_integer_ids(msg):
    # KeyError 'id' / TypeError / ValueError from int() before.
    body = f'{{"success": true, "msg": {msg}}}'.encode()
    with (
        mock.patch.object(_aba.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(body)),
        pytest.raises(
            ValueError, match=r"Allen API query for 'Nrp1' .* without a list of experiments with integer ids"
        ),
    ):
        _aba._from_api("Nrp1", "coronal", "http://api")


def test_struct_error_free_rds_scan(tmp_path):
    # A vector header at the very end of the payload: the element loop stops before reading past it.
    body = _rds_body() + struct.pack(">ii", 16, 4)
    (tmp_path / "end.rds").write_bytes(body)
    assert _starmap._genes_from_rds(tmp_path / "end.rds", 4) == b"Slc17a7\nMgp \nGad1\nCalb2\n"


def test_metaimage_data_file_name_too_long(tmp_path):
    # OSError "File name too long" from Path.is_file().
    (tmp_path / "g.mhd").write_text(f"NDims = 1\nDimSize = 1\nElementType = MET_UCHAR\nElementDataFile = {'a' * 300}\n")
    with pytest.raises(ValueError, match=r"g\.mhd: `ElementDataFile = 'a+'` is not a usable file name \(File name"):
        sf.io.read_mhd(tmp_path / "g.mhd")


@pytest.mark.parametrize("damaged", [b"Ga\n1", b"Ga\x0b1"])
def test_rds_gene_name_with_a_line_break(tmp_path, damaged):
    # A damaged byte that is a line boundary (newline; vertical tab for str.splitlines) made 5 lines of 4 names.
    (tmp_path / "g.rds").write_bytes(bz2.compress(_rds_body().replace(b"Gad1", damaged)))
    with pytest.raises(ValueError, match=r"g\.rds: empty gene names or names with line breaks, e\.g\. 'Ga\\(n|x0b)1'"):
        _starmap._genes_from_rds(tmp_path / "g.rds", 4)


def test_3d_gene_names_repeated(volume):
    # The AnnData had duplicate var_names.
    (volume / "gene_names.csv").write_text("0,Slc17a7\n1,Mgp\n2,Mgp\n")
    with pytest.raises(ValueError, match=r"gene_names\.csv lists the gene name\(s\) \['Mgp'\] more than once"):
        sf.datasets.starmap_3d_cortex(volume)


def test_seqfish_centroid_header_one_field_short(fov0):
    # pandas indexed the rows by their first column (repeating fields of view): a broadcast error.
    path = fov0 / "cortex_svz_centroids_rotated.csv"
    path.write_text(path.read_text().replace("Field of View,Cell ID,X,Y", "Field of View,X,Y"))
    with pytest.raises(
        ValueError, match=r"cortex_svz_centroids_rotated\.csv: the rows have more fields than the header"
    ):
        sf.datasets.seqfish_plus_cortex(fov0)


def test_zip_member_name_not_utf8(tmp_path):
    # A member name flagged UTF-8 that is not: UnicodeDecodeError from zipfile.ZipFile.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("é.mhd", "NDims = 1\n")
    (tmp_path / "g.zip").write_bytes(buffer.getvalue().replace("é".encode(), b"\xc3\x28"))
    with pytest.raises(ValueError, match=r"g\.zip: damaged or unsupported zip archive \(UnicodeDecodeError"):
        sf.io.read_mhd(tmp_path / "g.zip")
