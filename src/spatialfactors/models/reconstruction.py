"""Statistics of reconstructed profiles ``W h_j (+ offset)`` without forming the reconstruction."""

from __future__ import annotations

import numpy as np
import torch


def reconstruction_pcc(op, w: np.ndarray, h: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray:
    """Pearson correlation between every column ``x_j`` of X and its reconstruction ``W h_j + offset``.

    Computed from ``W^T X``, ``W^T W`` and column sums and norms (the paper's per-gene
    reconstruction accuracy, Fig. 1F); the n_obs x n_vars reconstruction is never formed.

    Parameters
    ----------
    op
        Data operator of ``X`` (n_obs x n_vars).
    w
        Dictionary (n_obs x K).
    h
        Coefficients (K x n_vars).
    offset
        A vector over obs added to every reconstruction (the PCA mean), or None.

    Returns
    -------
    PCC per column (0 where either side is constant).

    Examples
    --------
    >>> import numpy as np
    >>> from spatialfactors.models._operator import DataOperator
    >>> from spatialfactors.models.reconstruction import reconstruction_pcc
    >>> rng = np.random.default_rng(0)
    >>> w, h = rng.random((40, 3)), rng.random((3, 5))
    >>> X = w @ h + 0.1 * rng.random((40, 5))
    >>> direct = [np.corrcoef(X[:, j], (w @ h)[:, j])[0, 1] for j in range(5)]
    >>> bool(np.allclose(reconstruction_pcc(DataOperator(X, dtype="float64"), w, h), direct))
    True
    """
    n = op.shape[0]
    wt = torch.as_tensor(np.asarray(w), dtype=op.dtype, device=op.device)
    ht = torch.as_tensor(np.asarray(h), dtype=torch.float64, device=op.device)
    wtx = op.rmatmul(wt.T.contiguous()).double()  # (K, g)
    gram = (wt.T @ wt).double()
    wsum = wt.double().sum(0)
    sx, sxx = op.col_sums.double(), op.col_sq_norms.double()
    sr = wsum @ ht
    srr = ((gram @ ht) * ht).sum(0)
    sxr = (wtx * ht).sum(0)
    if offset is not None:
        mu = torch.as_tensor(np.asarray(offset), dtype=op.dtype, device=op.device)
        mux = op.rmatmul(mu[None]).double()[0]
        mud = mu.double()
        sr = sr + mud.sum()
        srr = srr + 2 * ((mud @ wt.double()) @ ht) + mud @ mud
        sxr = sxr + mux
    cov = sxr - sx * sr / n
    var_x = (sxx - sx**2 / n).clamp_min(0)
    var_r = (srr - sr**2 / n).clamp_min(0)
    denom = torch.sqrt(var_x * var_r)
    pcc = torch.where(denom > 0, cov / denom.clamp_min(1e-300), torch.zeros_like(cov))
    return pcc.clamp(-1, 1).cpu().numpy()
