"""PCA comparator on the staNMF bootstrap protocol: principal patterns over obs.

As in the staNMF paper's comparison (Fig. 1B), genes are the samples and obs (voxels or
cells) the features: each replicate's data are its resampled genes, centred per obs, and its
dictionary is the top-K principal axes, vectors over obs. Each axis's sign is fixed so that
its entry of largest magnitude is positive.
"""

from __future__ import annotations

import numpy as np
import torch

from ._operator import to_tensor
from ._svd import weighted_svd
from .reconstruction import reconstruction_pcc


def weighted_mean(op, weights: torch.Tensor) -> torch.Tensor:
    """Mean column of each replicate, ``X c_b / sum(c_b)``: (R, n_obs)."""
    w = weights.to(op.dtype)
    return (op.matmul(w.T) / w.sum(1)).T


def pca_dictionaries(op, weights, n_components: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Principal axes over obs for column-weighted (bootstrap) replicates.

    Parameters
    ----------
    op
        Data operator of ``X`` (n_obs x n_vars).
    weights
        (R, n_vars) column multiplicities.
    n_components
        K.
    seed
        Seed of the randomised SVD.

    Returns
    -------
    Axes (R, n_obs, K) with unit-norm columns, singular values (R, K) and means (R, n_obs).

    Examples
    --------
    >>> import numpy as np
    >>> from spatialfactors.models._operator import DataOperator
    >>> from spatialfactors.models.pca import pca_dictionaries
    >>> X = np.random.default_rng(0).random((30, 20))
    >>> axes, s, mean = pca_dictionaries(DataOperator(X, dtype="float64"), np.ones((1, 20)), 3)
    >>> axes.shape, bool(np.allclose(axes[0].T @ axes[0], np.eye(3)))
    ((1, 30, 3), True)
    """
    w = to_tensor(weights, torch.float64, op.device)  # may be a worker's read-only memory map
    mean = weighted_mean(op, w)
    u, s, _ = weighted_svd(op, torch.sqrt(w), n_components, mean=mean, seed=seed)
    idx = u.abs().argmax(dim=1, keepdim=True)
    u = u * torch.sign(torch.gather(u, 1, idx))
    return u.cpu().numpy(), s.cpu().numpy(), mean.cpu().numpy()


def pca_reconstruction_pcc(op, axes: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Per-column PCC between ``X`` and its PCA reconstruction ``mean + U U^T (x_j - mean)``.

    Parameters
    ----------
    op
        Data operator of ``X`` (n_obs x n_vars).
    axes
        Principal axes ``U`` (n_obs x K), orthonormal columns.
    mean
        The mean column removed before the PCA (n_obs).

    Returns
    -------
    PCC per column of ``X``.

    Examples
    --------
    >>> import numpy as np
    >>> from spatialfactors.models._operator import DataOperator
    >>> from spatialfactors.models.pca import pca_dictionaries, pca_reconstruction_pcc
    >>> X = np.random.default_rng(0).random((30, 20))
    >>> op = DataOperator(X, dtype="float64")
    >>> axes, _, mean = pca_dictionaries(op, np.ones((1, 20)), 19)
    >>> bool(np.allclose(pca_reconstruction_pcc(op, axes[0], mean[0]), 1.0))
    True
    """
    u = torch.as_tensor(np.asarray(axes), dtype=op.dtype, device=op.device)
    coef = op.rmatmul(u.T.contiguous()).double().cpu().numpy() - (np.asarray(axes).T @ mean)[:, None]
    return reconstruction_pcc(op, axes, coef, offset=mean)
