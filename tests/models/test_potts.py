import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture

from spatialfactors.models.domains import cluster_features
from spatialfactors.models.potts import n_parameters, potts_em, potts_sweep


def lattice(n_side=40, n_features=4, noise=1.2, seed=0):
    """Six rectangular domains on an n_side x n_side grid (4-neighbour graph), Gaussian features."""
    rng = np.random.default_rng(seed)
    ii, jj = np.meshgrid(np.arange(n_side), np.arange(n_side), indexing="ij")
    truth = ((ii * 3) // n_side + 3 * (jj >= n_side // 2)).ravel()
    means = rng.normal(0, 1.0, (6, n_features))
    y = means[truth] + rng.normal(0, noise, (n_side * n_side, n_features))
    idx = np.arange(n_side * n_side).reshape(n_side, n_side)
    rows = np.r_[idx[:-1].ravel(), idx[:, :-1].ravel()]
    cols = np.r_[idx[1:].ravel(), idx[:, 1:].ravel()]
    g = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(idx.size, idx.size))
    return y, (g + g.T).tocsr(), truth


@pytest.fixture(scope="module")
def planted():
    return lattice()


def test_smoothing_recovers_planted_domains_far_better_than_kmeans(planted):
    y, g, truth = planted
    init = cluster_features(y, 6, "kmeans")
    ari_kmeans = adjusted_rand_score(truth, init)
    fit = potts_em(y, g, init, 1.5)
    ari = adjusted_rand_score(truth, fit.labels)
    assert ari_kmeans < 0.3
    assert ari > 0.85 and ari > ari_kmeans + 0.5, (ari_kmeans, ari)
    assert fit.converged
    assert fit.probabilities.shape == (len(y), 6)
    np.testing.assert_allclose(fit.probabilities.sum(1), 1.0)
    np.testing.assert_array_equal(fit.labels, fit.probabilities.argmax(1))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_beta_zero_is_a_gaussian_mixture(planted):
    # beta = 0: the same EM as scikit-learn's diagonal Gaussian mixture from the same start.
    y, g, _ = planted
    y = (y - y.mean(0)) / y.std(0)  # unit variances: our relative floor equals sklearn's absolute one
    init = cluster_features(y, 4, "kmeans")
    fit = potts_em(y, g, init, 0.0, reg_covar=1e-3, max_iter=30, tol=0.0)  # 30 EM steps each
    resp = np.eye(4)[init]
    means = resp.T @ y / resp.sum(0)[:, None]
    gmm = GaussianMixture(
        4,
        covariance_type="diag",
        reg_covar=1e-3,
        means_init=means,
        weights_init=resp.mean(0),
        precisions_init=1.0 / (resp.T @ y**2 / resp.sum(0)[:, None] - means**2 + 1e-3),
        max_iter=30,
        tol=0.0,
    ).fit(y)
    assert adjusted_rand_score(gmm.predict(y), fit.labels) == 1.0
    order = [int(np.argmin(((gmm.means_ - m) ** 2).sum(1))) for m in fit.means]
    np.testing.assert_allclose(fit.means, gmm.means_[order], atol=1e-8)
    np.testing.assert_allclose(fit.covariances, gmm.covariances_[order], rtol=1e-8)
    weights = np.exp(fit.field) / np.exp(fit.field).sum()
    np.testing.assert_allclose(weights, gmm.weights_[order], rtol=1e-8)
    # The objective of beta = 0 is the mixture's log-likelihood.
    assert fit.loglik == pytest.approx(gmm.score(y) * len(y), rel=1e-6)


def test_beta_zero_ignores_the_graph(planted):
    y, g, _ = planted
    init = cluster_features(y, 4, "kmeans")
    a = potts_em(y, g, init, 0.0)
    b = potts_em(y, sp.csr_matrix(g.shape), init, 0.0)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.loglik == b.loglik


def test_objective_history_and_bic(planted):
    y, g, _ = planted
    fit = potts_em(y, g, cluster_features(y, 6, "kmeans"), 1.0)
    assert len(fit.history) == fit.n_iter
    assert fit.n_params == n_parameters(6, y.shape[1]) == 5 + 24 + 24
    assert fit.bic == pytest.approx(-2 * fit.loglik + fit.n_params * np.log(len(y)))
    # EM from k-means raises the objective well above its first value.
    assert fit.history[-1] > fit.history[0]


def test_full_covariance_follows_correlated_noise():
    # Noise mostly along (1, 1, 1): the domains differ across it, which only full covariances see.
    rng = np.random.default_rng(0)
    y, g, truth = lattice(n_side=30, n_features=3, noise=0.0)
    y = y + 2.0 * rng.normal(size=(len(y), 1)) @ np.ones((1, 3)) + 0.5 * rng.normal(size=y.shape)
    init = cluster_features(y, 6, "kmeans")
    full = potts_em(y, g, init, 1.5, covariance="full")
    diag = potts_em(y, g, init, 1.5)
    assert full.covariances.shape == (6, 3, 3)
    for c in full.covariances:
        np.testing.assert_allclose(c, c.T)
        assert np.linalg.eigvalsh(c).min() > 0
        assert np.corrcoef(rng.multivariate_normal(np.zeros(3), c, 2000).T)[0, 1] > 0.7
    assert adjusted_rand_score(truth, full.labels) > 0.5 > 0.2 > adjusted_rand_score(truth, diag.labels)
    assert full.n_params == n_parameters(6, 3, "full") == 5 + 18 + 36


def test_sweep_chooses_smoothing_and_number_by_bic(planted):
    y, g, truth = planted
    sweep = potts_sweep(y, g, [3, 6], [0.0, 1.5], score=lambda labels: {"ari": adjusted_rand_score(truth, labels)})
    table = sweep.table
    assert list(table.columns[:7]) == ["n_domains", "beta", "loglik", "bic", "n_iter", "converged", "n_found"]
    assert len(table) == 4 and "ari" in table
    best = table.loc[table["bic"].idxmin()]
    assert (best["n_domains"], best["beta"]) == (6, 1.5)
    assert sweep.best.beta == 1.5 and len(sweep.best.means) == 6
    assert list(sweep.labels.columns) == ["0", "1.5"]
    np.testing.assert_array_equal(sweep.labels["1.5"], sweep.best.labels)
    # With a single value, beta is not a free parameter.
    assert potts_sweep(y, g, [6], [1.5]).best.n_params == sweep.best.n_params - 1


def test_deterministic_for_a_seed(planted):
    y, g, _ = planted
    a = potts_sweep(y, g, [4], [1.0], random_state=3)
    b = potts_sweep(y, g, [4], [1.0], random_state=3)
    np.testing.assert_array_equal(a.best.labels, b.best.labels)
    np.testing.assert_array_equal(a.best.means, b.best.means)
    assert a.best.loglik == b.best.loglik


def test_labels_numbered_from_the_largest(planted):
    y, g, _ = planted
    fit = potts_em(y, g, cluster_features(y, 6, "kmeans"), 1.0)
    counts = np.bincount(fit.labels)
    assert (np.diff(counts) <= 0).all()
    # The parameters follow the renumbering: each domain's mean is the mean of its cells (hard labels ~ soft).
    for k in range(len(counts)):
        np.testing.assert_allclose(fit.means[k], y[fit.labels == k].mean(0), atol=0.3)


def test_unknown_covariance():
    y, g, _ = lattice(n_side=6)
    with pytest.raises(ValueError, match="`covariance` must be one of"):
        potts_em(y, g, cluster_features(y, 2, "kmeans"), 1.0, covariance="spherical")
