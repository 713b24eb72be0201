"""SpiceMix's Leiden start: a graph clustering of the cells into exactly K clusters.

The authors' current code starts SpiceMix from Louvain clusters of the data's first 50 principal
components (20 neighbours; the resolution searched until there are K clusters); the paper's
Algorithm 1 from k-means. scanpy has deprecated Louvain for Leiden, hence Leiden here, through
scanpy's PCA and :func:`~spatialfactors.models.domains.cluster_features` (the resolution search
that ``sf.tl.spatial_domains`` uses), then merged down to K where no resolution gives K.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def leiden_start(
    y, k: int, *, random_state: int = 0, max_cells: int = 20_000, n_neighbors: int = 20, n_pcs: int = 50
) -> tuple[np.ndarray, np.ndarray] | None:
    """Cells and labels of a Leiden clustering with exactly ``k`` clusters.

    Parameters
    ----------
    y
        (N, G) expression, dense or scipy sparse.
    k
        Number of clusters.
    random_state
        Seed of the subset, the PCA, the neighbour graph and Leiden.
    max_cells
        Cluster a random subset of this many cells when there are more (the start needs only
        the K cluster means).
    n_neighbors, n_pcs
        Neighbour graph on the first ``n_pcs`` principal components (the authors' 20 and 50).

    Returns
    -------
    ``(rows, labels)``: the clustered cells (sorted indices) and their clusters ``0 .. k-1``, or
    ``None`` when there are no more cells than clusters, when every cell has the same
    expression, or when the resolution search ends below ``k`` clusters. The resolution is
    bisected until there are exactly ``k`` clusters
    (:func:`~spatialfactors.models.domains.cluster_features`); where it ends above ``k``, the
    smallest cluster is merged into the one with the nearest mean until ``k`` remain.

    Examples
    --------
    >>> import numpy as np
    >>> from spatialfactors.models._start import leiden_start
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat(np.eye(3) * 5, 40, axis=0) + rng.random((120, 3))
    >>> rows, labels = leiden_start(y, 3)
    >>> len(rows), len(np.unique(labels))
    (120, 3)
    """
    import anndata as ad
    import scanpy as sc

    from .domains import cluster_features

    n = y.shape[0]
    rows = np.arange(n)
    if n > max_cells:
        rows = np.sort(np.random.default_rng(random_state).choice(n, max_cells, replace=False))
    sub = y[rows]
    sub = sub.astype(np.float64) if sp.issparse(sub) else np.asarray(sub, dtype=np.float64)
    if len(rows) <= k or not _varies(sub):  # identical cells: no graph to cluster (PCA fails on them)
        return None
    verbosity = sc.settings.verbosity
    sc.settings.verbosity = 0  # up to 30 Leiden runs: their log lines would bury SpiceMix's
    try:
        n_comps = min(n_pcs, sub.shape[1] - 1, len(rows) - 1)
        if n_comps >= 1:
            adata = ad.AnnData(sub)
            sc.pp.pca(adata, n_comps=n_comps, random_state=random_state)
            coords = adata.obsm["X_pca"]
        else:  # one gene: the data are their own coordinates
            coords = sub.toarray() if sp.issparse(sub) else sub
        codes = cluster_features(coords, k, "leiden", n_neighbors=n_neighbors, random_state=random_state)
    finally:
        sc.settings.verbosity = verbosity
    if codes.max() + 1 < k:
        return None
    return rows, _merge_to(codes, k, coords)


def _varies(y) -> bool:
    first = y[:1]
    if sp.issparse(y):
        return (y - sp.csr_matrix(np.ones((y.shape[0], 1))) @ first).count_nonzero() > 0
    return bool(np.any(y != first))


def _merge_to(codes: np.ndarray, k: int, coords: np.ndarray) -> np.ndarray:
    """Merge the smallest cluster into the one with the nearest mean until ``k`` remain (labels 0..k-1)."""
    codes = codes.copy()
    while True:
        present, sizes = np.unique(codes, return_counts=True)
        if len(present) <= k:
            break
        means = np.stack([coords[codes == c].mean(0) for c in present])
        small = int(np.argmin(sizes))
        dist = ((means - means[small]) ** 2).sum(1)
        dist[small] = np.inf
        codes[codes == present[small]] = present[int(np.argmin(dist))]
    return np.unique(codes, return_inverse=True)[1]
