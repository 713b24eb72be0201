import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import spatialfactors as sf

SHAPE = (6, 4, 5)


def _voxels(seed=0, k=3, n_genes=40):
    """Voxel AnnData on a small grid (some voxels outside the brain) with a factorisation and X = D A."""
    rng = np.random.default_rng(seed)
    mask = np.ones(SHAPE, bool)
    mask[0, 0, :] = False
    n = int(mask.sum())
    d = rng.random((n, k))
    a = rng.gamma(0.5, 1.0, (n_genes, k))
    a[7] = 0.0  # one gene without loadings
    adata = ad.AnnData(
        (d @ a.T).astype(np.float32),
        obs=pd.DataFrame(index=[f"voxel_{i}" for i in np.flatnonzero(mask)]),
        var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]),
        uns={"aba": {"grid_shape": np.array(SHAPE), "spacing": 200.0, "mask": mask}},
    )
    adata.obsm["X_stanmf"] = d
    adata.varm["stanmf_loadings"] = a
    sf.tl.pattern_genes(adata)
    sf.tl.sgcn(adata, top_fraction=0.25)
    return adata


@pytest.fixture(scope="module")
def voxels():
    return _voxels()


def test_heatmap_groups_genes_by_assigned_pattern_and_counts(voxels, tmp_path):
    heatmap, bars = sf.pl.pattern_genes(voxels, show=False, save=tmp_path / "genes.png")
    assert (tmp_path / "genes.png").is_file()
    genes = voxels.uns["stanmf_pattern_genes"]["genes"].dropna(subset=["pattern"])
    order = genes.sort_values(["pattern", "rank"]).index  # by pattern (categorical order), then rank
    expected = voxels.varm["stanmf_loadings"][voxels.var_names.get_indexer(order)].T
    np.testing.assert_array_equal(heatmap.images[0].get_array(), expected)
    assert heatmap.images[0].get_array().shape == (3, 39)  # the all-zero gene is left out
    counts = voxels.uns["stanmf_pattern_genes"]["counts"]["n_genes"].tolist()
    assert [p.get_width() for p in bars.patches] == counts
    boxes = [p for p in heatmap.patches if p.get_width() > 0]
    assert [b.get_width() for b in boxes] == [c for c in counts if c]
    assert [t.get_text() for t in heatmap.get_yticklabels()] == ["PP1", "PP2", "PP3"]


def test_heatmap_of_importance_into_given_axes(voxels):
    fig, ax = plt.subplots()
    out = sf.pl.pattern_genes(voxels, values="importance", counts=False, ax=ax, show=False)
    assert out is ax
    values = ax.images[0].get_array()
    np.testing.assert_allclose(values.sum(axis=0), 1.0)  # every gene's importance scores sum to one
    with pytest.raises(ValueError, match="pass `counts=False`"):
        sf.pl.pattern_genes(voxels, ax=ax, show=False)
    with pytest.raises(ValueError, match="`values` must be"):
        sf.pl.pattern_genes(voxels, values="pcc", show=False)


def test_pattern_beside_its_marker_genes_on_voxels(voxels):
    axes = sf.pl.pattern_with_genes(voxels, [0, "PP3"], n_genes=2, show=False)
    assert len(axes) == 2 and len(axes[0]) == 3
    # The first panel is the pattern's horizontal maximum projection (AP x ML, shown ML x AP).
    volume = sf.io.to_volume(voxels, 0, basis="X_stanmf")
    expected = np.nanmax(np.where(np.isnan(volume), -np.inf, volume), axis=1).T
    np.testing.assert_allclose(axes[0][0].images[0].get_array(), expected)
    for row, k in enumerate([0, 2]):
        top = sf.get.pattern_genes_df(voxels, k)["names"][:2].tolist()
        assert [axes[row][c].get_title(loc="left") for c in (1, 2)] == top
    # Measured expression of the top gene of PP1, projected the same way.
    gene = sf.get.pattern_genes_df(voxels, 0)["names"][0]
    gvol = sf.io.to_volume(voxels, gene)
    np.testing.assert_allclose(
        axes[0][1].images[0].get_array(), np.nanmax(np.where(np.isnan(gvol), -np.inf, gvol), axis=1).T, rtol=1e-6
    )


def test_pattern_with_reconstructed_genes_and_coronal_plane(voxels):
    axes = sf.pl.pattern_with_genes(voxels, 1, n_genes=1, plane="coronal", reconstructed=True, show=False)
    gene = sf.get.pattern_genes_df(voxels, 1)["names"][0]
    j = voxels.var_names.get_loc(gene)
    rec = voxels.obsm["X_stanmf"] @ voxels.varm["stanmf_loadings"][j]
    vol = sf.io.to_volume(voxels, rec)
    np.testing.assert_allclose(
        axes[0][1].images[0].get_array(), np.nanmax(np.where(np.isnan(vol), -np.inf, vol), axis=0)
    )


def test_pattern_with_genes_on_cells():
    rng = np.random.default_rng(1)
    n = 120
    d, a = rng.random((n, 3)), rng.random((20, 3))
    obs = pd.DataFrame({"fov": pd.Categorical(np.repeat(["a", "b"], n // 2))}, index=[f"c{i}" for i in range(n)])
    adata = ad.AnnData(d @ a.T, obs=obs)
    adata.obsm["spatial"] = rng.random((n, 2))
    adata.obsm["X_spicemix"], adata.varm["spicemix_metagenes"] = d, a
    sf.tl.pattern_genes(adata, key="spicemix")
    axes = sf.pl.pattern_with_genes(adata, 2, key="spicemix", library_key="fov", library="b", show=False)
    scatter = axes[0][0].collections[0]
    np.testing.assert_allclose(scatter.get_offsets(), adata.obsm["spatial"][n // 2 :])
    np.testing.assert_allclose(scatter.get_array(), d[n // 2 :, 2])


def test_pattern_with_genes_errors(voxels):
    with pytest.raises(ValueError, match="`factors` 3 is out of range for 3 patterns"):
        sf.pl.pattern_with_genes(voxels, 3, show=False)
    with pytest.raises(ValueError, match="`plane` must be one of"):
        sf.pl.pattern_with_genes(voxels, 0, plane="oblique", show=False)
    empty = ad.AnnData(obs=voxels.obs, var=voxels.var, obsm=voxels.obsm, varm=voxels.varm, uns=voxels.uns)
    with pytest.raises(ValueError, match="`adata.X` is empty"):
        sf.pl.pattern_with_genes(empty, 0, show=False)
    assert len(sf.pl.pattern_with_genes(empty, 0, n_genes=1, reconstructed=True, show=False)[0]) == 2
    bare = voxels.copy()
    del bare.uns["stanmf_pattern_genes"]
    with pytest.raises(KeyError, match=r"run `sf.tl.pattern_genes\(adata, key='stanmf'\)` first"):
        sf.pl.pattern_with_genes(bare, 0, show=False)
    with pytest.raises(KeyError, match=r"run `sf.tl.pattern_genes"):
        sf.pl.pattern_genes(bare, show=False)


@pytest.mark.parametrize("layout", ["spring", "circular", "kamada_kawai"])
def test_network_colours_nodes_by_selectivity_and_edges_by_pcc(voxels, layout):
    ax = sf.pl.sgcn(voxels, "PP2", layout=layout, show=False)
    graph = sf.get.sgcn_graph(voxels, "PP2")
    nodes, edges = ax.collections[0], ax.collections[1]
    np.testing.assert_allclose(nodes.get_array(), [graph.nodes[n]["selectivity"] for n in graph.nodes])
    pcc = [graph.edges[e]["pcc"] for e in graph.edges]
    np.testing.assert_allclose(edges.get_array(), pcc)
    np.testing.assert_allclose(edges.get_edgecolor(), edges.get_cmap()(edges.norm(pcc)))  # drawn in those colours
    assert len(nodes.get_offsets()) == 10 and len(edges.get_segments()) == graph.number_of_edges()
    assert {t.get_text() for t in ax.texts} == set(graph.nodes)


def test_network_errors(voxels):
    with pytest.raises(ValueError, match="`layout` must be"):
        sf.pl.sgcn(voxels, 0, layout="tree", show=False)
    with pytest.raises(ValueError, match="out of range for 3 patterns"):
        sf.pl.sgcn(voxels, 5, show=False)
    with pytest.raises(KeyError, match="No sGCN result under key 'other'"):
        sf.pl.sgcn(voxels, 0, key="other", show=False)


def test_region_auc_histogram():
    rng = np.random.default_rng(2)
    d = rng.random((300, 6))
    obs = pd.DataFrame({"region_id": np.where(d[:, 1] > 0.6, 3, 4)}, index=[f"v{i}" for i in range(300)])
    adata = ad.AnnData(obs=obs, obsm={"X_stanmf": d})
    sf.tl.region_auc(adata, region=3, factors=["PP2"], n_random=50)
    fig = sf.pl.region_auc(adata, bins=10, return_fig=True)
    ax = fig.axes[0]
    assert sum(p.get_height() for p in ax.patches) == 50
    res = adata.uns["region_auc"]
    assert ax.lines[0].get_xdata()[0] == res["auc"] and ax.lines[1].get_xdata()[0] == res["median_null"]
    with pytest.raises(KeyError, match=r"run `sf.tl.region_auc\(adata, key_added='auc2'\)` first"):
        sf.pl.region_auc(adata, "auc2", show=False)
