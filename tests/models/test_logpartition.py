"""Tests of the numba ``log C(eta)`` kernel and its torch wrapper.

Ground truth: closed forms (K = 2, all-equal rows), mpmath at 30+ digits (partial fractions
for distinct values, a positive power series for repeated and nearly equal values), the torch
implementation ``hmrf.log_simplex_integral_torch`` (values and autograd gradients), finite differences of the
kernel itself and ``torch.autograd.gradcheck``.
"""

from __future__ import annotations

import math
import sys
import zlib

import mpmath
import numpy as np
import pytest
import torch

from spatialfactors.models._logpartition import (
    _K_MAX,
    LogSimplexIntegral,
    log_simplex_integral_grad,
)
from spatialfactors.models.hmrf import log_simplex_integral, log_simplex_integral_torch

# ---- mpmath ground truth ----


def _distinct_at(eta, dps):
    with mpmath.workdps(dps):
        x = [-mpmath.mpf(v) for v in eta]  # the nodes of the divided difference
        k = len(x)
        terms, inv_gap_sums = [], []
        for i in range(k):
            prod = mpmath.mpf(1)
            s = mpmath.mpf(0)
            for j in range(k):
                if j != i:
                    prod *= x[i] - x[j]
                    s += 1 / (x[i] - x[j])
            terms.append(mpmath.exp(x[i]) / prod)
            inv_gap_sums.append(s)
        c = mpmath.fsum(terms)
        # d/dx_m of exp(x_i) / prod_{j != i} (x_i - x_j) is (1 - sum_j 1/(x_m - x_j)) times
        # the term for i = m and 1 / (x_i - x_m) times the term for i != m; E[z_m] = dC/dx_m / C.
        ez = []
        for m in range(k):
            dm = terms[m] * (1 - inv_gap_sums[m])
            dm += mpmath.fsum(terms[i] / (x[i] - x[m]) for i in range(k) if i != m)
            ez.append(dm / c)
        return mpmath.log(c), ez


def exact_distinct(eta):
    """``(log C, [E[z_k]])`` for one row of distinct values, as mpf numbers (30 digits)."""
    eta = [float(v) for v in eta]
    if len(set(eta)) != len(eta):
        raise ValueError("exact_distinct needs distinct values")
    dps = 50
    while True:
        a, b = _distinct_at(eta, dps), _distinct_at(eta, dps + 25)
        tol = mpmath.mpf(10) ** -30
        if all(abs(u - v) <= tol * abs(v) for u, v in zip([a[0], *a[1]], [b[0], *b[1]], strict=True)):
            return b
        dps *= 2


def _series(nodes, n_terms):
    """``exp[nodes]`` for non-negative mpf nodes, by the series of complete homogeneous sums."""
    h = [mpmath.mpf(1)] + [mpmath.mpf(0)] * (n_terms - 1)
    for y in nodes:  # h_r(S + y) = h_r(S) + y h_{r-1}(S + y)
        for r in range(1, n_terms):
            h[r] += y * h[r - 1]
    m = len(nodes) - 1
    return mpmath.fsum(h[r] / mpmath.factorial(m + r) for r in range(n_terms))


def exact_series(eta, dps: int = 40):
    """``(log C, [E[z_k]])`` for one row (repeated values allowed), as mpf numbers."""
    eta = [float(v) for v in eta]
    top = max(eta)
    spread = top - min(eta)
    # Term r is at most spread^r / r! times term 0: stop when that is below 1e-45.
    n_terms = 2
    while n_terms * math.log(max(spread, 1e-300)) - math.lgamma(n_terms + 1) > -104:
        n_terms += 1
    n_terms += 1
    with mpmath.workdps(dps):
        d = [mpmath.mpf(top) - mpmath.mpf(v) for v in eta]  # exact at this precision
        base = _series(d, n_terms)
        ez = [_series([*d, d[i]], n_terms) / base for i in range(len(d))]
        return -mpmath.mpf(top) + mpmath.log(base), ez


def exact(eta, method: str):
    """Rows of ``eta`` -> float64 ``(log C, grad = -E[z])`` rounded from mpmath values.

    ``method`` is ``"distinct"`` (:func:`exact_distinct`) or ``"series"`` (:func:`exact_series`).
    """
    eta = np.atleast_2d(np.asarray(eta, dtype=np.float64))
    fn = {"distinct": exact_distinct, "series": exact_series}[method]
    logc = np.empty(eta.shape[0])
    grad = np.empty(eta.shape)
    for r, row in enumerate(eta):
        v, ez = fn(row)
        logc[r] = float(v)
        grad[r] = [-float(z) for z in ez]
    return logc, grad


torch.set_num_threads(1)

KS = (2, 3, 10, 20, 40)
RTOL = 1e-12  # the accuracy asked for, on log C and on every gradient entry


def rel_err_logc(value, truth):
    """``|value - truth| / max(|truth|, 1)``: relative, or absolute where log C is near 0."""
    return np.abs(value - truth) / np.maximum(np.abs(truth), 1.0)


def rel_err(value, truth):
    return np.abs(value - truth) / np.abs(truth)


def load_exact():
    """The mpmath ground truth (:mod:`_exact`), or skip the test without mpmath."""
    return sys.modules[__name__]


def check_exact(eta, method):
    """Assert the kernel matches mpmath on every row; return the worst errors."""
    exact = load_exact()
    truth_v, truth_g = exact.exact(eta, method)
    v, g = log_simplex_integral_grad(eta)
    ev, eg = rel_err_logc(v, truth_v).max(), rel_err(g, truth_g).max()
    assert ev <= RTOL, f"log C relative error {ev:.2e}"
    assert eg <= RTOL, f"gradient relative error {eg:.2e}"
    return ev, eg


# ---- closed forms (no mpmath needed) ----
@pytest.mark.parametrize("k", (*KS, 1, 7, 64))
@pytest.mark.parametrize("c", (0.0, 3.7, -250.0, 1e4, -1e4))
def test_all_equal(k, c):
    """``C(c 1) = exp(-c) / (K-1)!`` and ``E[z] = 1/K``."""
    v, g = log_simplex_integral_grad(np.full((3, k), c))
    assert np.allclose(v, -c - math.lgamma(k), rtol=RTOL, atol=RTOL)
    assert np.allclose(g, -1.0 / k, rtol=RTOL, atol=0)


def test_k2_closed_form():
    """K = 2: ``C = (exp(-a) - exp(-b)) / (b - a)``, in a cancellation-free form."""
    rng = np.random.default_rng(0)
    a = rng.normal(0, 20, 500)
    gap = np.exp(rng.uniform(np.log(1e-3), np.log(1e3), 500))  # b - a from 1e-3 to 1e3
    b = a + gap
    gap = b - a  # the gap the kernel sees, exactly
    eta = np.stack([a, b], 1)
    # log C = -a + log(-expm1(-gap)) - log(gap); d/db = 1/expm1(gap) - 1/gap, d/da = -1 - d/db
    truth = -a + np.log(-np.expm1(-gap)) - np.log(gap)
    db = np.exp(-gap) / -np.expm1(-gap) - 1 / gap
    v, g = log_simplex_integral_grad(eta)
    assert rel_err_logc(v, truth).max() <= RTOL
    # db itself loses digits as the gap -> 0 (1/expm1(gap) - 1/gap cancels): a looser rtol
    assert np.allclose(g[:, 1], db, rtol=1e-11, atol=0)
    assert np.allclose(g[:, 0], -1 - db, rtol=RTOL, atol=0)


# ---- mpmath ground truth ----
REGIMES = {
    # name: (generator(rng, n, k), mpmath method)
    "randn20": (lambda rng, n, k: 20 * rng.standard_normal((n, k)), "distinct"),
    "small": (lambda rng, n, k: rng.standard_normal((n, k)), "series"),
    "wide_0_1000": (lambda rng, n, k: rng.uniform(0, 1000, (n, k)), "distinct"),
    "offset_1e4": (lambda rng, n, k: 1e4 + 20 * rng.standard_normal((n, k)), "distinct"),
    "offset_-1e4": (lambda rng, n, k: -1e4 + 20 * rng.standard_normal((n, k)), "distinct"),
    "near_1e-9": (lambda rng, n, k: 2.5 + 1e-9 * rng.standard_normal((n, k)), "series"),
    "near_1e-9_offset": (lambda rng, n, k: 1e4 + 1e-9 * rng.standard_normal((n, k)), "series"),
}


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("regime", REGIMES)
def test_against_mpmath(k, regime):
    gen, method = REGIMES[regime]
    rng = np.random.default_rng([k, zlib.crc32(regime.encode())])
    n = 12 if k <= 10 else 4
    check_exact(gen(rng, n, k), method)


@pytest.mark.parametrize("k", (3, 10, 40))
def test_clusters_against_mpmath(k):
    """Repeated values, values 1e-9 apart and a spread of 30 in one row."""
    rng = np.random.default_rng(k)
    rows = []
    for _ in range(3):
        base = rng.uniform(-15, 15, k)
        base[: k // 3] = base[0]  # exactly repeated
        base[k // 3 : 2 * k // 3] = base[k // 3] + 1e-9 * rng.standard_normal(2 * k // 3 - k // 3)
        rows.append(rng.permutation(base))
    check_exact(np.array(rows), "series")


def test_scaling_boundaries():
    """Spreads at and next to powers of two, where the number of squarings changes."""
    rows = []
    for e in range(-3, 11):
        for spread in (2.0**e, np.nextafter(2.0**e, np.inf), np.nextafter(2.0**e, 0)):
            rows.append([0.0, spread / 3, spread])
    check_exact(np.array(rows), "distinct")


def test_exact_methods_agree():
    """The two mpmath methods agree with each other (a check of the ground truth)."""
    exact = load_exact()
    eta = np.random.default_rng(1).normal(0, 5, (4, 6))
    v1, g1 = exact.exact(eta, "distinct")
    v2, g2 = exact.exact(eta, "series")
    assert np.allclose(v1, v2, rtol=1e-15, atol=0) and np.allclose(g1, g2, rtol=1e-15, atol=0)


@pytest.mark.parametrize("spread", (1e4, 1e6))
def test_huge_spread_degrades_gracefully(spread):
    """Beyond the asked regimes the error grows like eps * spread (see the module docs)."""
    exact = load_exact()
    eta = np.random.default_rng(3).uniform(0, spread, (6, 10))
    truth_v, truth_g = exact.exact(eta, "distinct")
    v, g = log_simplex_integral_grad(eta)
    assert rel_err_logc(v, truth_v).max() <= 1e-12
    assert rel_err(g, truth_g).max() <= 1e-16 * spread * 10


def test_absurd_spreads():
    """The value's absolute error is about eps * spread; the gradient stays accurate.

    (Gradient entries below about 1e-150, possible only for spreads beyond 1e150, are zero.)
    """
    spreads = np.array([1e6, 1e10, 1e14, 1e20, 1e100])
    eta = np.stack([np.zeros_like(spreads), spreads / 3, spreads], 1)
    v, g = log_simplex_integral_grad(eta)
    truth = -np.log(spreads / 3) - np.log(spreads)  # the other terms are below rounding
    ok = spreads <= 1e14
    assert np.all(np.abs(v - truth)[ok] <= 2e-15 * spreads[ok])
    assert np.allclose(g, -np.stack([1 - 4 / spreads, 3 / spreads, 1 / spreads], 1), rtol=1e-12, atol=0)


# ---- the torch reference ----
@pytest.fixture(scope="module")
def reference():
    return log_simplex_integral_torch


@pytest.mark.parametrize("k", KS)
def test_against_reference(reference, k):
    rng = np.random.default_rng(k)
    eta = np.concatenate(
        [
            20 * rng.standard_normal((50, k)),
            rng.uniform(0, 1000, (10, k)),
            1e4 + 20 * rng.standard_normal((10, k)),
            3 + 1e-9 * rng.standard_normal((10, k)),
            np.full((2, k), -7.0),
        ]
    )
    t = torch.tensor(eta, requires_grad=True)
    ref_v = reference(t)
    ref_v.sum().backward()
    v, g = log_simplex_integral_grad(eta)
    assert np.allclose(v, ref_v.detach().numpy(), rtol=1e-10, atol=1e-10)
    assert np.allclose(g, t.grad.numpy(), rtol=1e-10, atol=0)


# ---- derivatives of the kernel itself ----
@pytest.mark.parametrize("k", KS)
def test_finite_differences(k):
    """Fourth-order central differences of the value match the returned gradient."""
    rng = np.random.default_rng(10 + k)
    eta = np.concatenate([5 * rng.standard_normal((6, k)), rng.uniform(0, 100, (3, k))])
    n = eta.shape[0]
    h = 1e-3
    steps = np.eye(k)[None] * h  # (1, K, K): perturb one coordinate at a time
    value = {}
    for j in (-2, -1, 1, 2):
        value[j] = log_simplex_integral_grad((eta[:, None, :] + j * steps).reshape(-1, k))[0].reshape(n, k)
    fd = (8 * (value[1] - value[-1]) - (value[2] - value[-2])) / (12 * h)
    _, g = log_simplex_integral_grad(eta)
    assert np.allclose(fd, g, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("k", (2, 3, 10))
def test_gradcheck(k):
    rng = np.random.default_rng(20 + k)
    eta = torch.tensor(5 * rng.standard_normal((4, k)), requires_grad=True)
    assert torch.autograd.gradcheck(log_simplex_integral, (eta,), eps=1e-6, atol=1e-8, rtol=1e-6)


# ---- identities ----
@pytest.mark.parametrize("k", KS)
def test_identities(k):
    """Rows of the gradient sum to -1; a shift c moves log C by -c; order does not matter."""
    rng = np.random.default_rng(30 + k)
    eta = np.round(20 * rng.standard_normal((40, k)) * 2**30) / 2**30  # so that + 64 is exact
    v, g = log_simplex_integral_grad(eta)
    assert np.allclose(g.sum(1), -1.0, rtol=0, atol=1e-14 * k)
    assert np.all(g < 0)
    v_shift, g_shift = log_simplex_integral_grad(eta + 64.0)  # the same nodes d = max - eta
    assert np.allclose(v_shift, v - 64.0, rtol=1e-15, atol=1e-13)
    assert np.array_equal(g_shift, g)
    perm = rng.permutation(k)
    v_perm, g_perm = log_simplex_integral_grad(eta[:, perm])
    assert np.allclose(v_perm, v, rtol=RTOL, atol=RTOL)
    assert np.allclose(g_perm, g[:, perm], rtol=1e-13, atol=0)


def test_rows_independent():
    """A row's result does not depend on the other rows (bit for bit)."""
    rng = np.random.default_rng(7)
    eta = np.concatenate([20 * rng.standard_normal((20, 10)), rng.uniform(0, 1000, (5, 10))])
    v, g = log_simplex_integral_grad(eta)
    for r in (0, 7, 24):
        v1, g1 = log_simplex_integral_grad(eta[r : r + 1])
        assert v1[0] == v[r] and np.array_equal(g1[0], g[r])


# ---- interface ----
def test_edge_cases():
    v, g = log_simplex_integral_grad(np.zeros((0, 4)))
    assert v.shape == (0,) and g.shape == (0, 4)
    v, g = log_simplex_integral_grad(np.array([[2.5]]))  # K = 1: the simplex is a point
    assert v[0] == -2.5 and g[0, 0] == -1.0
    eta = np.array([[0.0, np.nan, 1.0], [0.0, np.inf, 1.0], [-1e308, 1e308, 0.0], [0.0, 1.0, 2.0]])
    v, g = log_simplex_integral_grad(eta)
    assert np.isnan(v[:3]).all() and np.isnan(g[:3]).all() and np.isfinite(v[3])
    eta = np.asfortranarray(np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32))
    v, g = log_simplex_integral_grad(eta)  # converted to C-contiguous float64
    v64, g64 = log_simplex_integral_grad(eta.astype(np.float64))
    assert np.array_equal(v, v64) and np.array_equal(g, g64)
    readonly = np.broadcast_to(np.arange(4.0), (3, 4))
    v, g = log_simplex_integral_grad(readonly)
    assert np.array_equal(v, log_simplex_integral_grad(np.arange(4.0)[None])[0].repeat(3))
    with pytest.raises(ValueError):
        log_simplex_integral_grad(np.zeros(3))
    with pytest.raises(ValueError):
        log_simplex_integral_grad(np.zeros((2, _K_MAX + 1)))


def test_wrapper():
    rng = np.random.default_rng(4)
    eta_np = 20 * rng.standard_normal((30, 10))
    v, g = log_simplex_integral_grad(eta_np)
    eta = torch.tensor(eta_np, requires_grad=True)
    out = log_simplex_integral(eta)
    weights = torch.tensor(rng.uniform(-1, 1, 30))
    (out * weights).sum().backward()
    assert out.dtype == torch.float64 and out.shape == (30,)
    assert np.array_equal(out.detach().numpy(), v)
    assert np.allclose(eta.grad.numpy(), weights.numpy()[:, None] * g, rtol=1e-15, atol=0)
    # float32 in, float32 out
    eta32 = torch.tensor(eta_np, dtype=torch.float32, requires_grad=True)
    out32 = LogSimplexIntegral.apply(eta32)
    out32.sum().backward()
    assert out32.dtype == torch.float32 and eta32.grad.dtype == torch.float32
    # only first derivatives
    eta = torch.tensor(eta_np, requires_grad=True)
    (grad,) = torch.autograd.grad(log_simplex_integral(eta).sum(), eta, create_graph=True)
    with pytest.raises(RuntimeError):
        grad.sum().backward()
