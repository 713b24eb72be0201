"""Marker genes, spatial gene co-expression networks and region AUCs of a factorisation ``X ~ D A``.

Engines on arrays for Cahill et al. (Results "From PPs to Marker Genes", "From PPs to sGCNs",
the isocortex AUC of Fig. 4C, Methods "sGCNs"). ``D`` is the dictionary (obs x K, the patterns)
and the loadings are ``A^T`` (genes x K); the reconstruction of gene ``j`` is ``x_j = D a_j``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


def importance_scores(loadings: np.ndarray) -> np.ndarray:
    """Compute the importance of every pattern for every gene, ``r_kj = a_kj / sum_k a_kj`` (Fig. 5).

    Parameters
    ----------
    loadings
        Non-negative coefficients ``A^T`` (genes x K).

    Returns
    -------
    Float64 array genes x K whose rows sum to one. A gene with all-zero loadings has no
    importance: its row is NaN (it is excluded from rankings, assignments and networks).

    Examples
    --------
    >>> import numpy as np
    >>> from spatialfactors.models.genes import importance_scores
    >>> importance_scores(np.array([[3.0, 1.0], [0.0, 2.0], [0.0, 0.0]]))
    array([[0.75, 0.25],
           [0.  , 1.  ],
           [ nan,  nan]])
    """
    a = np.asarray(loadings, dtype=np.float64)
    total = a.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, a / np.where(total > 0, total, 1.0), np.nan)


def assign_patterns(loadings: np.ndarray) -> np.ndarray:
    """Pattern with the highest coefficient of every gene (the paper's assignment), -1 for all-zero genes.

    Ties go to the first pattern (``numpy.argmax``).

    Parameters
    ----------
    loadings
        Non-negative coefficients (genes x K).

    Returns
    -------
    Int64 pattern index per gene.

    Examples
    --------
    >>> import numpy as np
    >>> from spatialfactors.models.genes import assign_patterns
    >>> assign_patterns(np.array([[3.0, 1.0], [0.0, 2.0], [0.0, 0.0]])).tolist()
    [0, 1, -1]
    """
    a = np.asarray(loadings, dtype=np.float64)
    out = np.argmax(a, axis=1).astype(np.int64)
    out[~(a.sum(axis=1) > 0)] = -1
    return out


def rank_genes(importance: np.ndarray, loadings: np.ndarray, pattern: int) -> np.ndarray:
    """Genes ordered by their importance for ``pattern``, highest first.

    Ties (many genes load on one pattern only and share ``r = 1``) are broken by the larger
    coefficient ``a_kj``, then by gene order. Genes without importance (NaN) are left out.

    Parameters
    ----------
    importance
        Importance scores (genes x K), :func:`importance_scores`.
    loadings
        Coefficients (genes x K).
    pattern
        Pattern index.

    Returns
    -------
    Gene indices, best first.

    Examples
    --------
    >>> import numpy as np
    >>> from spatialfactors.models.genes import importance_scores, rank_genes
    >>> a = np.array([[1.0, 1.0], [2.0, 0.0], [5.0, 0.0], [0.0, 0.0]])
    >>> rank_genes(importance_scores(a), a, 0).tolist()
    [2, 1, 0]
    """
    r = np.asarray(importance)[:, pattern]
    a = np.asarray(loadings, dtype=np.float64)[:, pattern]
    valid = np.flatnonzero(np.isfinite(r))
    order = np.lexsort((valid, -a[valid], -r[valid]))  # last key is the primary one
    return valid[order]


def n_top_genes(n_genes: int, top_fraction: float, minimum: int = 2) -> int:
    """Count the sGCN nodes: ``ceil(top_fraction * n_genes)``, at least ``minimum`` and at most ``n_genes``.

    The paper keeps the genes with "the top 0.25% importance scores"; on the atlas's 4,345 genes
    that is 10.9, rounded up to 11 (the paper reports 10 or 11 genes per pattern).

    Parameters
    ----------
    n_genes
        Genes that can be ranked (with a non-zero loading).
    top_fraction
        Fraction in (0, 1].
    minimum
        Fewest nodes (a network needs 2; ``tl.sgcn``'s default asks for 10).

    Returns
    -------
    The number of nodes.

    Examples
    --------
    >>> from spatialfactors.models.genes import n_top_genes
    >>> n_top_genes(4345, 0.0025), n_top_genes(4000, 0.0025), n_top_genes(100, 0.001)
    (11, 10, 2)
    >>> n_top_genes(1020, 0.0025, minimum=10), n_top_genes(4345, 0.0025, minimum=10), n_top_genes(6, 0.5, minimum=10)
    (10, 11, 6)
    """
    # Rounding first so that 0.0025 * 4000 = 10.000000000000002 does not become 11.
    n = math.ceil(round(top_fraction * n_genes, 9))
    return int(min(max(n, minimum), n_genes))


def dictionary_moments(dictionary: np.ndarray, chunk_size: int = 65_536) -> tuple[np.ndarray, np.ndarray, int]:
    """Gram matrix ``G = D^T D``, column sums ``s = D^T 1`` and the number of obs, in float64.

    Everything the correlations of reconstructed images need from the dictionary (K x K and K
    numbers); rows are converted to float64 in chunks, so no full float64 copy of ``D`` is made.

    Parameters
    ----------
    dictionary
        ``D`` (obs x K).
    chunk_size
        Rows converted at a time.

    Returns
    -------
    ``(gram, col_sums, n_obs)``.

    Examples
    --------
    >>> import numpy as np
    >>> from spatialfactors.models.genes import dictionary_moments
    >>> gram, sums, n = dictionary_moments(np.array([[1.0, 0.0], [1.0, 2.0]]))
    >>> gram.tolist(), sums.tolist(), n
    ([[2.0, 2.0], [2.0, 4.0]], [2.0, 2.0], 2)
    """
    d = np.asarray(dictionary)
    n, k = d.shape
    gram = np.zeros((k, k))
    sums = np.zeros(k)
    for start in range(0, n, chunk_size):
        block = np.asarray(d[start : start + chunk_size], dtype=np.float64)
        gram += block.T @ block
        sums += block.sum(axis=0)
    return gram, sums, int(n)


def reconstruction_correlation(
    gram: np.ndarray, col_sums: np.ndarray, n_obs: int, loadings: np.ndarray, *, rtol: float = 1e-10
) -> np.ndarray:
    """Pearson correlations between the reconstructed images ``x_j = D a_j`` of the given genes.

    Closed form from the dictionary's moments (Methods, "sGCNs": the PCC of the reconstructed 3D
    images): with the centred Gram matrix ``C = G - s s^T / n``, the covariance of ``x_i`` and
    ``x_j`` over obs is ``a_i^T C a_j / n``, so the matrix of correlations is ``L C L^T``
    normalised by its diagonal, for the loadings ``L`` (genes x K). It costs O(m K^2 + m^2 K) for
    m genes, independent of the number of obs; the obs x genes reconstruction is never formed.

    Parameters
    ----------
    gram, col_sums, n_obs
        ``D^T D``, ``D^T 1`` and the number of obs (:func:`dictionary_moments`).
    loadings
        Rows ``a_j`` of the genes (m x K).
    rtol
        A reconstruction whose variance is below ``rtol`` times its mean square is constant over
        obs; its correlations are NaN.

    Returns
    -------
    Symmetric m x m float64 matrix (ones on the diagonal, NaN for constant reconstructions).

    Examples
    --------
    >>> import numpy as np
    >>> from spatialfactors.models.genes import dictionary_moments, reconstruction_correlation
    >>> rng = np.random.default_rng(0)
    >>> d, a = rng.random((200, 4)), rng.random((6, 4))
    >>> closed = reconstruction_correlation(*dictionary_moments(d), a)
    >>> bool(np.allclose(closed, np.corrcoef((d @ a.T).T)))
    True
    """
    g = np.asarray(gram, dtype=np.float64)
    s = np.asarray(col_sums, dtype=np.float64)
    a = np.asarray(loadings, dtype=np.float64)
    centred = g - np.outer(s, s) / n_obs
    cov = a @ centred @ a.T
    cov = (cov + cov.T) / 2
    var = np.diag(cov).copy()
    second = np.einsum("ik,kl,il->i", a, g, a)  # sum_obs x_j^2, the scale of rounding errors
    constant = var <= rtol * np.maximum(second, np.finfo(np.float64).tiny)
    sd = np.sqrt(np.where(constant, 1.0, var))
    corr = np.clip(cov / np.outer(sd, sd), -1.0, 1.0)
    corr[constant, :] = np.nan
    corr[:, constant] = np.nan
    np.fill_diagonal(corr, np.where(constant, np.nan, 1.0))
    return corr


def top_edges(corr: np.ndarray, edge_quantile: float, *, atol: float = 1e-12) -> tuple[np.ndarray, np.ndarray, float]:
    """Pairs whose coefficient is in the top ``1 - edge_quantile`` of all pairwise coefficients.

    The paper: "an edge is drawn between two genes if their correlation coefficient is among the
    top 5% of all coefficients of that gene subset". The coefficients of the ``m (m - 1) / 2``
    pairs (NaN ones left out) give the threshold ``t = numpy.quantile(c, edge_quantile)`` (linear
    interpolation) and the edges are the pairs with ``c >= t``; ``edge_quantile = 0`` keeps every
    pair, and the strongest pair is always an edge.

    Ties at the threshold are all kept, so there can be more edges than the fraction: this happens
    with sparse loadings, where genes that load on one pattern only have the same reconstructed image
    up to scale and correlate with PCC 1. Coefficients within ``atol`` of the threshold count as
    reaching it, so that rounding (1 - 1e-16 against 1) does not split exact ties; the closed-form
    and the direct correlations then give the same edges.

    Parameters
    ----------
    corr
        Symmetric m x m matrix of coefficients.
    edge_quantile
        Quantile in [0, 1).
    atol
        Tolerance of the comparison with the threshold.

    Returns
    -------
    ``(rows, cols, threshold)``: the node indices of the edges (``rows < cols``), by decreasing
    coefficient, and the threshold (NaN when no pair has a finite coefficient).

    Examples
    --------
    >>> import numpy as np
    >>> from spatialfactors.models.genes import top_edges
    >>> c = np.array([[1.0, 0.9, 0.1], [0.9, 1.0, 0.5], [0.1, 0.5, 1.0]])
    >>> rows, cols, t = top_edges(c, 0.5)
    >>> rows.tolist(), cols.tolist(), float(t)
    ([0, 1], [1, 2], 0.5)
    >>> tied = np.array([[1.0, 1.0, 1 - 1e-16], [1.0, 1.0, 1.0], [1 - 1e-16, 1.0, 1.0]])
    >>> len(top_edges(tied, 0.95)[0])  # three tied pairs: all are edges
    3
    """
    c = np.asarray(corr, dtype=np.float64)
    rows, cols = np.triu_indices(c.shape[0], k=1)
    values = c[rows, cols]
    finite = np.isfinite(values)
    rows, cols, values = rows[finite], cols[finite], values[finite]
    if values.size == 0:
        return rows, cols, float("nan")
    threshold = float(np.quantile(values, edge_quantile))
    keep = values >= threshold - atol
    order = np.argsort(-values[keep], kind="stable")
    return rows[keep][order], cols[keep][order], threshold


def _standardise(patterns: np.ndarray) -> np.ndarray:
    """Columns centred and scaled to unit variance (constant columns only centred)."""
    p = np.asarray(patterns, dtype=np.float64)
    sd = p.std(axis=0)
    return (p - p.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def logistic_auc(
    features: np.ndarray, target: np.ndarray, *, cv: int | None = None, C: float = 1.0, random_state: int = 0
) -> tuple[float, np.ndarray, float]:
    """ROC AUC of a logistic regression predicting a binary ``target`` from ``features``.

    scikit-learn's :class:`~sklearn.linear_model.LogisticRegression` (L2 penalty ``C``, lbfgs).
    ``cv=None`` scores the model on the obs it was fitted to (the paper's AUC); an integer scores
    the out-of-fold decision values of a stratified ``cv``-fold split instead.

    Parameters
    ----------
    features
        Obs x p predictors (standardised by the caller for a scale-free penalty).
    target
        Boolean per obs, both classes present.
    cv
        Folds, or None for the in-sample AUC.
    C
        Inverse regularisation strength.
    random_state
        Seed of the fold shuffling.

    Returns
    -------
    ``(auc, coef, intercept)`` of the model fitted on all obs.

    Examples
    --------
    >>> import numpy as np
    >>> from spatialfactors.models.genes import logistic_auc
    >>> x = np.linspace(0, 1, 100)[:, None]
    >>> auc, coef, _ = logistic_auc(x, x[:, 0] > 0.5)
    >>> auc, bool(coef[0] > 0)
    (1.0, True)
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(target, dtype=bool)
    model = LogisticRegression(C=C, max_iter=1000)
    model.fit(x, y)
    if cv is None:
        score = model.decision_function(x)
    else:
        score = np.empty(len(y))
        folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=random_state)
        for train, test in folds.split(x, y):
            score[test] = LogisticRegression(C=C, max_iter=1000).fit(x[train], y[train]).decision_function(x[test])
    return float(roc_auc_score(y, score)), model.coef_[0].copy(), float(model.intercept_[0])


@dataclass
class RegionAUC:
    """Result of :func:`region_auc`."""

    #: AUC of the chosen patterns.
    auc: float
    #: Coefficients (on standardised patterns) and intercept of its model.
    coef: np.ndarray
    intercept: float
    #: The random subsets (n_random x size, sorted pattern indices) and their AUCs.
    null_subsets: np.ndarray
    null_auc: np.ndarray
    #: Percent of random AUCs at or below the observed AUC.
    percentile: float
    #: ``(1 + #{null >= auc}) / (1 + n_random)``.
    p_value: float


def region_auc(
    patterns: np.ndarray,
    target: np.ndarray,
    subset: Sequence[int],
    *,
    n_random: int = 1000,
    cv: int | None = None,
    C: float = 1.0,
    random_state: int = 0,
    progress: Callable[[int], object] | None = None,
) -> RegionAUC:
    """AUC of a set of patterns predicting a region mask, against random subsets of the same size (Fig. 4C).

    The paper fits "a logistic regression model to predict the isocortex CCF reference map from
    PPs 1 to 3" (AUC 0.99) and compares it with "1,000 other models that use a random selection
    of three PPs". Each random subset is drawn uniformly among all subsets of that size (it may
    equal the chosen one, and draws may repeat; a repeated subset is fitted once). Patterns are
    standardised over obs before fitting so that the L2 penalty does not depend on their scale.

    Parameters
    ----------
    patterns
        Dictionary (obs x K).
    target
        Region mask (bool per obs).
    subset
        The chosen pattern indices.
    n_random
        Random subsets in the null distribution.
    cv, C
        See :func:`logistic_auc`.
    random_state
        Seed of the subsets (and folds); the same seed gives the same result.
    progress
        Called with 1 after the chosen model and after each random draw (``n_random + 1`` calls).

    Returns
    -------
    A :class:`RegionAUC`.

    Examples
    --------
    >>> import numpy as np
    >>> from spatialfactors.models.genes import region_auc
    >>> rng = np.random.default_rng(0)
    >>> d = rng.random((300, 5))
    >>> target = d[:, 0] > 0.7
    >>> res = region_auc(d, target, [0], n_random=20)
    >>> bool(res.auc == res.null_auc.max()), res.percentile
    (True, 100.0)
    """
    p = _standardise(patterns)
    y = np.asarray(target, dtype=bool)
    chosen = np.sort(np.asarray(subset, dtype=np.int64))
    rng = np.random.default_rng(random_state)
    k = p.shape[1]
    draws = np.stack([np.sort(rng.choice(k, chosen.size, replace=False)) for _ in range(n_random)])
    cache: dict[tuple[int, ...], float] = {}

    def fit(cols: np.ndarray) -> tuple[float, np.ndarray, float]:
        return logistic_auc(p[:, cols], y, cv=cv, C=C, random_state=random_state)

    auc, coef, intercept = fit(chosen)
    cache[tuple(chosen.tolist())] = auc
    if progress is not None:
        progress(1)
    null = np.empty(n_random)
    for i, cols in enumerate(draws):
        key = tuple(cols.tolist())
        if key not in cache:
            cache[key] = fit(cols)[0]
        null[i] = cache[key]
        if progress is not None:
            progress(1)
    # Coefficients in the order of `subset` as given.
    coef = coef[np.searchsorted(chosen, np.asarray(subset, dtype=np.int64))]
    return RegionAUC(
        auc=auc,
        coef=coef,
        intercept=intercept,
        null_subsets=draws,
        null_auc=null,
        percentile=float(100.0 * np.mean(null <= auc)),
        p_value=float((1 + np.sum(null >= auc)) / (1 + n_random)),
    )
