"""k-nearest-neighbour filling of missing entries, one shared neighbour search for all columns.

The engine of :func:`spatialfactors.pp.impute_voxels` (the staNMF paper's imputation of voxels
without data: the mean of the nearest voxels where the gene was measured).
"""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors

# Upper bound on the number of (pair, candidate) entries held at once, to bound memory.
_BLOCK = 1 << 22


def _sorted_candidates(tree: NearestNeighbors, coords: np.ndarray, rows: np.ndarray, m: int) -> np.ndarray:
    """Return the ``m`` nearest voxels of each query row, nearest first, ties by index; ``-1`` where unsure.

    A tree returns ties at its last distance in no defined order and may cut a tie group, so the
    candidates at the row's last distance are kept only when ``m`` covers every voxel.
    """
    n = coords.shape[0]
    dist, idx = tree.kneighbors(coords[rows], n_neighbors=m)
    order = np.lexsort((idx, dist), axis=-1)
    dist = np.take_along_axis(dist, order, axis=1)
    idx = np.take_along_axis(idx, order, axis=1)
    if m < n:
        idx[dist >= dist[:, -1:]] = -1
    return idx


def knn_fill(
    coords: np.ndarray,
    values: np.ndarray,
    missing: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    n_neighbors: int,
) -> np.ndarray:
    """Predict ``values[rows, cols]`` from the ``n_neighbors`` nearest voxels observed in the same column.

    The neighbours of voxel i for gene j are the voxels with ``~missing[:, j]``, ordered by
    Euclidean distance in ``coords`` and then by index; the prediction is their mean (summed in
    float64, nearest first). A gene with fewer than ``n_neighbors`` observed voxels predicts the
    mean of all of them. One tree serves all genes: the candidate lists of the query voxels are
    shared and widened (x4) only for the pairs that did not find enough observed voxels.

    Parameters
    ----------
    coords
        (n, d) positions.
    values
        (n, g) data; entries where ``missing`` is true are ignored.
    missing
        (n, g) boolean mask of the missing entries.
    rows, cols
        Entries to predict.
    n_neighbors
        k.

    Returns
    -------
    (len(rows),) float64 predictions.

    Examples
    --------
    >>> import numpy as np
    >>> from spatialfactors.models.impute import knn_fill
    >>> coords = np.arange(5.0)[:, None]
    >>> values = np.array([[1.0], [np.nan], [3.0], [5.0], [7.0]])
    >>> knn_fill(coords, values, np.isnan(values), np.array([1]), np.array([0]), 2).tolist()
    [2.0]
    """
    n = coords.shape[0]
    k = n_neighbors
    pred = np.empty(len(rows), dtype=np.float64)
    if len(rows) == 0:
        return pred
    n_observed = n - missing.sum(axis=0)
    # Fewer observed voxels than k: the k-nearest rule degenerates to the mean of all observed ones.
    few = n_observed[cols] < k
    if few.any():
        for j in np.unique(cols[few]):
            sel = few & (cols == j)
            pred[sel] = values[~missing[:, j], j].sum(dtype=np.float64) / n_observed[j]
    tree = NearestNeighbors().fit(coords)
    # Pairs sorted by voxel so that a block of pairs needs few distinct tree queries.
    pending = np.flatnonzero(~few)
    pending = pending[np.argsort(rows[pending], kind="stable")]
    m = min(n, max(32, 4 * (k + 1)))
    while len(pending):
        unresolved = []
        step = max(1, _BLOCK // m)
        for start in range(0, len(pending), step):
            pairs = pending[start : start + step]
            uniq, inv = np.unique(rows[pairs], return_inverse=True)
            cand = _sorted_candidates(tree, coords, uniq, m)[inv]
            gene = cols[pairs][:, None]
            usable = (cand >= 0) & ~missing[np.maximum(cand, 0), gene]
            rank = np.cumsum(usable, axis=1)
            done = rank[:, -1] >= k
            unresolved.append(pairs[~done])
            take = usable[done] & (rank[done] <= k)
            # np.nonzero walks row-major, so each row's k neighbours come out nearest first.
            r, c = np.nonzero(take)
            neigh = cand[done][r, c].reshape(-1, k)
            pred[pairs[done]] = values[neigh, gene[done]].sum(axis=1, dtype=np.float64) / k
        pending = np.concatenate(unresolved)
        if m == n and len(pending):  # cannot happen: every gene left here has >= k observed voxels
            raise RuntimeError("k-nearest-neighbour search failed to find enough observed voxels.")
        m = min(n, 4 * m)
    return pred
