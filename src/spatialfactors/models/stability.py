"""Dictionary dissimilarity and the staNMF instability score (Cahill et al. 2024, Methods).

For two dictionaries ``D`` and ``D'`` (n_obs x K), ``C = xcorr(D, D')`` is the K x K matrix of
normalised inner products between their columns (invariant to the scale of each column). As in
the authors' public code (Yu-Group/staNMF, abbasilab/osNMF), columns are scaled to unit norm
without centring, which is what reproduces the paper's instability values; ``centered=True``
gives Pearson correlations instead. Two dissimilarities account for the order of the columns:

- Hungarian matching: ``dsim = (1/K) sum_(k,l) (1 - C_kl)`` over the pairs of a maximum-weight
  assignment (``scipy.optimize.linear_sum_assignment``);
- Amari-type error: ``dsim = (1/2K) (2K - sum_l max_k C_kl - sum_k max_l C_kl)``.

The instability of N replicate dictionaries is the mean dissimilarity over the N(N-1)/2
distinct pairs, ``gamma = 2 / (N (N-1)) sum_{p<q} dsim(D_p, D_q)``, and its standard deviation
is staNMF's bound for a U-statistic of order two, ``sqrt(2 Var(dsim) / N)`` with ``Var(dsim)``
the variance of the pairwise dissimilarities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

METRICS = ("hungarian", "amari")


def _standardise(d: np.ndarray, centered: bool = False) -> np.ndarray:
    """Scale each column to unit norm, after centring it if asked (zero columns stay zero)."""
    d = np.asarray(d, dtype=np.float64)
    if centered:
        d = d - d.mean(axis=-2, keepdims=True)
    norm = np.linalg.norm(d, axis=-2, keepdims=True)
    return np.divide(d, norm, out=np.zeros_like(d), where=norm > 0)


def cross_correlation(d1: np.ndarray, d2: np.ndarray, *, centered: bool = False) -> np.ndarray:
    """Cross-correlation between every column of ``d1`` and every column of ``d2``.

    Parameters
    ----------
    d1, d2
        Dictionaries with the same number of rows.
    centered
        Centre the columns first (Pearson correlation); by default the normalised inner
        product of the staNMF reference code.

    Returns
    -------
    ``C`` with ``C[k, l] = <d1[:, k], d2[:, l]> / (||d1[:, k]|| ||d2[:, l]||)``; a zero column
    correlates 0.

    Examples
    --------
    >>> import numpy as np
    >>> from spatialfactors.models.stability import cross_correlation
    >>> d = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    >>> cross_correlation(d, 2 * d[:, ::-1]).round(3).tolist()
    [[0.0, 1.0], [1.0, 0.0]]
    """
    return _standardise(d1, centered).T @ _standardise(d2, centered)


def dissimilarity(c: np.ndarray, metric: str = "hungarian") -> float:
    """Dissimilarity of two dictionaries from their cross-correlation matrix.

    Parameters
    ----------
    c
        K x K cross-correlation matrix.
    metric
        ``"hungarian"`` or ``"amari"``.

    Returns
    -------
    A value in [0, 2]; 0 when the dictionaries agree up to order and scale.

    Examples
    --------
    >>> import numpy as np
    >>> from spatialfactors.models.stability import dissimilarity
    >>> c = np.array([[0.9, 0.2], [0.1, 0.7]])
    >>> round(dissimilarity(c, "hungarian"), 3), round(dissimilarity(c, "amari"), 3)
    (0.2, 0.2)
    """
    c = np.clip(np.asarray(c, dtype=np.float64), -1.0, 1.0)
    k = c.shape[0]
    if metric == "hungarian":
        rows, cols = linear_sum_assignment(c, maximize=True)
        return float(np.mean(1.0 - c[rows, cols]))
    if metric == "amari":
        return float((2 * k - c.max(axis=0).sum() - c.max(axis=1).sum()) / (2 * k))
    raise ValueError(f"`metric` must be one of {METRICS}, got {metric!r}.")


@dataclass
class Instability:
    """Instability of N replicate dictionaries.

    Attributes
    ----------
    mean
        ``gamma``: mean dissimilarity over the N(N-1)/2 distinct pairs.
    std
        staNMF's standard deviation, the bound ``sqrt(2 Var(dsim) / N)`` for a U-statistic
        of order two (Hoeffding), with ``Var(dsim)`` over the distinct pairs.
    pairwise
        N x N matrix of dissimilarities (zero diagonal).
    """

    mean: float
    std: float
    pairwise: np.ndarray


def instability_bytes(n_replicates: int, n_obs: int, n_components: int) -> int:
    """Peak memory (bytes) of :func:`instability` on ``n_replicates`` dictionaries, besides the dictionaries.

    The float64 Gram matrix of all N K columns with its normalised copy and a temporary (it grows with
    N squared), one block of rows of all columns, and the N x N pairwise dissimilarities with the indices
    and values of their upper triangle.

    Examples
    --------
    >>> from spatialfactors.models.stability import instability_bytes
    >>> instability_bytes(10**6, 100, 5) > 10**14  # a million replicates: hundreds of terabytes, refused
    True
    """
    nk = n_replicates * n_components
    gram = 3 * nk * nk * 8
    block = min(n_obs, 4096) * nk * 8
    pairs = 3 * n_replicates * n_replicates * 8
    return int(gram + block + pairs)


def instability(
    dictionaries, metric: str = "hungarian", *, centered: bool = False, absolute: bool = False
) -> Instability:
    """Instability score ``gamma(K)`` of replicate dictionaries.

    Parameters
    ----------
    dictionaries
        (N, n_obs, K) array or a sequence of N dictionaries (n_obs x K), N >= 2.
    metric
        ``"hungarian"`` or ``"amari"``.
    centered
        Pearson correlations instead of normalised inner products.
    absolute
        Use ``|C|`` (for dictionaries whose column signs are arbitrary, such as principal
        components).

    Returns
    -------
    Mean, standard error and pairwise dissimilarities.

    Examples
    --------
    >>> import numpy as np
    >>> from spatialfactors.models.stability import instability
    >>> rng = np.random.default_rng(0)
    >>> d = rng.random((100, 3))
    >>> round(instability([d, 2 * d[:, [2, 0, 1]], d]).mean, 12)
    0.0
    """
    if metric not in METRICS:
        raise ValueError(f"`metric` must be one of {METRICS}, got {metric!r}.")
    return _from_correlations(_correlations(dictionaries, centered), metric, absolute)


def nested_instability(
    dictionaries, ks, metric: str = "hungarian", *, centered: bool = False, absolute: bool = False
) -> dict[int, Instability]:
    """:func:`instability` of the first K columns of every dictionary, for each K in ``ks``.

    For nested dictionaries such as principal axes, whose first K columns are the dictionary at K:
    the correlation of two columns does not depend on the other columns, so one Gram matrix of all
    columns serves every K (its leading blocks), instead of one per K.

    Examples
    --------
    >>> import numpy as np
    >>> from spatialfactors.models.stability import instability, nested_instability
    >>> rng = np.random.default_rng(0)
    >>> d = [rng.random((50, 4)) for _ in range(3)]
    >>> got = nested_instability(d, [2, 4])
    >>> bool(np.isclose(got[2].mean, instability([x[:, :2] for x in d]).mean))
    True
    """
    if metric not in METRICS:
        raise ValueError(f"`metric` must be one of {METRICS}, got {metric!r}.")
    corr = _correlations(dictionaries, centered)
    return {int(k): _from_correlations(corr[:, :k, :, :k], metric, absolute) for k in ks}


def _correlations(dictionaries, centered: bool) -> np.ndarray:
    """(N, K, N, K) correlations of every column of every dictionary with every other."""
    dictionaries = list(dictionaries)
    n_rep = len(dictionaries)
    if n_rep < 2:
        raise ValueError(f"The instability needs at least 2 replicates, got {n_rep}.")
    n, k = np.shape(dictionaries[0])
    # Gram matrix of all N K unit columns, accumulated in float64 over blocks of rows straight
    # from the replicates (no stacked copy of them): dissimilarities near zero need 1 - C to
    # full precision, and memory stays at the dictionaries themselves plus one block.
    means = [np.asarray(d).mean(axis=0, dtype=np.float64) if centered else np.zeros(k) for d in dictionaries]
    gram = torch.zeros((n_rep * k, n_rep * k), dtype=torch.float64)
    block = torch.empty((min(n, 4096), n_rep * k), dtype=torch.float64)
    for start in range(0, n, 4096):
        rows = min(n - start, 4096)
        for p, d in enumerate(dictionaries):
            part = torch.from_numpy(np.asarray(d[start : start + rows], dtype=np.float64) - means[p])
            block[:rows, p * k : (p + 1) * k] = part
        gram += block[:rows].T @ block[:rows]
    # Normalise by the float64 diagonal (the squared column norms); zero columns correlate 0.
    diag = torch.sqrt(torch.diagonal(gram))
    inv = torch.where(diag > 0, 1.0 / torch.where(diag > 0, diag, 1.0), 0.0)
    gram = gram * inv[:, None] * inv[None, :]
    return gram.numpy().reshape(n_rep, k, n_rep, k)


def _from_correlations(corr: np.ndarray, metric: str, absolute: bool) -> Instability:
    n_rep = corr.shape[0]
    if absolute:
        corr = np.abs(corr)
    pairwise = np.zeros((n_rep, n_rep))
    for p in range(n_rep):
        for q in range(p + 1, n_rep):
            pairwise[p, q] = pairwise[q, p] = dissimilarity(corr[p, :, q, :], metric)
    iu = np.triu_indices(n_rep, 1)
    mean = float(pairwise[iu].mean())
    # Var(U) <= (2 / N) Var(h) for a U-statistic of order two (Hoeffding 1948).
    return Instability(mean=mean, std=float(np.sqrt(2 * pairwise[iu].var() / n_rep)), pairwise=pairwise)
