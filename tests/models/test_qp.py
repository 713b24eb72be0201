import numpy as np
import pytest
import torch

from spatialfactors.models.qp import (
    batched_qp,
    batched_qp_cvxpy,
    project_simplex,
    simplex_columns_qp,
    simplex_columns_qp_cvxpy,
)


def _problem(rng, n=60, k=8, g=40, collinear=True):
    m = rng.random((g, k))
    if collinear:  # two nearly identical metagenes: an ill-conditioned Q, as in real fits
        m[:, 1] = 0.95 * m[:, 0] + 0.05 * rng.random(g)
    return m.T @ m, rng.random(n) * 3 + 0.05, rng.normal(size=(n, k)) * 4


def _objective(q_mat, alpha, q, x):
    return 0.5 * alpha * np.einsum("ik,kl,il->i", x, q_mat, x) + (q * x).sum(1)


@pytest.mark.parametrize("simplex", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_batched_qp_equals_cvxpy(simplex, seed):
    rng = np.random.default_rng(seed)
    q_mat, alpha, q = _problem(rng)
    if not simplex:
        q = q - 4  # mostly negative linear terms: non-trivial non-negative solutions
    ours = batched_qp(torch.tensor(q_mat), torch.tensor(alpha), torch.tensor(q), simplex=simplex).numpy()
    ref = batched_qp_cvxpy(q_mat, alpha, q, simplex=simplex)
    f_ours, f_ref = _objective(q_mat, alpha, q, ours), _objective(q_mat, alpha, q, ref)
    rel = (f_ours - f_ref) / np.maximum(np.abs(f_ref), 1e-12)
    assert rel.max() < 1e-6  # never worse than cvxpy beyond rounding
    assert (ours >= 0).all()
    if simplex:
        np.testing.assert_allclose(ours.sum(1), 1, atol=1e-12)
        assert ((ours > 0).sum(1) < q.shape[1]).any()  # active constraints were exercised


def test_batched_qp_kkt_and_warm_start():
    rng = np.random.default_rng(2)
    q_mat, alpha, q = (torch.tensor(a) for a in _problem(rng, collinear=False))
    x = batched_qp(q_mat, alpha, q, simplex=True)
    # KKT on the simplex: the gradient is equal (= mu) on the support and >= mu off it.
    grad = alpha[:, None] * (x @ q_mat) + q
    mu = (grad * (x > 0)).sum(1) / (x > 0).sum(1)
    assert torch.allclose(torch.where(x > 0, grad, mu[:, None]), mu[:, None].expand_as(grad), atol=1e-8)
    assert ((grad - mu[:, None]) >= -1e-8).all()
    warm = batched_qp(q_mat, alpha, q, simplex=True, x0=x)
    torch.testing.assert_close(warm, x, atol=1e-12, rtol=0)


def test_batched_qp_zero_quadratic_term_is_a_vertex():
    q_mat = torch.eye(3, dtype=torch.float64)
    q = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
    x = batched_qp(q_mat, torch.zeros(1, dtype=torch.float64), q, simplex=True)
    assert x.tolist() == [[0.0, 1.0, 0.0]]


def test_simplex_columns_qp_equals_cvxpy():
    rng = np.random.default_rng(3)
    x = rng.random((80, 6))
    a, b = x.T @ x, rng.random((50, 6)) * 10
    start = torch.full((50, 6), 1 / 50, dtype=torch.float64)
    ours = simplex_columns_qp(torch.tensor(a), torch.tensor(b), start).numpy()
    ref = simplex_columns_qp_cvxpy(a, b)

    def f(m):
        return 0.5 * np.trace(m @ a @ m.T) - (m * b).sum()

    assert (f(ours) - f(ref)) / abs(f(ref)) < 1e-6
    np.testing.assert_allclose(ours.sum(0), 1, atol=1e-12)
    assert (ours >= 0).all()


@pytest.mark.parametrize("case", ["sparse", "singular"])
def test_simplex_columns_qp_exact_on_hard_cases(case):
    # sparse: latent states with many zeros and a sparse truth, so most rows have small free
    # sets (the dual Newton path); singular: an unused metagene makes A singular (fallback).
    rng = np.random.default_rng(5)
    x = rng.gamma(0.3, size=(300, 8))
    if case == "singular":
        x[:, 3] = 0
    y = x @ rng.dirichlet(np.full(60, 0.2), size=8) + 0.01 * rng.random((300, 60))
    a, b = x.T @ x, y.T @ x
    start = torch.full((60, 8), 1 / 60, dtype=torch.float64)
    ours = simplex_columns_qp(torch.tensor(a), torch.tensor(b), start).numpy()
    ref = simplex_columns_qp_cvxpy(a, b)

    def f(m):
        return 0.5 * np.trace(m @ a @ m.T) - (m * b).sum()

    assert f(ours) - f(ref) <= 1e-6 * abs(f(ref))
    np.testing.assert_allclose(ours.sum(0), 1, atol=1e-12)
    assert (ours >= 0).all()
    # warm start from the answer returns the answer
    again = simplex_columns_qp(torch.tensor(a), torch.tensor(b), torch.tensor(ours)).numpy()
    assert f(again) <= f(ours) + 1e-9 * abs(f(ours))


def test_project_simplex_is_the_closest_point():
    rng = np.random.default_rng(4)
    v = torch.tensor(rng.normal(size=(200, 5)), dtype=torch.float64)
    p = project_simplex(v)
    torch.testing.assert_close(p.sum(1), torch.ones(200, dtype=torch.float64))
    # No random point of the simplex is closer.
    other = torch.tensor(rng.dirichlet(np.ones(5), size=(200, 50)), dtype=torch.float64)
    d_p = ((v - p) ** 2).sum(1)
    d_o = ((v[:, None, :] - other) ** 2).sum(2)
    assert (d_o >= d_p[:, None] - 1e-12).all()


@pytest.mark.parametrize("simplex", [False, True])
def test_batched_qp_singular_q_is_solved(simplex):
    """Rank-deficient Q (identical metagenes, data of rank 1) made the KKT solve fail; the optimum is reached."""
    rng = np.random.default_rng(3)
    m = rng.random((20, 1)).repeat(4, axis=1)  # four identical columns: Q of rank one
    q_mat, alpha = m.T @ m, rng.random(30) + 0.5
    q = rng.normal(size=(30, 4)) * 4 - (0 if simplex else 4)
    ours = batched_qp(torch.tensor(q_mat), torch.tensor(alpha), torch.tensor(q), simplex=simplex).numpy()
    ref = batched_qp_cvxpy(q_mat, alpha, q, simplex=simplex)
    assert np.isfinite(ours).all() and (ours >= 0).all()
    f_ours, f_ref = _objective(q_mat, alpha, q, ours), _objective(q_mat, alpha, q, ref)
    assert ((f_ours - f_ref) / np.maximum(np.abs(f_ref), 1e-12)).max() < 1e-6


@pytest.mark.parametrize("simplex", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_compiled_kkt_equals_the_bordered_systems(simplex, dtype):
    """The CPU kernel (one Cholesky per free block) solves the same KKT systems as the bordered LU path."""
    from spatialfactors.models.qp import _kkt, _kkt_bordered

    rng = np.random.default_rng(4)
    q_mat, alpha, q = (torch.tensor(a, dtype=dtype) for a in _problem(rng, n=500, k=12, collinear=False))
    free = torch.tensor(rng.random((500, 12)) < 0.6)
    free[:, 3] = True  # never empty (the simplex's free set never is)
    if not simplex:
        free[:50] = False  # empty free sets: x = 0, gradient = q
    x, grad = _kkt(q_mat, alpha, q, free, simplex)
    x_ref, grad_ref = _kkt_bordered(q_mat, alpha, q, free, simplex)
    # Two backward-stable solves of the same systems agree to about cond(Q) x eps (cond(Q) ~ 130 here).
    tol = 1000 * torch.finfo(dtype).eps
    scale = float(x_ref.abs().max())
    assert float((x - x_ref).abs().max()) <= tol * scale
    assert float((grad - grad_ref).abs().max()) <= tol * float(grad_ref.abs().max())
    assert not bool(x[~free].any())  # zero off the free set
    if simplex:
        torch.testing.assert_close(x.sum(1), torch.ones(500, dtype=dtype), rtol=0, atol=tol)


def test_compiled_kkt_hands_singular_blocks_to_the_bordered_path():
    """A free block that is not positive definite is flagged by the kernel and solved by the LU path."""
    from spatialfactors.models._kkt import kkt
    from spatialfactors.models.qp import _kkt

    q_mat = np.ones((3, 3))  # rank one: every free block of two or more variables is singular
    q = np.array([[-1.0, -2.0, -3.0], [-1.0, 0.0, 0.0]])
    free = np.array([[True, True, False], [True, False, False]])
    _, _, ok = kkt(q_mat, np.ones(2), q, free, True)
    assert ok.tolist() == [False, True]
    x, grad = _kkt(torch.tensor(q_mat), torch.ones(2, dtype=torch.float64), torch.tensor(q), torch.tensor(free), True)
    assert torch.isfinite(x).all() and torch.isfinite(grad).all()
    torch.testing.assert_close(x.sum(1), torch.ones(2, dtype=torch.float64))
    assert x[1].tolist() == [1.0, 0.0, 0.0]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_compiled_dual_hessian_equals_the_batched_inverse(dtype):
    """The metagene step's Hessian, sum_g P_F A_FF^-1 P_F, from one Cholesky per free block (CPU)."""
    from spatialfactors.models._kkt import free_inverse_sum

    rng = np.random.default_rng(5)
    q_mat, _, _ = _problem(rng, k=12, collinear=False)
    a = torch.tensor(q_mat, dtype=dtype)
    free = torch.tensor(rng.random((300, 12)) < 0.6)
    free[:20] = False  # rows without a free variable add nothing
    ours = torch.from_numpy(free_inverse_sum(a.numpy(), free.numpy()))
    ff = free[:, :, None] & free[:, None, :]
    blocks = torch.where(ff, a, 0.0) + torch.eye(12, dtype=dtype) * (~free)[:, :, None]
    ref = (torch.linalg.inv(blocks.double()) * ff).sum(0)
    tol = 1000 * torch.finfo(dtype).eps  # two backward-stable inverses, cond(A) ~ 100
    assert float((ours.double() - ref).abs().max()) <= tol * float(ref.abs().max())
    torch.testing.assert_close(ours, ours.T, rtol=0, atol=0)  # exactly symmetric


def test_dual_hessian_with_a_singular_block_uses_the_batched_inverse():
    from spatialfactors.models._kkt import free_inverse_sum
    from spatialfactors.models.qp import _dual_hessian

    # The second free block is positive definite but below the kernel's pivot threshold (K eps).
    a = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 1.0, 1.0 + 4e-16]], dtype=torch.float64)
    free = torch.tensor([[True, False, False], [False, True, True]])
    assert free_inverse_sum(a.numpy(), free.numpy()) is None
    out = _dual_hessian(a, free, torch.eye(3, dtype=torch.float64))
    assert bool(torch.isfinite(out).all()) and float(out[0, 0]) == 0.5


@pytest.mark.parametrize("simplex", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("warm", [False, True])
def test_compiled_active_set_makes_the_same_pivots(simplex, dtype, warm):
    """The CPU loop (one instance at a time) gives the batched torch loop's minimisers bit for bit."""
    from spatialfactors.models._kkt import active_set
    from spatialfactors.models.qp import _active_set

    rng = np.random.default_rng(6)
    q_mat, alpha, q = (torch.tensor(a, dtype=dtype) for a in _problem(rng, n=2000, k=12))
    free = torch.tensor(rng.random((2000, 12)) < 0.5) if warm else torch.ones(2000, 12, dtype=torch.bool)
    free[:, 0] |= simplex  # the simplex's free set is never empty
    eps = torch.finfo(dtype).eps ** 0.75
    scale = q.abs().amax(1) + alpha * q_mat.abs().max()
    ref, unsettled = _active_set(q_mat, alpha, q, free, scale, simplex, eps, 60)
    arrays = (q_mat.numpy(), alpha.numpy(), q.numpy(), free.numpy().copy())
    x, status = active_set(*arrays, simplex, scale.numpy(), eps, 60)
    assert len(unsettled) == 0 and (status == 0).all()
    assert torch.equal(torch.from_numpy(x), ref)


@pytest.mark.parametrize("simplex", [False, True])
@pytest.mark.parametrize("case", ["singular block", "out of pivots"])
def test_batched_qp_finishes_what_the_compiled_loop_leaves(simplex, case):
    """Instances with a singular free block (the bordered systems) or out of pivots (projected gradient)."""
    from spatialfactors.models._kkt import active_set

    rng = np.random.default_rng(7)
    m = rng.random((30, 4))
    if case == "singular block":
        m[:, 1] = m[:, 0]  # two identical metagenes: Q singular, every block holding both is too
    max_iter, status_left = (20, 2) if case == "singular block" else (1, 1)
    q_mat = torch.tensor(m.T @ m)
    q = torch.tensor(rng.normal(size=(200, 4)) * 4)
    alpha = torch.tensor(rng.random(200) + 0.5)
    scale = (q.abs().amax(1) + alpha * q_mat.abs().max()).numpy()
    free = np.ones((200, 4), bool)
    _, status = active_set(q_mat.numpy(), alpha.numpy(), q.numpy(), free, simplex, scale, 1e-12, max_iter)
    assert (status == status_left).any()  # the case happens
    ref = batched_qp_cvxpy(q_mat.numpy(), alpha.numpy(), q.numpy(), simplex=simplex)
    f_ref = _objective(q_mat.numpy(), alpha.numpy(), q.numpy(), ref)
    out = batched_qp(q_mat, alpha, q, simplex=simplex, max_iter=max_iter).numpy()
    assert np.isfinite(out).all() and (out >= 0).all()
    f = _objective(q_mat.numpy(), alpha.numpy(), q.numpy(), out)
    assert ((f - f_ref) / np.maximum(np.abs(f_ref), 1e-12)).max() < 1e-6
