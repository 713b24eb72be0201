import zipfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import spatialfactors as sf

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "aba_200um"
GRIDS = DATA / "grids"
ANNOTATION = GRIDS / "P56_Mouse_gridAnnotation.zip"
NRP1 = GRIDS / "Nrp1_P56_coronal_74272479_200um.zip"
PDYN = GRIDS / "Pdyn_P56_coronal_71717084_200um.zip"
ONTOLOGY = DATA / "ontology" / "allen_structure_labels_grid_release.csv"


@pytest.fixture(scope="module")
def real():
    if not (ANNOTATION.is_file() and NRP1.is_file() and PDYN.is_file() and ONTOLOGY.is_file()):
        pytest.skip("shared Allen 200 um data not available")
    labels, header = sf.io.read_mhd(ANNOTATION)
    volumes = {"Nrp1": sf.io.read_mhd(NRP1)[0], "Pdyn": sf.io.read_mhd(PDYN)[0]}
    adata = sf.io.read_aba([NRP1, PDYN], ANNOTATION, ontology=ONTOLOGY)
    return labels, header, volumes, adata


# -- the real Allen grids ---------------------------------------------------------------------


def test_real_grids(real):
    labels, header, volumes, _ = real
    assert labels.shape == (67, 41, 58) and labels.dtype == np.uint32
    assert header["ElementType"] == "MET_UINT" and header["ElementSpacing"] == (200.0, 200.0, 200.0)
    assert int((labels > 0).sum()) == 62_529
    assert len(np.unique(labels[labels > 0])) == 649
    assert int((volumes["Nrp1"] == -1).sum()) == 54_982
    assert int((volumes["Pdyn"] == -1).sum()) == 60_307
    for v in volumes.values():
        assert v.shape == (67, 41, 58) and v.dtype == np.float32
        assert v[v != -1].min() >= 0  # -1 is the only negative value


def test_real_zip_equals_unpacked_mhd(real, tmp_path):
    labels, _, volumes, _ = real
    with zipfile.ZipFile(NRP1) as zf:
        zf.extractall(tmp_path)
    array, header = sf.io.read_mhd(tmp_path / "energy.mhd")
    np.testing.assert_array_equal(array, volumes["Nrp1"])
    assert header["ElementDataFile"] == "energy.raw"
    # The raw file is x fastest: its first bytes are voxels (0, 0, 0), (1, 0, 0), ...
    raw = np.fromfile(tmp_path / "energy.raw", dtype="<f4")
    np.testing.assert_array_equal(raw[:67], array[:, 0, 0])


def test_read_aba_layout(real):
    labels, _, volumes, adata = real
    mask = labels > 0
    flat = np.flatnonzero(mask)
    assert adata.shape == (62_529, 2)
    assert adata.X.dtype == np.float32
    assert adata.obs_names[0] == f"voxel_{flat[0]}"
    np.testing.assert_array_equal(adata.obs_names, [f"voxel_{i}" for i in flat])
    assert adata.obs["region_id"].dtype == np.int64
    np.testing.assert_array_equal(adata.obs["region_id"], labels.ravel()[flat])
    assert list(adata.var_names) == ["Nrp1", "Pdyn"]
    assert list(adata.var.columns) == ["gene_symbol", "section_data_set_id", "plane"]
    assert adata.var["section_data_set_id"].tolist() == [74272479, 71717084]
    assert adata.var["plane"].tolist() == ["coronal", "coronal"]
    assert tuple(adata.uns["aba"]["grid_shape"]) == (67, 41, 58)
    assert adata.uns["aba"]["spacing"] == 200.0
    np.testing.assert_array_equal(adata.uns["aba"]["mask"], mask)
    np.testing.assert_array_equal(adata.obsm["spatial"], np.argwhere(mask) * 200.0)
    assert adata.obsm["spatial"].shape == (62_529, 3)
    # Acronyms and names from the ontology, one per voxel.
    assert adata.obs["acronym"].notna().all() and adata.obs["name"].notna().all()
    onto = sf.io.read_ontology(ONTOLOGY)
    np.testing.assert_array_equal(adata.obs["acronym"].astype(str), onto.acronym_of(adata.obs["region_id"].to_numpy()))


def test_read_aba_values_and_round_trip(real):
    labels, _, volumes, adata = real
    mask = labels > 0
    for j, (gene, raw) in enumerate(volumes.items()):
        column = adata.X[:, j]
        # NaN exactly where Allen wrote -1 inside the brain; every other value unchanged.
        np.testing.assert_array_equal(np.isnan(column), raw[mask] == -1)
        assert int(np.isnan(column).sum()) == int(((raw == -1) & mask).sum())
        back = sf.io.to_volume(adata, gene)
        expected = np.where(raw == -1, np.nan, raw).astype(np.float64)
        np.testing.assert_array_equal(back[mask], expected[mask])
        assert np.isnan(back[~mask]).all()
    assert int(np.isnan(adata.X[:, 0]).sum()) == 2124 and int(np.isnan(adata.X[:, 1]).sum()) == 1973


def test_read_aba_h5ad_round_trip(real, tmp_path):
    _, _, _, adata = real
    adata.write_h5ad(tmp_path / "aba.h5ad")
    back = ad.read_h5ad(tmp_path / "aba.h5ad")
    np.testing.assert_array_equal(back.X, adata.X)
    np.testing.assert_array_equal(sf.io.to_volume(back, "Pdyn"), sf.io.to_volume(adata, "Pdyn"))
    assert back.var["section_data_set_id"].tolist() == [74272479, 71717084]
    assert tuple(back.uns["aba"]["grid_shape"]) == (67, 41, 58)


def test_read_aba_mask_genes_and_single_file(real):
    labels, _, volumes, _ = real
    mask = np.zeros(labels.shape, bool)
    mask[30, :, :] = True  # a coronal slice, background included
    before = mask.copy()
    adata = sf.io.read_aba(NRP1, ANNOTATION, mask=mask, genes=["neuropilin"], ontology=ONTOLOGY, dtype="float64")
    np.testing.assert_array_equal(mask, before)  # the caller's mask is not modified
    assert adata.shape == (41 * 58, 1) and adata.X.dtype == np.float64
    assert adata.var_names.tolist() == ["neuropilin"] and adata.var["section_data_set_id"].tolist() == [74272479]
    np.testing.assert_array_equal(adata.obs["region_id"], labels[30].ravel())
    # Background voxels (id 0) have no acronym.
    np.testing.assert_array_equal(adata.obs["acronym"].isna(), labels[30].ravel() == 0)
    raw = volumes["Nrp1"][30].ravel()
    np.testing.assert_array_equal(adata.X[:, 0], np.where(raw < 0, np.nan, raw))
    full = sf.io.read_aba(NRP1, ANNOTATION, brain_only=False)
    assert full.n_obs == 67 * 41 * 58 and (full.obs["region_id"] == 0).sum() == 67 * 41 * 58 - 62_529


# -- synthetic files --------------------------------------------------------------------------


def _header(shape, etype, data_file, msb=False, spacing=200):
    return (
        f"NDims = {len(shape)}\nDimSize = {' '.join(map(str, shape))}\nElementType = {etype}\n"
        f"ElementSpacing = {' '.join([str(spacing)] * len(shape))}\nBinaryDataByteOrderMSB = {msb}\n"
        f"ElementDataFile = {data_file}\n"
    )


def _allen_zip(path, volume, xml_id=None, msb=False, spacing=200):
    """An Allen-like grid download: energy.mhd/energy.raw (+ data_set.xml)."""
    with zipfile.ZipFile(path, "w") as zf:
        if xml_id is not None:
            zf.writestr("data_set.xml", f"<section-data-set><id>{xml_id}</id><plane_of_section/></section-data-set>")
        zf.writestr("energy.mhd", _header(volume.shape, "MET_FLOAT", "energy.raw", msb, spacing))
        zf.writestr("energy.raw", volume.astype(">f4" if msb else "<f4").tobytes(order="F"))
    return path


def _annotation(path, labels):
    (path / "annotation.mhd").write_text(_header(labels.shape, "MET_UINT", "annotation.raw"))
    (path / "annotation.raw").write_bytes(labels.astype("<u4").tobytes(order="F"))
    return path / "annotation.mhd"


@pytest.fixture
def synthetic(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.zeros((5, 4, 3), np.uint32)
    labels[1:4, 1:3, :] = rng.choice([315, 320, 8], size=(3, 2, 3))
    energy = rng.random(labels.shape).astype(np.float32) * 10
    energy[rng.random(labels.shape) < 0.3] = -1
    onto = sf.io.Ontology(
        pd.DataFrame(
            [(997, "root", "root", None), (8, "grey", "grey", 997), (315, "Isocortex", "Isocortex", 8)]
            + [(320, "MOp1", "Primary motor area, Layer 1", 315)],
            columns=["id", "acronym", "name", "parent_structure_id"],
        )
    )
    return tmp_path, labels, energy, onto


def test_synthetic_metadata_and_big_endian(synthetic):
    folder, labels, energy, onto = synthetic
    annotation = _annotation(folder, labels)
    a = _allen_zip(folder / "Gad1_P56_sagittal_123_200um.zip", energy, msb=True)
    b = _allen_zip(folder / "myfile.zip", energy * 2, xml_id=77)
    c = _allen_zip(folder / "Gad1_P56_coronal_456_200um.zip", energy, xml_id=456)
    adata = sf.io.read_aba([a, b, c], annotation, ontology=onto)
    mask = labels > 0
    # Symbols, ids and planes from file names and data_set.xml; a repeated symbol gets its id appended.
    assert adata.var_names.tolist() == ["Gad1_123", "myfile", "Gad1_456"]
    assert adata.var["gene_symbol"].tolist() == ["Gad1", "myfile", "Gad1"]
    assert adata.var["section_data_set_id"].tolist() == [123, 77, 456]
    assert adata.var["plane"].astype(object).where(adata.var["plane"].notna(), None).tolist() == [
        "sagittal",
        None,
        "coronal",
    ]
    expected = np.where(energy < 0, np.nan, energy)[mask]
    np.testing.assert_array_equal(adata.X[:, 0], expected)  # big-endian grid read correctly
    np.testing.assert_array_equal(adata.X[:, 1], np.where(energy < 0, np.nan, 2 * energy)[mask])
    assert set(adata.obs["acronym"]) == set(onto.acronym_of(np.unique(labels[mask])))
    with pytest.warns(UserWarning, match="data_set.xml says 999"):
        d = _allen_zip(folder / "Gad1_P56_coronal_1_200um.zip", energy, xml_id=999)
        assert sf.io.read_aba(d, annotation).var["section_data_set_id"].tolist() == [999]


def test_synthetic_negative_values_become_nan(synthetic):
    folder, labels, energy, _ = synthetic
    energy = energy.copy()
    energy[labels > 0] = -3.5  # any negative value is "no data"
    adata = sf.io.read_aba(_allen_zip(folder / "g.zip", energy), _annotation(folder, labels))
    assert np.isnan(adata.X).all()


# -- bad input --------------------------------------------------------------------------------


def test_shape_mismatch(synthetic):
    folder, labels, energy, _ = synthetic
    good = _allen_zip(folder / "A_P56_coronal_1_200um.zip", energy)
    bad = _allen_zip(folder / "B_P56_coronal_2_200um.zip", energy[:, :, :2])
    with pytest.raises(ValueError, match=r"B_P56_coronal_2_200um.zip: grid shape \(5, 4, 2\) differs .* \(5, 4, 3\)"):
        sf.io.read_aba([good, bad], _annotation(folder, labels))


def test_spacing_mismatch(synthetic):
    folder, labels, energy, _ = synthetic
    bad = _allen_zip(folder / "B.zip", energy, spacing=100)
    with pytest.raises(ValueError, match=r"B.zip: spacing 100.0 differs from the annotation's 200.0"):
        sf.io.read_aba(bad, _annotation(folder, labels))


def test_zip_without_energy(synthetic):
    folder, labels, _, _ = synthetic
    empty = folder / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("data_set.xml", "<section-data-set><id>1</id></section-data-set>")
    with pytest.raises(FileNotFoundError, match=r"empty.zip: the archive holds no MetaImage"):
        sf.io.read_aba(empty, _annotation(folder, labels))
    several = folder / "several.zip"
    with zipfile.ZipFile(several, "w") as zf:
        for stem in ("density", "intensity"):
            zf.writestr(f"{stem}.mhd", _header(labels.shape, "MET_FLOAT", f"{stem}.raw"))
            zf.writestr(f"{stem}.raw", np.zeros(labels.shape, "<f4").tobytes())
    with pytest.raises(FileNotFoundError, match=r"no MetaImage named 'energy'.*density"):
        sf.io.read_aba(several, _annotation(folder, labels))


def test_region_ids_missing_from_ontology(synthetic):
    folder, labels, energy, onto = synthetic
    labels = labels.copy()
    labels[1, 1, 0], labels[2, 1, 1] = 123456, 654321
    with pytest.raises(
        ValueError, match=r"2 structure ids of the annotation .* not in the ontology, e.g. \[123456, 654321\]"
    ):
        sf.io.read_aba(_allen_zip(folder / "g.zip", energy), _annotation(folder, labels), ontology=onto)


def test_argument_errors(synthetic):
    folder, labels, energy, _ = synthetic
    grid = _allen_zip(folder / "g.zip", energy)
    annotation = _annotation(folder, labels)
    with pytest.raises(ValueError, match="`genes` has 2 names for 1 files"):
        sf.io.read_aba(grid, annotation, genes=["a", "b"])
    with pytest.raises(ValueError, match="`energy` is empty"):
        sf.io.read_aba([], annotation)
    with pytest.raises(FileNotFoundError, match="Expression grid not found"):
        sf.io.read_aba(folder / "nope.zip", annotation)
    with pytest.raises(ValueError, match="`dtype` must be one of"):
        sf.io.read_aba(grid, annotation, dtype="int8")
    with pytest.raises(TypeError, match="`mask` must be a boolean array"):
        sf.io.read_aba(grid, annotation, mask=np.ones(labels.shape))
    with pytest.raises(ValueError, match=r"`mask` has shape \(2, 2\), but the annotation grid has shape \(5, 4, 3\)"):
        sf.io.read_aba(grid, annotation, mask=np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="selects no voxels"):
        sf.io.read_aba(grid, annotation, mask=np.zeros(labels.shape, bool))
    (folder / "float.mhd").write_text(_header(labels.shape, "MET_FLOAT", "float.raw"))
    (folder / "float.raw").write_bytes(labels.astype("<f4").tobytes(order="F"))
    with pytest.raises(ValueError, match="integer structure ids"):
        sf.io.read_aba(grid, folder / "float.mhd")


def test_error_leaves_nothing_behind(synthetic):
    folder, labels, energy, onto = synthetic
    good = _allen_zip(folder / "A.zip", energy)
    truncated = folder / "B.zip"
    with zipfile.ZipFile(truncated, "w") as zf:
        zf.writestr("energy.mhd", _header(labels.shape, "MET_FLOAT", "energy.raw"))
        zf.writestr("energy.raw", energy.astype("<f4").tobytes(order="F")[:-8])
    annotation = _annotation(folder, labels)
    mask = labels > 0
    before_files = sorted(folder.iterdir())
    before_mask = mask.copy()
    result = None
    with pytest.raises(ValueError, match=r"B.zip::energy.mhd: 'energy.raw' in the archive is truncated"):
        result = sf.io.read_aba([good, truncated], annotation, mask=mask, ontology=onto)
    assert result is None
    assert sorted(folder.iterdir()) == before_files  # nothing unpacked or written
    np.testing.assert_array_equal(mask, before_mask)
    # The same call without the broken file succeeds.
    assert sf.io.read_aba([good], annotation, mask=mask, ontology=onto).shape == (int(mask.sum()), 1)


def _damage(archive: Path, how: str) -> None:
    raw = archive.read_bytes()
    if how == "random":
        archive.write_bytes(np.random.default_rng(0).bytes(len(raw)))
    elif how == "truncated":
        archive.write_bytes(raw[: len(raw) // 2])
    else:  # one byte of data_set.xml (stored): its CRC no longer matches
        at = raw.index(b"<section-data-set>") + 1
        archive.write_bytes(raw[:at] + b"S" + raw[at + 1 :])


@pytest.mark.parametrize("how", ["random", "truncated", "bad_crc"])
def test_damaged_gene_zip_names_the_file(synthetic, how):
    # data_set.xml is read before the volume: zipfile's BadZipFile used to escape from there.
    folder, labels, energy, _ = synthetic
    gene = _allen_zip(folder / "Gene_P56_coronal_5_200um.zip", energy, xml_id=5)
    _damage(gene, how)
    with pytest.raises(ValueError, match=r"Gene_P56_coronal_5_200um\.zip: damaged or unsupported zip archive .*"
                       r"delete it and download it again"):  # fmt: skip
        sf.io.read_aba(gene, _annotation(folder, labels))


def test_annotation_ids_beyond_int64(synthetic):
    # uint64 ids >= 2**63 wrapped to negative region ids.
    folder, labels, energy, _ = synthetic
    big = labels.astype("<u8")
    big[big == 320] = 2**63 + 320
    (folder / "big.mhd").write_text(_header(big.shape, "MET_ULONG_LONG", "big.raw"))
    (folder / "big.raw").write_bytes(big.tobytes(order="F"))
    gene = _allen_zip(folder / "Gene_P56_coronal_5_200um.zip", energy)
    with pytest.raises(ValueError, match=r"big\.mhd: the annotation holds the id 9223372036854776128, beyond"):
        sf.io.read_aba(gene, folder / "big.mhd")
