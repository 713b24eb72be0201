import numpy as np
import pytest
import squidpy as sq
from matplotlib.axes import Axes

import spatialfactors as sf


@pytest.fixture(scope="module")
def fitted():
    adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=150, random_state=0)
    sq.gr.spatial_neighbors_delaunay(adata)
    sf.tl.spicemix(adata, 5, max_iter=3)
    return adata


def test_affinity_heatmap_is_clustered_and_symmetric(fitted, tmp_path):
    ax = sf.pl.affinity(fitted, show=False, save=tmp_path / "a.png")
    assert isinstance(ax, Axes) and (tmp_path / "a.png").exists()
    shown = ax.collections[0].get_array().reshape(5, 5)
    order = [int(t.get_text().removeprefix("MG")) - 1 for t in ax.get_xticklabels()]
    s = fitted.uns["spicemix"]["affinity"]
    np.testing.assert_allclose(shown, s[np.ix_(order, order)])
    assert sorted(order) == list(range(5))


def test_convergence_plots_every_iteration(fitted):
    ax = sf.pl.convergence(fitted, show=False)
    line = ax.lines[0]
    np.testing.assert_allclose(line.get_ydata(), fitted.uns["spicemix"]["history"]["objective"])


def test_metagene_plots_read_spicemix(fitted):
    fig = sf.pl.metagenes(fitted, "X_spicemix", show=False, return_fig=True)
    assert len(fig.axes) >= 5
    ax = sf.pl.metagene_expression(fitted, "X_spicemix", groupby="cell_type", show=False)
    assert isinstance(ax, Axes)


def test_missing_result_message():
    adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=50)
    with pytest.raises(KeyError, match="run `sf.tl.spicemix"):
        sf.pl.affinity(adata)
