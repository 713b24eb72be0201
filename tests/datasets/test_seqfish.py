import dataclasses
import hashlib
import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import spatialfactors as sf
from spatialfactors.datasets import _fetch, _seqfish

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SEQFISH = DATA / "seqfishplus_cortex"
FOV_SIZES = {"0": 118, "1": 108, "2": 90, "3": 106, "4": 101, "5": 281, "6": 109}
SUBSET_NAMES = [
    "seqfish_field_expr.txt.gz",
    "seqfish_field_locs.txt",
    "cortex_svz_centroids_rotated.csv",
    "cortex_svz_cell_type_annotations.csv",
    "cortex_svz_centroids_annot.txt",
]


@pytest.fixture(scope="module")
def fov0():
    if not SEQFISH.is_dir():
        pytest.skip("shared seqFISH+ data not available")
    return sf.datasets.seqfish_plus_cortex(SEQFISH)


@pytest.fixture(scope="module")
def metadata():
    if not SEQFISH.is_dir():
        pytest.skip("shared seqFISH+ data not available")
    rotated = pd.read_csv(SEQFISH / "cortex_svz_centroids_rotated.csv")
    labels = pd.read_csv(SEQFISH / "cortex_svz_cell_type_annotations.csv")
    expr = pd.read_csv(SEQFISH / "seqfish_field_expr.txt.gz", sep=" ", index_col=0)
    return rotated, labels, expr


def _full_counts(metadata, seed=0):
    """913 cells x the subset's genes in CaiGroup's layout: FOV-0 cells real, the others random counts."""
    rotated, _, expr = metadata
    rng = np.random.default_rng(seed)
    counts = rng.poisson(0.5, (len(rotated), expr.shape[0]))
    counts[: expr.shape[1]] = expr.T.to_numpy()
    return pd.DataFrame(counts, columns=expr.index)


def _write_full(folder, metadata, *, index=False):
    """CaiGroup's two source files (under sourcedata/ as in its archive) and the louvain labels."""
    rotated, _, _ = metadata
    (folder / "sourcedata").mkdir(parents=True)
    _full_counts(metadata).to_csv(folder / "sourcedata" / "cortex_svz_counts.csv", index=index)
    cells = rotated.assign(Region=np.where(rotated["Field of View"] < 5, "Cortex", "SVZ"))
    cells.to_csv(folder / "sourcedata" / "cortex_svz_cellcentroids.csv", index=index)
    shutil.copy(SEQFISH / "cortex_svz_cell_type_annotations.csv", folder / "cortex_svz_cell_type_annotations.csv")
    return folder


# --- real files -------------------------------------------------------------------------------


def test_fov0_subset(fov0, metadata):
    rotated, labels, expr = metadata
    adata = fov0
    assert adata.shape == (118, 1774)
    assert sp.issparse(adata.X) and adata.X.dtype == np.float32
    np.testing.assert_array_equal(adata.X.toarray(), expr.T.to_numpy())
    assert adata.var_names.tolist() == expr.index.tolist()
    assert adata.obs_names.tolist() == [f"cell_{i}" for i in range(1, 119)]
    assert adata.obs["fov"].tolist() == ["0"] * 118 and (adata.obs["region"] == "cortex").all()
    # Labels of the first 118 cells of CaiGroup's list; coordinates of those cells in drieslab's file.
    assert adata.obs["louvain"].astype(int).tolist() == labels["louvain"][:118].tolist()
    np.testing.assert_array_equal(adata.obsm["spatial"], rotated[["X", "Y"]].to_numpy()[:118])
    locs = np.loadtxt(SEQFISH / "seqfish_field_locs.txt")
    np.testing.assert_allclose(adata.obsm["spatial"], locs * [1, -1], atol=0.011)
    assert adata.obs["cell_type"].value_counts()["Excitatory neuron"] == 73
    assert adata.uns["provenance"]["subset"] == "fov0"


def test_louvain_nests_in_cell_types(fov0):
    # Aligned labels: every published louvain cluster is a single Giotto cell type.
    per_cluster = fov0.obs.groupby("louvain", observed=True)["cell_type"].nunique()
    assert (per_cluster == 1).all()
    assert fov0.obs.loc["cell_1", "louvain"] == "13" and fov0.obs.loc["cell_4", "cell_type"] == "Interneuron"


def test_full_layout_913_cells_in_7_fovs(tmp_path, metadata, fov0):
    rotated, labels, _ = metadata
    folder = _write_full(tmp_path / "seqfish", metadata, index=True)  # with a written-out row index
    adata = sf.datasets.seqfish_plus_cortex(folder, subset="full")
    assert adata.shape == (913, 1774)
    assert adata.obs["fov"].value_counts().to_dict() == FOV_SIZES
    assert adata.obs["fov"].cat.categories.tolist() == list(FOV_SIZES)
    assert adata.obs["region"].value_counts().to_dict() == {"cortex": 523, "SVZ": 390}
    assert adata.obs["louvain"].astype(int).tolist() == labels["louvain"].tolist()
    assert adata.obs["louvain"].cat.categories.tolist() == [str(i) for i in range(1, 27)]
    assert adata.obs_names.tolist() == [f"cell_{i}" for i in rotated["Cell ID"]]
    np.testing.assert_array_equal(adata.X.toarray(), _full_counts(metadata).to_numpy())
    np.testing.assert_array_equal(adata.obsm["spatial"], rotated[["X", "Y"]].to_numpy())
    assert adata.obs["Region"].iloc[0] == "Cortex"  # extra centroid columns are kept
    assert adata.uns["provenance"]["subset"] == "full"
    # "auto" picks the full files when present; the FOV-0 cells agree with the subset.
    auto = sf.datasets.seqfish_plus_cortex(folder)
    assert auto.n_obs == 913
    np.testing.assert_array_equal(auto[fov0.obs_names].X.toarray(), fov0.X.toarray())
    # Without a row index (the layout other readers of the archive use) and with cell types.
    plain = _write_full(tmp_path / "plain", metadata)
    shutil.copy(SEQFISH / "cortex_svz_centroids_annot.txt", plain / "cortex_svz_centroids_annot.txt")
    again = sf.datasets.seqfish_plus_cortex(plain)
    np.testing.assert_array_equal(again.X.toarray(), adata.X.toarray())
    assert again.obs["cell_type"].value_counts()["Choroid Plexus"] == 99


def test_git_object_id():
    if not (DATA / "starmap_visual_1020").is_dir():
        pytest.skip("shared data not available")
    # `git hash-object` of the shared file, the id under which its repository stores it.
    assert _fetch._git_blob_sha1(DATA / "starmap_visual_1020" / "class_labels.csv") == (
        "ba7f1f3028fae518756ecb5b56445dfc9bf4108f"
    )


# --- download path against a local server ----------------------------------------------------


@pytest.fixture
def server(github_server):
    if not SEQFISH.is_dir():
        pytest.skip("shared seqFISH+ data not available")
    return github_server


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _serve_subset(server, monkeypatch, labels: bytes | None = None):
    for name in ("seqfish_field_expr.txt.gz", "seqfish_field_locs.txt", "cortex_svz_centroids_rotated.csv"):
        server["serve"](_seqfish.FILES[name], (SEQFISH / name).read_bytes())
    server["serve"](
        _seqfish.FILES["cortex_svz_centroids_annot.txt"], (SEQFISH / "cortex_svz_centroids_annot.txt").read_bytes()
    )
    # CaiGroup's archive is not in the shared data: serve one holding the real label file, under its
    # own checksum; the member must still match the real file's checksum.
    labels = labels if labels is not None else (SEQFISH / "cortex_svz_cell_type_annotations.csv").read_bytes()
    archive = _zip({"cortex_svz_cell_type_annotations.csv": labels, "OB_cell_type_annotations.csv": b"index,louvain\n"})
    remote = dataclasses.replace(_seqfish.LABELS_SOURCE, sha256=hashlib.sha256(archive).hexdigest())
    monkeypatch.setattr(_seqfish, "LABELS_SOURCE", remote)
    server["serve"](remote, archive)


def test_download_subset_then_cache(server, monkeypatch, fov0):
    _serve_subset(server, monkeypatch)
    adata = sf.datasets.seqfish_plus_cortex(base_url=server["url"])
    assert adata.shape == (118, 1774) and adata.obs_names.equals(fov0.obs_names)
    np.testing.assert_array_equal(adata.X.toarray(), fov0.X.toarray())
    assert adata.obs.equals(fov0.obs)
    folder = server["cache"] / "seqfishplus_cortex"
    assert set(SUBSET_NAMES) <= {p.name for p in folder.iterdir()}
    served = sorted(p.split("/", 3)[-1] for p in server["requests"])
    assert served == sorted(
        [
            f"{_seqfish._CAIGROUP[1]}/celltype_annotations.zip",
            f"{_seqfish._DRIESLAB[1]}/data/2022_miniseqFISH/seqfish_field_expr.txt.gz",
            f"{_seqfish._DRIESLAB[1]}/data/2022_miniseqFISH/seqfish_field_locs.txt",
            f"{_seqfish._DRIESLAB[1]}/data/2019_seqfish_plus_SScortex/cell_locations/cortex_svz_centroids_annot.txt",
            f"{_seqfish._DRIESLAB_2020[1]}/data/2019_seqfish_plus_SScortex/cell_locations/cortex_svz_centroids_rotated.csv",
        ]
    )
    n = len(server["requests"])
    sf.datasets.seqfish_plus_cortex(base_url=server["url"])
    assert len(server["requests"]) == n


def test_wrong_checksums(server, monkeypatch):
    _serve_subset(server, monkeypatch)
    data = bytearray((SEQFISH / "seqfish_field_locs.txt").read_bytes())
    data[3] = ord("0") if data[3] != ord("0") else ord("1")
    server["serve"](_seqfish.FILES["seqfish_field_locs.txt"], bytes(data))
    with pytest.raises(ValueError, match=r"Checksum mismatch for seqfish_field_locs\.txt downloaded from"):
        sf.datasets.seqfish_plus_cortex(base_url=server["url"])
    assert not (server["cache"] / "seqfishplus_cortex" / "seqfish_field_locs.txt").exists()


def test_wrong_member_checksum(server, monkeypatch):
    labels = (SEQFISH / "cortex_svz_cell_type_annotations.csv").read_bytes().replace(b"0,13", b"0,12", 1)
    _serve_subset(server, monkeypatch, labels=labels)
    with pytest.raises(
        ValueError, match=r"Checksum mismatch for cortex_svz_cell_type_annotations\.csv extracted from celltype_"
    ):
        sf.datasets.seqfish_plus_cortex(base_url=server["url"])
    assert not (server["cache"] / "seqfishplus_cortex" / "cortex_svz_cell_type_annotations.csv").exists()


def test_download_full_checked_by_git_object_id(server, monkeypatch, metadata, tmp_path):
    _serve_subset(server, monkeypatch)
    local = _write_full(tmp_path / "local", metadata)
    archive = _zip(
        {f"sourcedata/{p.name}": p.read_bytes() for p in sorted((local / "sourcedata").iterdir())}
        | {"sourcedata/ob_counts.csv": b"a\n1\n"}
    )
    blob = hashlib.sha1(b"blob %d\0" % len(archive) + archive).hexdigest()
    remote = dataclasses.replace(_seqfish.FULL_SOURCE, git_blob="0" * 40)
    monkeypatch.setattr(_seqfish, "FULL_SOURCE", remote)
    server["serve"](remote, archive)
    with pytest.raises(ValueError, match=r"Checksum mismatch for sourcedata\.zip downloaded from .*git object id"):
        sf.datasets.seqfish_plus_cortex(subset="full", base_url=server["url"])
    assert not (server["cache"] / "seqfishplus_cortex" / "sourcedata.zip").exists()
    monkeypatch.setattr(_seqfish, "FULL_SOURCE", dataclasses.replace(remote, git_blob=blob))
    adata = sf.datasets.seqfish_plus_cortex(subset="full", base_url=server["url"])
    assert adata.shape == (913, 1774) and adata.obs["fov"].value_counts().to_dict() == FOV_SIZES
    assert "cell_type" in adata.obs
    # Now cached: "auto" reads the full files, without any request.
    n = len(server["requests"])
    assert sf.datasets.seqfish_plus_cortex(base_url=server["url"]).n_obs == 913
    assert len(server["requests"]) == n


# --- bad input ---------------------------------------------------------------------------------


@pytest.fixture
def broken(tmp_path):
    if not SEQFISH.is_dir():
        pytest.skip("shared seqFISH+ data not available")
    folder = tmp_path / "seqfish"
    folder.mkdir()
    for name in SUBSET_NAMES:
        shutil.copy(SEQFISH / name, folder / name)
        (folder / name).chmod(0o644)
    return folder


def test_missing_files(broken):
    (broken / "seqfish_field_locs.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"file 'seqfish_field_locs\.txt' not found in"):
        sf.datasets.seqfish_plus_cortex(broken)
    with pytest.raises(FileNotFoundError, match=r"files 'cortex_svz_counts\.csv' and 'cortex_svz_cellcentroids\.csv'"):
        sf.datasets.seqfish_plus_cortex(broken, subset="full")
    with pytest.raises(ValueError, match="`subset` must be one of"):
        sf.datasets.seqfish_plus_cortex(broken, subset="fov1")


def test_subset_files_disagree(broken):
    locs = (broken / "seqfish_field_locs.txt").read_text().splitlines(keepends=True)
    (broken / "seqfish_field_locs.txt").write_text("".join(locs[:-1]))
    with pytest.raises(
        ValueError, match=r"seqfish_field_expr\.txt\.gz has 118 cells but seqfish_field_locs\.txt has 117"
    ):
        sf.datasets.seqfish_plus_cortex(broken)
    (broken / "seqfish_field_locs.txt").write_text("".join([locs[1], locs[0], *locs[2:]]))
    with pytest.raises(ValueError, match="do not match the centroids of those cells .* not aligned"):
        sf.datasets.seqfish_plus_cortex(broken)


def test_shifted_labels_are_detected(broken):
    labels = pd.read_csv(broken / "cortex_svz_cell_type_annotations.csv")
    labels["louvain"] = np.roll(labels["louvain"].to_numpy(), 1)
    labels.to_csv(broken / "cortex_svz_cell_type_annotations.csv", index=False)
    with pytest.raises(ValueError, match="louvain clusters .* hold several cell types, so the labels are not aligned"):
        sf.datasets.seqfish_plus_cortex(broken)
    labels.iloc[:-1].to_csv(broken / "cortex_svz_cell_type_annotations.csv", index=False)
    with pytest.raises(ValueError, match=r"labels 912 cells but the centroids list 913"):
        sf.datasets.seqfish_plus_cortex(broken)


def test_full_files_disagree(tmp_path, metadata):
    folder = _write_full(tmp_path / "seqfish", metadata)
    counts = folder / "sourcedata" / "cortex_svz_counts.csv"
    lines = counts.read_text().splitlines(keepends=True)
    counts.write_text("".join(lines[:-1]))
    with pytest.raises(
        ValueError, match=r"cortex_svz_counts\.csv has 912 cells but cortex_svz_cellcentroids\.csv has 913"
    ):
        sf.datasets.seqfish_plus_cortex(folder)
    # A row with a count missing: the matrix no longer fits the gene list of the header.
    lines[3] = lines[3].rsplit(",", 1)[0] + "\n"
    counts.write_text("".join(lines))
    with pytest.raises(ValueError, match=r"cortex_svz_counts\.csv must hold integer counts with one value per gene"):
        sf.datasets.seqfish_plus_cortex(folder)
    lines[3] = lines[3].rstrip("\n") + ",1,2\n"
    counts.write_text("".join(lines))
    with pytest.raises(ValueError, match=r"Cannot read cortex_svz_counts\.csv"):
        sf.datasets.seqfish_plus_cortex(folder)


@pytest.mark.parametrize("damage", ["truncated", "not_zip"])
def test_damaged_download_archive_names_the_file(tmp_path, damage):
    import zipfile

    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("folder/table.txt", "x" * 5000)
    raw = archive.read_bytes()
    archive.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else b"not a zip archive")
    with pytest.raises(ValueError, match=r"data\.zip: damaged or unsupported zip archive .*download it again"):
        _fetch._zip_member(archive, "table.txt")
