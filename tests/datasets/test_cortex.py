import time

import numpy as np
import pytest
from scipy.spatial import cKDTree

import spatialfactors as sf
from spatialfactors.datasets import CELL_TYPES, LAYERS, METAGENES, SCENARIOS, cortex_proportion_means


@pytest.fixture(scope="module")
def cortex():
    return sf.datasets.simulate_cortex(n_fovs=3, n_cells=500, random_state=0)


def test_shapes_and_annotations(cortex):
    assert cortex.shape == (1500, 100)
    assert cortex.X.dtype == np.float32
    assert list(cortex.obs["cell_type"].cat.categories) == list(CELL_TYPES)
    assert list(cortex.obs["layer"].cat.categories) == list(LAYERS)
    assert list(cortex.obs["fov"].cat.categories) == ["0", "1", "2"]
    assert (cortex.obs["fov"].value_counts() == 500).all()
    assert cortex.obsm["spatial"].shape == (1500, 2)
    truth = cortex.uns["simulate_cortex"]
    assert truth["M"].shape == (100, len(METAGENES))
    assert truth["X"].shape == (1500, len(METAGENES))
    np.testing.assert_array_equal(cortex.obsm["X_true"].to_numpy(), truth["X"])
    np.testing.assert_array_equal(cortex.varm["metagenes_true"], truth["M"])


def test_metagenes_on_simplex(cortex):
    m = cortex.varm["metagenes_true"]
    assert (m > 0).all()
    np.testing.assert_allclose(m.sum(axis=0), 1.0, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("group", "fraction"), list(sf.datasets._cortex.LINKED_FRACTIONS.items()))
def test_linked_gene_fractions(group, fraction):
    n_genes = 4000
    adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=20, n_genes=n_genes, random_state=1)
    m = adata.varm["metagenes_true"]
    names = group.split(":")
    first = m[:, METAGENES.index(names[0])]
    for name in names[1:]:
        # Linked genes had equal values before the column normalisation, so their ratio is one
        # common constant; unlinked genes (independent Gamma draws) never share it.
        ratio = m[:, METAGENES.index(name)] / first
        common = np.median(ratio)
        linked = np.isclose(ratio, common, rtol=1e-9, atol=0)
        sd = np.sqrt(fraction * (1 - fraction) / n_genes)
        assert abs(linked.mean() - fraction) < 4 * sd
        np.testing.assert_array_equal(linked, adata.uns["simulate_cortex"]["linked_genes"][group])


def test_unlinked_metagenes_are_independent(cortex):
    m = cortex.varm["metagenes_true"]
    ratio = m[:, METAGENES.index("Glial-2")] / m[:, METAGENES.index("Glial-1")]
    assert np.unique(np.round(ratio, 9)).size == m.shape[0]


def test_cell_types_follow_layers(cortex):
    obs = cortex.obs
    x = cortex.obsm["spatial"][:, 0]
    expected_layer = np.searchsorted([0.35, 0.5, 0.75], x, side="right")
    np.testing.assert_array_equal(obs["layer"].cat.codes.to_numpy(), expected_layer)
    allowed = {
        "eL1": {"L1"},
        "eL2": {"L2"},
        "eL3": {"L3"},
        "eL4": {"L4"},
        "Inh-1": {"L1", "L3", "L4"},
        "Inh-2": {"L3", "L4"},
        "Glial-1": {"L1"},
        "Glial-2": {"L1", "L2", "L3", "L4"},
    }
    for cell_type, layers in allowed.items():
        seen = set(obs.loc[obs["cell_type"] == cell_type, "layer"].astype(str))
        assert seen == layers, cell_type
    # Excitatory neurons populate their layer densely; sparse types are sparse.
    for layer in LAYERS:
        in_layer = obs["layer"] == layer
        assert (obs.loc[in_layer, "cell_type"] == f"e{layer}").mean() > 0.3
    for sparse in ("Inh-1", "Inh-2", "Glial-2"):
        assert (obs["cell_type"] == sparse).mean() < 0.15


def test_hidden_states_use_only_the_type_metagenes(cortex):
    x = cortex.obsm["X_true"]
    b = cortex_proportion_means()
    for cell_type in ("eL1", "eL2", "eL3", "eL4", "Glial-1"):
        sel = (cortex.obs["cell_type"] == cell_type).to_numpy()
        used = (x.loc[sel] > 0).any(axis=0)
        np.testing.assert_array_equal(used.to_numpy(), (b.loc[cell_type] > 0).to_numpy())
    # Scale s_i ~ Gamma(K, 1): the mean total of x_i is K.
    totals = x.sum(axis=1)
    k = len(METAGENES)
    assert abs(totals.mean() - k) < 4 * np.sqrt(k / len(totals))


def test_minimum_distance_holds(cortex):
    d = cortex.uns["simulate_cortex"]["params"]["min_distance"]
    assert d == pytest.approx(0.75 / np.sqrt(500))
    for fov in cortex.obs["fov"].cat.categories:
        xy = cortex.obsm["spatial"][(cortex.obs["fov"] == fov).to_numpy()]
        assert cKDTree(xy).query_pairs(d * (1 - 1e-12)) == set()
        assert xy.min() >= 0 and xy.max() <= 1


def test_same_seed_identical_other_seed_differs():
    a = sf.datasets.simulate_cortex(n_fovs=1, n_cells=100, random_state=3)
    b = sf.datasets.simulate_cortex(n_fovs=1, n_cells=100, random_state=3)
    c = sf.datasets.simulate_cortex(n_fovs=1, n_cells=100, random_state=4)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.obsm["spatial"], b.obsm["spatial"])
    assert (a.obs["cell_type"] == b.obs["cell_type"]).all()
    assert not np.array_equal(a.X, c.X)
    assert not np.array_equal(a.obsm["spatial"], c.obsm["spatial"])


@pytest.mark.parametrize(("sigma_y", "sigma_x"), SCENARIOS)
def test_scenarios_noise_levels(sigma_y, sigma_x):
    adata = sf.datasets.simulate_cortex(n_fovs=2, n_cells=500, sigma_y=sigma_y, sigma_x=sigma_x, random_state=0)
    truth = adata.uns["simulate_cortex"]
    residual = adata.layers["unclipped"] - truth["X"] @ truth["M"].T
    assert residual.std() == pytest.approx(sigma_y, rel=0.03)
    assert (adata.X >= 0).all()
    np.testing.assert_array_equal(adata.X, np.clip(adata.layers["unclipped"], 0, None))


def test_sigma_x_controls_state_variance():
    spread = []
    for sigma_x in (0.0, 1.0, 2.0):
        adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=500, sigma_x=sigma_x, random_state=0)
        x = adata.obsm["X_true"].to_numpy()
        v = x / x.sum(axis=1, keepdims=True)
        sel = (adata.obs["cell_type"] == "eL4").to_numpy()
        spread.append(v[sel].std(axis=0).sum())
    assert spread[0] < 1e-12
    assert spread[0] < spread[1] < spread[2]


def test_sigma_zero_gives_exact_model():
    adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=50, sigma_y=0.0, clip_negative=False, random_state=0)
    truth = adata.uns["simulate_cortex"]
    np.testing.assert_allclose(adata.X, truth["X"] @ truth["M"].T, rtol=1e-6)
    assert "unclipped" not in adata.layers


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_cells": 0}, "`n_cells` must be at least 1"),
        ({"n_fovs": 0}, "`n_fovs` must be at least 1"),
        ({"n_genes": 12}, r"`n_genes` must be at least the number of metagenes \(13\)"),
        ({"sigma_y": -0.1}, "`sigma_y` must be a finite number >= 0"),
        ({"sigma_x": -1.0}, "`sigma_x` must be a finite number >= 0"),
        ({"sigma_y": float("nan")}, "`sigma_y` must be a finite number >= 0"),
        ({"min_distance": -0.1}, "`min_distance` must be a finite number >= 0"),
        ({"min_distance": 0.2}, r"`min_distance=0.2` cannot fit 500 cells .* use `min_distance <= 0.03568`"),
    ],
)
def test_bad_parameters(kwargs, match):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=match):
        sf.datasets.simulate_cortex(**kwargs)
    assert time.perf_counter() - start < 5  # fails fast instead of searching for positions


def test_non_integer_counts():
    with pytest.raises(TypeError, match="`n_cells` must be an integer"):
        sf.datasets.simulate_cortex(n_cells=10.5)


def test_dense_packing_below_the_guard_still_places_cells():
    # Close to the coverage guard, sequential addition still fills the tissue.
    adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=200, min_distance=0.054, random_state=0)
    assert adata.n_obs == 200
    assert cKDTree(adata.obsm["spatial"]).query_pairs(0.054 * (1 - 1e-12)) == set()


def test_writes_h5ad_round_trip(tmp_path, cortex):
    import anndata as ad

    path = tmp_path / "cortex.h5ad"
    cortex.write_h5ad(path)
    back = ad.read_h5ad(path)
    np.testing.assert_array_equal(back.X, cortex.X)
    np.testing.assert_array_equal(back.uns["simulate_cortex"]["M"], cortex.uns["simulate_cortex"]["M"])
    assert list(back.obsm["X_true"].columns) == list(METAGENES)
