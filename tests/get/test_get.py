"""``sf.get``: the results layer every plot and chained tool reads through (issue 18)."""

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import squidpy as sq

import spatialfactors as sf
from spatialfactors.get import KINDS, _select_factors


@pytest.fixture(scope="module")
def cortex():
    """staNMF (a small sweep), SpiceMix, pattern genes, networks and a covariate regression on one cortex."""
    adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=200, n_genes=40)
    sq.gr.spatial_neighbors_delaunay(adata)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sf.tl.stanmf(adata, n_factors=[3, 4], n_replicates=3, pca=False, n_jobs=1)
        sf.tl.spicemix(adata, 3, max_iter=2, n_jobs=1)
    sf.tl.pattern_genes(adata)
    sf.tl.pattern_genes(adata, key="spicemix")
    sf.tl.sgcn(adata, top_fraction=0.2)
    sf.tl.sgcn(adata, key="spicemix", top_fraction=0.2, key_added="sgcn_mg")
    sf.tl.covariate_genes(adata, basis="X_true", factors=(4, 5), groupby="cell_type", groups="eL2")
    return adata


@pytest.fixture(scope="module")
def voxels():
    """A voxel grid with two planted patterns, linked to regions and tested against one."""
    labels = np.repeat([[[1, 1, 2, 2, 3, 3]]], 4, axis=0)
    mask = labels > 0
    rng = np.random.default_rng(0)
    grid = {"grid_shape": np.array(labels.shape), "mask": mask}
    adata = ad.AnnData(obs={"region_id": labels[mask]}, uns={"aba": grid})
    planted = np.stack([labels[mask] == 2, np.isin(labels[mask], [2, 3])], axis=1).astype(float)
    adata.obsm["X_stanmf"] = np.column_stack([planted, rng.random((adata.n_obs, 2))])
    sf.tl.link_regions(adata, max_regions=2)
    sf.tl.region_auc(adata, region=2, factors=["PP1"], n_random=5)
    return adata


# ------------------------------------------------------------------------------------- factor names


def test_one_name_per_factor_recorded_by_the_tools(cortex):
    k = cortex.uns["stanmf"]["k"]
    assert sf.get.factor_names(cortex) == [f"PP{i + 1}" for i in range(k)]
    assert list(cortex.uns["stanmf"]["factor_names"]) == sf.get.factor_names(cortex)
    assert sf.get.factor_names(cortex, "spicemix") == ["MG1", "MG2", "MG3"]
    # every table and network of a SpiceMix result uses the metagene names
    assert list(cortex.uns["spicemix_pattern_genes"]["names"].dtype.names) == ["MG1", "MG2", "MG3"]
    assert set(cortex.uns["sgcn_mg"]["nodes"]["pattern"]) == {"MG1", "MG2", "MG3"}
    assert list(cortex.uns["spicemix_pattern_genes"]["counts"].index) == ["MG1", "MG2", "MG3"]


def test_names_derived_for_older_records(cortex):
    old = cortex.copy()
    del old.uns["stanmf"]["factor_names"], old.uns["spicemix"]["factor_names"]
    del old.uns["stanmf"]["tool"], old.uns["spicemix"]["tool"]
    assert sf.get.factor_names(old) == sf.get.factor_names(cortex)
    assert sf.get.factor_names(old, "spicemix") == ["MG1", "MG2", "MG3"]
    # patterns without any record: staNMF's names, or metagenes when only SpiceMix loadings are there
    bare = ad.AnnData(np.zeros((5, 2)), obsm={"X_nmf": np.ones((5, 2))}, varm={"nmf_metagenes": np.ones((2, 2))})
    assert sf.get.factor_names(bare, "nmf") == ["MG1", "MG2"]
    plain = ad.AnnData(np.zeros((5, 2)), obsm={"X_a": np.ones((5, 3))})
    assert sf.get.factor_names(plain, "a") == ["PP1", "PP2", "PP3"]


def test_factor_names_survive_h5ad(cortex, tmp_path):
    cortex.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    assert sf.get.factor_names(back, "spicemix") == sf.get.factor_names(cortex, "spicemix")
    pd.testing.assert_frame_equal(sf.get.loadings(back, "spicemix"), sf.get.loadings(cortex, "spicemix"))


def test_select_factors():
    names = ["PP1", "PP2", "PP3"]
    assert _select_factors(None, names) == [0, 1, 2]
    assert _select_factors(2, names) == [2]
    assert _select_factors(np.int64(1), names) == [1]
    assert _select_factors("PP2", names) == [1]
    assert _select_factors(["PP3", 0], names) == [2, 0]
    assert _select_factors(np.array([1, 2]), names) == [1, 2]
    with pytest.raises(ValueError, match=r"`factors` 3 is out of range for 3 patterns \(0-based indices 0 ... 2\)"):
        _select_factors(3, names)
    with pytest.raises(ValueError, match=r"`factors` 'MG1' is not one of the 3 patterns \(PP1 ... PP3\)"):
        _select_factors("MG1", names)
    with pytest.raises(ValueError, match=r"`factors` 'PP1' is not one of the 2 metagenes \(MG1 ... MG2\)"):
        _select_factors(["PP1"], ["MG1", "MG2"])
    with pytest.raises(TypeError, match="`components` must be a pattern index .* such as 'PP1', got 1.5"):
        _select_factors(1.5, names, "components")
    with pytest.raises(ValueError, match="`factors` is empty"):
        _select_factors([], names)


# ------------------------------------------------------------------------------------- tables


def test_factors_and_loadings_equal_what_the_tools_stored(cortex):
    f = sf.get.factors(cortex, "spicemix")
    assert list(f.columns) == ["MG1", "MG2", "MG3"] and f.index.equals(cortex.obs_names)
    np.testing.assert_array_equal(f.to_numpy(), cortex.obsm["X_spicemix"])
    load = sf.get.loadings(cortex, "stanmf")
    assert load.index.equals(cortex.var_names) and list(load.columns) == sf.get.factor_names(cortex)
    np.testing.assert_array_equal(load.to_numpy(), cortex.varm["stanmf_loadings"])


def test_staNMF_and_SpiceMix_tables(cortex):
    pd.testing.assert_frame_equal(sf.get.instability_df(cortex), cortex.uns["stanmf"]["instability"])
    assert sorted(sf.get.instability_df(cortex)["K"].unique()) == [3, 4]
    history = sf.get.history_df(cortex)
    pd.testing.assert_frame_equal(history, cortex.uns["spicemix"]["history"])
    aff = sf.get.affinity_df(cortex)
    assert list(aff.index) == list(aff.columns) == ["MG1", "MG2", "MG3"]
    np.testing.assert_array_equal(aff.to_numpy(), cortex.uns["spicemix"]["affinity"])


def test_pattern_genes_tables_and_stored_importance(cortex):
    df = sf.get.pattern_genes_df(cortex, "MG2", key="spicemix")
    stored = cortex.uns["spicemix_pattern_genes"]
    assert df["names"].tolist() == list(stored["names"]["MG2"])
    np.testing.assert_array_equal(df["importance"], stored["importance"]["MG2"])
    pd.testing.assert_frame_equal(df, sf.get.pattern_genes_df(cortex, 1, key="spicemix"))
    imp = sf.get.importance(cortex)
    np.testing.assert_array_equal(imp.to_numpy(), cortex.varm["stanmf_importance"])
    assert list(imp.columns) == sf.get.factor_names(cortex) and imp.index.equals(cortex.var_names)
    assert sf.get.pattern_genes_result(cortex, "spicemix") is cortex.uns["spicemix_pattern_genes"]


def test_sgcn_graph_by_name(cortex):
    graph = sf.get.sgcn_graph(cortex, "MG1", key="sgcn_mg")
    nodes = cortex.uns["sgcn_mg"]["nodes"]
    assert graph.graph["pattern"] == "MG1"
    assert sorted(graph.nodes) == sorted(nodes.loc[nodes["pattern"] == "MG1", "gene"])
    assert sf.get.sgcn_graph(cortex, 0, key="sgcn_mg").nodes == graph.nodes


def test_region_tables(voxels):
    links = sf.get.link_regions_df(voxels)
    assert list(links.index) == ["PP1", "PP2", "PP3", "PP4"]
    assert links.loc["PP1", "acronyms"] == "2" and links.loc["PP2", "acronyms"] == "2 + 3"
    singles = sf.get.link_regions_df(voxels, n_regions=1)
    assert (singles["n_regions"] == 1).all() and singles.loc["PP2", "region_2"] == 0
    with pytest.raises(ValueError, match=r"`n_regions` must be one of \[1, 2\], got 3"):
        sf.get.link_regions_df(voxels, n_regions=3)
    assert list(voxels.uns["link_regions"]["correlation"].index) == list(links.index)
    res = sf.get.region_auc_result(voxels)
    assert res["params"]["patterns"] == ["PP1"] and res["auc"] > 0.99


def test_covariate_tables(cortex):
    pd.testing.assert_frame_equal(sf.get.covariate_genes_df(cortex), cortex.uns["covariate_genes"]["table"])
    assert sf.get.covariate_genes_result(cortex)["n_tested"] == len(sf.get.covariate_genes_df(cortex))


def test_grid(voxels):
    shape, mask, spacing = sf.get.grid(voxels)
    assert shape == (4, 1, 6) and int(mask.sum()) == voxels.n_obs and spacing == 1.0


# ------------------------------------------------------------------------------------- missing results


CALLS = {
    "stanmf": r"run `sf\.tl\.stanmf\(adata, key_added='nope'\)` \(or `sf\.tl\.spicemix`\) first",
    "spicemix": r"run `sf\.tl\.spicemix\(adata, key_added='nope'\)` first",
    "link_regions": r"run `sf\.tl\.link_regions\(adata, key_added='nope'\)` first",
    "pattern_genes": r"\(`adata\.uns\['nope_pattern_genes'\]`\); "
    r"run `sf\.tl\.pattern_genes\(adata, key='nope'\)` first",
    "sgcn": r"run `sf\.tl\.sgcn\(adata, key_added='nope'\)` first",
    "region_auc": r"run `sf\.tl\.region_auc\(adata, key_added='nope'\)` first",
    "covariate_genes": r"run `sf\.tl\.covariate_genes\(adata, \.\.\., key_added='nope'\)` first",
    "hmrf_domains": r"run `sf\.tl\.hmrf_domains\(adata, key_added='nope'\)` first",
    "spatial_domains": r"run `sf\.tl\.spatial_domains\(adata, key_added='nope'\)` first",
    "cluster_latent": r"run `sf\.tl\.cluster_latent\(adata, key_added='nope'\)` first",
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_one_message_per_missing_result_names_the_call(kind):
    assert set(CALLS) == set(KINDS)
    adata = ad.AnnData(np.zeros((3, 2)))
    with pytest.raises(KeyError, match=r"No .* under key 'nope'.*" + CALLS[kind] + r" \(or pass the `key_added`"):
        sf.get.result(adata, "nope", kind)


@pytest.mark.parametrize(
    ("func", "kwargs", "call"),
    [
        (sf.get.instability_df, {}, "sf.tl.stanmf"),
        (sf.get.history_df, {}, "sf.tl.spicemix"),
        (sf.get.affinity_df, {}, "sf.tl.spicemix"),
        (sf.get.link_regions_df, {}, "sf.tl.link_regions"),
        (sf.get.covariate_genes_df, {}, "sf.tl.covariate_genes"),
        (sf.get.covariate_genes_result, {}, "sf.tl.covariate_genes"),
        (sf.get.pattern_genes_df, {"factor": 0}, "sf.tl.pattern_genes"),
        (sf.get.pattern_genes_result, {}, "sf.tl.pattern_genes"),
        (sf.get.importance, {}, "sf.tl.pattern_genes"),
        (sf.get.sgcn_graph, {"factor": 0}, "sf.tl.sgcn"),
        (sf.get.region_auc_result, {}, "sf.tl.region_auc"),
        (sf.get.hmrf_labels_df, {}, "sf.tl.hmrf_domains"),
    ],
)
def test_every_reader_names_the_call(func, kwargs, call):
    with pytest.raises(KeyError, match=rf"under key 'nope'.*`{call.replace('.', '[.]')}\(adata"):
        func(ad.AnnData(np.zeros((3, 2))), key="nope", **kwargs)


def test_missing_entry_names_what_writes_it(cortex):
    one = cortex.copy()
    del one.uns["stanmf"]["instability"]
    with pytest.raises(KeyError, match=r"has no 'instability'; it is written by a sweep over K, .*n_factors="):
        sf.get.instability_df(one)


def test_readers_take_a_spatialdata_table(cortex):
    sdata = pytest.importorskip("spatialdata").SpatialData(tables={"cells": cortex})
    from_table = sf.get.factors(sdata, "spicemix", table_key="cells")
    pd.testing.assert_frame_equal(from_table, sf.get.factors(cortex, "spicemix"))


# ------------------------------------------------------------------------------------- old names


def test_moved_readers_warn_and_agree(cortex):
    with pytest.warns(FutureWarning, match=r"`sf\.tl\.pattern_genes_df` moved to `sf\.get\.pattern_genes_df`"):
        old = sf.tl.pattern_genes_df(cortex, "PP1")
    pd.testing.assert_frame_equal(old, sf.get.pattern_genes_df(cortex, "PP1"))
    with pytest.warns(FutureWarning, match=r"`sf\.tl\.sgcn_graph` moved to `sf\.get\.sgcn_graph`"):
        graph = sf.tl.sgcn_graph(cortex, 0)
    assert graph.nodes == sf.get.sgcn_graph(cortex, 0).nodes
    # the old parameter name stays in their messages
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match="`pattern` 9 is out of range"):
        sf.tl.pattern_genes_df(cortex, 9)


def test_renamed_keywords_warn_and_agree(cortex):
    adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=80, n_genes=20)
    new = sf.tl.stanmf(adata, n_factors=3, pca=False, copy=True)
    with pytest.warns(FutureWarning, match="`n_components` of `sf.tl.stanmf` is renamed to `n_factors`"):
        old = sf.tl.stanmf(adata, n_components=3, pca=False, copy=True)
    np.testing.assert_array_equal(old.obsm["X_stanmf"], new.obsm["X_stanmf"])
    assert sf.get.params(old)["n_factors"] == [3]
    with pytest.raises(TypeError, match="got both `n_factors` and its old name `n_components`; pass `n_factors` only"):
        sf.tl.stanmf(adata, 4, n_components=3, pca=False, copy=True)
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match="`n_components` must be at least 1"):
        sf.tl.stanmf(adata, n_components=0, pca=False, copy=True)
    with pytest.warns(FutureWarning, match="`patterns` of `sf.tl.sgcn` is renamed to `factors`"):
        out = sf.tl.sgcn(cortex, patterns=["PP1"], top_fraction=0.2, copy=True)
    assert list(out.uns["sgcn"]["summary"].index) == ["PP1"]


def test_region_auc_factors_and_old_patterns(voxels):
    new = sf.tl.region_auc(voxels, region=2, factors=[0], n_random=5, copy=True)
    with pytest.warns(FutureWarning, match="`patterns` of `sf.tl.region_auc` is renamed to `factors`"):
        old = sf.tl.region_auc(voxels, region=2, patterns=["PP1"], n_random=5, copy=True)
    assert old.uns["region_auc"]["auc"] == new.uns["region_auc"]["auc"]
    with pytest.raises(TypeError, match="`factors` must name the patterns to test"):
        sf.tl.region_auc(voxels, region=2, n_random=5)


# ------------------------------------------------------------------------------------- params


def _tools(cortex, voxels):
    """(adata, .uns key) of one run of every tool."""
    adata = cortex.copy()
    sf.tl.spatial_domains(adata, "X_spicemix", n_clusters=3, key_added="dom")
    sf.tl.hmrf_domains(adata, "X_spicemix", 3, beta=[0.0, 1.0], key_added="hmrf")
    sf.tl.cluster_latent(adata, "X_spicemix", n_clusters=3, key_added="clusters")
    return [
        (adata, "stanmf"),
        (adata, "spicemix"),
        (adata, "stanmf_pattern_genes"),
        (adata, "sgcn"),
        (adata, "covariate_genes"),
        (adata, "dom"),
        (adata, "hmrf"),
        (adata, "clusters"),
        (voxels, "link_regions"),
        (voxels, "region_auc"),
    ]


def test_params_restore_none_and_survive_h5ad(cortex, voxels, tmp_path):
    runs = _tools(cortex, voxels)
    for i, (adata, key) in enumerate(runs):
        before = sf.get.params(adata, key)
        path = tmp_path / f"{i}.h5ad"
        adata.write_h5ad(path)
        after = sf.get.params(ad.read_h5ad(path), key)
        assert after == before, key
        assert not any(v is None for v in adata.uns[key]["params"].values()), key  # None left out, no stand-in
        # every parameter a tool may leave out is in the registry, so that sf.get.params restores it
        kind = adata.uns[key]["tool"]
        assert set(adata.uns[key]["params"]) <= set(KINDS[kind].params), (key, set(adata.uns[key]["params"]))
    labels = sf.get.hmrf_labels_df(runs[0][0], "hmrf")
    pd.testing.assert_frame_equal(labels, runs[0][0].uns["hmrf"]["labels"])
    assert list(labels.columns) == ["0", "1"] and labels.index.equals(runs[0][0].obs_names)
    p = sf.get.params(runs[1][0], "spicemix")
    assert p["library_key"] is None and p["max_distance"] is None and p["init_key"] is None and p["layer"] is None
    assert p["n_factors"] == [3] and p["n_replicates"] is None
    s = sf.get.params(runs[0][0], "stanmf")
    assert s["n_factors"] == [3, 4] and s["compress"] is None and s["batch_size"] is None and s["layer"] is None
    assert sf.get.params(voxels, "link_regions")["level"] is None
    assert sf.get.params(voxels, "region_auc")["cv"] is None


def test_params_of_a_missing_record():
    with pytest.raises(KeyError, match=r"No tool record with parameters under key 'nope'"):
        sf.get.params(ad.AnnData(np.zeros((2, 2))), "nope")
