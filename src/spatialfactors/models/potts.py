"""Discrete hidden Markov random field: a Potts prior on domain labels with Gaussian emissions.

The comparator of the SpiceMix paper (Results, Fig. 2d-e): the HMRF of Zhu et al. (2018,
*Nat. Biotechnol.* 36:1183), the method behind Giotto's ``doHMRF``. Every cell ``i`` has a
hidden label ``z_i`` in ``1..K``; its features ``y_i`` (PCA scores, latent states, ...) are
Gaussian given the label, ``y_i | z_i = k ~ N(mu_k, Sigma_k)`` (Giotto: full covariances;
here diagonal by default, full on request); the labels follow a Potts model on the spatial
graph with an external field,

``P(z) ∝ exp(sum_i a_{z_i} + beta * sum_{i~j} [z_i = z_j])``,

so that ``beta > 0`` favours equal labels on neighbours and ``beta = 0`` is a Gaussian mixture
with weights ``softmax(a)``. Edge weights are ignored (an edge is an edge).

Fitting is the mean-field-like EM of Celeux, Forbes & Peyrard (2003, *Pattern Recognit.*
36:131) with the mean-field E-step of Zhang (1992): each cell's label distribution ``q_i``
is updated given the expected labels of its neighbours, ``q_ik ∝ f_k(y_i) exp(a_k + beta
sum_j q_jk)``, one colour class of a greedy colouring at a time (cells of a class share no
edge, so every update is exact coordinate ascent of the mean-field free energy and the class
is one vectorised step), until the distributions change by less than ``1e-4``. The M-step
updates the Gaussians (weighted means and covariances, with a floor of ``reg_covar`` times
each feature's variance) and the field ``a`` (a few fixed-point steps of the concave
multinomial-logit likelihood; closed form ``log N_k / N`` at ``beta = 0``). ``beta`` is not
estimated: it is given, or picked from a sweep.

The objective is the mean-field-like log-likelihood
``L = sum_i log sum_k p_ik f_k(y_i)`` with ``p_ik = softmax_k(a_k + beta sum_j q_jk)``
(Celeux et al.'s approximation of the intractable HMRF likelihood), and models (numbers of
domains, values of ``beta``) are compared by its BIC, ``-2 L + n_params log N`` (Forbes &
Peyrard 2003, *IEEE TPAMI* 25:1089). Labels are the most probable ones under ``q``.
Initialisation: k-means (10 starts, seeded) on the features, the same for every ``beta``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.special import logsumexp

from spatialfactors.models.domains import cluster_features

COVARIANCES = ("diag", "full")

#: Largest change of a cell's label distribution at which the mean-field sweeps stop.
MF_TOL = 1e-4
#: Most mean-field sweeps per E-step.
MF_SWEEPS = 20
#: Fixed-point steps of the field update per M-step.
FIELD_STEPS = 10


@dataclass
class PottsResult:
    """One fit of the Potts HMRF (labels ``0..K-1``, numbered from the largest domain).

    ``means`` (K, d); ``covariances`` (K, d) for ``"diag"``, (K, d, d) for ``"full"``;
    ``field`` (K,) the external field ``a`` (log prior weights); ``probabilities`` (N, K) the
    mean-field label distributions; ``history`` the objective after every EM iteration.
    """

    labels: np.ndarray
    probabilities: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    field: np.ndarray
    beta: float
    loglik: float
    bic: float
    n_params: int
    n_iter: int
    converged: bool
    history: list[float] = field(default_factory=list)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = np.exp(z - z.max(1, keepdims=True))
    z /= z.sum(1, keepdims=True)
    return z


def _binary_graph(adjacency: sp.spmatrix) -> sp.csr_matrix:
    a = sp.csr_matrix(adjacency, dtype=np.float64, copy=True)
    a.setdiag(0)
    a.eliminate_zeros()
    a.data[:] = 1.0
    return a


def _log_density(y: np.ndarray, means: np.ndarray, cov: np.ndarray, covariance: str) -> np.ndarray:
    """(N, K) Gaussian log densities ``log f_k(y_i)``."""
    n, d = y.shape
    if covariance == "diag":
        prec = 1.0 / cov  # (K, d)
        quad = (y**2) @ prec.T - 2.0 * y @ (means * prec).T + (means**2 * prec).sum(1)
        return -0.5 * (quad + np.log(cov).sum(1) + d * np.log(2 * np.pi))
    out = np.empty((n, len(means)))
    for k, (mu, s) in enumerate(zip(means, cov, strict=True)):
        chol = np.linalg.cholesky(s)
        z = np.linalg.solve(chol, (y - mu).T)  # (d, N); triangular, small d
        out[:, k] = -0.5 * ((z**2).sum(0) + 2 * np.log(np.diag(chol)).sum() + d * np.log(2 * np.pi))
    return out


def _m_step(y, q, covariance, floor):
    nk = q.sum(0) + 1e-12
    means = (q.T @ y) / nk[:, None]
    if covariance == "diag":
        cov = (q.T @ y**2) / nk[:, None] - means**2
        cov = np.maximum(cov, 0.0) + floor
    else:
        cov = np.empty((len(nk), y.shape[1], y.shape[1]))
        for k in range(len(nk)):
            c = y - means[k]
            cov[k] = (c * q[:, k : k + 1]).T @ c / nk[k] + np.diag(floor)
    return means, cov, nk


def _update_field(field, nk, nbr, beta, steps=FIELD_STEPS):
    """Maximise ``sum_ik q_ik log p_ik`` over ``a`` (p: softmax of ``a + beta * nbr``) by fixed-point steps."""
    for _ in range(steps if beta > 0 else 1):
        p = _softmax(field + beta * nbr)
        field = field + np.log(nk) - np.log(p.sum(0) + 1e-300)
        field -= field.max()
    return field


def _mean_field(logf, q, blocks, field, beta, n_sweeps=MF_SWEEPS):
    """Mean-field label distributions, one colour class at a time (``blocks``: its cells and their graph rows)."""
    if beta == 0:
        return _softmax(logf + field)
    q = q.copy()
    for _ in range(n_sweeps):
        before = q.copy()
        for idx, rows in blocks:
            q[idx] = _softmax(logf[idx] + field + beta * (rows @ q))
        if np.abs(q - before).max() < MF_TOL:
            break
    return q


def _loglik(logf, nbr, field, beta) -> float:
    logp = field + beta * nbr
    logp = logp - logsumexp(logp, axis=1, keepdims=True)
    return float(logsumexp(logf + logp, axis=1).sum())


def n_parameters(n_domains: int, n_features: int, covariance: str = "diag", beta_free: bool = False) -> int:
    """Free parameters of the model: field, means, covariances (and ``beta`` when it is chosen).

    Examples
    --------
    >>> from spatialfactors.models.potts import n_parameters
    >>> n_parameters(3, 2)  # 2 field + 6 means + 6 variances
    14
    """
    cov = n_domains * n_features if covariance == "diag" else n_domains * n_features * (n_features + 1) // 2
    return (n_domains - 1) + n_domains * n_features + cov + int(beta_free)


def potts_em(
    features: np.ndarray,
    adjacency: sp.spmatrix,
    init_labels: np.ndarray,
    beta: float = 1.0,
    *,
    covariance: str = "diag",
    reg_covar: float = 1e-3,
    max_iter: int = 100,
    tol: float = 1e-6,
    beta_free: bool = False,
    classes: list[np.ndarray] | None = None,
) -> PottsResult:
    """Fit the Potts HMRF by mean-field-like EM from the labels ``init_labels``.

    Parameters
    ----------
    features
        (N, d) features of the cells.
    adjacency
        (N, N) symmetric spatial graph; weights are ignored.
    init_labels
        (N,) labels ``0..K-1`` to start from (e.g. k-means, :func:`~spatialfactors.models.domains.cluster_features`).
    beta
        Potts smoothing (0: a Gaussian mixture).
    covariance
        ``"diag"`` (per-domain variances) or ``"full"`` (per-domain covariance matrices).
    reg_covar
        Floor of every variance, as a fraction of the feature's variance over all cells.
    max_iter
        Most EM iterations.
    tol
        Stop when the objective changes by less than ``tol`` times its magnitude.
    beta_free
        Count ``beta`` as a free parameter in the BIC (it was chosen from several values).
    classes
        Colour classes of the graph (:func:`~spatialfactors.models.hmrf.colour_classes`), to
        reuse across fits.

    Returns
    -------
    The fit.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from spatialfactors.models.potts import potts_em
    >>> y = np.r_[np.zeros((4, 1)), np.ones((4, 1))] + 0.1 * np.arange(8)[:, None] % 0.3
    >>> path = sp.diags([1.0, 1.0], [-1, 1], shape=(8, 8))
    >>> potts_em(y, path, np.array([0, 0, 0, 0, 1, 1, 1, 1]), 1.0).labels.tolist()
    [0, 0, 0, 0, 1, 1, 1, 1]
    """
    from spatialfactors.models.hmrf import colour_classes

    if covariance not in COVARIANCES:
        raise ValueError(f"`covariance` must be one of {COVARIANCES}, got {covariance!r}.")
    y = np.asarray(features, dtype=np.float64)
    n, d = y.shape
    init_labels = np.asarray(init_labels, dtype=np.int64)
    k = int(init_labels.max()) + 1
    graph = _binary_graph(adjacency)
    classes = colour_classes(graph) if classes is None else classes
    floor = reg_covar * np.maximum(y.var(0), 1e-12)
    blocks = [(idx, graph[idx]) for idx in classes]

    q = np.zeros((n, k))
    q[np.arange(n), init_labels] = 1.0
    means, cov, nk = _m_step(y, q, covariance, floor)
    field_ = np.log(nk / n)
    history: list[float] = []
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        logf = _log_density(y, means, cov, covariance)
        q = _mean_field(logf, q, blocks, field_, beta)
        means, cov, nk = _m_step(y, q, covariance, floor)
        nbr = graph @ q
        field_ = _update_field(field_, nk, nbr, beta)
        history.append(_loglik(_log_density(y, means, cov, covariance), nbr, field_, beta))
        if it > 1 and abs(history[-1] - history[-2]) <= tol * abs(history[-1]):
            converged = True
            break
    logf = _log_density(y, means, cov, covariance)
    q = _mean_field(logf, q, blocks, field_, beta)
    loglik = _loglik(logf, graph @ q, field_, beta)
    labels = q.argmax(1)
    # Number domains from the largest, and reorder the parameters to match.
    order = np.argsort(-np.bincount(labels, minlength=k), kind="stable")
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    p = n_parameters(k, d, covariance, beta_free)
    return PottsResult(
        labels=rank[labels],
        probabilities=q[:, order],
        means=means[order],
        covariances=cov[order],
        field=field_[order],
        beta=float(beta),
        loglik=loglik,
        bic=-2.0 * loglik + p * np.log(n),
        n_params=p,
        n_iter=it,
        converged=converged,
        history=history,
    )


@dataclass
class PottsSweep:
    """Fits over a grid of numbers of domains and ``beta``: the one with the lowest BIC and a table of all.

    ``table`` has one row per fit: ``n_domains``, ``beta``, ``loglik``, ``bic``, ``n_iter``,
    ``converged``, ``n_found`` (domains that kept cells); ``labels`` holds the labels of every
    ``beta`` at the chosen number of domains (columns: the ``beta`` values).
    """

    best: PottsResult
    table: pd.DataFrame
    labels: pd.DataFrame


def potts_sweep(
    features: np.ndarray,
    adjacency: sp.spmatrix,
    n_domains: Sequence[int],
    betas: Sequence[float],
    *,
    covariance: str = "diag",
    reg_covar: float = 1e-3,
    max_iter: int = 100,
    tol: float = 1e-6,
    random_state: int = 0,
    score: Callable[[np.ndarray], dict] | None = None,
    progress: Callable[[int], None] | None = None,
) -> PottsSweep:
    """Fit :func:`potts_em` for every number of domains and ``beta``; keep the lowest BIC.

    Every fit with ``K`` domains starts from the same k-means labels (seeded by
    ``random_state``), so a fit does not depend on the other values of the sweep. ``score``
    maps a fit's labels to extra columns of the table (e.g. the ARI against a reference);
    ``progress`` is called with 1 after every fit.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from spatialfactors.models.potts import potts_sweep
    >>> rng = np.random.default_rng(0)
    >>> y = np.r_[rng.normal(0, 0.3, (20, 2)), rng.normal(3, 0.3, (20, 2))]
    >>> path = sp.diags([1.0, 1.0], [-1, 1], shape=(40, 40))
    >>> sweep = potts_sweep(y, path, [2, 3], [0.0, 1.0])
    >>> int(sweep.best.labels.max()) + 1, len(sweep.table)
    (2, 4)
    """
    from spatialfactors.models.hmrf import colour_classes

    y = np.asarray(features, dtype=np.float64)
    graph = _binary_graph(adjacency)
    classes = colour_classes(graph)
    betas = sorted(float(b) for b in betas)
    beta_free = len(betas) > 1
    rows, fits = [], {}
    for k in sorted(int(k) for k in n_domains):
        init = cluster_features(y, k, "kmeans", random_state=random_state)
        for b in betas:
            fit = potts_em(
                y,
                graph,
                init,
                b,
                covariance=covariance,
                reg_covar=reg_covar,
                max_iter=max_iter,
                tol=tol,
                beta_free=beta_free,
                classes=classes,
            )
            fits[k, b] = fit
            rows.append(
                {
                    "n_domains": k,
                    "beta": b,
                    "loglik": fit.loglik,
                    "bic": fit.bic,
                    "n_iter": fit.n_iter,
                    "converged": fit.converged,
                    "n_found": int(len(np.unique(fit.labels))),
                }
                | (score(fit.labels) if score is not None else {})
            )
            if progress is not None:
                progress(1)
    table = pd.DataFrame(rows)
    best_row = table.loc[table["bic"].idxmin()]
    k_best = int(best_row["n_domains"])
    best = fits[k_best, float(best_row["beta"])]
    labels = pd.DataFrame({f"{b:g}": fits[k_best, b].labels for b in betas})
    return PottsSweep(best=best, table=table, labels=labels)
