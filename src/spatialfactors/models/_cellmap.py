"""SpiceMix's per-cell MAP states (``hmrf._Fit._cell_map``), the whole alternation in numba.

Every cell minimises ``||y - s M z||^2 / (2 sigma^2) + lambda_x s + z^T lin`` over its scale
``s >= 0`` and proportions ``z`` on the simplex by alternating the closed-form scale and the exact
simplex program (block principal pivoting, ``_kkt._pivot``), round by round over the cells that
have not settled, as the torch loop does: the same programs, the same free-set starts, the same
flat-instance rule and the same stopping rule (a cell leaves when its state moved by at most
``rtol`` times the largest scale). The torch loop spends most of its time in per-round tensor
operations (gathers, scatters, a dozen small kernels per round, ~15 rounds per sweep); here a round
costs only its arithmetic.
"""

from __future__ import annotations

import numba
import numpy as np

from ._kkt import _argmin, _pivot, _workspace


@numba.njit(cache=True, nogil=True)
def _best_scale(q_mat, bi, zi, sigma2, lambda_x):  # pragma: no cover - compiled
    """``argmin_{s >= 0} s^2 z^T Q z / (2 sigma^2) - s (b^T z / sigma^2 - lambda_x)``."""
    k = zi.shape[0]
    quad = zi.dtype.type(0.0)
    num = zi.dtype.type(0.0)
    for a in range(k):
        row = zi.dtype.type(0.0)
        for c in range(k):
            row += zi[c] * q_mat[c, a]
        quad += row * zi[a]
        num += bi[a] * zi[a]
    num -= lambda_x * sigma2
    if not quad > 0:
        return zi.dtype.type(0.0)
    return max(num / quad, zi.dtype.type(0.0))


@numba.njit(cache=True, nogil=True)
def _cell_map_kernel(q_mat, b, lin, s, z, sigma2, lambda_x, eps, max_iter, max_inner, rtol):  # pragma: no cover
    n, k = z.shape
    dt = z.dtype.type
    idx, low, s0, s1, x, grad, viol = _workspace(k, z)
    fi = np.empty(k, np.bool_)
    qi = np.empty(k, z.dtype)
    zn = np.empty(k, z.dtype)
    qmax = dt(0.0)
    for a in range(k):
        for c in range(k):
            qmax = max(qmax, abs(q_mat[a, c]))
    for i in range(n):
        s[i] = _best_scale(q_mat, b[i], z[i], sigma2, lambda_x)
    rows = np.arange(n)
    alpha = np.empty(n, z.dtype)
    change = np.empty(n, z.dtype)
    n_rows = n
    for _ in range(max_inner):
        amax = dt(1.0)  # instances without a quadratic term relative to the batch's largest
        for r in range(n_rows):
            i = rows[r]
            alpha[r] = s[i] * s[i] / sigma2
            amax = max(amax, alpha[r])
        flat = eps * amax
        for r in range(n_rows):
            i = rows[r]
            al = alpha[r]
            scale = dt(0.0)
            for a in range(k):
                qi[a] = lin[i, a] - (s[i] / sigma2) * b[i, a]
                scale = max(scale, abs(qi[a]))
            if al <= flat:  # a linear objective: its smallest vertex
                for a in range(k):
                    zn[a] = 0.0
                zn[_argmin(qi)] = 1.0
            else:
                scale = max(scale + al * qmax, dt(1e-300))
                for a in range(k):
                    fi[a] = z[i, a] > 0
                if not fi.any():
                    fi[_argmin(qi)] = True
                if _pivot(q_mat, al, qi, fi, True, eps * scale, max_iter, idx, low, s0, s1, x, grad, viol, zn) != 0:
                    return False  # the caller's general path (bordered systems, projected gradient)
                total = dt(0.0)
                for a in range(k):
                    zn[a] = max(zn[a], dt(0.0))
                    total += zn[a]
                for a in range(k):
                    zn[a] /= total
            sn = _best_scale(q_mat, b[i], zn, sigma2, lambda_x)
            ch = dt(0.0)
            for a in range(k):
                ch = max(ch, abs(sn * zn[a] - s[i] * z[i, a]))
                z[i, a] = zn[a]
            s[i] = sn
            change[r] = ch
        top = dt(1e-300)
        for i in range(n):
            top = max(top, s[i])
        kept = 0
        for r in range(n_rows):
            if change[r] > rtol * top:
                rows[kept] = rows[r]
                kept += 1
        n_rows = kept
        if n_rows == 0:
            break
    return True


def cell_map(q_mat, b, lin, z0, sigma2: float, lambda_x: float, eps: float, max_iter: int, max_inner: int, rtol: float):
    """Return every cell's MAP scale and proportions ``(s, z)`` from the start ``z0``.

    ``None`` when a program needs the general path (a free block that is not positive definite,
    or one not settled within ``max_iter`` pivots): the caller then runs the torch loop.

    Arrays of one dtype (float32 or float64): ``q_mat`` (K, K) ``M^T M``, ``b`` (n, K) ``y M``,
    ``lin`` (n, K) the spatial term, ``z0`` (n, K) on the simplex. ``eps`` and ``max_iter`` as in
    :func:`~spatialfactors.models.qp.batched_qp`.

    Examples
    --------
    >>> import numpy as np
    >>> from spatialfactors.models._cellmap import cell_map
    >>> b = np.array([[2.0, 0.0]])  # y M of a cell made of metagene 0 alone
    >>> s, z = cell_map(np.eye(2), b, np.zeros((1, 2)), np.full((1, 2), 0.5), 1.0, 0.0, 1e-12, 10, 50, 1e-6)
    >>> s.tolist(), z.tolist()
    ([2.0], [[1.0, 0.0]])
    """
    dtype = z0.dtype
    z = np.array(z0, dtype=dtype, order="C")
    s = np.empty(len(z), dtype)
    ok = _cell_map_kernel(
        np.ascontiguousarray(q_mat, dtype=dtype),
        np.ascontiguousarray(b, dtype=dtype),
        np.ascontiguousarray(lin, dtype=dtype),
        s,
        z,
        dtype.type(sigma2),
        dtype.type(lambda_x),
        dtype.type(eps),
        max_iter,
        max_inner,
        dtype.type(rtol),
    )
    return (s, z) if ok else None
