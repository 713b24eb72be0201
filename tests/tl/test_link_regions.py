import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import spatialfactors as sf
from spatialfactors.models.regions import connected_sets, region_adjacency

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "aba_200um"
ANNOTATION = DATA / "grids" / "P56_Mouse_gridAnnotation.zip"
ONTOLOGY = DATA / "ontology" / "allen_structure_labels_grid_release.csv"


def _voxel_adata(labels: np.ndarray, mask: np.ndarray | None = None) -> ad.AnnData:
    """Voxel AnnData laid out as `sf.io.read_aba` writes it (without genes)."""
    mask = labels > 0 if mask is None else mask
    obs = pd.DataFrame({"region_id": labels[mask].astype(np.int64)}, index=[f"voxel_{i}" for i in np.flatnonzero(mask)])
    return ad.AnnData(obs=obs, uns={"aba": {"grid_shape": np.array(labels.shape), "spacing": 200.0, "mask": mask}})


@pytest.fixture(scope="module")
def real():
    if not ANNOTATION.is_file():
        pytest.skip("shared Allen data not available")
    labels, _ = sf.io.read_mhd(ANNOTATION)
    return labels.astype(np.int64), sf.io.read_ontology(ONTOLOGY)


def _contiguous(labels, size, min_voxels, seed):
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    e = np.searchsorted(ids, region_adjacency(labels))
    big = counts >= min_voxels
    e = e[big[e[:, 0]] & big[e[:, 1]]]
    sets = connected_sets(e, len(ids), size)[size - 1]
    return ids[sets[np.random.default_rng(seed).integers(len(sets))]]


@pytest.fixture(scope="module")
def planted(real):
    """Real annotation; PP1 = noisy pair, PP2 = noisy triple, PP3 = one region, PP4 = noise."""
    labels, onto = real
    adata = _voxel_adata(labels)
    ids = adata.obs["region_id"].to_numpy()
    pair, triple = _contiguous(labels, 2, 150, 0), _contiguous(labels, 3, 150, 1)
    single = np.unique(ids)[np.argmax(np.bincount(np.searchsorted(np.unique(ids), ids)))]
    rng = np.random.default_rng(0)
    p = np.stack([np.isin(ids, pair), np.isin(ids, triple), ids == single, np.zeros(len(ids), bool)], 1)
    adata.obsm["X_stanmf"] = np.clip(p + 0.4 * rng.standard_normal(p.shape), 0, None)
    return adata, onto, {"pair": np.sort(pair), "triple": np.sort(triple), "single": single}


@pytest.fixture(scope="module")
def linked(planted):
    adata, onto, truth = planted
    adata = adata.copy()
    sf.tl.link_regions(adata, ontology=onto)
    return adata, onto, truth


def _regions_of(best, pattern, size):
    row = best[(best["pattern"] == pattern) & (best["n_regions"] == size)].iloc[0]
    return np.array([row[f"region_{j + 1}"] for j in range(size)])


def test_planted_pair_triple_and_single_are_linked(linked):
    adata, onto, truth = linked
    best = adata.uns["link_regions"]["best"]
    np.testing.assert_array_equal(_regions_of(best, "PP1", 2), truth["pair"])
    np.testing.assert_array_equal(_regions_of(best, "PP2", 3), truth["triple"])
    assert _regions_of(best, "PP3", 1)[0] == truth["single"]
    selected = best[best["selected"]].set_index("pattern")["n_regions"]
    assert selected["PP1"] == 2 and selected["PP2"] == 3 and selected["PP3"] == 1
    # Acronyms come from the ontology, in the order of the ids.
    row = best[(best["pattern"] == "PP2") & (best["n_regions"] == 3)].iloc[0]
    assert row["acronyms"] == " + ".join(onto.acronym_of(truth["triple"]))
    assert set(best["search"]) == {"exact"}
    assert (best.groupby("pattern")["selected"].sum() == 1).all()


def test_correlation_table_equals_direct_correlation(linked):
    adata, onto, _ = linked
    res = adata.uns["link_regions"]
    table, regions = res["correlation"], res["regions"]
    ids = adata.obs["region_id"].to_numpy()
    assert table.shape == (4, len(np.unique(ids)))
    assert list(table.index) == ["PP1", "PP2", "PP3", "PP4"]
    assert list(table.columns) == [str(i) for i in np.unique(ids)] == list(regions.index)
    for col in table.columns[::97]:
        union = (ids == int(col)).astype(float)
        direct = [np.corrcoef(adata.obsm["X_stanmf"][:, k], union)[0, 1] for k in range(3)]
        np.testing.assert_allclose(table[col].to_numpy()[:3], direct, atol=1e-12)
    np.testing.assert_array_equal(regions["acronym"], onto.acronym_of(regions["region_id"].to_numpy()))
    np.testing.assert_array_equal(regions["n_voxels"], np.unique(ids, return_counts=True)[1])
    # Best scores are the maxima over the table and over the linked sets.
    best = res["best"]
    singles = best[best["n_regions"] == 1].set_index("pattern")["score"]
    np.testing.assert_allclose(singles.to_numpy(), table.max(axis=1).to_numpy())
    np.testing.assert_allclose(np.diag(res["linked"].to_numpy()), best[best["selected"]]["score"].to_numpy())


def test_adjacency_summary_and_edges(linked, real):
    adata, _, _ = linked
    labels, _ = real
    res = adata.uns["link_regions"]
    edges = region_adjacency(labels)
    np.testing.assert_array_equal(res["adjacency"][["region_a", "region_b"]].to_numpy(), edges)
    n = len(np.unique(labels[labels > 0]))
    triples = connected_sets(np.searchsorted(np.unique(labels[labels > 0]), edges), n, 3)[2]
    summary = res["summary"]
    assert summary == {
        "n_voxels": int((labels > 0).sum()),
        "n_regions": n,
        "n_adjacent_pairs": len(edges),
        "n_contiguous_pairs": len(edges),
        "n_contiguous_triples": len(triples),
    }
    assert res["search"]["n_candidates"].tolist() == [n, len(edges), len(triples)]
    assert res["params"]["metric"] == "pearson" and res["params"]["max_regions"] == 3


def test_h5ad_round_trip(linked, tmp_path):
    adata, _, _ = linked
    path = tmp_path / "linked.h5ad"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        adata.write_h5ad(path)
    assert not [w for w in caught if "slash" in str(w.message).lower()]
    back = ad.read_h5ad(path).uns["link_regions"]
    res = adata.uns["link_regions"]
    for name in ("correlation", "regions", "best", "linked", "adjacency", "search", "region_map"):
        pd.testing.assert_frame_equal(back[name], res[name], check_dtype=False)
    assert dict(back["summary"]) == res["summary"]
    assert back["params"]["metric"] == "pearson"


def test_copy_returns_new_and_leaves_input(planted):
    adata, _, _ = planted
    before = set(adata.uns)
    out = sf.tl.link_regions(adata, copy=True, key_added="copied")
    assert "copied" in out.uns and set(adata.uns) == before
    # Without an ontology, acronyms fall back to the ids.
    assert (out.uns["copied"]["regions"]["acronym"] == out.uns["copied"]["regions"].index).all()


def test_acronyms_from_obs(planted):
    adata, onto, truth = planted
    adata = adata.copy()
    adata.obs["acronym"] = onto.acronym_of(adata.obs["region_id"].to_numpy())
    sf.tl.link_regions(adata, max_regions=2)
    best = adata.uns["link_regions"]["best"]
    assert best[(best["pattern"] == "PP1") & (best["n_regions"] == 2)]["acronyms"].iloc[0] == " + ".join(
        onto.acronym_of(truth["pair"])
    )
    assert len(best) == 4 * 2 and "n_contiguous_triples" not in adata.uns["link_regions"]["summary"]


def test_level_maps_regions_to_their_ancestors(planted):
    adata, onto, _ = planted
    adata = adata.copy()
    sf.tl.link_regions(adata, ontology=onto, level=5, key_added="l5")
    res = adata.uns["l5"]
    ids = adata.obs["region_id"].to_numpy()
    parents = onto.at_depth(ids, 5)
    np.testing.assert_array_equal(res["regions"]["region_id"], np.unique(parents))
    assert res["params"]["level"] == 5
    col = res["correlation"].columns[3]
    direct = np.corrcoef(adata.obsm["X_stanmf"][:, 0], (parents == int(col)).astype(float))[0, 1]
    np.testing.assert_allclose(res["correlation"][col].iloc[0], direct, atol=1e-12)
    assert (res["region_map"]["linked_id"].to_numpy() == onto.at_depth(res["region_map"]["region_id"], 5)).all()
    # The paper's medium level: voxels outside its 62 regions (fibre tracts, ventricles) are in none.
    sf.tl.link_regions(adata, ontology=onto, level="medium", key_added="medium")
    assert set(adata.uns["medium"]["regions"]["region_id"]) <= set(onto.level("medium"))


class _FakeOntology:
    """Anything with `at_depth` works for `level=`: two leaves under one parent."""

    def at_depth(self, ids, depth):
        ids = np.asarray(ids)
        return np.where(np.isin(ids, [1, 2]), 10, ids) if depth == 1 else ids


def test_level_with_minimal_ontology_and_background_inside_mask():
    labels = np.array([[[1, 2, 0, 3, 3]]])
    mask = np.ones(labels.shape, bool)  # the 0 voxel is inside the mask: in no region
    adata = _voxel_adata(labels, mask)
    adata.obsm["X_stanmf"] = np.array([[1.0, 1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0, 1.0]]).T
    sf.tl.link_regions(adata, ontology=_FakeOntology(), level=1)
    res = adata.uns["link_regions"]
    assert res["regions"]["region_id"].tolist() == [3, 10]
    assert res["summary"]["n_adjacent_pairs"] == 0  # 10 and 3 are separated by the region-less voxel
    best = res["best"]
    assert best[best["n_regions"] == 1]["region_1"].tolist() == [10, 3]
    np.testing.assert_allclose(best[best["n_regions"] == 1]["score"], 1.0)
    assert np.isnan(best[best["n_regions"] == 2]["score"]).all()


def test_dice_metric(planted):
    adata, _, truth = planted
    adata = adata.copy()
    sf.tl.link_regions(adata, metric="dice", dice_threshold=0.5, key_added="dice")
    res = adata.uns["dice"]
    p = adata.obsm["X_stanmf"][:, 2]
    t = p >= p.min() + 0.5 * (p.max() - p.min())
    u = adata.obs["region_id"].to_numpy() == truth["single"]
    np.testing.assert_allclose(
        res["correlation"][str(truth["single"])].iloc[2], 2 * (t & u).sum() / (t.sum() + u.sum())
    )
    assert _regions_of(res["best"], "PP3", 1)[0] == truth["single"]
    assert res["params"]["metric"] == "dice"


def test_more_regions_than_three_use_beam_beyond_the_cap(planted):
    adata, _, truth = planted
    adata = adata.copy()
    sf.tl.link_regions(adata, max_regions=4, max_candidates=1_000_000, beam_width=20)
    res = adata.uns["link_regions"]
    assert res["search"]["search"].tolist() == ["exact", "exact", "exact", "beam"]
    best = res["best"]
    assert len(best) == 4 * 4 and {f"region_{j}" for j in range(1, 5)} <= set(best.columns)
    np.testing.assert_array_equal(_regions_of(best, "PP2", 3), truth["triple"])
    four = best[best["n_regions"] == 4]
    assert (four[[f"region_{j}" for j in range(1, 5)]].to_numpy() > 0).all()


def _negate_ids(adata):
    adata.obs["region_id"] = -adata.obs["region_id"].to_numpy()


def _text_ids(adata):
    adata.obs["region_id"] = "x"


def _snapshot(adata):
    return set(adata.uns), list(adata.obs.columns), set(adata.obsm), adata.obs.copy()


@pytest.mark.parametrize(
    ("change", "kwargs", "error", "match"),
    [
        (lambda a: a.obsm.pop("X_stanmf"), {}, KeyError, r"X_stanmf.*sf\.tl\.stanmf"),
        (None, {"key": "nmf"}, KeyError, r"X_nmf.*sf\.tl\.stanmf"),
        (None, {"region_key": "structure"}, KeyError, "region_key='structure'"),
        (lambda a: a.uns.pop("aba"), {}, KeyError, r"uns\['aba'\]"),
        (None, {"max_regions": 0}, ValueError, "max_regions"),
        (None, {"metric": "spearman"}, ValueError, "metric"),
        (None, {"level": 3}, ValueError, "ontology="),
        (None, {"dice_threshold": 1.5}, ValueError, "dice_threshold"),
        (None, {"beam_width": 0}, ValueError, "beam_width"),
        (lambda a: a.obsm.__setitem__("X_stanmf", np.full((a.n_obs, 2), np.nan)), {}, ValueError, "NaN"),
        (_negate_ids, {}, ValueError, "negative"),
        (_text_ids, {}, TypeError, "integer"),
    ],
)
def test_bad_input_fails_clearly_and_leaves_adata(change, kwargs, error, match):
    labels = np.array([[[1, 1, 2, 2, 3, 3]]])
    adata = _voxel_adata(labels)
    adata.obsm["X_stanmf"] = np.random.default_rng(0).random((adata.n_obs, 2))
    if change is not None:
        change(adata)
    before = _snapshot(adata)
    with pytest.raises(error, match=match):
        sf.tl.link_regions(adata, **kwargs)
    after = _snapshot(adata)
    assert after[:3] == before[:3]
    pd.testing.assert_frame_equal(after[3], before[3])


def test_level_must_be_known():
    labels = np.array([[[1, 1, 2, 2]]])
    adata = _voxel_adata(labels)
    adata.obsm["X_stanmf"] = np.ones((4, 1))
    with pytest.raises(ValueError, match="level"):
        sf.tl.link_regions(adata, ontology=_FakeOntology(), level="fine")
    assert "link_regions" not in adata.uns


def _three_regions():
    labels = np.repeat([[[1, 1, 2, 2, 3, 3]]], 2, axis=0)
    adata = _voxel_adata(labels)
    ids = adata.obs["region_id"].to_numpy()
    adata.obsm["X_stanmf"] = np.stack([ids == 2, np.isin(ids, [2, 3]), np.ones(ids.size)], axis=1).astype(float)
    return adata


def test_constant_pattern_warns_and_scores_nan():
    from spatialfactors._validation import UndefinedScoreWarning

    adata = _three_regions()
    with pytest.warns(UndefinedScoreWarning, match=r"pattern\(s\) \['PP3'\] with every region set"):
        sf.tl.link_regions(adata, max_regions=2)
    corr = adata.uns["link_regions"]["correlation"]
    assert corr.loc["PP3"].isna().all() and corr.loc[["PP1", "PP2"]].notna().all().all()


def test_single_region_covering_every_voxel_warns():
    from spatialfactors._validation import UndefinedScoreWarning

    adata = _three_regions()
    adata.obs["region_id"] = 1
    with pytest.warns(UndefinedScoreWarning, match="region 1 is undefined .* covers every voxel"):
        sf.tl.link_regions(adata, max_regions=1)
    assert adata.uns["link_regions"]["correlation"].isna().all().all()
