"""Region linking engine: region adjacency on a label grid and the search over contiguous region sets.

Cahill et al. (Methods, "Spatial Neighborhood Query" and "Spatial Correlation Analysis and Entity
Linking") link every principal pattern to the single atlas region, the spatially contiguous pair
and the contiguous triple of regions whose union mask correlates best with it. This module does
that on arrays, without AnnData:

- :func:`region_adjacency`: the pairs of labels carried by face-adjacent voxels, in one pass;
- :func:`connected_sets`: all connected region sets of each size (pairs, triples, ...), i.e. the
  connected induced subgraphs of the region adjacency graph, with a cap on the work;
- :class:`SetScorer`: the score of a pattern against the union of disjoint regions from per-region
  sufficient statistics, so that no voxel is touched per candidate set;
- :func:`search_regions`: exact search over all connected sets up to a size, and a beam search
  beyond the affordable sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import scipy.sparse as sp

#: Scores the search understands.
METRICS = ("pearson", "dice")

#: A larger region set replaces a smaller one as a pattern's link only when it scores higher by
#: more than this (the 0.0001 margin of the paper's search over 1, 2 and 3 regions).
MIN_GAIN = 1e-4


def region_adjacency(labels: np.ndarray, *, background: int = 0) -> np.ndarray:
    """Pairs of regions that touch through a face, from one pass over the label grid.

    Two regions are adjacent (spatially contiguous) when a voxel of one shares a face with a
    voxel of the other. This is exactly the paper's binary-dilation test: dilating region
    ``A`` with the 6-connected (face) structuring element adds to ``A`` the voxels that share a
    face with one of its voxels, so the dilation overlaps another region ``B`` if and only if some
    pair of face-adjacent voxels carries the labels ``A`` and ``B``. Comparing every voxel with its
    successor along each axis visits every face-adjacent pair once, which gives all adjacent
    pairs at once instead of one dilation and one overlap test per pair of regions.

    Parameters
    ----------
    labels
        Integer label grid (any number of dimensions); one label per region.
    background
        Label of voxels that belong to no region (outside the brain); they create no adjacency.

    Returns
    -------
    Array ``(n_pairs, 2)`` of label pairs ``(a, b)`` with ``a < b``, without duplicates, sorted.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.array([[1, 1, 2], [3, 0, 2]])
    >>> region_adjacency(labels)
    array([[1, 2],
           [1, 3]])
    """
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"`labels` must be an integer array, got dtype {labels.dtype}.")
    chunks = [np.empty((0, 2), dtype=labels.dtype)]
    for axis in range(labels.ndim):
        lo = labels[(slice(None),) * axis + (slice(None, -1),)]
        hi = labels[(slice(None),) * axis + (slice(1, None),)]
        cross = (lo != hi) & (lo != background) & (hi != background)
        a, b = lo[cross], hi[cross]
        chunks.append(np.column_stack([np.minimum(a, b), np.maximum(a, b)]))
    return np.unique(np.concatenate(chunks), axis=0)


def adjacency_matrix(edges: np.ndarray, n_nodes: int) -> sp.csr_matrix:
    """Symmetric 0/1 adjacency matrix of the graph on nodes ``0 .. n_nodes - 1`` with the given edges."""
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    if edges.size and (edges.min() < 0 or edges.max() >= n_nodes):
        raise ValueError(f"Edge endpoints must lie in [0, {n_nodes}).")
    rows = np.concatenate([edges[:, 0], edges[:, 1]])
    cols = np.concatenate([edges[:, 1], edges[:, 0]])
    a = sp.csr_matrix((np.ones(rows.size, dtype=np.int32), (rows, cols)), shape=(n_nodes, n_nodes))
    a.data[:] = 1  # duplicate edges collapse to one
    a.setdiag(0)
    a.eliminate_zeros()
    return a


def _fits_key(n_nodes: int, size: int) -> bool:
    """Whether sets of ``size`` nodes can be encoded as base-``n_nodes`` numbers in an int64."""
    return float(max(n_nodes, 2)) ** size < 2.0**62


def _sorted_unique(key: np.ndarray) -> np.ndarray:
    key = np.sort(key)
    return key[np.concatenate([[True], key[1:] != key[:-1]])] if key.size else key


def _decode(key: np.ndarray, size: int, n_nodes: int) -> np.ndarray:
    out = np.empty((key.size, size), dtype=np.int64)
    for j in range(size - 1, -1, -1):
        key, out[:, j] = np.divmod(key, n_nodes)
    return out


def _unique_rows(rows: np.ndarray, n_nodes: int) -> np.ndarray:
    """Return the unique rows (each sorted ascending), in lexicographic order."""
    size = rows.shape[1]
    if rows.shape[0] == 0 or not _fits_key(n_nodes, size):
        return np.unique(rows, axis=0) if rows.shape[0] else rows
    # Rows of sorted node indices as base-n numbers: one 1D sort instead of a row sort.
    key = np.zeros(rows.shape[0], dtype=np.int64)
    for j in range(size):
        key = key * n_nodes + rows[:, j]
    return _decode(_sorted_unique(key), size, n_nodes)


def n_extensions(sets: np.ndarray, adjacency: sp.csr_matrix) -> int:
    """Count the candidates that extending every set by one neighbour generates before de-duplication.

    Every set is extended by every neighbour of each of its members, so the count is the sum of
    the members' degrees; it bounds the work and memory of :func:`extend_sets`.
    """
    degree = np.diff(adjacency.indptr)
    return int(degree[sets].sum())


def extend_sets(sets: np.ndarray, adjacency: sp.csr_matrix) -> np.ndarray:
    """All connected sets with one more node that contain one of ``sets``.

    Every connected set of ``s + 1`` nodes contains a connected set of ``s`` nodes (drop a leaf
    of a spanning tree), so extending all connected ``s``-sets by a neighbour outside the set
    gives all connected ``(s + 1)``-sets.

    Parameters
    ----------
    sets
        Array ``(n_sets, s)`` of node indices, each row a connected set.
    adjacency
        Symmetric adjacency matrix (see :func:`adjacency_matrix`).

    Returns
    -------
    Array ``(n_new, s + 1)``: the new sets, each row sorted, rows unique and sorted.

    Examples
    --------
    >>> import numpy as np
    >>> a = adjacency_matrix(np.array([[0, 1], [1, 2], [2, 3]]), 4)  # a path 0-1-2-3
    >>> extend_sets(np.array([[0, 1], [1, 2], [2, 3]]), a)
    array([[0, 1, 2],
           [1, 2, 3]])
    """
    sets = np.asarray(sets, dtype=np.int64)
    n_sets, size = sets.shape
    n_nodes = adjacency.shape[0]
    if n_sets == 0:
        return np.empty((0, size + 1), dtype=np.int64)
    if not _fits_key(n_nodes, size + 1):
        owner, neighbour = _set_neighbours(sets, adjacency)
        grown = np.column_stack([sets[owner], neighbour])
        grown.sort(axis=1)
        return _unique_rows(grown, n_nodes)
    # Chunks of sets with a bounded number of candidates keep the temporaries small.
    degree = np.diff(adjacency.indptr)
    work = np.cumsum(degree[sets].sum(axis=1))
    bounds = np.searchsorted(work, np.arange(_CHUNK, work[-1], _CHUNK), side="right")
    keys = [
        _sorted_unique(_grown_keys(sets[lo:hi], adjacency))
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, n_sets], strict=True)
        if hi > lo
    ]
    key = keys[0] if len(keys) == 1 else _sorted_unique(np.concatenate(keys))
    return _decode(key, size + 1, n_nodes)


#: Candidates processed at once by :func:`extend_sets`.
_CHUNK = 1 << 22


def _set_neighbours(sets: np.ndarray, adjacency: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Every (set, neighbour outside the set) pair, as row indices into ``sets`` and node indices."""
    n_sets, size = sets.shape
    indptr, indices = adjacency.indptr, adjacency.indices
    members = sets.ravel()
    counts = (indptr[members + 1] - indptr[members]).astype(np.int64)
    owner = np.repeat(np.repeat(np.arange(n_sets), size), counts)
    starts = np.repeat(indptr[members] - np.cumsum(counts) + counts, counts)
    neighbour = indices[np.arange(counts.sum()) + starts].astype(np.int64)
    outside = np.ones(owner.size, dtype=bool)
    for j in range(size):
        outside &= sets[owner, j] != neighbour
    return owner[outside], neighbour[outside]


def _grown_keys(sets: np.ndarray, adjacency: sp.csr_matrix) -> np.ndarray:
    """Each set grown by one outside neighbour, as the base-n number of its sorted members."""
    size = sets.shape[1]
    owner, neighbour = _set_neighbours(sets, adjacency)
    # No row sort needed: a member larger than the new node moves one place to the right.
    power = adjacency.shape[0] ** np.arange(size, -1, -1, dtype=np.int64)  # weight of each place
    key = np.zeros(owner.size, dtype=np.int64)
    place = np.zeros(owner.size, dtype=np.int64)
    for j in range(size):
        member = sets[owner, j]
        after = member > neighbour
        key += member * power[j + after]
        place += ~after
    key += neighbour * power[place]
    return key


def connected_sets(
    edges: np.ndarray, n_nodes: int, max_size: int, *, max_candidates: int | None = None
) -> list[np.ndarray]:
    """All connected node sets of 1, 2, ..., ``max_size`` nodes (connected induced subgraphs).

    For regions of an atlas these are the spatially contiguous combinations: the pairs are the
    adjacent pairs, and a triple is contiguous when its third region is adjacent to at least one
    member of an adjacent pair (the paper's rule), and so on for larger sets.

    Parameters
    ----------
    edges
        Array ``(n_edges, 2)`` of node indices in ``[0, n_nodes)``.
    n_nodes
        Number of nodes.
    max_size
        Largest set size.
    max_candidates
        Cap on the work of one size: sizes from 3 on are enumerated only while the candidates
        that extending the previous size generates (counted by :func:`n_extensions`, before
        removing duplicates) are at most this many. ``None``: no cap.

    Returns
    -------
    List whose entry ``s - 1`` holds the sets of ``s`` nodes, an array ``(n_sets, s)`` with rows
    sorted; shorter than ``max_size`` when the cap stopped the enumeration.

    Examples
    --------
    >>> import numpy as np
    >>> star = np.array([[0, 1], [0, 2], [0, 3]])
    >>> [len(s) for s in connected_sets(star, 4, 4)]
    [4, 3, 3, 1]
    """
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    adjacency = adjacency_matrix(edges, n_nodes)
    out = [np.arange(n_nodes, dtype=np.int64)[:, None]]
    if max_size >= 2:
        pairs = np.sort(edges[edges[:, 0] != edges[:, 1]], axis=1)
        out.append(_unique_rows(pairs, n_nodes))
    for _ in range(3, max_size + 1):
        if max_candidates is not None and n_extensions(out[-1], adjacency) > max_candidates:
            break
        out.append(extend_sets(out[-1], adjacency))
    return out


@dataclass
class SetScorer:
    """Score of every pattern against the union of disjoint regions, from per-region statistics.

    For a binary mask ``u`` over ``n`` voxels with ``n_u`` ones and a pattern ``p``,

    ``corr(p, u) = (S_u - n_u mean(p)) / (sqrt(n_u (1 - n_u / n)) sqrt(sum (p - mean(p))^2))``

    where ``S_u`` is the sum of ``p`` over the mask. Regions are disjoint, so for a union of
    regions ``S_u`` and ``n_u`` are sums of per-region sums and voxel counts: a candidate set costs
    a few additions per pattern, whatever its number of voxels. The sums are taken over the
    pattern centred on its mean, which makes the numerator a plain sum.

    The Dice score of a binarised pattern ``t`` (voxels where the pattern reaches
    ``dice_threshold`` of its range, ``p >= min + dice_threshold (max - min)``) with the mask is
    ``2 |t & u| / (|t| + n_u)``, again a sum of per-region counts of ``t``.

    Build it with :meth:`from_voxels`.

    Attributes
    ----------
    sums
        Array ``(n_regions, n_patterns)``: per region, the sum of the centred pattern (Pearson) or
        the number of voxels of the binarised pattern (Dice).
    counts
        Voxels per region.
    n_voxels
        All voxels, including those in no region.
    norm
        Per pattern, ``sqrt(sum (p - mean)^2)`` (Pearson) or ``|t|`` (Dice).
    metric
        ``'pearson'`` or ``'dice'``.
    """

    sums: np.ndarray
    counts: np.ndarray
    n_voxels: int
    norm: np.ndarray
    metric: str = "pearson"
    chunk_size: int = field(default=1 << 16, repr=False)

    @classmethod
    def from_voxels(
        cls,
        patterns: np.ndarray,
        region_index: np.ndarray,
        n_regions: int,
        *,
        metric: Literal["pearson", "dice"] = "pearson",
        dice_threshold: float = 0.5,
    ) -> SetScorer:
        """Per-region statistics of every pattern.

        Parameters
        ----------
        patterns
            Array ``(n_voxels, n_patterns)``.
        region_index
            Region of every voxel, an index in ``[0, n_regions)``, or -1 for voxels in no region
            (they count as voxels outside every mask).
        n_regions
            Number of regions.
        metric
            ``'pearson'`` or ``'dice'``.
        dice_threshold
            For Dice: fraction of each pattern's range (from its minimum) at which it is binarised.

        Returns
        -------
        The scorer.
        """
        if metric not in METRICS:
            raise ValueError(f"`metric` must be one of {METRICS}, got {metric!r}.")
        p = np.asarray(patterns, dtype=np.float64)
        if p.ndim == 1:
            p = p[:, None]
        region_index = np.asarray(region_index, dtype=np.int64)
        if region_index.shape != (p.shape[0],):
            raise ValueError(f"`region_index` has shape {region_index.shape}, expected ({p.shape[0]},).")
        inside = region_index >= 0
        if (region_index >= n_regions).any():
            raise ValueError(f"`region_index` has entries >= n_regions ({n_regions}).")
        # Voxel -> region indicator; one sparse product gives all per-region statistics.
        indicator = sp.csr_matrix(
            (np.ones(int(inside.sum())), (region_index[inside], np.flatnonzero(inside))),
            shape=(n_regions, p.shape[0]),
        )
        counts = np.asarray(indicator.sum(axis=1), dtype=np.float64).ravel()
        if metric == "pearson":
            centred = p - p.mean(axis=0)
            sums = np.asarray(indicator @ centred)
            norm = np.sqrt((centred**2).sum(axis=0))
        else:
            low, high = p.min(axis=0), p.max(axis=0)
            binary = (p >= low + dice_threshold * (high - low)).astype(np.float64)
            sums = np.asarray(indicator @ binary)
            norm = binary.sum(axis=0)
        return cls(sums=sums, counts=counts, n_voxels=int(p.shape[0]), norm=norm, metric=metric)

    @property
    def n_patterns(self) -> int:
        """Number of patterns."""
        return self.sums.shape[1]

    def score(self, sets: np.ndarray, patterns: np.ndarray | slice | None = None) -> np.ndarray:
        """Scores ``(n_sets, n_patterns)`` of the unions of the region sets (rows of region indices).

        A union that covers no voxel or every voxel has no Pearson correlation (NaN).
        """
        sets = np.asarray(sets, dtype=np.int64)
        if sets.ndim == 1:
            sets = sets[:, None]
        cols = slice(None) if patterns is None else patterns
        sums, norm = self.sums[:, cols], self.norm[cols]
        s = sums[sets[:, 0]].copy()
        n = self.counts[sets[:, 0]].copy()
        for j in range(1, sets.shape[1]):
            s += sums[sets[:, j]]
            n += self.counts[sets[:, j]]
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.metric == "pearson":
                spread = np.sqrt(n * (1.0 - n / self.n_voxels))
                # Clip rounding excursions past +-1 (a perfect match gives 1 + 1e-16).
                out = np.clip(s / (spread[:, None] * norm[None, :]), -1.0, 1.0)
                out[(spread <= 0) | (n <= 0)] = np.nan
            else:
                out = 2.0 * s / (norm[None, :] + n[:, None])
        out[~np.isfinite(out)] = np.nan
        return out

    def top(self, sets: np.ndarray, n_top: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Return the ``n_top`` best sets for every pattern, scored in chunks.

        Returns
        -------
        ``(index, score)``, arrays ``(n_patterns, min(n_top, n_sets))``: row indices into ``sets``
        and their scores, best first (ties broken by the lower index; NaN scores last).
        """
        sets = np.asarray(sets, dtype=np.int64)
        if sets.ndim == 1:
            sets = sets[:, None]
        n_sets = sets.shape[0]
        n_top = min(n_top, n_sets)
        best_idx = np.empty((self.n_patterns, 0), dtype=np.int64)
        best_val = np.empty((self.n_patterns, 0))
        for start in range(0, n_sets, self.chunk_size):
            stop = min(start + self.chunk_size, n_sets)
            vals = self.score(sets[start:stop]).T  # (n_patterns, chunk)
            idx = np.broadcast_to(np.arange(start, stop), vals.shape)
            best_idx, best_val = _keep_top(
                np.concatenate([best_idx, idx], axis=1), np.concatenate([best_val, vals], axis=1), n_top
            )
        return best_idx, best_val


def _keep_top(idx: np.ndarray, val: np.ndarray, n_top: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``n_top`` largest values (NaN lowest), ties by the smaller index, best first."""
    key = np.where(np.isnan(val), -np.inf, val)
    n_top = min(n_top, key.shape[1])
    if key.shape[1] > n_top:
        part = np.argpartition(-key, n_top - 1, axis=1)[:, :n_top]
        # argpartition splits ties at the boundary arbitrarily: take every entry tied with the cut.
        cut = np.take_along_axis(key, part, axis=1).min(axis=1, keepdims=True)
        keep = key >= cut
    else:
        keep = np.ones_like(key, dtype=bool)
    out_idx = np.empty((key.shape[0], n_top), dtype=np.int64)
    out_val = np.empty((key.shape[0], n_top))
    for r in range(key.shape[0]):
        cols = np.flatnonzero(keep[r])
        order = np.lexsort((idx[r, cols], -key[r, cols]))[:n_top]
        out_idx[r] = idx[r, cols[order]]
        out_val[r] = val[r, cols[order]]
    return out_idx, out_val


@dataclass
class RegionSearch:
    """Result of :func:`search_regions`.

    Attributes
    ----------
    region_scores
        Array ``(n_patterns, n_regions)``: every pattern against every single region.
    best_sets
        Entry ``s - 1``: array ``(n_patterns, s)`` of the region indices of each pattern's best set of
        ``s`` regions (sorted), or -1 where no connected set of that size exists.
    best_scores
        Entry ``s - 1``: array ``(n_patterns,)`` of their scores (NaN where none exists).
    n_candidates
        Entry ``s - 1``: connected sets of ``s`` regions that were scored (all of them for an exact
        size; the distinct sets the beams visited for a beam size).
    search
        Entry ``s - 1``: ``'exact'`` or ``'beam'``.
    selected
        Array ``(n_patterns,)``: the size of each pattern's link (the best set over all sizes, a
        larger set replacing a smaller one only when better by more than :data:`MIN_GAIN`).
    """

    region_scores: np.ndarray
    best_sets: list[np.ndarray]
    best_scores: list[np.ndarray]
    n_candidates: list[int]
    search: list[str]
    selected: np.ndarray


def search_regions(
    scorer: SetScorer,
    edges: np.ndarray,
    *,
    max_regions: int = 3,
    max_candidates: int | None = 30_000_000,
    beam_width: int = 200,
) -> RegionSearch:
    """Best single region and best connected set of 2, 3, ..., ``max_regions`` regions per pattern.

    Sizes are searched exactly over all connected sets (:func:`connected_sets`) while their
    enumeration stays within ``max_candidates``. Larger sizes use a beam search per pattern: the
    ``beam_width`` best sets of the previous size are extended by every adjacent region, and the
    ``beam_width`` best of the extensions are kept. When the beam holds every connected set of
    the previous size, the beam search is the exact search.

    Parameters
    ----------
    scorer
        Per-region statistics of the patterns (:meth:`SetScorer.from_voxels`).
    edges
        Adjacent region pairs, as region indices ``(n_edges, 2)``.
    max_regions
        Largest number of regions in a set.
    max_candidates
        Cap on the candidates of one exact size (see :func:`connected_sets`); ``None``: no cap.
    beam_width
        Sets kept per pattern and size in the beam search.

    Returns
    -------
    The search result.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.repeat(np.arange(4), 5)  # 4 regions of 5 voxels in a row
    >>> edges = np.array([[0, 1], [1, 2], [2, 3]])
    >>> pattern = np.isin(labels, [1, 2]).astype(float)[:, None]
    >>> result = search_regions(SetScorer.from_voxels(pattern, labels, 4), edges, max_regions=3)
    >>> result.best_sets[1], round(float(result.best_scores[1][0]), 6), int(result.selected[0])
    (array([[1, 2]]), 1.0, 2)
    """
    n_regions, n_patterns = scorer.sums.shape
    adjacency = adjacency_matrix(edges, n_regions)
    exact = connected_sets(edges, n_regions, max_regions, max_candidates=max_candidates)
    best_sets, best_scores, n_candidates, search = [], [], [], []
    region_scores = scorer.score(exact[0]).T
    beam: list[np.ndarray] | None = None
    for size in range(1, max_regions + 1):
        if size <= len(exact):
            sets = exact[size - 1]
            last_exact = size == len(exact) and size < max_regions
            idx, val = scorer.top(sets, beam_width if last_exact else 1)
            if last_exact:  # the beams start from the best sets of the last exact size
                beam = [sets[idx[k]] for k in range(n_patterns)]
            chosen = np.full((n_patterns, size), -1, dtype=np.int64)
            score = np.full(n_patterns, np.nan)
            if idx.shape[1]:
                chosen, score = sets[idx[:, 0]], val[:, 0]
            n_candidates.append(int(sets.shape[0]))
            search.append("exact")
        else:
            chosen = np.full((n_patterns, size), -1, dtype=np.int64)
            score = np.full(n_patterns, np.nan)
            visited = []
            for k in range(n_patterns):
                cand = extend_sets(beam[k], adjacency)
                visited.append(cand)
                if cand.shape[0] == 0:
                    beam[k] = cand
                    continue
                vals = scorer.score(cand, patterns=[k])[:, 0]
                idx, val = _keep_top(np.arange(cand.shape[0])[None, :], vals[None, :], beam_width)
                beam[k] = cand[idx[0]]
                chosen[k], score[k] = cand[idx[0, 0]], val[0, 0]
            n_candidates.append(int(_unique_rows(np.concatenate(visited), n_regions).shape[0]))
            search.append("beam")
        best_sets.append(chosen)
        best_scores.append(score)
    selected = np.ones(n_patterns, dtype=np.int64)
    current = np.where(np.isnan(best_scores[0]), -np.inf, best_scores[0])
    for size in range(2, max_regions + 1):
        better = best_scores[size - 1] > current + MIN_GAIN  # NaN compares False
        selected[better] = size
        current = np.where(better, best_scores[size - 1], current)
    return RegionSearch(region_scores, best_sets, best_scores, n_candidates, search, selected)
