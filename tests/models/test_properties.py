"""Property tests of the engines (hypothesis): invariants that must hold on any input."""

import numpy as np
import scipy.sparse as sp
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spatialfactors.models.hmrf import _Fit, _initial_metagenes
from spatialfactors.models.nmf import nmf
from spatialfactors.models.regions import SetScorer
from spatialfactors.models.stability import instability

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def nonnegative_matrix(draw, min_side=4, max_side=30):
    n = draw(st.integers(min_side, max_side))
    g = draw(st.integers(min_side, max_side))
    seed = draw(st.integers(0, 2**31 - 1))
    sparsity = draw(st.floats(0.0, 0.7))
    rng = np.random.default_rng(seed)
    x = rng.gamma(draw(st.floats(0.2, 3.0)), 1.0, (n, g))
    x[rng.random((n, g)) < sparsity] = 0
    x[:, 0] += 1e-3  # no empty row
    x[0, :] += 1e-3  # no empty column
    return x


@SETTINGS
@given(x=nonnegative_matrix(), k=st.integers(1, 4), iters=st.integers(1, 8))
def test_nmf_objective_never_increases(x, k, iters):
    # Coordinate descent decreases ||X - WH||_F at every sweep: more sweeps from the same start
    # can only lower the error.
    k = min(k, *x.shape)
    errors = [float(nmf(x, k, max_iter=m, tol=0.0, dtype="float64").reconstruction_err[0]) for m in (iters, iters + 3)]
    # The error comes from ||X||^2 - 2<X, WH> + ||WH||^2 (no residual matrix), exact up to a few
    # eps ||X||^2 in its square: an exact fit (K = n_obs) reads 0 or ~1e-8 (sqrt of that rounding).
    slack = 1e-13 * float((x**2).sum())
    assert errors[1] ** 2 <= errors[0] ** 2 * (1 + 1e-10) + slack


@SETTINGS
@given(
    x=nonnegative_matrix(min_side=6),
    k=st.integers(1, 4),
    n=st.integers(2, 5),
    seed=st.integers(0, 1000),
    metric=st.sampled_from(["hungarian", "amari"]),
)
def test_instability_is_symmetric_and_zero_on_identical_input(x, k, n, seed, metric):
    rng = np.random.default_rng(seed)
    d = x[:, : min(k, x.shape[1])]
    # The same dictionary, columns permuted and rescaled: identical up to the symmetries of NMF.
    same = [d[:, rng.permutation(d.shape[1])] * rng.uniform(0.5, 2.0, d.shape[1]) for _ in range(n)]
    assert abs(instability(same, metric).mean) < 1e-9
    different = [d * rng.uniform(0.0, 1.0, d.shape) for _ in range(n)]
    pairwise = instability(different, metric).pairwise
    np.testing.assert_allclose(pairwise, pairwise.T, atol=1e-12)
    np.testing.assert_array_equal(np.diag(pairwise), 0)
    assert (pairwise >= -1e-12).all()


@SETTINGS
@given(
    n_voxels=st.integers(20, 300),
    n_regions=st.integers(3, 12),
    n_patterns=st.integers(1, 4),
    size=st.integers(1, 3),
    seed=st.integers(0, 2**31 - 1),
)
def test_union_correlation_equals_direct(n_voxels, n_regions, n_patterns, size, seed):
    # The correlation of a pattern with a union of regions follows from per-region sums and counts.
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_regions, n_voxels)
    patterns = rng.random((n_voxels, n_patterns))
    scorer = SetScorer.from_voxels(patterns, labels, n_regions)
    sets = np.array([rng.choice(n_regions, size, replace=False) for _ in range(5)])
    scores = scorer.score(sets)
    for row, union in zip(scores, sets, strict=True):
        mask = np.isin(labels, union).astype(float)
        for j in range(n_patterns):
            if 0 < mask.sum() < n_voxels:
                assert abs(row[j] - np.corrcoef(patterns[:, j], mask)[0, 1]) < 1e-10
            else:
                assert np.isnan(row[j])


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    side=st.integers(4, 7),
    k=st.integers(2, 4),
    g=st.integers(6, 20),
    lambda_sigma=st.sampled_from([1e-4, 1e-2]),
    seed=st.integers(0, 2**31 - 1),
)
def test_spicemix_updates_never_increase_their_objective(side, k, g, lambda_sigma, seed):
    # Random tissue on a grid graph: ICM lowers the energy (eq. 9); the metagene, noise and
    # affinity updates lower the pseudo-posterior objective (eq. 12).
    rng = np.random.default_rng(seed)
    n = side * side
    y = rng.gamma(1.0, 1.0, (n, k)) @ rng.dirichlet(np.ones(g), k) + 0.05 * rng.random((n, g))
    path = sp.diags([1.0, 1.0], [-1, 1], shape=(side, side))
    grid = (sp.kron(sp.eye(side), path) + sp.kron(path, sp.eye(side))).tocsr()
    fit = _Fit(
        torch.tensor(y), grid, k, lambda_x=1.0, lambda_sigma=lambda_sigma, solver="fast", dtype=torch.float64,
        device="cpu",
    )  # fmt: skip
    fit.m = torch.tensor(_initial_metagenes(y, k, 0))
    fit.x_plain()
    fit.sigma_step()
    for _ in range(3):
        before = fit.record(0, 0.0)["energy"]
        fit.x_icm()
        assert fit.record(0, 0.0)["energy"] <= before + 1e-8 * abs(before)
        for step in (fit.m_step, fit.sigma_step, lambda: fit.affinity_step("lbfgs", 10, 1e-2)):
            before = fit.record(0, 0.0)["objective"]
            step()
            assert fit.record(0, 0.0)["objective"] <= before + 1e-8 * abs(before)
