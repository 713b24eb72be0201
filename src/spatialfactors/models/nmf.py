"""Batched Frobenius NMF, ``X ~ W H`` with ``W, H >= 0``, for many bootstrap replicates at once.

The solver is scikit-learn's coordinate-descent NMF (``solver="cd"``, HALS column updates,
no shuffling, no regularisation) with its stopping rule: iterations stop when the summed
absolute projected gradient of a sweep falls below ``tol`` times that of the first sweep.
Initialisation is NNDSVD (``"nndsvd"``) or NNDSVD with zeros filled by the data mean
(``"nndsvda"``, scikit-learn's default), from a randomised SVD with a fixed seed.

Replicates that resample the columns (genes) with replacement are solved without copying the
data: resampling column ``j`` ``c_j`` times is the same problem as weighting it by ``c_j``
(duplicated columns have identical NNDSVD starts and stay identical under the updates), so a
replicate is a vector of column weights, and the products with ``X`` of all replicates in a
batch are one matrix product.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import torch

from ._operator import CompressedOperator, DataOperator, to_tensor
from ._svd import weighted_svd

_INITS = ("nndsvd", "nndsvda")


@dataclass
class NMFResult:
    """Factors of a batch of replicates.

    Attributes
    ----------
    W
        Dictionaries, (n_replicates, n_obs, K).
    H
        Coefficients, (n_replicates, K, n_vars); columns with weight zero are zero.
    n_iter
        Iterations run per replicate.
    reconstruction_err
        ``||X_b - W H_b||_F`` per replicate (scikit-learn's ``reconstruction_err_``), on the
        exact data.
    """

    W: np.ndarray
    H: np.ndarray
    n_iter: np.ndarray
    reconstruction_err: np.ndarray


#: Data whose largest entry lies in [2**-SAFE_EXPONENT, 2**SAFE_EXPONENT] are factorised as they are.
SAFE_EXPONENT = 32


def scale_exponent(max_value: float) -> int:
    """Even power of two ``e`` such that ``X * 2**-e`` is safe to factorise in float32, 0 when ``X`` already is.

    NMF is scale-equivariant: the factors of ``X * 2**-e`` times ``2**(e/2)`` each are the factors of
    ``X``. Data with entries beyond ``2**32`` (or all below ``2**-32``) have sums of squares that
    overflow (or underflow) in float32, and would come out as NaN; scaling by a power of two is
    exact, so it changes nothing else.

    Parameters
    ----------
    max_value
        Largest absolute entry of ``X``.

    Returns
    -------
    The even exponent ``e`` (0: no scaling).

    Examples
    --------
    >>> from spatialfactors.models.nmf import scale_exponent
    >>> scale_exponent(1e3), scale_exponent(1e26), scale_exponent(1e-26) < 0
    (0, 88, True)
    """
    if not np.isfinite(max_value) or max_value <= 0:
        return 0
    exponent = int(np.frexp(max_value)[1])
    if -SAFE_EXPONENT <= exponent <= SAFE_EXPONENT:
        return 0
    return 2 * int(round(exponent / 2))


def nndsvd(
    op, weights: torch.Tensor, n_components: int, *, init: str = "nndsvda", eps: float = 1e-6, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """NNDSVD start (Boutsidis & Gallopoulos 2008), as scikit-learn, for column-weighted replicates.

    Parameters
    ----------
    op
        Data operator.
    weights
        (R, n_vars) column multiplicities.
    n_components
        K.
    init
        ``"nndsvd"`` or ``"nndsvda"`` (zeros replaced by the mean of the replicate's data).
    eps
        Entries below ``eps`` are set to zero, as scikit-learn.
    seed
        Seed of the randomised SVD.

    Returns
    -------
    ``W`` (R, n_obs, K) and ``H`` (R, K, n_vars), per copy of each column.
    """
    w64 = weights.to(torch.float64)
    sqrt_w = torch.sqrt(w64)
    u, s, vt = weighted_svd(op, sqrt_w.to(op.device), n_components, seed=seed)
    # Singular vectors of the resampled matrix: U is shared; a copy of column j has the right
    # singular vector entries vt[:, j] / sqrt(w_j), and norms over all copies equal norms of vt.
    inv = torch.where(sqrt_w > 0, 1.0 / sqrt_w.clamp_min(1e-300), 0.0).to(op.dtype)
    r = weights.shape[0]
    n = op.shape[0]
    w_init = torch.zeros(r, n, n_components, dtype=op.dtype, device=op.device)
    h_init = torch.zeros(r, n_components, op.shape[1], dtype=op.dtype, device=op.device)
    w_init[:, :, 0] = torch.sqrt(s[:, :1]) * u[:, :, 0].abs()
    h_init[:, 0, :] = torch.sqrt(s[:, :1]) * vt[:, 0, :].abs() * inv
    for j in range(1, n_components):
        x, y = u[:, :, j], vt[:, j, :]
        xp, xn, yp, yn = x.clamp_min(0), (-x).clamp_min(0), y.clamp_min(0), (-y).clamp_min(0)
        xpn, xnn = torch.linalg.norm(xp, dim=1), torch.linalg.norm(xn, dim=1)
        ypn, ynn = torch.linalg.norm(yp, dim=1), torch.linalg.norm(yn, dim=1)
        mp, mn = xpn * ypn, xnn * ynn
        pos = (mp > mn)[:, None]
        uu = torch.where(pos, xp / xpn[:, None], xn / xnn[:, None])
        vv = torch.where(pos, yp / ypn[:, None], yn / ynn[:, None])
        lbd = torch.sqrt(s[:, j] * torch.where(pos[:, 0], mp, mn))[:, None]
        w_init[:, :, j] = torch.nan_to_num(lbd * uu)
        h_init[:, j, :] = torch.nan_to_num(lbd * vv) * inv
    w_init[w_init < eps] = 0
    h_init[h_init < eps] = 0
    if init == "nndsvda":
        # Mean of the resampled data matrix.
        avg = (weights.to(torch.float64) @ op.col_sums.to(torch.float64)) / (n * weights.sum(1).to(torch.float64))
        avg = avg.to(op.dtype)
        w_init = torch.where(w_init == 0, avg[:, None, None], w_init)
        h_init = torch.where(h_init == 0, avg[:, None, None], h_init)
    h_init = h_init * (weights > 0).to(op.dtype)[:, None, :]
    return w_init, h_init


@numba.njit(cache=True, nogil=True)
def _hals_rows(a, gram, cross, weight, violation):  # pragma: no cover - compiled
    """Coordinate descent over the K rows of ``a`` for every replicate, in place (CPU kernel).

    The entries of a row are independent given the other rows, so the K sequential row
    updates are done chunk by chunk of entries: a chunk of all K rows stays in cache, and
    the inner loops run over contiguous slices (SIMD). Same updates as the torch path.
    """
    n_rep, k, m = a.shape
    chunk = 1024  # entries per block: K rows of it stay in L2 (measured best of 16..8192 at K = 11, 30)
    zero = a.dtype.type(0)
    buf = np.empty(chunk, dtype=a.dtype)
    for r in range(n_rep):
        total = 0.0
        for c0 in range(0, m, chunk):
            c1 = min(c0 + chunk, m)
            n = c1 - c0
            w = weight[r, c0:c1]
            for t in range(k):
                # grad = gram[t] a - cross[t]; slices (not offsets) let LLVM vectorise the loops.
                ct = cross[r, t, c0:c1]
                for i in range(n):
                    buf[i] = -ct[i]
                for s in range(k):
                    g_ts = gram[r, t, s]
                    a_s = a[r, s, c0:c1]
                    for i in range(n):
                        buf[i] += g_ts * a_s[i]
                hess = gram[r, t, t]
                a_t = a[r, t, c0:c1]
                for i in range(n):
                    grad = buf[i]
                    at = a_t[i]
                    pg = grad if at > 0 else min(grad, zero)
                    total += abs(pg) * w[i]
                    if hess != 0:
                        a_t[i] = max(at - grad / hess, zero)
        violation[r] = total


def _hals_sweep(
    a: torch.Tensor, gram: torch.Tensor, cross: torch.Tensor, col_weight: torch.Tensor | None
) -> torch.Tensor:
    """One coordinate-descent sweep over the K rows of ``a`` (in place); returns the violation.

    Minimises ``0.5 tr(a^T gram a) - tr(a^T cross)`` one row (component) at a time, exactly
    scikit-learn's ``_update_cdnmf_fast`` without shuffling, vectorised over the entries of
    a row and over replicates. ``a``: (R, K, m), ``gram``: (R, K, K), ``cross``: (R, K, m),
    ``col_weight``: (R, m) or None. On the CPU a compiled kernel keeps a chunk of all rows
    in cache (the update is memory-bound otherwise); on other devices torch does it.
    """
    if a.device.type == "cpu":
        weight = torch.ones_like(a[:, 0, :]) if col_weight is None else col_weight.to(a.dtype)
        violation = np.zeros(a.shape[0])
        _hals_rows(a.numpy(), gram.contiguous().numpy(), cross.contiguous().numpy(), weight.numpy(), violation)
        return torch.from_numpy(violation)
    violation = torch.zeros(a.shape[0], dtype=torch.float64, device=a.device)
    hess = torch.diagonal(gram, dim1=1, dim2=2)[:, :, None]  # (R, K, 1)
    positive = bool((hess > 0).all())
    for t in range(a.shape[1]):
        at = a[:, t, :]
        # grad = gram[t] a - cross[t], as one fused product.
        grad = torch.baddbmm(cross[:, t : t + 1, :], gram[:, t : t + 1, :], a, beta=-1)[:, 0, :]
        # Projected gradient: grad where a > 0, min(grad, 0) where a = 0 (a is never negative).
        pg = torch.where(at > 0, grad, grad.clamp_max(0)).abs_()
        if col_weight is not None:
            pg.mul_(col_weight)
        violation += pg.sum(1, dtype=torch.float64)
        new = torch.addcdiv(at, grad, hess[:, t], value=-1).clamp_min_(0)
        a[:, t, :] = new if positive else torch.where(hess[:, t] != 0, new, at)
    return violation


def _objective(op, wt: torch.Tensor, h: torch.Tensor, weights: torch.Tensor, *, exact: bool = False) -> torch.Tensor:
    """``||X_b - W H_b||_F^2`` from products only (no n_obs x n_vars reconstruction); ``wt`` is W^T.

    ``exact``: every product in float64. ``||X||^2 - 2 <X, WH> + ||WH||^2`` cancels when the fit is
    good, so float32 products would give the reported error to ~1e-4 only.
    """
    if exact:
        wt, h = wt.to(torch.float64), h.to(torch.float64)
        wtx = op.rmatmul_float64(wt.reshape(-1, wt.shape[2])).reshape(h.shape)
    else:
        wtx = op.rmatmul(wt.reshape(-1, wt.shape[2])).reshape(h.shape)
    wf = weights.to(wt.dtype)
    cross = (wtx * h * wf[:, None, :]).sum((1, 2), dtype=torch.float64)
    wtw = wt @ wt.transpose(1, 2)
    hch = (h * wf[:, None, :]) @ h.transpose(1, 2)
    quad = (wtw * hch).sum((1, 2), dtype=torch.float64)
    norm = weights.to(torch.float64) @ op.col_sq_norms.to(torch.float64)
    return (norm - 2 * cross + quad).clamp_min(0)


def replicate_bytes(n_obs: int, n_vars: int, n_components: int, itemsize: int) -> int:
    """Working memory of one replicate in a batch: W, H and their updates."""
    return 4 * (n_obs + n_vars) * n_components * itemsize


def default_batch_size(n_obs: int, n_vars: int, n_components: int, n_replicates: int, itemsize: int) -> int:
    """Replicates to solve together: their factors and products take about half the size of X (>= 256 MB)."""
    budget = max(256 * 2**20, n_obs * n_vars * itemsize // 2)
    return int(max(1, min(n_replicates, budget // replicate_bytes(n_obs, n_vars, n_components, itemsize))))


def _fit_batch(op, weights, w, h, *, tol, max_iter):
    """Coordinate descent for a batch with per-replicate stopping; returns (W^T, H, n_iter).

    ``w`` is given and returned transposed, (R, K, n_obs), so W and H share one layout.
    """
    r, k, n = w.shape
    n_iter = np.zeros(r, dtype=np.int64)
    active = torch.arange(r)
    v_init = torch.zeros(r, dtype=torch.float64)
    out_w, out_h = w.clone(), h.clone()
    wa, ha, ca = w.contiguous(), h.contiguous(), weights.to(w.dtype).to(w.device)
    # The largest product is written into one buffer: a fresh (R K, n_obs) array every
    # iteration costs as much as the product itself (page faults on new memory).
    cross_buf = torch.empty(r * k * n, dtype=w.dtype, device=w.device)
    for it in range(1, max_iter + 1):
        ra = wa.shape[0]
        # W step: gram = H C H^T, cross = H C X^T (all replicates in one product with X).
        hc = ha * ca[:, None, :]
        cross = op.times_xt(hc.reshape(ra * k, -1), out=cross_buf[: ra * k * n].view(ra * k, n)).view(ra, k, n)
        violation = _hals_sweep(wa, hc @ ha.transpose(1, 2), cross, None)
        # H step: gram = W^T W, cross = W^T X; copies of a column count c_j times.
        cross = op.rmatmul(wa.reshape(ra * k, n)).reshape(ra, k, -1)
        violation += _hals_sweep(ha, wa @ wa.transpose(1, 2), cross, ca)
        violation = violation.cpu()
        if it == 1:
            v_init[active] = violation
        done = (v_init[active] == 0) | (violation / v_init[active].clamp_min(1e-300) <= tol) | (it == max_iter)
        if done.any():
            idx = active[done].to(w.device)
            dev_done = done.to(w.device)
            out_w[idx], out_h[idx] = wa[dev_done], ha[dev_done]
            n_iter[active[done].numpy()] = it
            active = active[~done]
            if len(active) == 0:
                break
            keep = ~dev_done
            wa, ha, ca = wa[keep].contiguous(), ha[keep].contiguous(), ca[keep]
    return out_w, out_h, n_iter


def nmf(
    X,
    n_components: int,
    *,
    weights: np.ndarray | None = None,
    init: str = "nndsvda",
    tol: float = 1e-4,
    max_iter: int = 200,
    compress: int | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    batch_size: int | None = None,
    seed: int = 0,
    operator: DataOperator | CompressedOperator | None = None,
) -> NMFResult:
    """Frobenius NMF of ``X`` (n_obs x n_vars), or of many column-resampled replicates at once.

    Parameters
    ----------
    X
        Non-negative dense array or scipy sparse matrix. Ignored when ``operator`` is given.
    n_components
        Number of components K.
    weights
        (n_replicates, n_vars) non-negative integer multiplicity of each column in each
        replicate (a bootstrap resample of the columns). ``None`` fits ``X`` itself.
    init
        ``"nndsvda"`` (scikit-learn's default) or ``"nndsvd"``.
    tol, max_iter
        Stopping rule of scikit-learn's coordinate-descent solver.
    compress
        Rank of the randomised compression ``X ~ Q B`` used for all products with ``X``;
        ``None`` works on ``X`` itself. The reported error is always on the exact data.
    dtype
        ``"float32"`` or ``"float64"``.
    device
        Torch device, e.g. ``"cuda"``; checked to exist when no ``operator`` is given.
    batch_size
        Replicates solved together; by default as many as fit in about half the size of ``X``.
    seed
        Seed of the randomised SVD and compression (the start is otherwise fixed).
    operator
        A prepared data operator (reuse one compression for many calls).

    Returns
    -------
    The factors; with ``weights=None`` the leading replicate axis has length one.

    Examples
    --------
    >>> import numpy as np
    >>> from spatialfactors.models.nmf import nmf
    >>> rng = np.random.default_rng(0)
    >>> X = rng.random((50, 4)) @ rng.random((4, 30))
    >>> res = nmf(X, 4, dtype="float64")
    >>> res.W.shape, res.H.shape, bool(res.reconstruction_err[0] < 1e-2 * np.linalg.norm(X))
    ((1, 50, 4), (1, 4, 30), True)
    """
    if init not in _INITS:
        raise ValueError(f"`init` must be one of {_INITS}, got {init!r}.")
    exact = operator if isinstance(operator, DataOperator) else None
    if operator is None:
        from spatialfactors._validation import _assert_device

        exact = DataOperator(X, dtype=dtype, device=_assert_device(device))
        operator = exact.compress(compress, seed=seed) if compress else exact
    n, g = operator.shape
    if weights is None:
        weights = np.ones((1, g), dtype=np.int64)
    weights_t = to_tensor(weights, torch.float64, operator.device)  # may be a worker's read-only memory map
    r = weights_t.shape[0]
    if batch_size is None:
        batch_size = default_batch_size(n, g, n_components, r, torch.finfo(operator.dtype).bits // 8)
    ws, hs, its, errs = [], [], [], []
    for start in range(0, r, batch_size):
        wb = weights_t[start : start + batch_size]
        w0, h0 = nndsvd(operator, wb, n_components, init=init, seed=seed)
        wt, h, n_iter = _fit_batch(operator, wb, w0.transpose(1, 2).contiguous(), h0, tol=tol, max_iter=max_iter)
        h = h * (wb > 0).to(h.dtype)[:, None, :]
        err_op = exact if exact is not None else operator
        err_exact = isinstance(err_op, DataOperator) and err_op.dtype != torch.float64
        errs.append(torch.sqrt(_objective(err_op, wt, h, wb, exact=err_exact)).cpu().numpy())
        ws.append(wt.transpose(1, 2).contiguous().cpu().numpy())
        hs.append(h.cpu().numpy())
        its.append(n_iter)
    return NMFResult(np.concatenate(ws), np.concatenate(hs), np.concatenate(its), np.concatenate(errs))
