"""Log-partition function of the exponential family on the simplex, and its gradient, in numba.

For every row ``eta`` (K values) of an (n, K) array,

    log C(eta) = log integral over {z >= 0, sum z = 1} of exp(-eta . z) dz

(Lebesgue measure on the first K - 1 coordinates, so ``log C(0) = -log((K-1)!)``), and

    d log C / d eta_k = -E[z_k]    (density proportional to exp(-eta . z) on the simplex).

Method
------
``C(eta)`` is the divided difference of ``exp`` at the nodes ``-eta`` (Hermite-Genocchi).
Shifting by ``top = max(eta)`` gives nodes ``d = top - eta >= 0`` and ``C = exp(-top) exp[d]``.
The derivative of a divided difference with respect to a node repeats that node, so

    E[z_k] = exp[d_1, ..., d_K, d_k] / exp[d_1, ..., d_K].

The numerator is a window of K + 1 consecutive nodes of the *periodic* sequence
``d_1, ..., d_K, d_1, ..., d_K, ...``, namely ``exp[d_k, ..., d_K, d_1, ..., d_k]`` (divided
differences are symmetric in their nodes). Divided differences of ``exp`` on consecutive
windows are the entries of ``exp(T)`` for the (infinite, periodic) upper bidiagonal ``T`` with
the nodes on the diagonal and ones above it (Opitz 1964), so the kernel works on the table

    F[w, i] = exp[d_i, d_{i+1}, ..., d_{i+w}]    (indices mod K, i < K, w <= K)

and evaluates ``exp(T)`` by scaling and squaring (McCurdy, Ng & Parlett 1984):

1. Scale the nodes by ``2^-s`` so that they lie in ``[0, theta]`` and sum the Taylor series of
   ``exp(2^-s diag(d) + N)`` (``N`` the shift), keeping for each width only the terms that
   matter: the relative truncation error of every entry is at most
   ``sum_{r > R} theta^r / r! <= 2^-56``. ``theta`` is 1 to 16 (fewer squarings, less
   amplified rounding), chosen per row with ``s`` by a measured cost model.
2. Square ``s`` times: ``exp(2A)[i, i+w] = sum_m exp(A)[i, i+m] exp(A)[i+m, i+w]``, a
   convolution along the window, periodic in ``i``. The last squaring computes width K only.
3. ``sum_k exp[d, d_k] = exp[d]`` (the derivative of a common shift of the nodes), so the
   width-K entries give both ``log C`` and ``E[z_k] = F[K, k] / sum_j F[K, j]``.

The gradient therefore costs no reverse pass: the periodic table computes numerator and
denominator together, about 3x the arithmetic of the value alone.

Accuracy
--------
Every quantity is a sum of products of non-negative numbers: there is no cancellation, and
the result is accurate to rounding for equal, nearly equal and widely spread nodes alike
(measured against mpmath: at most a few 1e-15 relative on log C and about 3e-14 on the
gradient for spreads up to 1000, K = 2 to 40). What remains is the backward error of any
shift-and-square method, nodes perturbed by about ``eps * spread`` (rounding of
``d = max(eta) - eta`` and the ``2^s`` amplification of the squarings): log C has an absolute
error of about ``1e-16 * spread`` and a gradient entry a relative error of about
``1e-16 * spread`` times its sensitivity to the nodes (measured up to 2e-13 for a spread of
1e4 and 1e-12 for 1e6). The torch reference has the same floor, and its autograd gradient is
less accurate (up to 6e-13 for a spread of 1000).

Bookkeeping keeps every number in range without rounding: each squaring acts on the table
times ``2^(a w - e)`` (an exact power of two per width ``w``, applied to the product), which
brings its
largest entry to at most 1 (``e``, accumulated as a log-scale) and balances the widths (``a``,
a diagonal similarity ``T -> D T D^-1`` that multiplies width ``w`` by ``2^(a w)``). Both are
integers, so ``log C`` is recovered from them exactly. Entries below ``2^-500`` of the largest
are set to zero: they change no result (every window that matters contains the largest node;
only gradient entries below about 1e-150, from spreads beyond 1e150, become 0) and would
otherwise lead to slow subnormal arithmetic for widely spread nodes.

Speed
-----
Rows are processed one at a time; within a row the start index ``i`` runs over SIMD chunks of 8
lanes (AVX-512), written as 8-tuples that LLVM's SLP vectoriser packs into single vector
instructions. Numba leaves that vectoriser off, so the kernel is compiled with it switched on
(:func:`_compile`); that changes no result (no reassociation is allowed).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numba
import numpy as np
import torch
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic
from torch.autograd.function import once_differentiable

_TAYLOR_TOL = 2.0**-56  # relative truncation error of every Taylor entry
_FLUSH = 2.0**-500  # entries below this are set to zero (the largest entry is about 1)
_THETA_EXPONENTS = (0, 1, 2, 3, 4)  # candidate scaled spreads theta = 2^a, 1 to 16
_LN2 = math.log(2.0)
_V = 8  # SIMD lanes: the start index i runs over whole chunks of 8 (one AVX-512 vector)
_FM = {"contract"}  # allow fused multiply-add: one rounding instead of two, never worse
_U = np.uint64  # unsigned offsets: numba then skips negative-index wraparound, so the 8
# loads of a chunk are provably contiguous and the SLP vectoriser packs them

# 1 / t! correctly rounded, as mantissa * 2^exponent so that it never underflows.
_N_FACT = 400
_INV_FACT_M = np.empty(_N_FACT)
_INV_FACT_E = np.empty(_N_FACT, np.int64)
for _t in range(_N_FACT):
    _shift = math.factorial(_t).bit_length()
    _INV_FACT_M[_t], _e = math.frexp(float(Fraction(2**_shift, math.factorial(_t))))
    _INV_FACT_E[_t] = _e - _shift
del _t, _shift, _e


# ---- 8-lane helpers: LLVM inlines them and packs each into one vector instruction ----
@numba.njit(cache=True, nogil=True)
def _ld(a, o):
    return (a[o], a[o + _U(1)], a[o + _U(2)], a[o + _U(3)],
            a[o + _U(4)], a[o + _U(5)], a[o + _U(6)], a[o + _U(7)])  # fmt: skip


@numba.njit(cache=True, nogil=True)
def _st(a, o, v):
    a[o], a[o + _U(1)], a[o + _U(2)], a[o + _U(3)] = v[0], v[1], v[2], v[3]
    a[o + _U(4)], a[o + _U(5)], a[o + _U(6)], a[o + _U(7)] = v[4], v[5], v[6], v[7]


@numba.njit(cache=True, nogil=True, fastmath=_FM)
def _fma(a, b, c):
    """Return ``a * b + c``."""
    return (a[0] * b[0] + c[0], a[1] * b[1] + c[1], a[2] * b[2] + c[2], a[3] * b[3] + c[3],
            a[4] * b[4] + c[4], a[5] * b[5] + c[5], a[6] * b[6] + c[6], a[7] * b[7] + c[7])  # fmt: skip


@numba.njit(cache=True, nogil=True, fastmath=_FM)
def _axpy(a, s, c):
    """Return ``a * s + c``, ``s`` a scalar."""
    return (a[0] * s + c[0], a[1] * s + c[1], a[2] * s + c[2], a[3] * s + c[3],
            a[4] * s + c[4], a[5] * s + c[5], a[6] * s + c[6], a[7] * s + c[7])  # fmt: skip


@numba.njit(cache=True, nogil=True)
def _mul(a, b):
    return (a[0] * b[0], a[1] * b[1], a[2] * b[2], a[3] * b[3],
            a[4] * b[4], a[5] * b[5], a[6] * b[6], a[7] * b[7])  # fmt: skip


@numba.njit(cache=True, nogil=True)
def _scale(a, s):
    return (a[0] * s, a[1] * s, a[2] * s, a[3] * s, a[4] * s, a[5] * s, a[6] * s, a[7] * s)


@numba.njit(cache=True, nogil=True)
def _add(a, b):
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3],
            a[4] + b[4], a[5] + b[5], a[6] + b[6], a[7] + b[7])  # fmt: skip


@numba.njit(cache=True, nogil=True)
def _vmax(a, b):
    return (max(a[0], b[0]), max(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]),
            max(a[4], b[4]), max(a[5], b[5]), max(a[6], b[6]), max(a[7], b[7]))  # fmt: skip


@numba.njit(cache=True, nogil=True)
def _hmax(a):
    """Largest of the 8 lanes."""
    return max(max(max(a[0], a[1]), max(a[2], a[3])), max(max(a[4], a[5]), max(a[6], a[7])))


@numba.njit(cache=True, nogil=True)
def _flush(a):
    """Entries below ``_FLUSH`` become zero."""
    t = _FLUSH
    return (a[0] if a[0] >= t else 0.0, a[1] if a[1] >= t else 0.0,
            a[2] if a[2] >= t else 0.0, a[3] if a[3] >= t else 0.0,
            a[4] if a[4] >= t else 0.0, a[5] if a[5] >= t else 0.0,
            a[6] if a[6] >= t else 0.0, a[7] if a[7] >= t else 0.0)  # fmt: skip


# ---- scalar helpers ----
@intrinsic
def _bits(typingctx, x):
    """Return the IEEE bits of a float64 as int64 (a register move)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _from_bits(typingctx, b):
    """Return the float64 with the given IEEE bits."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@numba.njit(cache=True, nogil=True)
def _exponent(v):
    """``e`` with ``v`` in ``[2^(e-1), 2^e)`` (``frexp``'s exponent), for normal ``v > 0``."""
    return ((_bits(v) >> 52) & 2047) - 1022


@numba.njit(cache=True, nogil=True)
def _pow2(e):
    """``2^e`` exactly, ``e`` clamped to the normal range."""
    return _from_bits((min(max(e, -1022), 1023) + 1023) << 52)


@numba.njit(cache=True, nogil=True)
def _ceil_log2(x):
    """Smallest integer ``e`` with ``x <= 2^e`` (``x > 0``), exactly."""
    m, e = math.frexp(x)
    return e - 1 if m == 0.5 else e


@numba.njit(cache=True, nogil=True)
def _taylor_degree(theta):
    """Smallest ``R`` with ``sum_{r > R} theta^r / r! <= _TAYLOR_TOL``.

    The entry of width ``w`` is ``sum_r h_r(x) / (w + r)!`` with ``h_r`` the complete
    homogeneous polynomial of its ``w + 1`` nodes in ``[0, theta]``, and term ``r`` is at most
    ``theta^r / r!`` times term 0, so ``R`` terms beyond the width leave a relative error of
    at most ``_TAYLOR_TOL`` in every entry.
    """
    term = 1.0
    r = 0
    while True:
        r += 1
        term *= theta / r
        # The tail from r on is at most term / (1 - theta / (r + 1)) once r + 1 > theta.
        if r + 1 > theta and term <= _TAYLOR_TOL * (1.0 - theta / (r + 1)):
            return r - 1


# ---- the table: flat, width-major and skewed ----
# Entry (w, i) is stored at w * stride + kp + i - (K - w), lane j = i - (K - w) of row w. With
# this skew each recurrence finds the operand it depends on in the same lane: the Taylor term
# (w, i) needs (w-1, i+1), the same j; the square (w, i) needs (w-m, i+m), the same j, and
# (m, i), lane j - (w - m). Lanes 0 <= j < kp (K rounded up to whole chunks) are computed;
# lanes -K <= j < 0 repeat the period, (w, i) = (w, i + K). Width K has no skew.


@numba.njit(cache=True, nogil=True)
def _extend(f, k, kp, stride, width):
    """Repeat the period to the left: lane ``j - K`` = lane ``j`` for ``0 <= j < K``."""
    for w in range(width):
        base = _U(w * stride + kp)
        dst = base - _U(k)
        for j in range(k):
            f[dst + _U(j)] = f[base + _U(j)]


@numba.njit(cache=True, nogil=True, fastmath=_FM)
def _taylor_start(x, prev, c, w, sigma, coef):
    """Degree ``t = w`` of width ``w``, chunk at lane ``c``: ``(x, u_w, running sum)``."""
    xc = _ld(x, _U(c + sigma))  # the node d_i of lane c, i = c + K - w
    # u_w[w, i] = u_{w-1}[w-1, i+1], and u_0 = 1
    u = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0) if w == 0 else _ld(prev, _U(c))
    return xc, u, _scale(u, coef[0])


@numba.njit(cache=True, nogil=True, fastmath=_FM)
def _taylor_step(xc, u, acc, prev, o_prev, w, cr):
    """Next degree: ``u_t = x u_{t-1} + u_{t-1}[w-1, i+1]``; ``acc += u_t c_t``."""
    u = _mul(xc, u) if w == 0 else _fma(xc, u, _ld(prev, o_prev))
    return u, _axpy(u, cr, acc)


@numba.njit(cache=True, nogil=True, fastmath=_FM)
def _taylor(x, k, kp, stride, width, r_deg, coef, f, prev, cur, wmax):
    """``f[w] = 2^(g w) exp(diag(x) + N)`` (width ``w``) on the periodic chain, by Taylor series.

    Works width by width with the unnormalised terms ``u_t = t! term_t = (diag(x) + N)^t``,
    ``u_t[w, i] = x_i u_{t-1}[w, i] + u_{t-1}[w-1, i+1]`` (one multiply-add), and
    ``f[w] = sum_t u_t[w] coef[w, t - w]`` with ``coef[w, r] = 2^(g w) / (w + r)!``. Width ``w``
    keeps degrees ``w <= t <= w + r_deg`` (the terms above the truncation tolerance), in
    ``cur[t - w]``; ``prev`` holds width ``w - 1``. The term and the sum stay in registers,
    two chunks at a time (two independent dependency chains). ``wmax[w]`` gets the largest
    entry of width ``w``.
    """
    for w in range(width):
        sigma = k - w
        cw = coef[w]
        mx = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        for c in range(0, kp - _V, 2 * _V):
            d = c + _V
            xa, ua, aa = _taylor_start(x, prev, c, w, sigma, cw)
            xb, ub, ab = _taylor_start(x, prev, d, w, sigma, cw)
            _st(cur, _U(c), ua)
            _st(cur, _U(d), ub)
            for r in range(1, r_deg + 1):
                ua, aa = _taylor_step(xa, ua, aa, prev, _U(r * kp + c), w, cw[r])
                ub, ab = _taylor_step(xb, ub, ab, prev, _U(r * kp + d), w, cw[r])
                _st(cur, _U(r * kp + c), ua)
                _st(cur, _U(r * kp + d), ub)
            _st(f, _U(w * stride + kp + c), aa)
            _st(f, _U(w * stride + kp + d), ab)
            mx = _vmax(mx, _vmax(aa, ab))
        if kp % (2 * _V):  # an odd chunk left
            c = kp - _V
            xa, ua, aa = _taylor_start(x, prev, c, w, sigma, cw)
            _st(cur, _U(c), ua)
            for r in range(1, r_deg + 1):
                ua, aa = _taylor_step(xa, ua, aa, prev, _U(r * kp + c), w, cw[r])
                _st(cur, _U(r * kp + c), ua)
            _st(f, _U(w * stride + kp + c), aa)
            mx = _vmax(mx, aa)
        wmax[w] = _hmax(mx)
        prev, cur = cur, prev


@numba.njit(cache=True, nogil=True)
def _choose_scale(wmax):
    """Exponents ``(e, a)`` such that ``2^(a w - e)`` times width ``w`` is a balanced table.

    ``a`` balances the largest entries of widths 0 and K; ``e`` then brings the largest entry
    to at most 1. ``wmax[w]`` is the largest entry of width ``w``.
    """
    width = wmax.shape[0]
    a = int(math.floor((_exponent(wmax[0]) - _exponent(wmax[width - 1])) / (width - 1) + 0.5))
    e = -(1 << 30)
    for w in range(width):
        e = max(e, _exponent(wmax[w]) + a * w)
    return e, a


@numba.njit(cache=True, nogil=True, fastmath=_FM)
def _square(f, g, k, kp, stride, width, e, a, wmax):
    """``g = (S f) * (S f)`` on the periodic table, ``S = 2^(a w - e)`` on width ``w``.

    ``g[w, i] = sum_m f[m, i] f[w-m, i+m]`` times ``2^(a w - 2 e)``: the scaling of the
    operands is applied to the result, where it is the same for every ``m`` (and exact, a
    power of two). ``f`` has its largest entry at most ``K + 1`` and none below ``_FLUSH``, so
    nothing overflows or becomes subnormal. Entries of ``g`` below ``_FLUSH`` are set to zero;
    ``wmax[w]`` gets the largest entry of width ``w`` of ``g``.
    """
    zero = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    for w in range(width):
        scale = _pow2(a * w - 2 * e)
        mx = zero
        for c in range(kp, stride - _V, 2 * _V):
            # two chunks per pass: two independent dependency chains
            d = c + _V
            acc_c = zero
            acc_d = zero
            for m in range(w + 1):
                o1 = m * stride - w + m
                o2 = (w - m) * stride
                acc_c = _fma(_ld(f, _U(o1 + c)), _ld(f, _U(o2 + c)), acc_c)
                acc_d = _fma(_ld(f, _U(o1 + d)), _ld(f, _U(o2 + d)), acc_d)
            acc_c = _flush(_scale(acc_c, scale))
            acc_d = _flush(_scale(acc_d, scale))
            _st(g, _U(w * stride + c), acc_c)
            _st(g, _U(w * stride + d), acc_d)
            mx = _vmax(mx, _vmax(acc_c, acc_d))
        if kp % (2 * _V):
            # an odd chunk left: two chains over even and odd m instead
            c = stride - _V
            even = zero
            odd = zero
            for m in range(0, w, 2):
                even = _fma(_ld(f, _U(m * stride - w + m + c)), _ld(f, _U((w - m) * stride + c)), even)
                odd = _fma(_ld(f, _U((m + 1) * stride - w + m + 1 + c)), _ld(f, _U((w - m - 1) * stride + c)), odd)
            if w % 2 == 0:
                even = _fma(_ld(f, _U(w * stride + c)), _ld(f, _U(c)), even)
            acc = _flush(_scale(_add(even, odd), scale))
            _st(g, _U(w * stride + c), acc)
            mx = _vmax(mx, acc)
        wmax[w] = _hmax(mx)
    _extend(g, k, kp, stride, width)


@numba.njit(cache=True, nogil=True, fastmath=_FM)
def _square_top(f, kp, stride, width, out):
    """Width-K entries of ``f * f`` only, ``out[i] = sum_m f[m, i] f[K-m, i+m]``, unscaled."""
    top = width - 1
    zero = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    for c in range(kp, stride, _V):
        acc = zero
        for m in range(top + 1):
            acc = _fma(_ld(f, _U(m * stride + c - top + m)), _ld(f, _U((top - m) * stride + c)), acc)
        _st(out, _U(c - kp), acc)


@numba.njit(cache=True, nogil=True)
def _kernel(eta, logc, grad):
    """Fill ``logc`` (n,) and ``grad`` (n, K) for the rows of ``eta`` (n, K), one row at a time."""
    n, k = eta.shape
    width = k + 1
    kp = (k + _V - 1) // _V * _V
    stride = 2 * kp  # kp lanes and the periodic extension to their left
    r_max = _taylor_degree(2.0 ** _THETA_EXPONENTS[-1])

    # Work arrays, reused by every row.
    f = np.zeros(width * stride)
    p = np.zeros(width * stride)
    prev = np.zeros((r_max + 1) * kp)  # Taylor terms of one width, kp lanes per degree
    cur = np.zeros((r_max + 1) * kp)
    x = np.zeros(stride)
    top_entries = np.zeros(kp)
    wmax = np.zeros(width)

    # Taylor coefficients 2^(g w) / (w + r)!, exact products of correctly rounded 1 / t!:
    # the factor 2^(g w) keeps 2^(g w) / w! (the size of width w) in range for large K.
    g = max(0, _ceil_log2(k + 1.0) - 2)
    coef = np.empty((width, r_max + 1))
    for w in range(width):
        for r in range(r_max + 1):
            coef[w, r] = _INV_FACT_M[w + r] * _pow2(_INV_FACT_E[w + r] + g * w)

    # Cost model (measured): a squaring costs about as much as 0.5 (K + 2) + 4 Taylor
    # degrees, each degree one multiply-add per (width, lane).
    n_cand = len(_THETA_EXPONENTS)
    cand_exp = np.empty(n_cand, np.int64)
    cand_cost = np.empty(n_cand)
    for c in range(n_cand):
        cand_exp[c] = _THETA_EXPONENTS[c]
        cand_cost[c] = _taylor_degree(2.0 ** _THETA_EXPONENTS[c]) + 1.0
    square_cost = 0.5 * (k + 2) + 4.0

    for row in range(n):
        e = eta[row]
        top = -np.inf
        bot = np.inf
        for i in range(k):
            top = max(top, e[i])
            bot = min(bot, e[i])
        spread = top - bot
        if not math.isfinite(spread):  # an inf or nan entry, or a spread beyond float64
            logc[row] = np.nan
            grad[row, :] = np.nan
            continue

        # s squarings: the cheapest candidate theta = 2^a with spread * 2^-s <= theta.
        s = 0
        if spread > 0.0:
            lc = _ceil_log2(spread)
            best = np.inf
            for c in range(n_cand):
                sc = max(0, lc - cand_exp[c])
                cost = cand_cost[c] + sc * square_cost
                if cost < best:
                    best = cost
                    s = sc
        h = math.ldexp(1.0, -s)  # may be subnormal for spreads near the float64 limit
        j = 0
        for i in range(stride):  # the nodes, repeated with period K
            x[i] = (top - e[j]) * h  # d = top - eta >= 0 rounds once; scaling by h is exact
            j = j + 1 if j + 1 < k else 0
        r_deg = min(_taylor_degree(spread * h), r_max)  # spread * h <= 2^a: never clipped
        _taylor(x, k, kp, stride, width, r_deg, coef, f, prev, cur, wmax)

        # True divided differences = stored * 2^(log2s - gexp w), with exp(2^-s (diag(d) +
        # 2^s N)) contributing 2^(s w) and the Taylor coefficients 2^(g w). Floats: doubling
        # is exact, and no integer can overflow for absurd spreads.
        log2s = 0.0
        gexp = float(s + g)
        if s == 0:
            for i in range(k):
                top_entries[i] = f[k * stride + kp + i]
        else:
            _extend(f, k, kp, stride, width)
            for sq in range(s):
                es, a = _choose_scale(wmax)  # 2^(a w - es) times the table is balanced
                log2s = 2.0 * (log2s + es)
                gexp += a
                if sq < s - 1:
                    _square(f, p, k, kp, stride, width, es, a, wmax)
                    f, p = p, f
                else:
                    _square_top(f, kp, stride, width, top_entries)
                    log2s += a * k - 2 * es  # the scaling _square_top leaves out

        # sum_k exp[d, d_k] = exp[d] gives the value, and the shares give the gradient.
        total = 0.0
        for i in range(k):
            total += top_entries[i]
        logc[row] = -top + math.log(total) + (log2s - gexp * k) * _LN2
        for i in range(k):
            grad[row, i] = -top_entries[i] / total


_K_MAX = _N_FACT - _taylor_degree(2.0 ** _THETA_EXPONENTS[-1]) - 1  # the 1/t! table's reach
_KERNEL_SIGNATURE = (numba.float64[:, ::1], numba.float64[::1], numba.float64[:, ::1])
_compiled = False


def _compile() -> None:
    """Compile (or load from numba's cache) the kernel with LLVM's SLP vectoriser on.

    Numba leaves SLP vectorisation off by default; the 8-lane helpers need it to become single
    vector instructions (about 2x faster overall). It changes no result. The global flag is
    restored at once, so other numba code is unaffected.
    """
    global _compiled
    old = numba.config.SLP_VECTORIZE
    numba.config.SLP_VECTORIZE = 1
    try:
        _kernel.compile(_KERNEL_SIGNATURE)
    finally:
        numba.config.SLP_VECTORIZE = old
    _compiled = True


def log_simplex_integral_grad(eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``log C(eta)`` and its gradient for every row, accurate to rounding.

    See the module docstring for the method and its accuracy (absolute error of ``logc`` about
    ``1e-16 * spread``, with ``spread = max(eta) - min(eta)`` of the row).

    Parameters
    ----------
    eta
        (n, K) real array, 1 <= K <= 328 (converted to C-contiguous float64).

    Returns
    -------
    logc
        (n,) ``log`` of the integral of ``exp(-eta . z)`` over the simplex (Lebesgue measure
        on the first K - 1 coordinates).
    grad
        (n, K) ``d logc / d eta = -E[z]`` under the density proportional to ``exp(-eta . z)``
        on the simplex; every row sums to -1. Rows with an infinite or NaN entry give NaN.

    Examples
    --------
    >>> import math, numpy as np
    >>> logc, grad = log_simplex_integral_grad(np.zeros((1, 3)))
    >>> bool(np.isclose(logc[0], -math.log(2))), bool(np.allclose(grad, -1 / 3))
    (True, True)
    """
    eta = np.require(eta, np.float64, ["C_CONTIGUOUS", "WRITEABLE"])  # the compiled layout
    if eta.ndim != 2 or not 1 <= eta.shape[1] <= _K_MAX:
        raise ValueError(f"`eta` must be (n, K) with 1 <= K <= {_K_MAX}, got shape {eta.shape}.")
    logc = np.empty(eta.shape[0])
    grad = np.empty(eta.shape)
    if not _compiled:
        _compile()
    _kernel(eta, logc, grad)
    return logc, grad


class LogSimplexIntegral(torch.autograd.Function):
    """``log C(eta)`` as an autograd function: the numba kernel forward, its gradient saved.

    The kernel runs on CPU in float64; the result comes back in the input's dtype and device.
    Only first derivatives are available (backward is not itself differentiable).
    """

    @staticmethod
    def forward(ctx, eta: torch.Tensor) -> torch.Tensor:
        logc, grad = log_simplex_integral_grad(eta.detach().to("cpu", torch.float64).numpy())
        ctx.save_for_backward(torch.from_numpy(grad).to(eta.device, eta.dtype))
        return torch.from_numpy(logc).to(eta.device, eta.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        (grad,) = ctx.saved_tensors
        return grad_output[:, None] * grad
