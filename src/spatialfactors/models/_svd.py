"""Batched randomised SVD of column-weighted (bootstrap) replicates of a data operator."""

from __future__ import annotations

import torch


def _stack_right(h: torch.Tensor) -> torch.Tensor:
    """(R, K, g) -> (g, R*K), the right factor of one product ``X @ [H_1^T ... H_R^T]``."""
    r, k, g = h.shape
    return h.permute(2, 0, 1).reshape(g, r * k)


def _x_times(op, h: torch.Tensor) -> torch.Tensor:
    """``X @ H_b^T`` for every replicate: (R, K, g) -> (R, n, K)."""
    r, k, _ = h.shape
    return op.matmul(_stack_right(h)).reshape(-1, r, k).permute(1, 0, 2)


def _times_x(op, w: torch.Tensor) -> torch.Tensor:
    """``W_b^T @ X`` for every replicate: (R, n, K) -> (R, K, g)."""
    r, n, k = w.shape
    return op.rmatmul(w.permute(0, 2, 1).reshape(r * k, n)).reshape(r, k, -1)


def weighted_svd(
    op,
    sqrt_w: torch.Tensor,
    rank: int,
    *,
    mean: torch.Tensor | None = None,
    n_oversamples: int = 10,
    n_power_iter: int = 4,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top singular triplets of ``Y_b = (X - m_b 1^T) diag(sqrt_w_b)`` for a batch of column weightings.

    Randomised SVD (Halko et al. 2011) with QR re-orthonormalisation; the random test matrix
    comes from ``seed`` only, so the result is deterministic.

    Parameters
    ----------
    op
        Data operator.
    sqrt_w
        (R, n_vars) square roots of the column weights.
    rank
        Number of singular triplets.
    mean
        (R, n_obs) vectors ``m_b`` subtracted from every column (PCA centring), or None.
    n_oversamples, n_power_iter
        Randomised SVD parameters.
    seed
        Seed of the test matrix.

    Returns
    -------
    ``U`` (R, n_obs, rank), ``S`` (R, rank), ``Vt`` (R, rank, n_vars).
    """
    r, g = sqrt_w.shape
    p = min(rank + n_oversamples, g, op.shape[0])
    gen = torch.Generator(device="cpu").manual_seed(seed)
    omega = torch.randn(g, p, generator=gen, dtype=op.dtype).to(op.device)
    sw = sqrt_w.to(op.dtype)
    m = None if mean is None else mean.to(op.dtype)

    def y_times(v):  # Y_b @ v_b for v: (R, g, p); all replicates in one product with X
        out = _x_times(op, (sw[:, :, None] * v).transpose(1, 2))
        if m is not None:
            out = out - m[:, :, None] * (sw[:, None, :] @ v)
        return out

    def times_y(zz):  # Z_b^T Y_b for zz: (R, n, p)
        out = _times_x(op, zz)
        if m is not None:
            out = out - (zz.transpose(1, 2) @ m[:, :, None])
        return out * sw[:, None, :]

    z = torch.linalg.qr(y_times(omega.expand(r, g, p))).Q  # (R, n, p)
    for _ in range(n_power_iter):
        y = torch.linalg.qr(times_y(z).transpose(1, 2)).Q  # (R, g, p)
        z = torch.linalg.qr(y_times(y)).Q
    b = times_y(z)  # (R, p, g)
    u_small, s, vt = torch.linalg.svd(b, full_matrices=False)
    u = z @ u_small
    return u[:, :, :rank], s[:, :rank], vt[:, :rank, :]
