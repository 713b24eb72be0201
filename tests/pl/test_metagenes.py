import numpy as np
import pytest

import spatialfactors as sf


@pytest.fixture(scope="module")
def cortex():
    return sf.datasets.simulate_cortex(n_fovs=2, n_cells=150, random_state=0)


def test_metagenes_grid_one_row_per_fov(cortex, tmp_path):
    path = tmp_path / "m.png"
    axes = sf.pl.metagenes(cortex, "X_true", factors=[4, "L4"], library_key="fov", save=path, show=False)
    assert [len(row) for row in axes] == [2, 2]
    assert [ax.get_title() for ax in axes[0]] == ["L1", "L4"]
    assert [row[0].get_ylabel() for row in axes] == ["fov 0", "fov 1"]
    # Row r, column c shows the cells of field of view r with their weights of component c.
    for r, fov in enumerate(("0", "1")):
        sel = (cortex.obs["fov"] == fov).to_numpy()
        for c, name in enumerate(("L1", "L4")):
            shown = axes[r][c].collections[0].get_array()
            np.testing.assert_allclose(shown, cortex.obsm["X_true"][name].to_numpy()[sel])
    assert path.stat().st_size > 0


def test_metagenes_normalize_shows_proportions(cortex):
    axes = sf.pl.metagenes(cortex, "X_true", factors=[0], normalize=True, show=False)
    x = cortex.obsm["X_true"].to_numpy()
    np.testing.assert_allclose(axes[0][0].collections[0].get_array(), x[:, 0] / x.sum(axis=1))


def test_metagene_expression_shows_group_means(cortex):
    ax = sf.pl.metagene_expression(cortex, "X_true", groupby="cell_type", show=False)
    x = cortex.obsm["X_true"]
    v = x.div(x.sum(axis=1), axis=0)
    expected = v.groupby(cortex.obs["cell_type"], observed=True).mean().to_numpy()
    np.testing.assert_allclose(np.asarray(ax.collections[0].get_array()).reshape(expected.shape), expected)
    assert [t.get_text() for t in ax.get_xticklabels()][:2] == ["Exc", "Inh"]


def test_plain_array_basis_gets_numbered_columns(cortex):
    adata = cortex.copy()
    adata.obsm["X_plain"] = adata.obsm["X_true"].to_numpy()
    fig = sf.pl.metagenes(adata, "X_plain", factors=[1], return_fig=True)
    assert fig.axes[0].get_title() == "X_plain 1"


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda a: sf.pl.metagenes(a, "X_missing", show=False), KeyError, "X_missing"),
        (lambda a: sf.pl.metagenes(a, "X_true", factors=[13], show=False), ValueError, r"`factors` 13 is out of range"),
        (lambda a: sf.pl.metagenes(a, "X_true", library_key="batch", show=False), KeyError, "batch"),
        (lambda a: sf.pl.metagene_expression(a, "X_true", groupby="nope", show=False), KeyError, "nope"),
    ],
)
def test_bad_keys(cortex, call, error, match):
    with pytest.raises(error, match=match):
        call(cortex)
