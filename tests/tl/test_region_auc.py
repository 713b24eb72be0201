from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

import spatialfactors as sf

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "aba_200um"
ANNOTATION = DATA / "grids" / "P56_Mouse_gridAnnotation.zip"
ONTOLOGY = DATA / "ontology" / "allen_structure_labels_grid_release.csv"

# A small hierarchy: CTX (1) with two leaves (11, 12); HB (2) with one leaf (21).
TREE = pd.DataFrame(
    {
        "id": [997, 1, 11, 12, 2, 21],
        "acronym": ["root", "CTX", "CTX1", "CTX2", "HB", "HB1"],
        "name": ["root", "cortex", "cortex 1", "cortex 2", "hindbrain", "hindbrain 1"],
        "parent_structure_id": [None, 997, 1, 1, 997, 2],
    }
)


def _planted(n_side=30, k=8, seed=0):
    """Smooth blobs on a grid; the region CTX is where patterns 2 and 5 are strong, with leaves 11 and 12."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n_side, 0:n_side]
    centres = rng.uniform(0, n_side, (k, 2))
    d = np.stack([np.exp(-((xx - c[0]) ** 2 + (yy - c[1]) ** 2) / (0.03 * n_side**2)).ravel() for c in centres], 1)
    ids = np.where(d[:, 2] > 0.5, 11, np.where(d[:, 5] > 0.5, 12, 21))
    adata = ad.AnnData(obs=pd.DataFrame({"region_id": ids}, index=[f"v{i}" for i in range(ids.size)]))
    adata.obs["acronym"] = pd.Series(ids).map({11: "CTX1", 12: "CTX2", 21: "HB1"}).to_numpy()
    adata.obsm["X_stanmf"] = d
    return adata


def test_planted_patterns_beat_the_random_median():
    adata = _planted()
    sf.tl.region_auc(adata, region="CTX", factors=[2, 5], ontology=sf.io.Ontology(TREE), n_random=200)
    res = adata.uns["region_auc"]
    assert res["auc"] > 0.97
    assert res["auc"] > res["median_null"] == np.median(res["null"]["auc"])
    assert res["percentile"] >= 99 and res["p_value"] < 0.05
    # The region includes its descendants (the voxels carry leaf ids 11 and 12).
    assert res["region"]["region_id"] == 1 and res["region"]["acronym"] == "CTX" and res["region"]["n_structures"] == 3
    assert res["region"]["n_obs"] == int(adata.obs["region_id"].isin([11, 12]).sum())
    assert list(res["coefficients"].index) == ["PP3", "PP6"] and (res["coefficients"]["coef"] > 0).all()
    assert len(res["null"]) == 200 and res["null"]["patterns"].str.count(r"\+").eq(1).all()
    # An unrelated pair predicts the region worse.
    other = sf.tl.region_auc(
        adata, region=1, factors=["PP1", "PP2"], ontology=sf.io.Ontology(TREE), n_random=5, copy=True
    )
    assert other.uns["region_auc"]["auc"] < res["auc"]


def test_same_seed_same_result_and_cross_validation():
    adata = _planted()
    a = sf.tl.region_auc(adata, region=11, factors=[2], n_random=40, random_state=3, copy=True)
    b = sf.tl.region_auc(adata, region=11, factors=[2], n_random=40, random_state=3, copy=True)
    pd.testing.assert_frame_equal(a.uns["region_auc"]["null"], b.uns["region_auc"]["null"])
    cv = sf.tl.region_auc(adata, region=11, factors=[2], n_random=10, random_state=3, cv=5, copy=True)
    assert abs(cv.uns["region_auc"]["auc"] - a.uns["region_auc"]["auc"]) < 0.01
    assert cv.uns["region_auc"]["params"]["cv"] == 5
    # Without an ontology an id is matched exactly and an acronym through obs['acronym'].
    acr = sf.tl.region_auc(adata, region="CTX1", factors=[2], n_random=40, random_state=3, copy=True)
    assert acr.uns["region_auc"]["auc"] == a.uns["region_auc"]["auc"]
    assert acr.uns["region_auc"]["region"]["region_id"] == 11


def test_h5ad_round_trip(tmp_path):
    adata = _planted()
    sf.tl.region_auc(adata, region=11, factors=[2, 5], n_random=20)
    adata.write_h5ad(tmp_path / "auc.h5ad")
    back = ad.read_h5ad(tmp_path / "auc.h5ad")
    pd.testing.assert_frame_equal(back.uns["region_auc"]["null"], adata.uns["region_auc"]["null"])
    assert back.uns["region_auc"]["auc"] == adata.uns["region_auc"]["auc"]
    assert list(back.uns["region_auc"]["params"]["patterns"]) == ["PP3", "PP6"]


def _snapshot(adata):
    return set(adata.uns), set(adata.obsm), list(adata.obs.columns)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"region": 99}, ValueError, r"Region 99 is absent.*Pass `ontology=`"),
        (
            {"region": "XYZ", "ontology": "tree"},
            KeyError,
            r"Region 'XYZ' not found: Acronym 'XYZ' is not in the ontology",
        ),
        ({"region": 42, "ontology": "tree"}, KeyError, r"Region 42 not found: Structure id 42"),
        (
            {"region": "HB", "ontology": "tree", "factors": [0], "n_random": 0},
            ValueError,
            "`n_random` must be at least 1",
        ),
        ({"factors": [0, 8]}, ValueError, r"`factors` 8 is out of range for 8 patterns"),
        ({"factors": [1, 1]}, ValueError, "repeats a pattern"),
        ({"factors": list(range(8))}, ValueError, "random subsets of the same size would all be the same set"),
        ({"factors": []}, ValueError, "`factors` is empty"),
        ({"key": "pca"}, KeyError, r"'pca' is not a factorisation result.*sf.tl.stanmf"),
        ({"region_key": "structure"}, KeyError, "is not a column of `adata.obs`"),
        ({"region": "root", "ontology": "tree"}, ValueError, "Every obs lies in region 'root'"),
        ({"cv": 1}, ValueError, "`cv` must be at least 2"),
        ({"C": 0.0}, ValueError, "`C` must be > 0.0"),
    ],
)
def test_bad_input_leaves_adata_unchanged(kwargs, error, match):
    adata = _planted()
    kwargs = {"region": 11, "factors": [2], **kwargs}
    if kwargs.get("ontology") == "tree":
        kwargs["ontology"] = sf.io.Ontology(TREE)
    before = _snapshot(adata)
    with pytest.raises(error, match=match):
        sf.tl.region_auc(adata, **kwargs)
    assert _snapshot(adata) == before


def test_acronym_without_ontology_or_column():
    adata = _planted()
    del adata.obs["acronym"]
    with pytest.raises(ValueError, match="is an acronym: pass `ontology=`"):
        sf.tl.region_auc(adata, region="CTX", factors=[2])
    assert "region_auc" not in adata.uns


def test_isocortex_on_the_real_grid():
    """The real annotation and ontology: three patterns that split the isocortex along AP beat random triples."""
    if not ANNOTATION.is_file():
        pytest.skip("shared Allen data not available")
    labels, _ = sf.io.read_mhd(ANNOTATION)
    labels = labels.astype(np.int64)
    onto = sf.io.read_ontology(ONTOLOGY)
    mask = labels > 0
    ids = labels[mask]
    iso = np.isin(labels, onto.descendants("Isocortex")).astype(float)
    thirds = np.array_split(np.arange(labels.shape[0]), 3)  # anterior, middle, posterior
    rng = np.random.default_rng(0)
    planted = []
    for rows in thirds:
        part = np.zeros_like(iso)
        part[rows] = iso[rows]
        planted.append(ndimage.gaussian_filter(part, 1.0)[mask])
    noise = [ndimage.gaussian_filter(rng.random(labels.shape), 3.0)[mask] for _ in range(8)]
    adata = ad.AnnData(obs=pd.DataFrame({"region_id": ids}, index=[f"voxel_{i}" for i in np.flatnonzero(mask)]))
    adata.obsm["X_stanmf"] = np.column_stack(planted + noise)
    sf.tl.region_auc(adata, region="Isocortex", factors=[0, 1, 2], ontology=onto, n_random=60)
    res = adata.uns["region_auc"]
    assert res["region"]["region_id"] == 315 and res["region"]["n_obs"] == int(iso[mask].sum())
    assert res["auc"] > 0.95 > res["median_null"]
    assert res["percentile"] == 100.0
