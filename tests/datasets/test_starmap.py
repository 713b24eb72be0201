import dataclasses
import gzip
import hashlib
import shutil
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp

import spatialfactors as sf
from spatialfactors.datasets import _starmap

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
VISUAL = DATA / "starmap_visual_1020"
VOLUME = DATA / "starmap_3d_cortex"
VISUAL_NAMES = ["cell_barcode_count.csv", "genes_from_rds.csv", "class_labels.csv", "Centriods_extracted.csv"]
PUBLISHED = {
    "eL4": 138, "Oligo": 124, "eL2/3": 116, "eL6-2": 104, "HPC": 83, "Astro-2": 74, "Astro-1": 54, "Endo": 48,
    "eL5": 41, "Smc": 32, "PVALB": 30, "eL6-1": 28, "Micro": 17, "VIP": 16, "Reln": 15, "SST": 10,
}  # fmt: skip


def _need(folder):
    if not folder.is_dir():
        pytest.skip(f"shared data {folder.name} not available")


@pytest.fixture(scope="module")
def visual_all():
    _need(VISUAL)
    return sf.datasets.starmap_visual_cortex(VISUAL, filter_cells=False)


@pytest.fixture(scope="module")
def visual():
    _need(VISUAL)
    return sf.datasets.starmap_visual_cortex(VISUAL)


# --- real files -------------------------------------------------------------------------------


def test_unfiltered_matches_the_files(visual_all):
    adata = visual_all
    assert adata.shape == (973, 1020)
    assert sp.issparse(adata.X) and adata.X.format == "csr" and adata.X.dtype == np.float32
    counts = pd.read_csv(VISUAL / "cell_barcode_count.csv", header=None).to_numpy()
    np.testing.assert_array_equal(adata.X.toarray(), counts)
    genes = [g.strip() for g in (VISUAL / "genes_from_rds.csv").read_text().splitlines()]
    assert adata.var_names.tolist() == genes
    assert "Eef1akmt1" in adata.var_names  # listed with a trailing space in the file
    centroids = pd.read_csv(VISUAL / "Centriods_extracted.csv", sep=" ").to_numpy()
    np.testing.assert_array_equal(adata.obsm["spatial"], centroids)
    assert adata.obs_names[:3].tolist() == ["cell_0", "cell_1", "cell_2"]
    np.testing.assert_array_equal(adata.obs["total_counts"], counts.sum(1))
    assert int(adata.obs["ClusterName"].isna().sum()) == 43 and int(adata.obs["ClusterID"].isna().sum()) == 43
    assert int(adata.obs["passes_filter"].sum()) == 930
    assert adata.uns["provenance"]["filter"] == "none"


def test_filter_keeps_the_930_published_cells(visual, visual_all):
    assert visual.shape == (930, 1020)
    labels = pd.read_csv(VISUAL / "class_labels.csv")
    assert visual.obs_names.tolist() == [f"cell_{i}" for i in labels.loc[labels["ClusterID"] != -1, "CellID"]]
    total = visual.obs["total_counts"]
    assert ((total > 200) & (total <= 3000)).all() and visual.obs["passes_filter"].all()
    assert visual.obs["ClusterName"].notna().all()
    assert visual.obs["ClusterName"].value_counts().to_dict() == PUBLISHED
    assert "200 < total counts <= 3000" in visual.uns["provenance"]["filter"]
    np.testing.assert_array_equal(visual.X.toarray(), visual_all[visual.obs_names].X.toarray())


def test_labels_are_aligned_to_cells(visual):
    obs = visual.obs
    assert obs.loc[["cell_0", "cell_1", "cell_3"], "ClusterName"].tolist() == ["eL2/3", "eL6-2", "Astro-2"]
    # Each name has its published id (0 HPC, 1 eL2/3, ...), and ids are categories in that order.
    pairs = obs.groupby("ClusterName", observed=True)["ClusterID"].agg(lambda s: set(s.astype(int)))
    assert pairs["HPC"] == {0} and pairs["eL2/3"] == {1} and pairs["SST"] == {14}
    assert obs["ClusterID"].cat.categories.tolist() == list(range(16))
    # Labels sit where the cortex has them: excitatory layers in order along the second axis,
    # the hippocampus at its bottom, the smooth-muscle (meninges) cells at its top.
    depth = pd.Series(visual.obsm["spatial"][:, 1], index=obs.index).groupby(obs["ClusterName"], observed=True)
    med = depth.median()
    assert med["HPC"] < med["eL6-2"] < med["eL6-1"] < med["eL5"] < med["eL4"] < med["eL2/3"] < med["Smc"]


def test_data_root_and_environment_folder(visual, monkeypatch):
    from_root = sf.datasets.starmap_visual_cortex(DATA)
    np.testing.assert_array_equal(from_root.X.toarray(), visual.X.toarray())
    # The environment folder has the shared layout: no download (nothing listens on that port).
    monkeypatch.setenv("SPATIALFACTORS_DATA", str(DATA))
    offline = sf.datasets.starmap_visual_cortex(base_url="http://127.0.0.1:9")
    assert offline.obs_names.equals(visual.obs_names)
    np.testing.assert_array_equal(offline.obsm["spatial"], visual.obsm["spatial"])


def test_3d_volume():
    _need(VOLUME)
    adata = sf.datasets.starmap_3d_cortex(VOLUME)
    assert adata.shape == (33598, 28) and adata.X.dtype == np.float32
    mat = scipy.io.loadmat(VOLUME / "20180123_BS10_light.mat")
    np.testing.assert_array_equal(adata.X, mat["expr"])
    assert adata.obsm["spatial"].shape == (33598, 3)
    np.testing.assert_array_equal(adata.obsm["spatial"], mat["goodLocs"])
    np.testing.assert_array_equal(adata.obsm["spatial"], np.loadtxt(VOLUME / "STARmap_3D_data_cell_locations.txt"))
    assert adata.var_names[:3].tolist() == ["Slc17a7", "Mgp", "Gad1"]
    assert adata.var_names[16] == "Calb2"  # the file's line reads "16,Calb2,"
    assert adata.var_names.is_unique


# --- download path against a local server ----------------------------------------------------


def _strsxp(names):
    # R's XDR serialisation of a character vector: STRSXP header, length, CHARSXP (UTF-8 flag) elements.
    out = struct.pack(">ii", 16, len(names))
    for name in names:
        raw = name.encode()
        out += struct.pack(">ii", 0x00008009, len(raw)) + raw
    return out


def _fake_rds(vectors):
    body = b"X\n" + struct.pack(">iii", 3, 0x040102, 0x030500) + b"\x00\x00\x00\x05UTF-8"
    for names in vectors:
        body += struct.pack(">i", 0x0313) + _strsxp(names)  # some other object before each vector
    return gzip.compress(b"RDX3\n" + body)


@pytest.fixture
def server(github_server):
    return github_server


def _serve_visual(server, monkeypatch, vectors=None):
    for name, remote in _starmap.VISUAL_FILES.items():
        server["serve"](remote, (VISUAL / name).read_bytes())
    genes = (VISUAL / "genes_from_rds.csv").read_text().splitlines()  # raw, with the trailing space
    rds = _fake_rds(vectors if vectors is not None else [["a", "b", "c"], genes])
    # The real Seurat object is not in the shared data: serve a small R object with the same gene
    # vector under the checksum of that object; the extracted list must still match the real one.
    remote = dataclasses.replace(_starmap.GENES_SOURCE, sha256=hashlib.sha256(rds).hexdigest())
    monkeypatch.setattr(_starmap, "GENES_SOURCE", remote)
    server["serve"](remote, rds)


def test_download_then_cache(server, monkeypatch, visual):
    _need(VISUAL)
    _serve_visual(server, monkeypatch)
    adata = sf.datasets.starmap_visual_cortex(base_url=server["url"])
    assert adata.obs_names.equals(visual.obs_names) and adata.var_names.equals(visual.var_names)
    np.testing.assert_array_equal(adata.X.toarray(), visual.X.toarray())
    np.testing.assert_array_equal(adata.obsm["spatial"], visual.obsm["spatial"])
    folder = server["cache"] / "starmap_visual_1020"
    assert set(VISUAL_NAMES) <= {p.name for p in folder.iterdir()}
    assert (folder / "genes_from_rds.csv").read_bytes() == (VISUAL / "genes_from_rds.csv").read_bytes()
    commit = _starmap.VISUAL_FILES["class_labels.csv"].commit
    assert sorted(server["requests"]) == sorted(
        f"/xzhoulab/SRTsim-Analysis/{commit}/{p}"
        for p in [
            "rawdata/STARmap/cell_barcode_count.csv",
            "rawdata/STARmap/class_labels.csv",
            "rawdata/STARmap/Centriods_extracted.csv",
            "CCI_analysis/starmap_1020_0410_seurat_filter_layer.rds",
        ]
    )
    n = len(server["requests"])
    again = sf.datasets.starmap_visual_cortex(base_url=server["url"], filter_cells=False)
    assert len(server["requests"]) == n and again.n_obs == 973  # all from the cache


def test_wrong_checksum_is_a_clear_error(server, monkeypatch):
    _need(VISUAL)
    _serve_visual(server, monkeypatch)
    data = bytearray((VISUAL / "class_labels.csv").read_bytes())
    data[40] = ord("9") if data[40] != ord("9") else ord("8")
    server["serve"](_starmap.VISUAL_FILES["class_labels.csv"], bytes(data))
    with pytest.raises(ValueError, match=r"Checksum mismatch for class_labels\.csv downloaded from http"):
        sf.datasets.starmap_visual_cortex(base_url=server["url"])
    assert not (server["cache"] / "starmap_visual_1020" / "class_labels.csv").exists()


def test_gene_names_from_a_different_r_object_are_refused(server, monkeypatch):
    _need(VISUAL)
    genes = (VISUAL / "genes_from_rds.csv").read_text().splitlines()
    _serve_visual(server, monkeypatch, vectors=[[*genes[:-1], "Other"]])
    with pytest.raises(ValueError, match=r"Checksum mismatch for genes_from_rds\.csv extracted from starmap_1020"):
        sf.datasets.starmap_visual_cortex(base_url=server["url"])
    assert not (server["cache"] / "starmap_visual_1020" / "genes_from_rds.csv").exists()


def test_ambiguous_gene_vectors_in_r_object(tmp_path):
    rds = tmp_path / "x.rds"
    rds.write_bytes(_fake_rds([["a", "b"], ["c", "d"], ["e"]]))
    assert _starmap._rds_character_vectors(rds, 2) == [["a", "b"], ["c", "d"]]
    with pytest.raises(ValueError, match="Expected one character vector of 2 gene names in x.rds, found 2"):
        _starmap._genes_from_rds(rds, 2)
    rds.write_bytes(gzip.compress(b"not R"))
    with pytest.raises(ValueError, match="x.rds is not an R object"):
        _starmap._genes_from_rds(rds, 2)


def test_3d_download_and_wrong_checksum(server):
    _need(VOLUME)
    for name, remote in _starmap.VOLUME_FILES.items():
        server["serve"](remote, (VOLUME / name).read_bytes())
    adata = sf.datasets.starmap_3d_cortex(base_url=server["url"])
    assert adata.shape == (33598, 28)
    assert sorted(p.name for p in (server["cache"] / "starmap_3d_cortex").iterdir()) == sorted(_starmap.VOLUME_FILES)
    shutil.rmtree(server["cache"])
    server["serve"](_starmap.VOLUME_FILES["gene_names.csv"], b"0,Wrong\n")
    with pytest.raises(ValueError, match=r"Checksum mismatch for gene_names\.csv"):
        sf.datasets.starmap_3d_cortex(base_url=server["url"])


# --- bad input ---------------------------------------------------------------------------------


@pytest.fixture
def broken(tmp_path):
    """A writable copy of the STARmap folder to break."""
    _need(VISUAL)
    folder = tmp_path / "starmap"
    shutil.copytree(VISUAL, folder)
    folder.chmod(0o755)  # the shared folder is read-only
    for p in folder.iterdir():
        p.chmod(0o644)
    return folder


def _drop_last_line(path):
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))


def test_missing_file(broken):
    (broken / "class_labels.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"STARmap visual cortex: file 'class_labels\.csv' not found in"):
        sf.datasets.starmap_visual_cortex(broken)
    with pytest.raises(FileNotFoundError, match="Data folder not found"):
        sf.datasets.starmap_visual_cortex(broken / "nope")


def test_gene_list_shorter_than_counts(broken):
    _drop_last_line(broken / "genes_from_rds.csv")
    with pytest.raises(
        ValueError, match=r"cell_barcode_count\.csv has 1020 gene columns but genes_from_rds\.csv lists 1019 genes"
    ):
        sf.datasets.starmap_visual_cortex(broken)


def test_centroids_disagree_with_counts(broken):
    _drop_last_line(broken / "Centriods_extracted.csv")
    with pytest.raises(
        ValueError, match=r"Centriods_extracted\.csv has 972 centroids but cell_barcode_count\.csv has 973 cells"
    ):
        sf.datasets.starmap_visual_cortex(broken)


def test_labels_disagree_with_counts(broken):
    labels = pd.read_csv(broken / "class_labels.csv")
    labels.iloc[:-1].to_csv(broken / "class_labels.csv", index=False)
    with pytest.raises(ValueError, match=r"class_labels\.csv labels 972 cells but cell_barcode_count\.csv has 973"):
        sf.datasets.starmap_visual_cortex(broken)
    labels.iloc[::-1].to_csv(broken / "class_labels.csv", index=False)
    with pytest.raises(ValueError, match=r"CellID must be 0, 1, \.\.\. in the row order"):
        sf.datasets.starmap_visual_cortex(broken)


def test_non_integer_counts(broken):
    path = broken / "cell_barcode_count.csv"
    lines = path.read_text().splitlines(keepends=True)
    lines[5] = "0.5" + lines[5][1:]
    path.write_text("".join(lines))
    with pytest.raises(ValueError, match=r"cell_barcode_count\.csv must hold integer counts"):
        sf.datasets.starmap_visual_cortex(broken)


def test_filter_cells_must_be_bool(broken):
    with pytest.raises(TypeError, match="`filter_cells` must be True or False"):
        sf.datasets.starmap_visual_cortex(broken, filter_cells="yes")


@pytest.fixture
def broken_volume(tmp_path):
    _need(VOLUME)
    folder = tmp_path / "volume"
    folder.mkdir()
    for name in ("20180123_BS10_light.mat", "gene_names.csv"):
        shutil.copy(VOLUME / name, folder / name)
        (folder / name).chmod(0o644)
    return folder


def test_3d_bad_input(broken_volume):
    _drop_last_line(broken_volume / "gene_names.csv")
    with pytest.raises(ValueError, match=r"`expr` has 28 gene columns but gene_names\.csv lists 27"):
        sf.datasets.starmap_3d_cortex(broken_volume)
    shutil.copy(VOLUME / "gene_names.csv", broken_volume / "gene_names.csv")
    mat = scipy.io.loadmat(VOLUME / "20180123_BS10_light.mat")
    scipy.io.savemat(broken_volume / "20180123_BS10_light.mat", {"expr": mat["expr"], "goodLocs": mat["goodLocs"][:-1]})
    with pytest.raises(ValueError, match=r"`goodLocs` has shape \(33597, 3\) but `expr` has 33598 cells"):
        sf.datasets.starmap_3d_cortex(broken_volume)
    scipy.io.savemat(broken_volume / "20180123_BS10_light.mat", {"expr": mat["expr"][:5]})
    with pytest.raises(ValueError, match=r"lacks the variable\(s\) \['goodLocs'\]"):
        sf.datasets.starmap_3d_cortex(broken_volume)
    (broken_volume / "gene_names.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"file 'gene_names\.csv' not found"):
        sf.datasets.starmap_3d_cortex(broken_volume)
