import numpy as np
import pytest
import scipy.sparse as sp
import torch

from spatialfactors.models._cellmap import cell_map
from spatialfactors.models.hmrf import _Fit
from spatialfactors.models.qp import _pivot_tolerance


def _problem(n, k, g, dtype, seed=0, rank=None):
    """A fit's per-cell MAP problem: metagenes, data, spatial terms and starting proportions."""
    rng = np.random.default_rng(seed)
    m = rng.gamma(0.5, 1.0, (g, rank or k))
    if rank is not None:  # collinear metagenes: M^T M singular
        m = m @ rng.random((rank, k))
    m /= m.sum(0)
    x = rng.gamma(0.4, 1.0, (n, k)) * rng.gamma(20.0, 0.5, (n, 1))
    y = np.clip(x @ m.T + 0.002 * rng.normal(size=(n, g)), 0, None)
    a = sp.random(n, n, density=8 / n, random_state=seed)
    a = ((a + a.T) > 0).astype(float)
    fit = _Fit(torch.tensor(y, dtype=dtype), a, k, lambda_x=1.0, lambda_sigma=1e-4, solver="fast",
               dtype=dtype, device="cpu", neutral=True)  # fmt: skip
    fit.m = torch.tensor(m, dtype=dtype)
    fit.sigma2 = 1e-3
    z0 = torch.tensor(rng.dirichlet(np.full(k, 0.3), n), dtype=dtype)
    z0[z0 < 0.05] = 0  # sparse supports: the free-set starts matter
    z0 = z0 / z0.sum(1, keepdim=True)
    s_mat = torch.tensor(rng.normal(size=(k, k)) * 3, dtype=dtype)
    lin = (fit.adj @ z0) @ (s_mat + s_mat.T)
    return fit, lin, fit.y_m(), fit.m.T @ fit.m, z0


def _both(fit, lin, b, q_mat, z0, monkeypatch):
    compiled = fit._cell_map(lin, b, q_mat, z0, 50, 1e-6)
    with monkeypatch.context() as mp:
        mp.setattr(_Fit, "compiled_cell_map", False)
        loop = fit._cell_map(lin, b, q_mat, z0, 50, 1e-6)
    return compiled, loop


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("k", [3, 10, 20])
def test_compiled_cell_map_equals_the_torch_loop(k, dtype, monkeypatch):
    # The same rounds, programs, starts and stopping rule: the states agree to rounding (sums in
    # another order), which the alternation can amplify only where a cell's minimum is flat.
    fit, lin, b, q_mat, z0 = _problem(400, k, 60, dtype, seed=k)
    (s, z), (s_ref, z_ref) = _both(fit, lin, b, q_mat, z0, monkeypatch)
    assert s.dtype == dtype and z.dtype == dtype
    assert torch.all(z >= 0) and torch.allclose(z.sum(1), torch.ones(len(z), dtype=dtype))
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    x, x_ref = s[:, None] * z, s_ref[:, None] * z_ref
    assert float((x - x_ref).abs().max()) <= tol * float(x_ref.abs().max())
    # the supports are the same wherever an entry is clearly non-zero
    assert torch.equal(z > 1e-3, z_ref > 1e-3)


def test_compiled_cell_map_lowers_every_cells_objective(monkeypatch):
    # Every alternation lowers the cell's objective: the result is no worse than its start.
    fit, lin, b, q_mat, z0 = _problem(300, 8, 40, torch.float64, seed=5)
    s0 = fit._best_scale(b, q_mat, z0)
    s, z = fit._cell_map(lin, b, q_mat, z0, 50, 1e-6)

    def objective(s, z):
        x = s[:, None] * z
        quad = ((x @ q_mat) * x).sum(1) - 2 * (b * x).sum(1)
        return quad / (2 * fit.sigma2) + fit.lambda_x * s + (z * lin).sum(1)

    assert torch.all(objective(s, z) <= objective(s0, z0) + 1e-9 * objective(s0, z0).abs())


def test_cells_without_signal_take_their_best_vertex():
    # A cell whose expression the metagenes cannot raise above the prior gets s = 0, so its
    # program has no quadratic term: the vertex with the smallest spatial term, as batched_qp.
    q_mat = np.eye(3)
    b = np.array([[0.5, 0.2, 0.1], [3.0, 0.0, 0.0]])  # lambda_x sigma^2 = 1 exceeds b . z for cell 0
    lin = np.array([[0.3, -0.2, 0.1], [0.0, 0.0, 0.0]])
    s, z = cell_map(q_mat, b, lin, np.full((2, 3), 1 / 3), 1.0, 1.0, 1e-12, 15, 50, 1e-6)
    assert s[0] == 0 and z[0].tolist() == [0.0, 1.0, 0.0]
    assert s[1] == pytest.approx(2.0) and z[1] == pytest.approx([1.0, 0.0, 0.0])


def test_singular_metagenes_fall_back_to_the_general_path(monkeypatch):
    # Collinear metagenes (M^T M of rank 2 < K = 4): free blocks that are not positive definite
    # are left to the torch loop's bordered systems; the fit's result is then that loop's.
    fit, lin, b, q_mat, z0 = _problem(100, 4, 30, torch.float64, seed=2, rank=2)
    eps = _pivot_tolerance(torch.float64)
    arrays = (q_mat.numpy(), b.numpy(), lin.numpy(), z0.numpy())
    assert cell_map(*arrays, fit.sigma2, fit.lambda_x, eps, 20, 50, 1e-6) is None
    (s, z), (s_ref, z_ref) = _both(fit, lin, b, q_mat, z0, monkeypatch)
    assert torch.equal(s, s_ref) and torch.equal(z, z_ref)
