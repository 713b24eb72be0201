from pathlib import Path

import h5py
import make_corpus  # tests/fuzz, on the path through conftest.py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import spatialfactors as sf
from spatialfactors.datasets import _osmfish

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
OSMFISH = DATA / "osmfish_cortex"
LOOM = "osmFISH_SScortex_mouse_all_cells.loom"
# SDMBench's ground truth: the 4,839 cells outside 'Excluded' in 11 regions.
REGIONS = {
    "Layer 6": 1015, "Layer 4": 1002, "White matter": 877, "Layer 2-3 medial": 549, "Hippocampus": 322,
    "Layer 5": 295, "Layer 2-3 lateral": 254, "Pia Layer 1": 159, "Layer 3-4": 131, "Ventricle": 129,
    "Internal Capsule Caudoputamen": 106,
}  # fmt: skip


def _need(folder):
    if not folder.is_dir():
        pytest.skip(f"shared data {folder.name} not available")


@pytest.fixture(scope="module")
def osmfish():
    _need(OSMFISH)
    return sf.datasets.osmfish_cortex(OSMFISH)


@pytest.fixture(scope="module")
def osmfish_all():
    _need(OSMFISH)
    return sf.datasets.osmfish_cortex(OSMFISH, filter_excluded=False)


def _loom():
    with h5py.File(OSMFISH / LOOM, "r") as f:
        col = {k: f["col_attrs"][k][()] for k in f["col_attrs"]}
        return f["matrix"][()], f["row_attrs/Gene"][()].astype(str), col


# --- real file -----------------------------------------------------------------------------------


def test_all_cells_match_the_file(osmfish_all):
    adata = osmfish_all
    assert adata.shape == (6471, 33)
    assert sp.issparse(adata.X) and adata.X.format == "csr" and adata.X.dtype == np.float32
    matrix, genes, col = _loom()
    np.testing.assert_array_equal(adata.X.toarray(), matrix.T)
    assert adata.var_names.tolist() == genes.tolist() and adata.var_names[:3].tolist() == ["Gad2", "Slc32a1", "Crhbp"]
    assert adata.obs_names.tolist() == [f"cell_{c}" for c in col["CellID"].astype(str)]
    np.testing.assert_array_equal(adata.obsm["spatial"], np.column_stack([col["X"], col["Y"]]))
    np.testing.assert_array_equal(adata.obs["size_um2"], col["size_um2"])
    assert adata.obs["region"].astype(str).tolist() == col["Region"].astype(str).tolist()
    assert adata.obs["cell_type"].astype(str).tolist() == col["ClusterName"].astype(str).tolist()
    np.testing.assert_array_equal(np.asarray(adata.X.sum(1)).ravel(), col["Total_molecules"])
    # 'Excluded' is one thing in the file: Region, ClusterName and Valid agree.
    excluded = adata.obs["region"] == "Excluded"
    assert excluded.sum() == 1632 and adata.obs["region"].cat.categories[-1] == "Excluded"
    assert (excluded == (adata.obs["cell_type"] == "Excluded")).all() and (excluded == ~adata.obs["valid"]).all()
    assert adata.uns["provenance"]["filter"] == "none" and adata.uns["provenance"]["n_cells_file"] == 6471


def test_excluded_cells_dropped(osmfish, osmfish_all):
    adata = osmfish
    assert adata.n_obs == 4839 and adata.shape == (4839, 33)
    assert adata.obs["region"].value_counts().to_dict() == REGIONS
    assert adata.obs["region"].cat.categories.tolist() == list(_osmfish.REGIONS)
    assert adata.obs["valid"].all() and "Excluded" not in adata.obs["cell_type"].cat.categories
    assert adata.obs["cell_type"].nunique() == 31
    assert adata.obs["cell_type"].value_counts().head(3).to_dict() == {
        "pyramidal L4": 526, "Oligodendrocyte Mature": 450, "Pyramidal L6": 439,
    }  # fmt: skip
    kept = osmfish_all[osmfish_all.obs["region"] != "Excluded"]
    assert kept.obs_names.equals(adata.obs_names)
    assert (kept.X != adata.X).nnz == 0
    assert adata.uns["provenance"]["filter"] == "Region != 'Excluded'"


def test_regions_lie_in_order(osmfish):
    # The labels sit where the cortex has them: the median distance of a region's cells to the
    # nearest cell of the pia grows from layer 2-3 through 3-4, 4, 5, 6 to the white matter.
    from scipy.spatial import cKDTree

    xy, region = osmfish.obsm["spatial"], osmfish.obs["region"]
    distance, _ = cKDTree(xy[(region == "Pia Layer 1").to_numpy()]).query(xy)
    depth = pd.Series(distance).groupby(region.to_numpy()).median()
    order = ["Pia Layer 1", "Layer 2-3 medial", "Layer 3-4", "Layer 4", "Layer 5", "Layer 6", "White matter"]
    assert depth[order].is_monotonic_increasing and depth["Layer 2-3 lateral"] < depth["Layer 3-4"]


def test_data_root_and_environment_folder(osmfish, monkeypatch):
    from_root = sf.datasets.osmfish_cortex(DATA)
    assert (from_root.X != osmfish.X).nnz == 0
    monkeypatch.setenv("SPATIALFACTORS_DATA", str(DATA))
    offline = sf.datasets.osmfish_cortex(base_url="http://127.0.0.1:9")  # nothing listens: no download
    assert offline.obs_names.equals(osmfish.obs_names)


# --- download path against a local server ----------------------------------------------------


def test_download_then_cache(github_server, osmfish):
    server = github_server
    server["serve"](_osmfish.LOOM_SOURCE, (OSMFISH / LOOM).read_bytes())
    adata = sf.datasets.osmfish_cortex(base_url=server["url"])
    assert adata.obs_names.equals(osmfish.obs_names) and (adata.X != osmfish.X).nnz == 0
    commit = _osmfish.LOOM_SOURCE.commit
    assert server["requests"] == [f"/drieslab/spatial-datasets/{commit}/data/2018_osmFISH_SScortex/raw_data/{LOOM}"]
    assert sorted(p.name for p in (server["cache"] / "osmfish_cortex").iterdir()) == [LOOM]
    again = sf.datasets.osmfish_cortex(base_url=server["url"], filter_excluded=False)
    assert len(server["requests"]) == 1 and again.n_obs == 6471  # from the cache


def test_wrong_checksum_is_a_clear_error(github_server):
    _need(OSMFISH)
    data = bytearray((OSMFISH / LOOM).read_bytes())
    data[-100] ^= 0xFF
    github_server["serve"](_osmfish.LOOM_SOURCE, bytes(data))
    with pytest.raises(ValueError, match=r"Checksum mismatch for osmFISH_SScortex_mouse_all_cells\.loom downloaded"):
        sf.datasets.osmfish_cortex(base_url=github_server["url"])
    assert not (github_server["cache"] / "osmfish_cortex" / LOOM).exists()


# --- bad input (synthetic loom files in the authors' layout) ------------------------------------


@pytest.fixture
def folder(tmp_path):
    folder = tmp_path / "osmfish"
    folder.mkdir()
    make_corpus.osmfish(folder)
    return folder


def _write(folder, *, matrix=None, drop=(), chunks=None, **columns):
    m, row_attrs, col_attrs = make_corpus.osmfish_attrs()
    for name in drop:
        row_attrs.pop(name, None), col_attrs.pop(name, None)
    for name, value in columns.items():
        (row_attrs if name == "Gene" else col_attrs)[name] = value
    make_corpus.write_loom(folder / LOOM, m if matrix is None else matrix, row_attrs, col_attrs, chunks=chunks)


def test_synthetic_file(folder):
    adata = sf.datasets.osmfish_cortex(folder)
    assert adata.shape == (4, 4) and adata.obs["region"].tolist() == [
        "Layer 6", "Internal Capsule Caudoputamen", "Layer 4", "Layer 4",
    ]  # fmt: skip
    np.testing.assert_array_equal(adata.X.toarray()[0], [0, 3, 12, 0])
    everything = sf.datasets.osmfish_cortex(folder, filter_excluded=False)
    assert everything.n_obs == 6 and everything.obs["valid"].sum() == 4


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"osmFISH cortex: file 'osmFISH_SScortex_mouse_all_cells\.loom' not"):
        sf.datasets.osmfish_cortex(tmp_path)
    with pytest.raises(FileNotFoundError, match="Data folder not found"):
        sf.datasets.osmfish_cortex(tmp_path / "nope")


def test_argument_types(folder):
    with pytest.raises(TypeError, match="`filter_excluded` must be True or False, got 'no'"):
        sf.datasets.osmfish_cortex(folder, filter_excluded="no")
    with pytest.raises(TypeError, match="`progress` must be True or False"):
        sf.datasets.osmfish_cortex(folder, progress=1)
    with pytest.raises(TypeError, match="`base_url` must be a non-empty string"):
        sf.datasets.osmfish_cortex(base_url="")
    with pytest.raises(TypeError, match=r"`path` must be a folder"):
        sf.datasets.osmfish_cortex(["a"])


@pytest.mark.parametrize("cut", [100, 2000, -10])
def test_truncated_or_damaged_file(folder, cut):
    path = folder / LOOM
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(ValueError, match=r"cannot be read as HDF5 \(loom\) \(OSError") as info:
        sf.datasets.osmfish_cortex(folder)
    assert str(path) in str(info.value) and "Delete it and load again" in str(info.value)


def test_not_hdf5(folder):
    (folder / LOOM).write_text("CellID,X,Y\n1,2,3\n")
    with pytest.raises(ValueError, match=r"osmFISH_SScortex_mouse_all_cells\.loom: cannot be read as HDF5"):
        sf.datasets.osmfish_cortex(folder)


def test_missing_datasets(folder):
    _write(folder, drop=["Region", "Gene"])
    with pytest.raises(ValueError, match=r"has no loom dataset\(s\) \['row_attrs/Gene', 'col_attrs/Region'\]"):
        sf.datasets.osmfish_cortex(folder)


def test_oversized_dataset_is_refused_before_reading(folder):
    # A chunked dataset whose chunks were never written: a large shape in a small file.
    with h5py.File(folder / LOOM, "a") as f:
        del f["matrix"]
        f.create_dataset("matrix", shape=(4, 2**34), dtype=np.int64, chunks=(4, 1024))
    with pytest.raises(ValueError, match=r"`matrix` claims 549755813888 bytes, more than the file can hold"):
        sf.datasets.osmfish_cortex(folder)


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"X": np.array([1.0, np.nan, 3, 4, 5, 6])}, r"`col_attrs/X` has NaN or infinite values"),
        ({"Y": np.ones(5)}, r"`col_attrs/Y` has shape \(5,\), but `matrix` has 4 genes x 6 cells; expected \(6,\)"),
        ({"Region": np.array([b"\xe9"] * 6)}, r"`col_attrs/Region` is not UTF-8 text"),
        ({"Gene": np.array([b"Gad2", b"Gad2", b"Crhbp", b"Cnr1"])}, r"`row_attrs/Gene` must name every gene once"),
        ({"CellID": np.array([b"1"] * 6)}, r"`col_attrs/CellID` repeats cell ids"),
        ({"Valid": np.array([1, 2, 1, 0, 1, 0])}, r"`col_attrs/Valid` must be 0 or 1"),
        ({"ClusterName": np.ones(6)}, r"`col_attrs/ClusterName` must hold text, got dtype float64"),
        ({"matrix": -np.ones((4, 6))}, r"`matrix` must hold molecule counts"),
        ({"matrix": np.full((4, 6), 0.5)}, r"`matrix` must hold molecule counts"),
        ({"matrix": np.full((4, 6), 2**24)}, r"`matrix` has counts of 2\*\*24 or more"),
        ({"matrix": np.array(["a"] * 6, dtype="S")}, r"`matrix` must be a numeric genes x cells matrix"),
    ],
)
def test_bad_datasets(folder, columns, message):
    matrix = columns.pop("matrix", None)
    _write(folder, matrix=matrix, **columns)
    with pytest.raises(ValueError, match=message):
        sf.datasets.osmfish_cortex(folder)


def test_variable_length_strings_and_integer_ids(folder):
    # loompy writes text as variable-length UTF-8 strings; cell ids may be integers.
    _, _, col = make_corpus.osmfish_attrs()
    regions = np.array(col["Region"].astype(str).tolist(), dtype=h5py.string_dtype())
    _write(folder, Region=regions, CellID=np.arange(6) + 10)
    adata = sf.datasets.osmfish_cortex(folder)
    assert adata.obs_names.tolist() == ["cell_10", "cell_11", "cell_12", "cell_14"]
    assert adata.obs["region"].tolist()[0] == "Layer 6"
