"""Small convex quadratic programs solved exactly for many instances at once.

SpiceMix (Chidester et al. 2023) needs, at every iteration, one K-dimensional quadratic
program per cell and one quadratic program for the metagenes:

- ``min 0.5 alpha_i x^T Q x + q_i^T x`` over ``x >= 0`` (non-negative least squares with an
  L1 prior) or over the probability simplex ``x >= 0, sum(x) = 1``, with ``Q`` shared by all
  instances. :func:`batched_qp` solves these with the block principal pivoting active-set
  method (Kim & Park 2011; Judice & Pires 1994) extended by the simplex's equality
  constraint: each pivot solves the KKT system of the current free set for all instances at
  once (on the CPU a compiled loop that factors each free block by Cholesky, ``models._kkt``;
  elsewhere one batched linear solve), and the method stops when the KKT conditions hold, which for a
  convex program is the exact optimum. Instances that do not settle within ``max_iter``
  pivots (rare, degenerate cases) finish with accelerated projected gradient.
- ``min 0.5 tr(M A M^T) - tr(M^T B)`` with every column of ``M`` on the simplex:
  :func:`simplex_columns_qp`, exactly through its K-dimensional dual (semismooth Newton on
  the column-sum multipliers, each step one batched row-wise non-negative program), with
  accelerated projected gradient (the reference implementation's metagene update) as the
  fallback for singular ``A``.

``cvxpy`` versions of both (:func:`batched_qp_cvxpy`, :func:`simplex_columns_qp_cvxpy`) are
the reference solvers the tests compare against.
"""

from __future__ import annotations

import numpy as np
import torch

from ._kkt import active_set, free_inverse_sum, kkt


def project_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of every row of ``v`` onto the probability simplex (Duchi et al. 2008).

    Examples
    --------
    >>> import torch
    >>> from spatialfactors.models.qp import project_simplex
    >>> v = torch.tensor([[0.0, 3.0, 1.0], [0.5, 0.5, 1.0]], dtype=torch.float64)
    >>> project_simplex(v).round(decimals=3).tolist()
    [[0.0, 1.0, 0.0], [0.167, 0.167, 0.667]]
    """
    u, _ = torch.sort(v, dim=-1, descending=True)
    css = torch.cumsum(u, dim=-1) - 1
    ind = torch.arange(1, v.shape[-1] + 1, dtype=v.dtype, device=v.device)
    cond = (u - css / ind) > 0
    rho = cond.to(torch.int64).cumsum(-1).argmax(-1, keepdim=True)  # last index where cond holds
    theta = css.gather(-1, rho) / (rho + 1).to(v.dtype)
    return (v - theta).clamp_min(0)


def _kkt(q_mat, alpha, q, free, simplex):
    """Solve the KKT system of the free set; returns ``x`` (zero off the free set) and the reduced gradient."""
    if q.device.type == "cpu" and q.dtype in (torch.float32, torch.float64) and len(q):
        # Compiled: one Cholesky of each free block (models._kkt); the rare instance whose block is
        # not numerically positive definite goes through the bordered systems below.
        x, grad, ok = (torch.from_numpy(a) for a in kkt(q_mat.numpy(), alpha.numpy(), q.numpy(), free.numpy(), simplex))
        if not ok.all():
            bad = ~ok
            x[bad], grad[bad] = _kkt_bordered(q_mat, alpha[bad], q[bad], free[bad], simplex)
        return x, grad
    return _kkt_bordered(q_mat, alpha, q, free, simplex)


def _kkt_bordered(q_mat, alpha, q, free, simplex):
    """:func:`_kkt` through the bordered (K + 1) x (K + 1) system of every instance (any device, singular blocks)."""
    n, k = q.shape
    m = k + 1 if simplex else k
    eye = torch.eye(k, dtype=q.dtype, device=q.device)
    f = free.to(q.dtype)
    a = torch.empty(n, m, m, dtype=q.dtype, device=q.device)
    # alpha_i Q on the free block; fixed variables get the row and column of the identity (x_k = 0).
    # Written in place into the system (the largest arrays here are n x m x m).
    block = a[:, :k, :k]
    torch.mul(f[:, :, None] * f[:, None, :], q_mat, out=block)
    block.mul_(alpha[:, None, None])
    block.diagonal(dim1=1, dim2=2).add_(1.0 - f)
    rhs = torch.empty(n, m, dtype=q.dtype, device=q.device)
    rhs[:, :k] = torch.where(free, -q, 0.0)  # +0 off the free set (no -0 in the solution)
    if simplex:
        a[:, :k, k] = -f
        a[:, k, :k] = f
        a[:, k, k] = 0.0
        rhs[:, k] = 1.0
    sol, info = torch.linalg.solve_ex(a, rhs)
    bad = (info != 0) | ~torch.isfinite(sol).all(1)
    if bad.any():
        # A singular free block (collinear columns of Q, e.g. data of lower rank than K): the program
        # has many minimisers; a ridge of relative size eps picks one, within the KKT tolerance.
        ridge = torch.finfo(q.dtype).eps * (alpha[bad] * q_mat.abs().max()).clamp_min(1e-300)
        a_bad = a[bad].clone()
        a_bad[:, :k, :k] += ridge[:, None, None] * (eye * f[bad][:, :, None])
        fixed, info = torch.linalg.solve_ex(a_bad, rhs[bad])
        still = (info != 0) | ~torch.isfinite(fixed).all(1)
        if still.any():  # the least-squares solution of what remains singular
            fixed[still] = (torch.linalg.pinv(a_bad[still]) @ rhs[bad][still][:, :, None])[:, :, 0]
        sol[bad] = fixed
    x = sol[:, :k]
    mu = sol[:, k : k + 1] if simplex else 0.0
    grad = alpha[:, None] * (x @ q_mat) + q - mu  # Q shared: one product for all instances
    return x, grad


def _pgd(q_mat, alpha, q, x, simplex, n_iter=5000, rtol=1e-12):
    """Accelerated projected gradient (fallback for instances the active set did not settle)."""
    lmax = torch.linalg.eigvalsh(q_mat)[-1].clamp_min(1e-300)
    step = 1.0 / (alpha * lmax).clamp_min(1e-300)[:, None]

    def proj(v):
        return project_simplex(v) if simplex else v.clamp_min(0)

    def obj(v):
        return 0.5 * alpha * ((v @ q_mat) * v).sum(1) + (q * v).sum(1)

    y, t, f_old = x.clone(), 1.0, obj(x)
    for _ in range(n_iter):
        g = alpha[:, None] * (y @ q_mat) + q
        x_new = proj(y - step * g)
        f_new = obj(x_new)
        restart = f_new > f_old
        x_new = torch.where(restart[:, None], proj(x - step * (alpha[:, None] * (x @ q_mat) + q)), x_new)
        f_new = obj(x_new)
        t_new = (1 + np.sqrt(1 + 4 * t * t)) / 2
        y = x_new + ((t - 1) / t_new) * (x_new - x)
        converged = bool(((f_old - f_new).abs() <= rtol * (f_old.abs() + 1)).all())
        x, f_old, t = x_new, f_new, t_new
        if converged:
            break
    return x


def _active_set(q_mat, al, qs, free, scale, simplex, eps, max_iter):
    """Block principal pivoting on the whole batch (any device); returns the minimisers and the unsettled rows."""
    n, k = qs.shape
    free = free.clone()
    best = torch.full((n,), k + 1, device=qs.device)
    backup = torch.full((n,), 3, device=qs.device)
    active = torch.arange(n, device=qs.device)
    result = torch.zeros_like(qs)
    for _ in range(max_iter):
        x, grad = _kkt(q_mat, al[active], qs[active], free[active], simplex)
        tol = eps * scale[active][:, None]
        viol = (free[active] & (x < -tol)) | (~free[active] & (grad < -tol))
        nv = viol.sum(1)
        done = nv == 0
        result[active[done]] = x[done]
        keep = ~done
        active, viol, nv, grad = active[keep], viol[keep], nv[keep], grad[keep]
        if len(active) == 0:
            break
        # Block principal pivoting: exchange every infeasible variable while their number
        # drops (or for three more tries); otherwise only the last one (finite termination).
        fr = free[active]
        improve = nv < best[active]
        best[active] = torch.where(improve, nv, best[active])
        backup[active] = torch.where(improve, 3, backup[active] - (~improve).to(backup.dtype))
        full = improve | (backup[active] >= 0)
        last = k - 1 - viol.flip(1).to(torch.int64).argmax(1)
        single = torch.nn.functional.one_hot(last, k).bool()
        fr = fr ^ torch.where(full[:, None], viol, single)
        if simplex:
            empty = ~fr.any(1)
            if empty.any():
                fr[empty] = torch.nn.functional.one_hot(grad[empty].argmin(1), k).bool()
        free[active] = fr
    return result, active


def _pivot_tolerance(dtype: torch.dtype) -> float:
    """Relative tolerance of :func:`batched_qp`'s feasibility tests (and of its flat instances)."""
    return torch.finfo(dtype).eps ** 0.75


def _max_pivots(k: int) -> int:
    """Pivots of :func:`batched_qp` before its fallback, by default."""
    return 5 * k


def batched_qp(
    q_mat: torch.Tensor,
    alpha: torch.Tensor,
    q: torch.Tensor,
    *,
    simplex: bool = False,
    x0: torch.Tensor | None = None,
    max_iter: int | None = None,
) -> torch.Tensor:
    """Minimise ``0.5 alpha_i x^T Q x + q_i^T x`` over ``x >= 0`` (or the simplex) for every row ``i``.

    Parameters
    ----------
    q_mat
        (K, K) symmetric positive (semi)definite matrix shared by all instances.
    alpha
        (n,) non-negative scale of the quadratic term per instance.
    q
        (n, K) linear terms.
    simplex
        Constrain every solution to the probability simplex.
    x0
        Warm start: its support is the first guess of the free set.
    max_iter
        Pivots before the fallback (default ``5 K``).

    Returns
    -------
    (n, K) exact minimisers.

    Examples
    --------
    >>> import torch
    >>> from spatialfactors.models.qp import batched_qp
    >>> Q = torch.eye(2, dtype=torch.float64)
    >>> q = torch.tensor([[-1.0, 1.0], [-2.0, -3.0]], dtype=torch.float64)
    >>> batched_qp(Q, torch.ones(2, dtype=torch.float64), q).tolist()
    [[1.0, 0.0], [2.0, 3.0]]
    """
    n, k = q.shape
    out = torch.zeros_like(q)
    if n == 0:
        return out
    max_iter = _max_pivots(k) if max_iter is None else max_iter
    eps = _pivot_tolerance(q.dtype)
    # Instances without a quadratic term: the minimum of a linear function is a vertex.
    flat = alpha <= eps * alpha.max().clamp_min(1.0)
    if flat.any():
        if simplex:
            out[flat] = torch.nn.functional.one_hot(q[flat].argmin(1), k).to(q.dtype)
        elif (q[flat] < 0).any():
            raise ValueError("Unbounded program: a zero quadratic term with a negative linear term.")
    rows = torch.nonzero(~flat)[:, 0]
    if len(rows) == 0:
        return out
    qs, al = q[rows], alpha[rows]
    scale = (qs.abs().amax(1) + al * q_mat.abs().max()).clamp_min(1e-300)
    free = (x0[rows] > 0) if x0 is not None else torch.ones_like(qs, dtype=torch.bool)
    if simplex:
        empty = ~free.any(1)
        free[empty] = torch.nn.functional.one_hot(qs[empty].argmin(1), k).bool()
    if q.device.type == "cpu" and q.dtype in (torch.float32, torch.float64):
        # Compiled: the same pivots one instance at a time (models._kkt), without the tensor
        # operations over the batch at every pivot; what it cannot finish takes the paths below.
        arrays = (q_mat.numpy(), al.numpy(), qs.numpy(), free.numpy().copy())
        x, status = active_set(*arrays, simplex, scale.numpy(), eps, max_iter)
        result = torch.from_numpy(x)
        active = torch.from_numpy(np.flatnonzero(status == 1))
        retry = torch.from_numpy(np.flatnonzero(status == 2))
        if len(retry):  # a free block that is not positive definite: the bordered systems
            sub = (al[retry], qs[retry], free[retry], scale[retry])
            result[retry], unsettled = _active_set(q_mat, *sub, simplex, eps, max_iter)
            active = torch.cat([active, retry[unsettled]])
    else:
        result, active = _active_set(q_mat, al, qs, free, scale, simplex, eps, max_iter)
    if len(active):
        start = result[active] if x0 is None else x0[rows][active]
        start = project_simplex(start) if simplex else start.clamp_min(0)
        result[active] = _pgd(q_mat, al[active], qs[active], start, simplex)
    result = result.clamp_min(0)
    if simplex:
        result = result / result.sum(1, keepdim=True)
    out[rows] = result
    return out


def simplex_columns_qp(
    a: torch.Tensor,
    b: torch.Tensor,
    m0: torch.Tensor,
    *,
    max_iter: int = 5000,
    rtol: float = 1e-12,
) -> torch.Tensor:
    """Minimise ``0.5 tr(M A M^T) - tr(M^T B)`` with every column of ``M`` on the simplex.

    With ``A`` positive definite the program is solved exactly through its dual: for
    multipliers ``mu`` of the K column-sum constraints the rows of ``M`` separate into
    non-negative programs ``min 0.5 m^T A m - (b_g - mu)^T m`` (one batched
    :func:`batched_qp`), and the concave dual is maximised over ``mu`` by semismooth Newton
    steps (generalised Hessian ``-sum_g P_g A_FF^-1 P_g`` over each row's free set ``F``)
    with a backtracking line search, until the column sums are 1 to rounding. A singular
    ``A`` (an unused metagene) or a Newton run that stalls falls back to accelerated
    projected gradient.

    Parameters
    ----------
    a
        (K, K) positive semidefinite (``X^T X``).
    b
        (G, K) (``Y^T X``).
    m0
        (G, K) start (warm start of the free sets; projected first for the fallback).
    max_iter, rtol
        Fallback only: accelerated projected gradient (step ``1 / lambda_max(A)``, restarts
        when the objective rises) until the relative decrease of an iteration is below
        ``rtol``.

    Returns
    -------
    (G, K) minimiser.

    Examples
    --------
    >>> import torch
    >>> from spatialfactors.models.qp import simplex_columns_qp
    >>> a = torch.eye(2, dtype=torch.float64)
    >>> b = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    >>> simplex_columns_qp(a, b, torch.full((3, 2), 0.5, dtype=torch.float64)).round(decimals=12).tolist()
    [[1.0, 0.0], [0.0, 0.5], [0.0, 0.5]]
    """
    evals = torch.linalg.eigvalsh(a)
    if float(evals[-1]) <= 0:
        return project_simplex(m0.T).T
    if float(evals[0]) > 1e-10 * float(evals[-1]):
        out = _simplex_columns_newton(a, b, m0)
        if out is not None:
            return out
    return _simplex_columns_apg(a, b, m0, float(evals[-1]), max_iter, rtol)


def _simplex_columns_newton(a, b, m0, max_newton: int = 100):
    g, k = b.shape
    ones = torch.ones(g, dtype=b.dtype, device=b.device)
    eye = torch.eye(k, dtype=b.dtype, device=b.device)
    tol = 64 * torch.finfo(b.dtype).eps * max(1.0, float(k))

    def rows(mu, x0):
        m = batched_qp(a, ones, mu[None, :] - b, x0=x0)
        # dual value: min over M >= 0 of the Lagrangian
        value = 0.5 * ((m @ a) * m).sum() - ((b - mu[None, :]) * m).sum() - mu.sum()
        return m, float(value)

    # Start from the multipliers that make the warm start's free rows stationary on average.
    m0 = m0.clamp_min(0)
    mu = ((b - m0 @ a) * (m0 > 0)).sum(0) / (m0 > 0).sum(0).clamp_min(1)
    m, value = rows(mu, m0)
    for _ in range(max_newton):
        resid = m.sum(0) - 1  # gradient of the dual
        if float(resid.abs().max()) <= tol:
            return m
        hess = _dual_hessian(a, m > 0, eye)
        reg = 1e-12 * float(hess.diagonal().abs().max().clamp_min(1e-300))
        step = torch.linalg.solve(hess + reg * eye, resid)
        t = 1.0
        for _ in range(40):
            m_new, v_new = rows(mu + t * step, m)
            if v_new >= value - 1e-14 * abs(value):
                break
            t *= 0.5
        else:
            return None
        mu, m, value = mu + t * step, m_new, v_new
    return None


def _dual_hessian(a, free, eye):
    """Generalised Hessian of the (negated) dual: ``sum_g P_F A_FF^-1 P_F`` over the rows' free sets."""
    if free.device.type == "cpu":
        # Compiled: one Cholesky of each free block (a batched inverse of G padded K x K blocks
        # was 40% of the metagene step at K = 20).
        out = free_inverse_sum(a.numpy(), free.numpy())
        if out is not None:
            return torch.from_numpy(out)
    ff = free[:, :, None] & free[:, None, :]
    blocks = torch.where(ff, a, 0.0) + eye * (~free)[:, :, None]
    return (torch.linalg.inv(blocks) * ff).sum(0)


def _simplex_columns_apg(a, b, m0, lmax, max_iter, rtol):
    def obj(m):
        return float(0.5 * ((m @ a) * m).sum() - (m * b).sum())

    step = 1.0 / lmax
    x = project_simplex(m0.T).T
    y, t, f_old = x, 1.0, obj(x)
    for _ in range(max_iter):
        x_new = project_simplex((y - step * (y @ a - b)).T).T
        f_new = obj(x_new)
        if f_new > f_old:  # restart from a plain projected gradient step
            x_new = project_simplex((x - step * (x @ a - b)).T).T
            f_new, t = obj(x_new), 1.0
        t_new = (1 + np.sqrt(1 + 4 * t * t)) / 2
        y = x_new + ((t - 1) / t_new) * (x_new - x)
        done = f_old - f_new <= rtol * (abs(f_old) + 1e-300)
        x, f_old, t = x_new, f_new, t_new
        if done:
            break
    return x


def batched_qp_cvxpy(q_mat: np.ndarray, alpha: np.ndarray, q: np.ndarray, *, simplex: bool = False) -> np.ndarray:
    """Solve :func:`batched_qp` problems with cvxpy, one program per instance (the reference; slow).

    Examples
    --------
    >>> import numpy as np
    >>> from spatialfactors.models.qp import batched_qp_cvxpy
    >>> batched_qp_cvxpy(np.eye(2), np.ones(1), np.array([[-1.0, 1.0]])).round(6).tolist()
    [[1.0, 0.0]]
    """
    import cvxpy as cp

    q_mat = np.asarray(q_mat, dtype=np.float64)
    q_mat = 0.5 * (q_mat + q_mat.T)
    k = q_mat.shape[0]
    out = np.zeros((len(q), k))
    x = cp.Variable(k)
    lin = cp.Parameter(k)
    quad = cp.Parameter(nonneg=True)
    # psd_wrap: Q is PSD by construction; skips cvxpy's eigenvalue check on near-singular Q.
    objective = 0.5 * quad * cp.quad_form(x, cp.psd_wrap(q_mat)) + lin @ x
    constraints = [x >= 0] + ([cp.sum(x) == 1] if simplex else [])
    problem = cp.Problem(cp.Minimize(objective), constraints)
    for i in range(len(q)):
        lin.value, quad.value = np.asarray(q[i], dtype=np.float64), float(alpha[i])
        problem.solve(solver=cp.CLARABEL)
        out[i] = np.asarray(x.value)
    return np.clip(out, 0, None)


def simplex_columns_qp_cvxpy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve the :func:`simplex_columns_qp` problem with cvxpy (the reference solver for tests)."""
    import cvxpy as cp

    a = np.asarray(a, dtype=np.float64)
    a = 0.5 * (a + a.T)
    g, k = b.shape
    # 0.5 tr(M A M^T) = 0.5 ||M L||_F^2 with A = L L^T (eigen-factor: A may be singular).
    w, v = np.linalg.eigh(a)
    factor = v * np.sqrt(np.clip(w, 0, None))
    m = cp.Variable((g, k))
    objective = 0.5 * cp.sum_squares(m @ factor) - cp.sum(cp.multiply(m, np.asarray(b, dtype=np.float64)))
    problem = cp.Problem(cp.Minimize(objective), [m >= 0, cp.sum(m, axis=0) == 1])
    problem.solve(solver=cp.CLARABEL)
    return np.clip(np.asarray(m.value), 0, None)
