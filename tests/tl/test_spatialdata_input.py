"""Every tool takes a ``spatialdata.SpatialData`` with ``table_key=`` and writes into that table."""

import inspect
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import spatialdata as sd
import squidpy as sq
from spatialdata.models import ShapesModel, TableModel

import spatialfactors as sf

STARMAP = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "starmap_visual_1020"
TABLE = "table"
# Result accessors: they read what a tool wrote and take an AnnData only.
ACCESSORS = {"pattern_genes_df", "sgcn_graph"}


def _with_cells(adata: ad.AnnData) -> "sd.SpatialData":
    """A SpatialData with the cells as circles at their centroids, annotated by the table."""
    adata = adata.copy()
    adata.obs["region"] = pd.Categorical(["cells"] * adata.n_obs)
    adata.obs["instance_id"] = np.arange(adata.n_obs)
    circles = ShapesModel.parse(
        adata.obsm["spatial"], geometry=0, radius=np.full(adata.n_obs, 40.0), index=adata.obs["instance_id"].to_numpy()
    )
    table = TableModel.parse(adata, region="cells", region_key="region", instance_key="instance_id")
    return sd.SpatialData(shapes={"cells": circles}, tables={TABLE: table})


def _table_only(adata: ad.AnnData) -> "sd.SpatialData":
    return sd.SpatialData(tables={TABLE: TableModel.parse(adata.copy())})


@pytest.fixture(scope="module")
def starmap():
    """STARmap (SpiceMix's 930 cells, the 100 most often detected genes) as a SpatialData, fitted by SpiceMix."""
    if not STARMAP.is_dir():
        pytest.skip("shared STARmap data not available")
    adata = sf.datasets.starmap_visual_cortex(STARMAP)
    detected = np.asarray((adata.X > 0).sum(0)).ravel()
    adata = adata[:, np.sort(np.argsort(-detected, kind="stable")[:100])].copy()
    sdata = _with_cells(adata)
    sf.pp.normalize_spicemix(sdata, table_key=TABLE)
    # Delaunay graph from the circles' centres, edges up to 600 px as SpiceMix does on STARmap.
    sq.gr.spatial_neighbors_delaunay(
        sdata, table_key=TABLE, elements_to_coordinate_systems={"cells": "global"}, radius=(0, 600)
    )
    before = sdata.tables[TABLE].copy()
    sf.tl.spicemix(sdata, 5, table_key=TABLE, max_iter=2)
    return sdata, before


def test_spicemix_results_land_in_the_table(starmap):
    sdata, before = starmap
    table = sdata.tables[TABLE]
    assert table.shape == (930, 100)
    graph = table.obsp["spatial_connectivities"]
    assert graph.shape == (930, 930) and graph.nnz > 0
    np.testing.assert_array_equal(table.obsm["spatial"], before.obsm["spatial"])
    assert table.obsm["X_spicemix"].shape == (930, 5)
    metagenes = table.varm["spicemix_metagenes"]
    assert metagenes.shape == (100, 5)
    np.testing.assert_allclose(metagenes.sum(0), 1, atol=1e-10)
    assert table.uns["spicemix"]["k"] == 5 and table.uns["spicemix"]["affinity"].shape == (5, 5)
    assert "X_spicemix" not in before.obsm
    # The same fit as on the AnnData itself, and the same graph as squidpy builds on it.
    direct = before.copy()
    del direct.obsp["spatial_connectivities"], direct.obsp["spatial_distances"]
    sq.gr.spatial_neighbors_delaunay(direct, radius=(0, 600))
    assert (direct.obsp["spatial_connectivities"] != graph).nnz == 0
    sf.tl.spicemix(direct, 5, max_iter=2)
    np.testing.assert_array_equal(table.obsm["X_spicemix"], direct.obsm["X_spicemix"])
    np.testing.assert_array_equal(table.uns["spicemix"]["affinity"], direct.uns["spicemix"]["affinity"])


def test_copy_returns_the_table_and_leaves_it_alone(starmap):
    sdata, _ = starmap
    table = sdata.tables[TABLE]
    keys = set(table.obs.columns)
    out = sf.tl.cluster_latent(sdata, n_clusters=4, table_key=TABLE, copy=True)
    assert isinstance(out, ad.AnnData) and "spicemix_clusters" in out.obs
    assert set(table.obs.columns) == keys


def test_downstream_tools_on_the_spatialdata(starmap):
    sdata, _ = starmap
    table = sdata.tables[TABLE]
    sf.tl.cluster_latent(sdata, n_clusters=8, reference_key="ClusterName", table_key=TABLE)
    assert table.obs["spicemix_clusters"].nunique() == 8 and 0 <= table.uns["spicemix_clusters"]["ari"] <= 1
    sf.tl.pattern_genes(sdata, key="spicemix", table_key=TABLE)
    importance = table.varm["spicemix_importance"]
    np.testing.assert_allclose(np.nansum(importance, axis=1)[~np.isnan(importance).all(1)], 1)
    sf.tl.sgcn(sdata, key="spicemix", top_fraction=0.1, table_key=TABLE)
    assert (table.uns["sgcn"]["summary"]["n_nodes"] == 10).all()
    # the result accessors read the table as well
    assert sf.tl.pattern_genes_df(sdata, 0, key="spicemix", table_key=TABLE).equals(
        sf.tl.pattern_genes_df(table, 0, key="spicemix")
    )
    assert sf.tl.sgcn_graph(sdata, 0, table_key=TABLE).number_of_nodes() == 10


def test_stanmf_on_spatialdata(planted):
    x, _, _, coords = planted
    adata = ad.AnnData(x, obsm={"spatial": coords})
    sdata = _with_cells(adata)
    sf.tl.stanmf(sdata, n_factors=4, max_iter=100, table_key=TABLE)
    table = sdata.tables[TABLE]
    assert table.obsm["X_stanmf"].shape == (400, 4) and table.varm["stanmf_loadings"].shape == (150, 4)
    sf.tl.stanmf(adata, n_factors=4, max_iter=100)
    np.testing.assert_array_equal(table.obsm["X_stanmf"], adata.obsm["X_stanmf"])


def test_link_regions_and_region_auc_on_spatialdata():
    labels = np.repeat([[[1, 1, 2, 2, 3, 3]]], 2, axis=0)  # three regions in a row on a 2 x 1 x 6 grid
    mask = labels > 0
    adata = ad.AnnData(obs={"region_id": labels[mask]}, uns={"aba": {"grid_shape": labels.shape, "mask": mask}})
    adata.obsm["X_stanmf"] = np.stack([labels[mask] == 2, np.isin(labels[mask], [2, 3])], axis=1).astype(float)
    sdata = _table_only(adata)
    sf.tl.link_regions(sdata, table_key=TABLE)
    best = sdata.tables[TABLE].uns["link_regions"]["best"]
    assert best[best["selected"]][["pattern", "acronyms"]].to_numpy().tolist() == [["PP1", "2"], ["PP2", "2 + 3"]]

    rng = np.random.default_rng(0)
    d = rng.random((300, 4))
    sdata = _table_only(ad.AnnData(obs={"region_id": np.where(d[:, 0] + d[:, 1] > 1.2, 5, 7)}, obsm={"X_stanmf": d}))
    sf.tl.region_auc(sdata, region=5, factors=[0, 1], n_random=20, table_key=TABLE)
    assert sdata.tables[TABLE].uns["region_auc"]["auc"] > 0.99


TOOLS = sorted(sf.tl.__all__)


@pytest.mark.parametrize("name", TOOLS)
def test_every_tool_takes_table_key(name):
    assert "table_key" in inspect.signature(getattr(sf.tl, name)).parameters


# Minimal extra arguments so that each call gets as far as resolving the table.
REQUIRED = {"region_auc": {"region": 5, "patterns": [0]}}


@pytest.mark.parametrize("name", [n for n in TOOLS if n not in ACCESSORS])
def test_spatialdata_without_or_with_a_wrong_table_key(name):
    rng = np.random.default_rng(0)
    adata = ad.AnnData(rng.random((20, 6)), obsm={"X_stanmf": rng.random((20, 2))})
    sdata = _table_only(adata)
    table = sdata.tables[TABLE]
    snapshot = (set(table.obs.columns), set(table.obsm), set(table.varm), set(table.uns))
    tool = getattr(sf.tl, name)
    with pytest.raises(
        ValueError, match=r"A SpatialData needs `table_key=` to name its table; available tables: \['table'\]"
    ):
        tool(sdata, **REQUIRED.get(name, {}))
    with pytest.raises(KeyError, match="Table 'cells' not found in the SpatialData"):
        tool(sdata, table_key="cells", **REQUIRED.get(name, {}))
    assert (set(table.obs.columns), set(table.obsm), set(table.varm), set(table.uns)) == snapshot


@pytest.mark.parametrize("name", sorted(sf.pl.__all__))
def test_every_plot_takes_table_key(name):
    assert "table_key" in inspect.signature(getattr(sf.pl, name)).parameters


def test_plots_draw_the_spatialdata_table(starmap):
    import matplotlib.pyplot as plt

    sdata, _ = starmap
    table = sdata.tables[TABLE]
    for plot in (sf.pl.metagenes, sf.pl.affinity, sf.pl.convergence):
        fig = plot(sdata, table_key=TABLE, show=False, return_fig=True)
        expected = plot(table, show=False, return_fig=True)
        # the same figure as from the table itself: same axes, same drawn artists
        assert len(fig.axes) == len(expected.axes) > 0
        assert [len(ax.get_children()) for ax in fig.axes] == [len(ax.get_children()) for ax in expected.axes]
        plt.close("all")
    fig = sf.pl.metagene_expression(sdata, groupby="ClusterName", table_key=TABLE, show=False, return_fig=True)
    assert fig.axes
    plt.close("all")
