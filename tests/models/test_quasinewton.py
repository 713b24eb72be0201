import numpy as np
import pytest
import torch

from spatialfactors.models._quasinewton import (
    FIRST_RUN_FACTOR,
    CurvatureMemory,
    InverseHessian,
    curvature_estimate,
    minimize,
)

DIM = 40


def _logistic(seed, shift=0.0):
    """A strictly convex, non-quadratic function (ridge logistic loss) in torch, and in numpy for scipy."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(300, DIM)) * np.geomspace(0.1, 3, DIM)  # columns of different scales
    b = (rng.random(300) < 0.5).astype(float)
    c = rng.normal(size=DIM) * shift

    def np_fun(x):
        t = a @ x
        p = 1 / (1 + np.exp(-t))
        f = np.logaddexp(0, t).sum() - b @ t + 0.5 * x @ x + c @ x
        return f, a.T @ (p - b) + x + c

    def torch_fun(x):
        f, g = np_fun(x.numpy())
        return float(f), torch.from_numpy(g)

    def newton():  # the reference minimiser: Newton's method with the exact Hessian
        x = np.zeros(DIM)
        for _ in range(50):
            p = 1 / (1 + np.exp(-(a @ x)))
            x = x - np.linalg.solve(a.T @ (a * (p * (1 - p))[:, None]) + np.eye(DIM), np_fun(x)[1])
        return x

    return torch_fun, np_fun, newton


@pytest.mark.parametrize("estimate", [InverseHessian, CurvatureMemory])
def test_minimize_reaches_the_minimiser(estimate):
    fun, np_fun, newton = _logistic(0)
    x, f, n = minimize(fun, torch.zeros(DIM, dtype=torch.float64), estimate(), max_evals=200, ftol=1e-15)
    np.testing.assert_allclose(x.numpy(), newton(), atol=1e-5)
    assert f == pytest.approx(float(np_fun(x.numpy())[0]), abs=0)
    assert n < 200  # stopped by its tolerance, not by the budget


def test_carried_curvature_saves_evaluations_and_reaches_the_same_point():
    # The use in SpiceMix: a sequence of similar convex functions, each started from the
    # previous minimiser. With the estimate carried over, the next minimum takes far fewer
    # evaluations than from an empty estimate, and it is the same minimum.
    fun1, _, _ = _logistic(0)
    fun2, _, newton2 = _logistic(0, shift=0.05)
    h = InverseHessian()
    x1, _, _ = minimize(fun1, torch.zeros(DIM, dtype=torch.float64), h, max_evals=200, ftol=1e-15)
    warm_x, _, warm = minimize(fun2, x1, h, max_evals=200, ftol=1e-15)
    cold_x, _, cold = minimize(fun2, x1, InverseHessian(), max_evals=200, ftol=1e-15)
    ref = newton2()
    np.testing.assert_allclose(warm_x.numpy(), ref, atol=1e-5)
    np.testing.assert_allclose(cold_x.numpy(), ref, atol=1e-5)
    assert warm <= cold / 2


def test_budget_is_kept_and_the_result_is_never_worse():
    fun, _, _ = _logistic(1)
    x0 = torch.full((DIM,), 3.0, dtype=torch.float64)
    f0 = fun(x0)[0]
    h = InverseHessian()
    x, f, n = minimize(fun, x0, h, max_evals=4)
    assert n <= 4 * FIRST_RUN_FACTOR  # an empty estimate gets the larger first budget
    assert f <= f0 and f == fun(x)[0]
    _, f2, n2 = minimize(fun, x, h, max_evals=4)
    assert n2 <= 4 and f2 <= f


def test_stale_estimate_that_points_uphill_is_discarded():
    fun, np_fun, newton = _logistic(2)
    h = InverseHessian()
    h.h = -torch.eye(DIM, dtype=torch.float64)  # -H g is an ascent direction
    x, _, _ = minimize(fun, torch.zeros(DIM, dtype=torch.float64), h, max_evals=200, ftol=1e-15)
    np.testing.assert_allclose(x.numpy(), newton(), atol=1e-5)
    assert float(torch.linalg.eigvalsh(h.h)[0]) > 0  # rebuilt from the steps: positive definite


def test_line_search_backs_off_from_nan():
    # Outside |x| < 2 the function is undefined (NaN): steps that land there are shortened.
    def fun(x):
        if float(x.abs().max()) >= 2:
            return float("nan"), torch.full_like(x, float("nan"))
        return float(((x - 1.5) ** 2).sum() - torch.log(2 - x).sum()), 2 * (x - 1.5) + 1 / (2 - x)

    x, f, _ = minimize(fun, torch.zeros(3, dtype=torch.float64), InverseHessian(), max_evals=100, ftol=1e-15)
    assert np.isfinite(f)
    # stationary point of (x - 1.5)^2 - log(2 - x): 2 (x - 1.5) (2 - x) = -1, x = (3.5 - sqrt(0.25 + 2)) / 2
    np.testing.assert_allclose(x.numpy(), (3.5 - np.sqrt(2.25)) / 2, atol=1e-7)


def test_limited_memory_beyond_the_dense_size():
    assert isinstance(curvature_estimate(2500), InverseHessian)
    assert isinstance(curvature_estimate(2501), CurvatureMemory)
    mem = CurvatureMemory(size=3)
    for i in range(5):
        s = torch.zeros(4, dtype=torch.float64)
        s[i % 4] = 1.0
        mem.update(s, 2 * s)
    assert len(mem) == 3
    mem.update(torch.ones(4, dtype=torch.float64), -torch.ones(4, dtype=torch.float64))  # s^T y < 0: refused
    assert len(mem) == 3
