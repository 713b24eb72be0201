import matplotlib
import pytest

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _close_figures():
    import matplotlib.pyplot as plt

    yield
    plt.close("all")


def planted_patterns(n_side=20, n_genes=150, k0=4, noise=0.02, seed=0):
    """Obs on an n_side x n_side grid, k0 localised non-negative patterns, gene loadings, noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n_side, 0:n_side]
    centers = np.array([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75], [0.5, 0.5]])[:k0] * n_side
    w = np.stack([np.exp(-((xx - c[0]) ** 2 + (yy - c[1]) ** 2) / (0.02 * n_side**2)).ravel() for c in centers], 1)
    h = rng.gamma(0.5, 1.0, (k0, n_genes))
    x = w @ h + noise * rng.random((n_side * n_side, n_genes))
    coords = np.stack([xx.ravel(), yy.ravel()], 1).astype(float)
    return x, w, h, coords


@pytest.fixture(scope="session")
def planted():
    return planted_patterns()
