"""Spatial domains from latent states: neighbourhood smoothing, clustering, majority vote.

The protocol the SpiceMix authors use on Visium DLPFC (README of ma-compbio/SpiceMix,
``main_Maynard2021.ipynb``) and that spatial-domain benchmarks apply to every method alike:

1. each cell's features are averaged with those of its graph neighbours
   (:func:`smooth_features`), so that a domain label reflects the neighbourhood;
2. the smoothed features are clustered (:func:`cluster_features`: Ward, k-means or Leiden);
3. each cell takes the most common label among itself and its neighbours, repeated until no
   label changes (:func:`majority_vote`), which removes isolated labels inside a domain.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

METHODS = ("leiden", "ward", "kmeans")


def smooth_features(features: np.ndarray, adjacency: sp.spmatrix, n_rounds: int = 1) -> np.ndarray:
    """Average every row of ``features`` with its neighbours' rows (the cell itself included).

    Parameters
    ----------
    features
        (N, d) features.
    adjacency
        (N, N) graph; its weights are ignored (an edge is an edge).
    n_rounds
        Times the averaging is applied (0 returns a copy).

    Returns
    -------
    (N, d) smoothed features.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from spatialfactors.models.domains import smooth_features
    >>> path = sp.diags([1.0, 1.0], [-1, 1], shape=(3, 3))
    >>> smooth_features(np.array([[0.0], [3.0], [6.0]]), path).ravel().tolist()
    [1.5, 3.0, 4.5]
    """
    a = sp.csr_matrix(adjacency, dtype=np.float64, copy=True)
    a.data[:] = 1.0
    a = a + sp.eye(a.shape[0], format="csr")
    a = sp.diags(1.0 / np.asarray(a.sum(1)).ravel()) @ a
    out = np.array(features, dtype=np.float64, copy=True)
    for _ in range(n_rounds):
        out = a @ out
    return out


def majority_vote(labels: np.ndarray, adjacency: sp.spmatrix, max_iter: int = 100) -> tuple[np.ndarray, int]:
    """Relabel every cell with the most common label among itself and its neighbours, until stable.

    All cells are updated at once; a cell keeps its label on a tie that includes it, otherwise
    the tie goes to the smallest label. The iterations stop when no label changes (or after
    ``max_iter``, which guards against the rare 2-cycles of synchronous updates).

    Parameters
    ----------
    labels
        (N,) integer labels ``0..n-1``.
    adjacency
        (N, N) graph; weights are ignored.
    max_iter
        Most rounds.

    Returns
    -------
    The new labels and the number of rounds run.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from spatialfactors.models.domains import majority_vote
    >>> path = sp.diags([1.0, 1.0], [-1, 1], shape=(5, 5))
    >>> majority_vote(np.array([0, 0, 1, 0, 0]), path)[0].tolist()
    [0, 0, 0, 0, 0]
    """
    labels = np.asarray(labels, dtype=np.int64)
    n_labels = int(labels.max()) + 1 if len(labels) else 0
    a = sp.csr_matrix(adjacency, dtype=np.float64, copy=True)
    a.data[:] = 1.0
    a = a + sp.eye(a.shape[0], format="csr")
    rows = np.arange(len(labels))
    it = 0
    for it in range(1, max_iter + 1):
        onehot = sp.csr_matrix((np.ones(len(labels)), (rows, labels)), shape=(len(labels), n_labels))
        counts = (a @ onehot).toarray()
        best = counts.max(1)
        keep = counts[rows, labels] == best  # the own label wins its ties
        new = np.where(keep, labels, counts.argmax(1))
        if np.array_equal(new, labels):
            return labels, it - 1
        labels = new
    return labels, it


def cluster_features(
    features: np.ndarray,
    n_clusters: int | None,
    method: str = "leiden",
    *,
    resolution: float = 1.0,
    n_neighbors: int = 15,
    random_state: int = 0,
) -> np.ndarray:
    """Cluster the rows of ``features`` into ``n_clusters`` clusters (labels ``0..n-1``).

    ``"leiden"`` builds scanpy's k-nearest-neighbour graph of the features and runs Leiden
    (igraph); with ``n_clusters`` the resolution is bisected until Leiden returns that many
    clusters (the nearest count reached, if none matches exactly), otherwise ``resolution`` is
    used. ``"ward"``: Ward's hierarchical clustering cut into ``n_clusters``; ``"kmeans"``:
    k-means with 10 starts. Both need ``n_clusters``.

    Examples
    --------
    >>> import numpy as np
    >>> from spatialfactors.models.domains import cluster_features
    >>> f = np.r_[np.zeros((5, 2)), np.ones((5, 2))]
    >>> cluster_features(f, 2, "ward").tolist()
    [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}.")
    features = np.asarray(features, dtype=np.float64)
    if method == "ward":
        from scipy.cluster.hierarchy import fcluster, linkage

        labels = fcluster(linkage(features, method="ward"), t=n_clusters, criterion="maxclust")
    elif method == "kmeans":
        from sklearn.cluster import KMeans
        from threadpoolctl import threadpool_limits

        # One thread: scikit-learn sums per-thread partial centres, so more threads change the labels.
        with threadpool_limits(limits=1):
            labels = KMeans(n_clusters, n_init=10, random_state=random_state).fit_predict(features)
    else:
        labels = _leiden(features, n_clusters, resolution, n_neighbors, random_state)
    return order_by_size(labels)


def _leiden(features, n_clusters, resolution, n_neighbors, random_state) -> np.ndarray:
    import anndata as ad
    import scanpy as sc

    tmp = ad.AnnData(np.zeros((len(features), 0), dtype=np.float32))
    tmp.obsm["X_features"] = features
    sc.pp.neighbors(tmp, n_neighbors=min(n_neighbors, len(features) - 1), use_rep="X_features", random_state=0)

    def run(res):
        sc.tl.leiden(tmp, resolution=res, random_state=random_state, flavor="igraph", n_iterations=2, directed=False)
        return tmp.obs["leiden"].cat.codes.to_numpy()

    if n_clusters is None:
        return run(resolution)
    lo, hi = 0.0, 1.0
    while len(np.unique(run(hi))) < n_clusters and hi < 64:
        lo, hi = hi, hi * 2
    best = None
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        labels = run(mid)
        found = len(np.unique(labels))
        if best is None or abs(found - n_clusters) < abs(len(np.unique(best)) - n_clusters):
            best = labels
        if found == n_clusters:
            return labels
        lo, hi = (mid, hi) if found < n_clusters else (lo, mid)
    return best


def order_by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber labels ``0..n-1`` from the largest cluster down (scanpy's order; ties by label).

    Examples
    --------
    >>> import numpy as np
    >>> from spatialfactors.models.domains import order_by_size
    >>> order_by_size(np.array([7, 3, 3, 7, 3, 9])).tolist()
    [1, 0, 0, 1, 0, 2]
    """
    values, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    rank = np.empty(len(values), dtype=np.int64)
    rank[np.argsort(-counts, kind="stable")] = np.arange(len(values))
    return rank[inverse]


def proportions(values: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (latent states -> metagene proportions); zero rows stay zero.

    Examples
    --------
    >>> import numpy as np
    >>> from spatialfactors.models.domains import proportions
    >>> proportions(np.array([[1.0, 3.0], [0.0, 0.0]])).tolist()
    [[0.25, 0.75], [0.0, 0.0]]
    """
    sums = values.sum(1, keepdims=True)
    return np.divide(values, sums, out=np.zeros_like(values, dtype=np.float64), where=sums > 0)


def reference_scores(truth: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Score ``labels`` against ``truth``: adjusted Rand index and normalised mutual information.

    Cells without a reference label (None or NaN in ``truth``) are left out.

    Examples
    --------
    >>> import numpy as np
    >>> from spatialfactors.models.domains import reference_scores
    >>> reference_scores(np.array(["a", "a", None, "b"], dtype=object), np.array([1, 1, 0, 0]))
    {'ari': 1.0, 'nmi': 1.0}
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    known = ~pd.isna(np.asarray(truth, dtype=object))
    ref, found = np.asarray(truth, dtype=object)[known].astype(str), np.asarray(labels)[known]
    return {"ari": float(adjusted_rand_score(ref, found)), "nmi": float(normalized_mutual_info_score(ref, found))}
