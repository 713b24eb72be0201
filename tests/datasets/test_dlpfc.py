import gzip
import shutil
from pathlib import Path

import make_corpus  # tests/fuzz, on the path through conftest.py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.spatial import cKDTree

import spatialfactors as sf
from spatialfactors.datasets import _dlpfc

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
DLPFC = DATA / "dlpfc_visium"
RDA = "dlpfc151510.rda"
LAYERS = {"Layer3": 1774, "Layer1": 1180, "Layer2": 650, "Layer4": 318, "Layer5": 310, "WM": 184, "Layer6": 179}


def _need(folder):
    if not folder.is_dir():
        pytest.skip(f"shared data {folder.name} not available")


@pytest.fixture(scope="module")
def dlpfc():
    _need(DLPFC)
    return sf.datasets.visium_dlpfc(DLPFC)


# --- real file -----------------------------------------------------------------------------------


def _read_r_counts():
    """The counts and meta.data straight from rdata's conversion (no loader code)."""
    import warnings

    import rdata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seurat = rdata.read_rda(DLPFC / RDA)["dlpfc151510"]
    m = seurat.assays["RNA"].counts
    counts = sp.csc_matrix((m.x, m.i, m.p), shape=tuple(m.Dim))  # genes x spots
    return counts, m.Dimnames, vars(seurat)["meta.data"]


def test_matches_the_r_object(dlpfc):
    adata = dlpfc
    assert adata.shape == (4634, 500)
    assert sp.issparse(adata.X) and adata.X.format == "csr" and adata.X.dtype == np.float32
    counts, (genes, barcodes), meta = _read_r_counts()
    assert (adata.X != counts.T.astype(np.float32)).nnz == 0
    assert adata.X.nnz == 1112107 and adata.X.sum() == counts.sum()
    assert adata.var_names.tolist() == genes.tolist() and adata.var_names[0] == "ENSG00000187608"
    assert adata.obs_names.tolist() == barcodes.tolist() and adata.obs_names[0] == "AAACAAGTATCTCCCA-1"
    np.testing.assert_array_equal(adata.obs["row"], meta["row"].astype(int))
    np.testing.assert_array_equal(adata.obs["col"], meta["col"].astype(int))
    np.testing.assert_array_equal(np.asarray(adata.X.sum(1)).ravel(), meta["nCount_RNA"])
    assert adata.obs["row"].between(0, 77).all() and adata.obs["col"].between(0, 127).all()
    assert adata.uns["provenance"]["r_object"] == "dlpfc151510"
    assert "64d95135ab79e3e42e86e4a2e31724d17bec29d5/data/dlpfc151510.rda" in adata.uns["provenance"]["source"][RDA]


def test_layers_and_unlabelled_spots(dlpfc):
    layer = dlpfc.obs["layer"]
    assert isinstance(layer.dtype, pd.CategoricalDtype)
    assert layer.cat.categories.tolist() == ["Layer1", "Layer2", "Layer3", "Layer4", "Layer5", "Layer6", "WM"]
    assert layer.value_counts().to_dict() == LAYERS
    assert int(layer.isna().sum()) == 39 == dlpfc.uns["provenance"]["n_spots_without_layer"]


def test_layers_agree_with_the_authors_map(dlpfc):
    names = ["barcode", "sample", "layer"]
    table = pd.read_csv(DLPFC / "barcode_level_layer_map.tsv", sep="\t", header=None, names=names)
    table = table[table["sample"] == 151510].set_index("barcode")["layer"]
    assert len(table) == 4595  # the 39 spots without a layer are not in the map
    layer = dlpfc.obs["layer"]
    assert set(table.index) == set(layer.index[layer.notna()])
    renamed = table.map(lambda s: s if s == "WM" else s.replace("L", "Layer"))
    assert (layer.loc[table.index].astype(str) == renamed).all()
    # The Maynard paper's clustering outputs use the same ground truth ("Layer_1", ..., NA for the 39).
    truth = pd.read_csv(DLPFC / "cluster_labels_151510.csv", index_col="key")["ground_truth"]
    truth.index = truth.index.str.removeprefix("151510_")
    truth = truth.loc[dlpfc.obs_names]
    assert truth.isna().equals(pd.Series(layer.isna().to_numpy(), index=truth.index))
    assert (truth.dropna().str.replace("_", "") == layer.dropna().astype(str)).all()


def test_hexagonal_lattice(dlpfc):
    row, col = dlpfc.obs["row"].to_numpy(), dlpfc.obs["col"].to_numpy()
    assert ((row + col) % 2 == 0).all()  # Visium: columns of one parity per row
    xy = dlpfc.obsm["spatial"]
    np.testing.assert_allclose(xy, np.column_stack([col * 50.0, row * 50.0 * np.sqrt(3)]))
    distance, _ = cKDTree(xy).query(xy, k=8)
    # Interior spots (all six lattice neighbours present): six neighbours at 100 um, the next at 100 * sqrt(3).
    interior = np.isclose(distance[:, 6], 100.0)
    assert interior.sum() > 4000
    np.testing.assert_allclose(distance[interior, 1:7], 100.0, rtol=1e-12)
    np.testing.assert_allclose(distance[interior, 7], 100.0 * np.sqrt(3), rtol=1e-12)
    assert np.isclose(distance[:, 1], 100.0).all()  # every spot has a neighbour at 100 um, none closer
    # In array units the raw (col, row) would not be a lattice: same-row neighbours 2 apart, others sqrt(2).
    raw, _ = cKDTree(np.column_stack([col, row]).astype(float)).query(np.column_stack([col, row]), k=7)
    assert not np.allclose(raw[interior, 1:7], raw[interior, 1:2])


def test_data_root_and_environment_folder(dlpfc, monkeypatch):
    from_root = sf.datasets.visium_dlpfc(DATA)
    assert (from_root.X != dlpfc.X).nnz == 0
    monkeypatch.setenv("SPATIALFACTORS_DATA", str(DATA))
    offline = sf.datasets.visium_dlpfc(base_url="http://127.0.0.1:9")  # nothing listens: no download
    assert offline.obs_names.equals(dlpfc.obs_names)
    np.testing.assert_array_equal(offline.obsm["spatial"], dlpfc.obsm["spatial"])


# --- download path against a local server ----------------------------------------------------


def test_download_then_cache(github_server, dlpfc):
    server = github_server
    remote = _dlpfc.SAMPLES["151510"]
    server["serve"](remote, (DLPFC / RDA).read_bytes())
    adata = sf.datasets.visium_dlpfc(base_url=server["url"])
    assert adata.obs_names.equals(dlpfc.obs_names) and adata.var_names.equals(dlpfc.var_names)
    assert (adata.X != dlpfc.X).nnz == 0
    assert server["requests"] == [f"/feiyoung/DR.SC/{remote.commit}/data/dlpfc151510.rda"]
    assert sorted(p.name for p in (server["cache"] / "dlpfc_visium").iterdir()) == [RDA]
    again = sf.datasets.visium_dlpfc(base_url=server["url"])
    assert len(server["requests"]) == 1 and again.n_obs == 4634  # from the cache


def test_wrong_checksum_is_a_clear_error(github_server):
    _need(DLPFC)
    data = bytearray((DLPFC / RDA).read_bytes())
    data[100] ^= 0xFF
    github_server["serve"](_dlpfc.SAMPLES["151510"], bytes(data))
    with pytest.raises(ValueError, match=r"Checksum mismatch for dlpfc151510\.rda downloaded from http"):
        sf.datasets.visium_dlpfc(base_url=github_server["url"])
    assert not (github_server["cache"] / "dlpfc_visium" / RDA).exists()


# --- bad input (synthetic Seurat objects in DR.SC's layout) ------------------------------------


@pytest.fixture
def folder(tmp_path):
    folder = tmp_path / "dlpfc"
    folder.mkdir()
    make_corpus.dlpfc_visium(folder)
    return folder


def test_synthetic_object(folder):
    adata = sf.datasets.visium_dlpfc(folder)
    assert adata.shape == (7, 4)
    np.testing.assert_array_equal(adata.X.toarray()[:, 0], [3, 0, 1, 0, 0, 2, 1])
    assert adata.obs["layer"].astype(object).where(adata.obs["layer"].notna(), None).tolist() == [
        "Layer1", "Layer1", "Layer2", "WM", None, "Layer2", "Layer1",
    ]  # fmt: skip
    distance, _ = cKDTree(adata.obsm["spatial"]).query(adata.obsm["spatial"], k=7)
    np.testing.assert_allclose(distance[[1, 3, 4, 6], 1:4], 100.0)  # hexagonal patch: equal spacing


def test_missing_file(tmp_path, folder):
    with pytest.raises(FileNotFoundError, match=r"Visium DLPFC: file 'dlpfc151510\.rda' not found in"):
        sf.datasets.visium_dlpfc(tmp_path)
    with pytest.raises(FileNotFoundError, match="Data folder not found"):
        sf.datasets.visium_dlpfc(tmp_path / "nope")


def test_sample_and_argument_types(folder):
    with pytest.raises(ValueError, match=r"DLPFC sample '151673' is not available; available: \['151510'\]"):
        sf.datasets.visium_dlpfc(folder, sample="151673")
    with pytest.raises(TypeError, match=r"`sample` must be the sample id as a string, e.g. '151510', got 151510"):
        sf.datasets.visium_dlpfc(folder, sample=151510)
    with pytest.raises(TypeError, match="`progress` must be True or False"):
        sf.datasets.visium_dlpfc(folder, progress="yes")
    with pytest.raises(TypeError, match="`base_url` must be a non-empty string"):
        sf.datasets.visium_dlpfc(base_url=None)
    with pytest.raises(TypeError, match=r"`path` must be a folder \(a string or path\) or None, got 3"):
        sf.datasets.visium_dlpfc(3)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[: len(b) // 2], r"cannot be read as R data \(EOFError"),
        (lambda b: gzip.compress(gzip.decompress(b)[:-40], mtime=0), r"cannot be read as R data"),
        (lambda b: b"not an R file\n", r"cannot be read as R data"),
    ],
)
def test_damaged_file(folder, damage, message):
    path = folder / RDA
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match=message) as info:
        sf.datasets.visium_dlpfc(folder)
    assert str(path) in str(info.value) and "Delete it and load again" in str(info.value)


def _write(folder, objects):
    make_corpus.write_rda(folder / RDA, objects)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.slots["meta.data"].drop(columns="annotation"), r"meta\.data lacks the column\(s\) \['annot"),
        (lambda s: s.slots["meta.data"].iloc[::-1], r"rows of meta\.data are not the spots of the count matrix"),
        (lambda s: s.slots["meta.data"].assign(row=np.nan), r"meta\.data column `row` must be an integer per spot"),
        (lambda s: s.slots["meta.data"].assign(col=0.5), r"meta\.data column `col` must be an integer per spot"),
    ],
)
def test_bad_meta_data(folder, edit, message):
    seurat = make_corpus.dlpfc_seurat()
    seurat.slots["meta.data"] = edit(seurat)
    _write(folder, {"dlpfc151510": seurat})
    with pytest.raises(ValueError, match=message):
        sf.datasets.visium_dlpfc(folder)


@pytest.mark.parametrize(
    ("value", "message"),
    [(-1.0, "must hold UMI counts"), (0.5, "must hold UMI counts"), (np.nan, "must hold UMI counts")],
)
def test_bad_counts(folder, value, message):
    counts = np.ones((4, len(make_corpus.DLPFC_SPOTS)))
    counts[2, 3] = value
    _write(folder, {"dlpfc151510": make_corpus.dlpfc_seurat(counts)})
    with pytest.raises(ValueError, match=message):
        sf.datasets.visium_dlpfc(folder)


def test_bad_sparse_matrix(folder):
    seurat = make_corpus.dlpfc_seurat()
    matrix = seurat.slots["assays"]["RNA"].slots["counts"]
    matrix.slots["i"] = matrix.slots["i"][::-1].copy()  # row indices out of order within columns
    _write(folder, {"dlpfc151510": seurat})
    with pytest.raises(ValueError, match="repeats or misorders row indices within a column"):
        sf.datasets.visium_dlpfc(folder)
    matrix.slots["i"] = matrix.slots["i"] + 10
    _write(folder, {"dlpfc151510": seurat})
    with pytest.raises(ValueError, match=r"@i has row indices outside 0\.\.3"):
        sf.datasets.visium_dlpfc(folder)
    matrix.slots["Dimnames"] = [matrix.slots["Dimnames"][0], np.array(["a"] * 7)]
    matrix.slots["i"] = matrix.slots["i"] - 10
    _write(folder, {"dlpfc151510": seurat})
    with pytest.raises(ValueError, match=r"spot barcodes \(colnames of the counts\) has empty or repeated names"):
        sf.datasets.visium_dlpfc(folder)


def test_not_one_seurat_object(folder):
    _write(folder, {"x": np.ones(3)})
    with pytest.raises(ValueError, match=r"holds 0 Seurat objects among its R objects \['x'\]"):
        sf.datasets.visium_dlpfc(folder)
    seurat = make_corpus.dlpfc_seurat()
    _write(folder, {"a": seurat, "b": seurat})
    with pytest.raises(ValueError, match="holds 2 Seurat objects"):
        sf.datasets.visium_dlpfc(folder)
    _write(folder, {"other": seurat, "dlpfc151510": seurat})  # the sample's object is chosen
    assert sf.datasets.visium_dlpfc(folder).uns["provenance"]["r_object"] == "dlpfc151510"
    del seurat.slots["assays"]
    _write(folder, {"dlpfc151510": seurat})
    with pytest.raises(ValueError, match="the Seurat object has no `assays` slot"):
        sf.datasets.visium_dlpfc(folder)


def test_factor_code_outside_levels(folder):
    # rdata maps a factor code of 0 to the last level; the loader refuses it instead.
    seurat = make_corpus.dlpfc_seurat()
    meta = seurat.slots["meta.data"]
    layers = pd.Categorical.from_codes([1] * 7, categories=["Layer1", "Layer2"])
    seurat.slots["meta.data"] = meta.assign(annotation=layers)
    raw = folder / "plain"
    make_corpus.write_rda(raw, {"dlpfc151510": seurat}, compress=lambda b: b)
    data = raw.read_bytes()
    codes = np.array([2] * 7, dtype=">i4").tobytes()  # R's codes of the annotation, XDR (big-endian)
    assert data.count(codes) == 1
    (folder / RDA).write_bytes(gzip.compress(data.replace(codes, bytes(len(codes)))))
    with pytest.raises(ValueError, match="a factor has codes outside its 2 levels"):
        sf.datasets.visium_dlpfc(folder)


def test_huge_compact_sequence_is_refused(folder):
    # An ALTREP compact sequence claiming 2**40 elements is refused before it is expanded.
    state = type("State", (), {"value": [2.0**40, 1.0, 1.0]})()
    expand = _dlpfc._bounded_sequence(lambda s: pytest.fail("expanded"))
    with pytest.raises(ValueError, match="an R sequence claims 1.09951e\\+12 elements"):
        expand(state)


def test_read_only_folder_is_fine(tmp_path, folder):
    shutil.copytree(folder, tmp_path / "ro")
    (tmp_path / "ro" / RDA).chmod(0o444)
    assert sf.datasets.visium_dlpfc(tmp_path / "ro").n_obs == 7
