import anndata as ad
import networkx as nx
import numpy as np
import pandas as pd
import pytest

import spatialfactors as sf
from spatialfactors.models.genes import top_edges

MODULE = [f"m{i}" for i in range(5)]


def _blobs(n_side=30, k=4, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n_side, 0:n_side]
    centres = rng.uniform(0, n_side, (k, 2))
    return np.stack([np.exp(-((xx - c[0]) ** 2 + (yy - c[1]) ** 2) / (0.05 * n_side**2)).ravel() for c in centres], 1)


def _planted(seed=0, key="stanmf", suffix="loadings"):
    """2,000 genes on 4 smooth patterns; PP1's 20 most selective genes are a co-expressed module of 5
    (the same loading profile up to scale and 1% noise) and 15 genes with distinct profiles."""
    rng = np.random.default_rng(seed)
    d = _blobs(seed=seed)
    n_genes = 2000
    a = rng.gamma(0.5, 1.0, (n_genes, 4))
    a[:, 0] = 0.0  # background genes do not use PP1
    profile = np.array([1.0, 0.8, 0.0, 0.3])
    a[:5] = rng.uniform(0.5, 3.0, (5, 1)) * (profile + 0.01 * rng.random((5, 4)))
    a[5:20] = np.column_stack([np.ones(15), rng.uniform(0.0, 0.6, (15, 3))]) * rng.uniform(0.5, 3.0, (15, 1))
    names = MODULE + [f"d{i}" for i in range(15)] + [f"g{i}" for i in range(20, n_genes)]
    adata = ad.AnnData(obs=pd.DataFrame(index=[f"o{i}" for i in range(d.shape[0])]), var=pd.DataFrame(index=names))
    adata.obsm[f"X_{key}"] = d
    adata.varm[f"{key}_{suffix}"] = a
    return adata


@pytest.fixture(scope="module")
def planted():
    adata = _planted()
    sf.tl.sgcn(adata, top_fraction=0.01)
    return adata


def _direct_corr(adata, genes, key="stanmf", suffix="loadings"):
    idx = adata.var_names.get_indexer(genes)
    images = adata.obsm[f"X_{key}"] @ adata.varm[f"{key}_{suffix}"][idx].T  # the reconstructed images
    return np.corrcoef(images.T)


def test_planted_module_is_a_connected_component(planted):
    graph = sf.get.sgcn_graph(planted, "PP1")
    assert graph.number_of_nodes() == 20  # ceil(0.01 * 2000)
    assert set(graph) == set(MODULE) | {f"d{i}" for i in range(15)}
    components = [set(c) for c in nx.connected_components(graph)]
    assert set(MODULE) in components
    # The module's 10 pairs are exactly the top 5% of the 190 pairs.
    assert graph.number_of_edges() == 10
    assert nx.is_isomorphic(graph.subgraph(MODULE), nx.complete_graph(5))


def test_edges_are_exactly_the_top_five_percent_and_equal_the_direct_correlation(planted):
    nodes, edges = planted.uns["sgcn"]["nodes"], planted.uns["sgcn"]["edges"]
    for k in range(4):
        name = f"PP{k + 1}"
        genes = nodes.loc[nodes["pattern"] == name, "gene"].tolist()
        direct = _direct_corr(planted, genes)
        iu = np.triu_indices(len(genes), 1)
        values = direct[iu]
        threshold = np.quantile(values, 0.95)
        expected = {frozenset((genes[i], genes[j])) for i, j, v in zip(*iu, values, strict=True) if v >= threshold}
        mine = edges[edges["pattern"] == name]
        assert {frozenset(p) for p in zip(mine["gene1"], mine["gene2"], strict=True)} == expected
        assert len(mine) == 10  # 190 pairs: ceil(0.05 * 190)
        summary = planted.uns["sgcn"]["summary"].loc[name]
        assert summary["n_edges"] == 10 and summary["n_pairs"] == 190
        np.testing.assert_allclose(summary["threshold"], threshold, atol=1e-10)
        # The stored PCC is the closed form; it equals the direct correlation of D a_i and D a_j.
        for row in mine.itertuples():
            i, j = genes.index(row.gene1), genes.index(row.gene2)
            assert abs(row.pcc - direct[i, j]) < 1e-10


def test_nodes_are_the_most_selective_genes(planted):
    nodes = planted.uns["sgcn"]["nodes"]
    a = planted.varm["stanmf_loadings"]
    r = a / a.sum(axis=1, keepdims=True)
    for k in range(4):
        mine = nodes[nodes["pattern"] == f"PP{k + 1}"]
        idx = planted.var_names.get_indexer(mine["gene"])
        np.testing.assert_allclose(mine["selectivity"], r[idx, k])
        np.testing.assert_allclose(mine["coefficient"], a[idx, k])
        assert mine["rank"].tolist() == list(range(1, 21))
        # No gene outside the nodes is more selective than the least selective node.
        others = np.setdiff1d(np.arange(a.shape[0]), idx)
        assert r[others, k].max() <= mine["selectivity"].min()
        edges = planted.uns["sgcn"]["edges"]
        edges = edges[edges["pattern"] == f"PP{k + 1}"]
        degree = pd.concat([edges["gene1"], edges["gene2"]]).value_counts().reindex(mine["gene"]).fillna(0)
        np.testing.assert_array_equal(mine["degree"], degree)


def test_graph_helper_and_h5ad_round_trip(planted, tmp_path):
    path = tmp_path / "sgcn.h5ad"
    planted.write_h5ad(path)
    back = ad.read_h5ad(path)
    for pattern in ("PP1", 2):
        g0, g1 = sf.get.sgcn_graph(planted, pattern), sf.get.sgcn_graph(back, pattern)
        assert list(g0.nodes(data=True)) == list(g1.nodes(data=True))
        assert sorted(g0.edges(data="pcc")) == sorted(g1.edges(data="pcc"))
    graph = sf.get.sgcn_graph(back, 0)
    assert graph.graph["pattern"] == "PP1"
    assert graph.nodes["m0"]["assigned"] == "PP1" and graph.nodes["m0"]["selectivity"] > 0.4
    assert all(0.99 < p <= 1 for _, _, p in graph.edges(data="pcc"))
    pd.testing.assert_frame_equal(back.uns["sgcn"]["edges"], planted.uns["sgcn"]["edges"])


def test_spicemix_key_patterns_subset_and_copy():
    adata = _planted(key="spicemix", suffix="metagenes")
    # SpiceMix's factors are metagenes: named MG1 ... (issue 18: one name per factor everywhere).
    out = sf.tl.sgcn(adata, key="spicemix", factors=["MG1", 3], top_fraction=0.01, key_added="net", copy=True)
    assert "net" not in adata.uns
    assert list(out.uns["net"]["summary"].index) == ["MG1", "MG4"]
    assert out.uns["net"]["params"]["loadings_key"] == "spicemix_metagenes"
    with pytest.raises(ValueError, match=r"No network for pattern 'MG2'.*\['MG1', 'MG4'\]"):
        sf.get.sgcn_graph(out, "MG2", key="net")
    with pytest.warns(FutureWarning, match="`patterns` of `sf.tl.sgcn` is renamed to `factors`"):
        old = sf.tl.sgcn(adata, key="spicemix", patterns=["MG1", 3], top_fraction=0.01, key_added="net", copy=True)
    pd.testing.assert_frame_equal(old.uns["net"]["nodes"], out.uns["net"]["nodes"])


def test_ties_of_single_pattern_genes_are_all_edges_and_agree_with_the_direct_computation():
    """Genes that load on one pattern only have the same image up to scale: PCC 1, tied at the top."""
    adata = _planted()
    a = adata.varm["stanmf_loadings"]
    a[20:26] = 0.0
    a[20:26, 0] = np.arange(1.0, 7.0)  # six genes with r = 1 for PP1: the top six nodes, 15 pairs at PCC 1
    sf.tl.sgcn(adata, top_fraction=0.01, factors=[0])
    edges = adata.uns["sgcn"]["edges"]
    single = {f"g{i}" for i in range(20, 26)}
    assert len(edges) == 15 and all({g1, g2} <= single for g1, g2 in zip(edges["gene1"], edges["gene2"], strict=True))
    np.testing.assert_allclose(edges["pcc"], 1.0, atol=1e-12)
    assert adata.uns["sgcn"]["summary"].loc["PP1", "n_edges"] == 15  # more than ceil(0.05 * 190) = 10
    genes = adata.uns["sgcn"]["nodes"]["gene"].tolist()
    rows, cols, _ = top_edges(_direct_corr(adata, genes), 0.95)
    assert {frozenset((genes[i], genes[j])) for i, j in zip(rows, cols, strict=True)} == {
        frozenset(p) for p in zip(edges["gene1"], edges["gene2"], strict=True)
    }


def test_paper_defaults_give_eleven_nodes_on_atlas_gene_count():
    rng = np.random.default_rng(1)
    adata = ad.AnnData(np.zeros((30, 4345)), obsm={"X_stanmf": rng.random((30, 3))})
    adata.varm["stanmf_loadings"] = rng.random((4345, 3))
    sf.tl.sgcn(adata)
    summary = adata.uns["sgcn"]["summary"]
    assert (summary["n_nodes"] == 11).all() and (summary["n_pairs"] == 55).all()
    assert (summary["n_edges"] == 3).all()  # ceil(0.05 * 55)


def _snapshot(adata):
    return set(adata.uns), set(adata.varm), set(adata.obsm)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"key": "pca"}, KeyError, r"'pca' is not a factorisation result.*sf.tl.stanmf\(adata, key_added='pca'\)"),
        ({"top_fraction": 0.0}, ValueError, r"`top_fraction` must be > 0.0 and <= 1.0"),
        ({"top_fraction": 1.5}, ValueError, r"`top_fraction` must be > 0.0 and <= 1.0"),
        ({"edge_quantile": 1.0}, ValueError, r"`edge_quantile` must be >= 0 and < 1"),
        ({"edge_quantile": -0.1}, ValueError, r"`edge_quantile` must be >= 0.0"),
        ({"factors": [0, 4]}, ValueError, r"`factors` 4 is out of range for 4 patterns"),
        ({"factors": ["PP0"]}, ValueError, r"'PP0' is not one of the 4 patterns"),
        ({"factors": []}, ValueError, "`factors` is empty"),
    ],
)
def test_bad_input_leaves_adata_unchanged(kwargs, error, match):
    adata = _planted()
    before = _snapshot(adata)
    with pytest.raises(error, match=match):
        sf.tl.sgcn(adata, **kwargs)
    assert _snapshot(adata) == before


def test_duplicate_gene_names_and_missing_result():
    adata = _planted()
    adata.var_names = ["m0"] * 2 + list(adata.var_names[2:])
    with pytest.raises(ValueError, match="var_names_make_unique"):
        sf.tl.sgcn(adata)
    assert "sgcn" not in adata.uns
    with pytest.raises(KeyError, match=r"run `sf.tl.sgcn\(adata, key_added='sgcn'\)` first"):
        sf.get.sgcn_graph(adata, 0)
