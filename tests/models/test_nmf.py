import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.decomposition import NMF
from sklearn.decomposition._nmf import _initialize_nmf

from spatialfactors.models._operator import DataOperator
from spatialfactors.models.nmf import nmf, nndsvd
from spatialfactors.models.stanmf import bootstrap_weights


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.gamma(1, 1, (300, 5)) @ rng.gamma(1, 1, (5, 120)) + 0.1 * rng.random((300, 120))


def _sklearn_fit(x, w0, h0, k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = NMF(k, init="custom", solver="cd", tol=1e-4, max_iter=200)
        w = model.fit_transform(x, W=w0.copy(), H=h0.copy())
    return w, model


@pytest.mark.parametrize("init", ["nndsvd", "nndsvda"])
def test_init_matches_scikit_learn(data, init):
    op = DataOperator(data, dtype="float64")
    w0, h0 = nndsvd(op, torch.ones(1, data.shape[1], dtype=torch.float64), 5, init=init)
    w_ref, h_ref = _initialize_nmf(data, 5, init=init, random_state=0)
    np.testing.assert_allclose(w0[0].numpy(), w_ref, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(h0[0].numpy(), h_ref, rtol=1e-8, atol=1e-10)


def test_solver_is_scikit_learn_coordinate_descent(data):
    res = nmf(data, 5, init="nndsvd", dtype="float64")
    op = DataOperator(data, dtype="float64")
    w0, h0 = nndsvd(op, torch.ones(1, data.shape[1], dtype=torch.float64), 5, init="nndsvd")
    w_ref, model = _sklearn_fit(data, w0[0].numpy(), h0[0].numpy(), 5)
    assert res.n_iter[0] == model.n_iter_
    np.testing.assert_allclose(res.W[0], w_ref, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(res.H[0], model.components_, rtol=1e-7, atol=1e-9)
    assert res.reconstruction_err[0] == pytest.approx(model.reconstruction_err_, rel=1e-10)


def test_float32_objective_within_one_percent_of_scikit_learn(data):
    res = nmf(data, 5)  # float32, nndsvda
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = NMF(5, init="nndsvda", solver="cd", tol=1e-4, max_iter=200, random_state=0).fit(data)
    assert res.reconstruction_err[0] == pytest.approx(ref.reconstruction_err_, rel=0.01)


def test_bootstrap_weights_equal_explicit_resampling(data):
    weights = bootstrap_weights(data.shape[1], 3, random_state=7)
    res = nmf(data, 4, weights=weights, init="nndsvd", dtype="float64")
    for r, c in enumerate(weights):
        idx = np.repeat(np.arange(data.shape[1]), c)
        xb = data[:, idx]
        opb = DataOperator(xb, dtype="float64")
        w0, h0 = nndsvd(opb, torch.ones(1, len(idx), dtype=torch.float64), 4, init="nndsvd")
        w_ref, model = _sklearn_fit(xb, w0[0].numpy(), h0[0].numpy(), 4)
        assert res.n_iter[r] == model.n_iter_
        np.testing.assert_allclose(res.W[r], w_ref, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(res.H[r][:, idx], model.components_, rtol=1e-6, atol=1e-8)
        assert (res.H[r][:, c == 0] == 0).all()
        assert res.reconstruction_err[r] == pytest.approx(model.reconstruction_err_, rel=1e-8)


def test_batch_size_does_not_change_results(data):
    weights = bootstrap_weights(data.shape[1], 4, random_state=1)
    a = nmf(data, 3, weights=weights, dtype="float64", batch_size=1)
    b = nmf(data, 3, weights=weights, dtype="float64", batch_size=4)
    np.testing.assert_array_equal(a.n_iter, b.n_iter)
    np.testing.assert_allclose(a.W, b.W, rtol=1e-9, atol=1e-12)


def test_sparse_input_equals_dense(data):
    x = data * (data > np.quantile(data, 0.4))
    dense = nmf(x, 4, dtype="float64")
    sparse = nmf(sp.csr_matrix(x), 4, dtype="float64")
    np.testing.assert_array_equal(dense.n_iter, sparse.n_iter)
    np.testing.assert_allclose(dense.W, sparse.W, rtol=1e-7, atol=1e-9)


def test_compressed_fit_close_to_exact(planted):
    x, *_ = planted
    exact = nmf(x, 4, dtype="float64")
    compressed = nmf(x, 4, dtype="float64", compress=30)
    assert compressed.reconstruction_err[0] == pytest.approx(exact.reconstruction_err[0], rel=0.01)


def test_unknown_init():
    with pytest.raises(ValueError, match="`init` must be one of"):
        nmf(np.ones((4, 4)), 2, init="random")


@pytest.mark.parametrize("sparse", [False, True])
def test_float32_reported_error_equals_the_direct_residual(sparse):
    # A good fit (||X|| / error ~ 50): the error from products cancels, so it is summed in float64.
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 1.0, (300, 6)) @ rng.gamma(2.0, 1.0, (6, 80)) + 0.1 * rng.random((300, 80))
    x = x.astype(np.float32)  # the data as stored: the direct residual then sees the same X
    res = nmf(sp.csr_matrix(x) if sparse else x, 6, dtype="float32", max_iter=200)
    w, h = res.W[0].astype(np.float64), res.H[0].astype(np.float64)
    direct = np.linalg.norm(x.astype(np.float64) - w @ h)
    assert np.linalg.norm(x) / direct > 30
    assert res.reconstruction_err[0] == pytest.approx(direct, rel=1e-6)
