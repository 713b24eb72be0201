"""Products of a CSR matrix with dense factors on the CPU, in numba, into the caller's layout.

The factorisations touch sparse data ``X`` (n_obs x n_vars) only through ``X M``, ``M X^T`` and
``M X`` with a few dozen columns in ``M``. torch's CSR product with the transpose (needed for
``M X``) gathers rows of ``M`` at random and ran 6-7x slower than one pass over ``X`` at 25%
density; scipy's kernels stream ``X`` once but return fresh arrays in their own layout, so every
product at a million cells allocated and transposed a few hundred MB (half the CPU time went to
the kernel's page faults). These kernels stream ``X`` once, row by row, and write straight into
an output the caller owns (e.g. the solver's preallocated ``(R K, n_obs)`` buffer).

Every output entry is a sum in the order of the stored values of its row or column: the results
do not depend on the alignment of the buffers or on the process, as the solver's bit-identical
replicates across joblib workers require.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _x_times(indptr, indices, data, m, out):  # pragma: no cover - compiled
    # out (n, c) = X @ m, m (g, c) C-ordered.
    n, c = out.shape
    for i in range(n):
        for t in range(c):
            out[i, t] = 0.0
        for p in range(indptr[i], indptr[i + 1]):
            j, v = indices[p], data[p]
            for t in range(c):
                out[i, t] += v * m[j, t]


@numba.njit(cache=True, nogil=True)
def _times_xt(indptr, indices, data, mt, out):  # pragma: no cover - compiled
    # out (c, n) = m @ X^T from mt = m^T (g, c) C-ordered; each cell's c values scattered at stride n.
    c, n = out.shape
    acc = np.empty(c, out.dtype)
    for i in range(n):
        for t in range(c):
            acc[t] = 0.0
        for p in range(indptr[i], indptr[i + 1]):
            j, v = indices[p], data[p]
            for t in range(c):
                acc[t] += v * mt[j, t]
        for t in range(c):
            out[t, i] = acc[t]


@numba.njit(cache=True, nogil=True)
def _xt_times(indptr, indices, data, m, out_t):  # pragma: no cover - compiled
    # out_t (g, c) = X^T @ m^T = (m @ X)^T, m (c, n) in any layout; out_t (g x c) stays in cache.
    c = out_t.shape[1]
    out_t[:] = 0.0
    col = np.empty(c, out_t.dtype)
    for i in range(m.shape[1]):
        for t in range(c):
            col[t] = m[t, i]
        for p in range(indptr[i], indptr[i + 1]):
            j, v = indices[p], data[p]
            for t in range(c):
                out_t[j, t] += v * col[t]


def x_times(csr, m: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out = X @ m`` for a CSR ``X`` (n, g) and ``m`` (g, c); ``out`` (n, c) C-ordered."""
    _x_times(csr.indptr, csr.indices, csr.data, np.ascontiguousarray(m), out)
    return out


def times_xt(csr, m: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out = m @ X^T`` for ``m`` (c, g); ``out`` (c, n) C-ordered."""
    _times_xt(csr.indptr, csr.indices, csr.data, np.ascontiguousarray(m.T), out)
    return out


def xt_times(csr, m: np.ndarray, out_t: np.ndarray) -> np.ndarray:
    """``out_t = (m @ X)^T`` for ``m`` (c, n); ``out_t`` (g, c) C-ordered (small: genes x c)."""
    _xt_times(csr.indptr, csr.indices, csr.data, m, out_t)
    return out_t
