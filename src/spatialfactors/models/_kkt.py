"""The KKT systems of the batched active-set programs (:func:`~spatialfactors.models.qp.batched_qp`), in numba.

For instance ``i`` with free set ``F`` the active-set method needs the minimiser of
``0.5 alpha_i x^T Q x + q_i^T x`` with ``x = 0`` off ``F`` (and, on the simplex, ``sum(x) = 1``):

    alpha_i Q_FF x_F = -q_F + mu 1,    mu = (1 + 1^T (alpha_i Q_FF)^-1 q_F) / 1^T (alpha_i Q_FF)^-1 1

(``mu = 0`` without the simplex), and the gradient ``alpha_i Q x + q - mu``. ``Q_FF`` is positive
definite whenever ``Q`` is, so one Cholesky factor of the ``|F| x |F|`` block serves both right-hand
sides. The torch path builds the bordered ``(K + 1) x (K + 1)`` system of every instance and calls
LAPACK once per instance; with K = 10-20 that call's overhead and the zero padding of the fixed
variables cost more than the arithmetic (linalg_solve_ex was 20-25% of a SpiceMix iteration). This
kernel factors the free block only, in one compiled loop over the instances.

An instance whose free block is not numerically positive definite (a pivot below ``K eps`` of its
diagonal, e.g. collinear metagenes) is flagged and left to the torch path, which handles singular
systems.

Also compiled here: the whole pivoting loop of ``batched_qp``, one instance at a time
(:func:`active_set`; the batched torch loop's tensor operations per pivot were half of its time at
K = 20), and the metagene step's dual Hessian, ``sum_g P_F A_FF^-1 P_F`` (:func:`free_inverse_sum`).
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _cholesky(a, al, idx, m, low):  # pragma: no cover - compiled
    """Lower Cholesky factor of ``al * a[F, F]`` (``F = idx[:m]``) into ``low``, row by row.

    False when a pivot is not above ``K eps`` of its diagonal (not numerically positive definite).
    """
    tiny = a.shape[0] * np.finfo(a.dtype).eps
    for p in range(m):
        for q in range(p + 1):
            s = al * a[idx[p], idx[q]]
            for c in range(q):
                s -= low[p, c] * low[q, c]
            if p == q:
                if not s > tiny * al * a[idx[p], idx[p]]:
                    return False
                low[p, p] = math.sqrt(s)
            else:
                low[p, q] = s / low[q, q]
    return True


@numba.njit(cache=True, nogil=True)
def _solve_free(q_mat, al, qi, fi, simplex, idx, low, s0, s1, xi, gi):  # pragma: no cover - compiled
    """One instance: ``x`` (``xi``) and gradient (``gi``) on the free set ``fi``; False if not positive definite."""
    k = qi.shape[0]
    m = 0
    for j in range(k):
        xi[j] = 0.0
        if fi[j]:
            idx[m] = j
            m += 1
    if not _cholesky(q_mat, al, idx, m, low):
        return False
    # Solve L L^T s0 = -q_F and L L^T s1 = 1.
    for a in range(m):
        t0 = -qi[idx[a]]
        t1 = 1.0
        for c in range(a):
            t0 -= low[a, c] * s0[c]
            t1 -= low[a, c] * s1[c]
        s0[a] = t0 / low[a, a]
        s1[a] = t1 / low[a, a]
    for a in range(m - 1, -1, -1):
        t0 = s0[a]
        t1 = s1[a]
        for c in range(a + 1, m):
            t0 -= low[c, a] * s0[c]
            t1 -= low[c, a] * s1[c]
        s0[a] = t0 / low[a, a]
        s1[a] = t1 / low[a, a]
    mu = 0.0
    if simplex:
        num = 1.0
        den = 0.0
        for a in range(m):
            num -= s0[a]
            den += s1[a]
        mu = num / den
    for a in range(m):
        xi[idx[a]] = s0[a] + mu * s1[a]
    # Gradient alpha_i Q x + q - mu over all K coordinates (x is zero off F).
    for j in range(k):
        g = 0.0
        for a in range(m):
            g += q_mat[j, idx[a]] * xi[idx[a]]
        gi[j] = al * g + qi[j] - mu
    return True


@numba.njit(cache=True, nogil=True)
def _kkt_kernel(q_mat, alpha, q, free, simplex, x_out, grad_out, ok_out):  # pragma: no cover - compiled
    n, k = q.shape
    idx = np.empty(k, np.int64)
    low = np.empty((k, k), q.dtype)
    s0 = np.empty(k, q.dtype)
    s1 = np.empty(k, q.dtype)
    for i in range(n):
        ok_out[i] = _solve_free(q_mat, alpha[i], q[i], free[i], simplex, idx, low, s0, s1, x_out[i], grad_out[i])


@numba.njit(cache=True, nogil=True)
def _argmin(v):  # pragma: no cover - compiled
    """Index of the first smallest entry (as torch's argmin)."""
    best = 0
    for j in range(1, v.shape[0]):
        if v[j] < v[best]:
            best = j
    return best


@numba.njit(cache=True, nogil=True)
def _workspace(k, like):  # pragma: no cover - compiled
    """Work arrays of :func:`_pivot` for K variables, in the dtype of ``like``."""
    dt = like.dtype
    return (np.empty(k, np.int64), np.empty((k, k), dt), np.empty(k, dt), np.empty(k, dt), np.empty(k, dt),
            np.empty(k, dt), np.empty(k, np.bool_))  # fmt: skip


@numba.njit(cache=True, nogil=True)
def _pivot(q_mat, al, qi, fi, simplex, tol, max_iter, idx, low, s0, s1, x, grad, viol, xo):  # pragma: no cover
    """Block principal pivoting for one instance from the free set ``fi`` (overwritten).

    Writes the minimiser into ``xo`` and returns 0; 1 when not settled within ``max_iter`` pivots,
    2 when a free block is not numerically positive definite (``xo`` untouched).
    """
    k = qi.shape[0]
    best = k + 1
    backup = 3
    for _ in range(max_iter):
        if not _solve_free(q_mat, al, qi, fi, simplex, idx, low, s0, s1, x, grad):
            return 2
        nv = 0
        last = -1
        for j in range(k):
            viol[j] = (fi[j] and x[j] < -tol) or (not fi[j] and grad[j] < -tol)
            if viol[j]:
                nv += 1
                last = j
        if nv == 0:
            for j in range(k):
                xo[j] = x[j]
            return 0
        # Block principal pivoting: exchange every infeasible variable while their number
        # drops (or for three more tries); otherwise only the last one (finite termination).
        improve = nv < best
        if improve:
            best = nv
            backup = 3
        else:
            backup -= 1
        if improve or backup >= 0:
            for j in range(k):
                fi[j] = fi[j] != viol[j]
        else:
            fi[last] = not fi[last]
        if simplex and not fi.any():
            fi[_argmin(grad)] = True
    return 1


@numba.njit(cache=True, nogil=True)
def _active_set_kernel(q_mat, alpha, q, free, simplex, scale, eps, max_iter, x_out, status):  # pragma: no cover
    n, k = q.shape
    idx, low, s0, s1, x, grad, viol = _workspace(k, q)
    for i in range(n):
        # free[i] is never empty on the simplex (the caller's start, kept so by _pivot)
        tol = eps[0] * scale[i]  # in the data's precision, as the torch path
        status[i] = _pivot(
            q_mat, alpha[i], q[i], free[i], simplex, tol, max_iter, idx, low, s0, s1, x, grad, viol, x_out[i]
        )


def active_set(q_mat, alpha, q, free, simplex: bool, scale, eps: float, max_iter: int):
    """Run the block principal pivoting of :func:`~spatialfactors.models.qp.batched_qp`, one instance at a time.

    Returns ``(x, status)``: ``status`` 0 solved, 1 not settled within ``max_iter`` pivots, 2 a free
    block that is not numerically positive definite (both left to the caller). ``free`` (the
    starting free sets, none empty on the simplex) is overwritten.

    Examples
    --------
    >>> import numpy as np
    >>> from spatialfactors.models._kkt import active_set
    >>> x, status = active_set(
    ...     np.eye(2), np.ones(1), np.array([[-1.0, 1.0]]), np.ones((1, 2), bool), False, np.ones(1), 1e-12, 10
    ... )
    >>> x.tolist(), status.tolist()
    ([[1.0, 0.0]], [0])
    """
    n, k = q.shape
    x = np.zeros((n, k), q.dtype)
    status = np.empty(n, np.int64)
    _active_set_kernel(
        np.ascontiguousarray(q_mat, dtype=q.dtype),
        np.ascontiguousarray(alpha, dtype=q.dtype),
        np.ascontiguousarray(q),
        free,
        simplex,
        np.ascontiguousarray(scale, dtype=q.dtype),
        np.array([eps], q.dtype),
        max_iter,
        x,
        status,
    )
    return x, status


def kkt(q_mat: np.ndarray, alpha: np.ndarray, q: np.ndarray, free: np.ndarray, simplex: bool):
    """``(x, grad, ok)`` of the KKT systems of every instance; rows with ``ok`` False are not solved.

    Examples
    --------
    >>> import numpy as np
    >>> from spatialfactors.models._kkt import kkt
    >>> x, grad, ok = kkt(np.eye(2), np.ones(1), np.array([[-1.0, -2.0]]), np.ones((1, 2), bool), True)
    >>> x.round(6).tolist(), bool(ok[0])
    ([[0.0, 1.0]], True)
    """
    n, k = q.shape
    x = np.empty((n, k), q.dtype)
    grad = np.empty((n, k), q.dtype)
    ok = np.empty(n, np.bool_)
    q_mat = np.ascontiguousarray(q_mat, dtype=q.dtype)
    _kkt_kernel(q_mat, np.ascontiguousarray(alpha, dtype=q.dtype), np.ascontiguousarray(q), free, simplex, x, grad, ok)
    return x, grad, ok


@numba.njit(cache=True, nogil=True)
def _free_inverse_sum_kernel(a, free, out):  # pragma: no cover - compiled
    g, k = free.shape
    idx = np.empty(k, np.int64)
    low = np.empty((k, k), a.dtype)
    inv = np.empty((k, k), a.dtype)
    for i in range(k):
        for j in range(k):
            out[i, j] = 0.0
    for r in range(g):
        m = 0
        for j in range(k):
            if free[r, j]:
                idx[m] = j
                m += 1
        if not _cholesky(a, 1.0, idx, m, low):
            return False
        # A_FF^-1 = W^T W with W = L^-1 (lower triangular), column by column of W.
        for col in range(m):
            inv[col, col] = 1.0 / low[col, col]
            for p in range(col + 1, m):
                t = 0.0
                for c in range(col, p):
                    t -= low[p, c] * inv[c, col]
                inv[p, col] = t / low[p, p]
        for p in range(m):  # lower triangle of W^T W; the upper one is filled at the end
            for q in range(p + 1):
                t = 0.0
                for c in range(p, m):
                    t += inv[c, p] * inv[c, q]
                out[idx[p], idx[q]] += t
    for i in range(k):
        for j in range(i):
            out[j, i] = out[i, j]
    return True


def free_inverse_sum(a: np.ndarray, free: np.ndarray) -> np.ndarray | None:
    """``sum_g P_F A_FF^-1 P_F`` over the rows ``g`` of ``free`` (G x K), ``F`` each row's free set.

    One Cholesky factor of each free block; ``None`` when a block is not numerically positive
    definite (the caller's batched inverse handles it).

    Examples
    --------
    >>> import numpy as np
    >>> from spatialfactors.models._kkt import free_inverse_sum
    >>> free_inverse_sum(2 * np.eye(2), np.array([[True, False], [True, True]])).round(12).tolist()
    [[1.0, 0.0], [0.0, 0.5]]
    """
    out = np.empty((free.shape[1], free.shape[1]), a.dtype)
    ok = _free_inverse_sum_kernel(np.ascontiguousarray(a), np.ascontiguousarray(free), out)
    return out if ok else None
