import anndata as ad
import numpy as np
import pytest
import squidpy as sq

import spatialfactors as sf


@pytest.fixture(scope="module")
def cells(planted):
    x, _, _, coords = planted
    adata = ad.AnnData(x.astype(np.float32), obsm={"spatial": coords})
    sq.gr.spatial_neighbors_grid(adata, n_neighs=4)
    sf.tl.stanmf(adata, range(3, 6), n_replicates=4)
    return adata


@pytest.fixture(scope="module")
def voxels(planted):
    x, _, _, _ = planted  # 400 obs = a 20 x 20 x 1 slab placed in a 3D grid
    mask = np.zeros((20, 4, 20), bool)
    mask[:, 1, :] = True
    adata = ad.AnnData(x.astype(np.float32), uns={"aba": {"grid_shape": (20, 4, 20), "spacing": 200.0, "mask": mask}})
    sf.tl.stanmf(adata, 4, pca=False)
    return adata


def test_instability_curves_and_kstar(cells):
    ax = sf.pl.instability(cells, show=False)
    table = cells.uns["stanmf"]["instability"]
    curves = [np.asarray(c.lines[0].get_ydata(), dtype=float) for c in ax.containers]
    np.testing.assert_allclose(curves[0], table[table["method"] == "nmf"]["mean"])
    np.testing.assert_allclose(curves[1], table[table["method"] == "pca"]["mean"])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["staNMF", "PCA"]
    assert f"K* = {cells.uns['stanmf']['k']}" in [t.get_text() for t in ax.texts]


def test_patterns_cells_are_spatial_scatter(cells):
    axes = sf.pl.patterns(cells, factors=[0, "PP2"], show=False)
    np.testing.assert_allclose(axes[0][1].collections[0].get_array(), cells.obsm["X_stanmf"][:, 1])


def test_patterns_voxels_are_max_projections(voxels):
    axes = sf.pl.patterns(voxels, factors=[2], show=False)
    assert [ax.get_title() for ax in axes[0]] == ["coronal", "sagittal", "horizontal"]
    vol = sf.io.to_volume(voxels, 2, basis="X_stanmf")
    coronal = axes[0][0].images[0].get_array()
    np.testing.assert_allclose(coronal, np.nanmax(vol, axis=0))
    horizontal = axes[0][2].images[0].get_array()
    np.testing.assert_allclose(horizontal, np.nanmax(vol, axis=1).T)


def test_reconstruction_scatter(cells):
    ax = sf.pl.reconstruction(cells, show=False)
    offsets = ax.collections[0].get_offsets()
    genes = cells.uns["stanmf"]["genes"]
    np.testing.assert_allclose(offsets[:, 0], genes["pca_reconstruction_pcc"])
    np.testing.assert_allclose(offsets[:, 1], genes["reconstruction_pcc"])


def test_patterns_per_gene_counts(cells):
    ax = sf.pl.patterns_per_gene(cells, show=False)
    heights = [p.get_height() for p in ax.patches]
    assert sum(heights) == cells.n_vars
    k = cells.uns["stanmf"]["k"]
    n = cells.uns["stanmf"]["genes"]["n_patterns"]
    assert heights == [int((n == i).sum()) for i in range(1, k + 1)]


def test_morans_i_plot(cells):
    ax = sf.pl.morans_i(cells, show=False)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["staNMF", "PCA"]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda a: sf.pl.instability(a, key="other", show=False), KeyError, "run `sf.tl.stanmf"),
        (lambda a: sf.pl.patterns(a, factors=[9], show=False), ValueError, "out of range"),
        (lambda a: sf.pl.patterns(a, planes=["axial"], show=False), ValueError, "Unknown planes"),
    ],
)
def test_plot_errors(voxels, call, error, match):
    with pytest.raises(error, match=match):
        call(voxels)


def test_missing_sweep_and_graph_messages(voxels):
    with pytest.raises(KeyError, match="written by a sweep over K"):
        sf.pl.instability(voxels, show=False)
    with pytest.raises(KeyError, match="spatial_neighbors_delaunay"):
        sf.pl.morans_i(voxels, show=False)
