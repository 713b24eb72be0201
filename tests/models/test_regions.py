import itertools
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from scipy import ndimage

import spatialfactors as sf
from spatialfactors.models.regions import (
    SetScorer,
    adjacency_matrix,
    connected_sets,
    extend_sets,
    region_adjacency,
    search_regions,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "aba_200um"
ANNOTATION = DATA / "grids" / "P56_Mouse_gridAnnotation.zip"


@pytest.fixture(scope="module")
def atlas():
    """The real 200 um grid annotation, its region ids, adjacency (as indices) and brain voxels."""
    if not ANNOTATION.is_file():
        pytest.skip("shared Allen data not available")
    labels, _ = sf.io.read_mhd(ANNOTATION)
    labels = labels.astype(np.int64)
    ids = np.unique(labels[labels > 0])
    edges = region_adjacency(labels)
    mask = labels > 0
    return {
        "labels": labels,
        "ids": ids,
        "edges": edges,
        "index": np.searchsorted(ids, labels[mask]),
        "edge_index": np.searchsorted(ids, edges),
    }


def _smooth_patterns(labels, n_patterns, seed):
    """Smooth random non-negative volumes on the brain voxels (voxels x patterns)."""
    rng = np.random.default_rng(seed)
    vols = [ndimage.gaussian_filter(rng.random(labels.shape), 2.0) for _ in range(n_patterns)]
    return np.stack([v[labels > 0] for v in vols], axis=1)


# -- adjacency --------------------------------------------------------------------------------


def test_adjacency_real_annotation_is_a_clean_edge_list(atlas):
    edges = atlas["edges"]
    assert edges.shape[1] == 2 and len(edges) > 1000
    assert (edges[:, 0] < edges[:, 1]).all()  # no self pairs, each pair once
    assert len(np.unique(edges, axis=0)) == len(edges)
    assert np.isin(edges, atlas["ids"]).all()  # background 0 creates no pair
    # Symmetric: the same pairs from the grid traversed in the opposite direction along every axis.
    flipped = region_adjacency(atlas["labels"][::-1, ::-1, ::-1])
    np.testing.assert_array_equal(flipped, edges)


def test_adjacency_matches_binary_dilation(atlas):
    """The paper's test: a region's 6-connected dilation overlaps exactly its adjacent regions."""
    labels, ids, edges = atlas["labels"], atlas["ids"], atlas["edges"]
    cross = ndimage.generate_binary_structure(3, 1)
    for r in ids:  # every region (about 1 s)
        region = labels == r
        touched = np.unique(labels[ndimage.binary_dilation(region, structure=cross) & ~region])
        expected = set(touched[touched != 0].tolist())
        ours = set(edges[edges[:, 0] == r, 1].tolist()) | set(edges[edges[:, 1] == r, 0].tolist())
        assert ours == expected, r


def test_adjacency_small_grid_and_background():
    labels = np.array([[[1, 1, 0, 2], [3, 3, 3, 2]]])
    # 1 touches 3 below; 2 touches 3 at the right; 1 and 2 are separated by background.
    np.testing.assert_array_equal(region_adjacency(labels), [[1, 3], [2, 3]])
    with pytest.raises(TypeError, match="integer"):
        region_adjacency(labels.astype(float))


# -- connected sets -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edges", "n", "counts"),
    [
        ([[0, 1], [1, 2], [2, 3]], 4, [4, 3, 2, 1]),  # path: triples {012, 123}
        ([[0, 1], [0, 2], [0, 3]], 4, [4, 3, 3, 1]),  # star: C(3, 2) triples through the centre
        ([[0, 1], [1, 2], [0, 2]], 3, [3, 3, 1]),  # triangle: one triple
        ([[0, 1], [2, 3]], 4, [4, 2, 0, 0]),  # two separate pairs: no triple
    ],
)
def test_connected_set_counts_hand_made(edges, n, counts):
    sets = connected_sets(np.array(edges), n, len(counts))
    assert [len(s) for s in sets] == counts


def test_triples_on_path_star_triangle_are_the_expected_sets():
    path = connected_sets(np.array([[0, 1], [1, 2], [2, 3]]), 4, 3)[2]
    np.testing.assert_array_equal(path, [[0, 1, 2], [1, 2, 3]])
    star = connected_sets(np.array([[0, 1], [0, 2], [0, 3]]), 4, 3)[2]
    np.testing.assert_array_equal(star, [[0, 1, 2], [0, 1, 3], [0, 2, 3]])


def test_connected_sets_match_brute_force_on_random_graph():
    graph = nx.gnp_random_graph(14, 0.25, seed=3)
    edges = np.array(graph.edges)
    sets = connected_sets(edges, 14, 5)
    for size in range(1, 6):
        brute = [c for c in itertools.combinations(range(14), size) if nx.is_connected(graph.subgraph(c))]
        np.testing.assert_array_equal(sets[size - 1].reshape(-1, size), np.array(brute).reshape(-1, size))


def test_triples_follow_the_paper_rule_on_real_annotation(atlas):
    """Triples = a third region adjacent to at least one member of an adjacent pair (paper's rule)."""
    n = len(atlas["ids"])
    e = atlas["edge_index"]
    triples = connected_sets(e, n, 3)[2]
    a = adjacency_matrix(e, n)
    # Independent count: paths centred at each node, minus the two extra counts of every triangle.
    degree = np.diff(a.indptr)
    triangles = int((a @ a).multiply(a).sum()) // 6
    assert len(triples) == int((degree * (degree - 1) // 2).sum()) - 2 * triangles
    rng = np.random.default_rng(1)
    dense = a.toarray().astype(bool)
    for t in triples[rng.choice(len(triples), 200, replace=False)]:
        links = dense[np.ix_(t, t)].sum() // 2
        assert links >= 2  # connected: a path or a triangle


def test_key_encoding_and_row_fallback_agree():
    """Huge node indices use the row-sort fallback; it must agree with the base-n keys."""
    graph = nx.gnp_random_graph(10, 0.35, seed=5)
    edges = np.array(graph.edges)
    small = connected_sets(edges, 10, 4)
    offset = 2**21  # 2**21 nodes: sets of 3 no longer fit a base-n int64 key
    big = connected_sets(edges + offset, offset + 10, 4)
    assert len(big[0]) == offset + 10
    for s, b in zip(small[1:], big[1:], strict=True):
        np.testing.assert_array_equal(b - offset, s)


def test_extend_sets_and_cap():
    a = adjacency_matrix(np.array([[0, 1], [1, 2], [2, 3], [3, 0]]), 4)  # a 4-cycle
    np.testing.assert_array_equal(extend_sets(np.array([[0, 1]]), a), [[0, 1, 2], [0, 1, 3]])
    capped = connected_sets(np.array([[0, 1], [1, 2], [2, 3], [3, 0]]), 4, 4, max_candidates=1)
    assert len(capped) == 2  # sizes 1 and 2 only: the cap stops the enumeration at triples


# -- scores from sufficient statistics ------------------------------------------------------------


def test_correlation_from_region_sums_equals_corrcoef(atlas):
    p = _smooth_patterns(atlas["labels"], 3, seed=0)
    index = atlas["index"]
    scorer = SetScorer.from_voxels(p, index, len(atlas["ids"]))
    sets = connected_sets(atlas["edge_index"], len(atlas["ids"]), 3)
    rng = np.random.default_rng(2)
    for size in (1, 2, 3):
        chosen = sets[size - 1][rng.choice(len(sets[size - 1]), 25, replace=False)]
        ours = scorer.score(chosen)
        for row, s in zip(ours, chosen, strict=True):
            union = np.isin(index, s).astype(float)
            direct = [np.corrcoef(p[:, k], union)[0, 1] for k in range(3)]
            np.testing.assert_allclose(row, direct, rtol=0, atol=1e-12)


def test_dice_from_region_counts_equals_direct(atlas):
    p = _smooth_patterns(atlas["labels"], 2, seed=4)
    index = atlas["index"]
    scorer = SetScorer.from_voxels(p, index, len(atlas["ids"]), metric="dice", dice_threshold=0.4)
    binary = p >= p.min(0) + 0.4 * (p.max(0) - p.min(0))
    pairs = connected_sets(atlas["edge_index"], len(atlas["ids"]), 2)[1][:50]
    for row, s in zip(scorer.score(pairs), pairs, strict=True):
        union = np.isin(index, s)
        direct = [2 * (binary[:, k] & union).sum() / (binary[:, k].sum() + union.sum()) for k in range(2)]
        np.testing.assert_allclose(row, direct, rtol=1e-14)


def test_degenerate_unions_have_no_correlation():
    labels = np.array([0, 0, 1, 1])
    scorer = SetScorer.from_voxels(np.array([[1.0], [2.0], [3.0], [5.0]]), labels, 2)
    assert np.isnan(scorer.score(np.array([[0, 1]]))).all()  # covers every voxel
    constant = SetScorer.from_voxels(np.ones((4, 1)), labels, 2)
    assert np.isnan(constant.score(np.array([[0]]))).all()  # a constant pattern
    with pytest.raises(ValueError, match="metric"):
        SetScorer.from_voxels(np.ones((4, 1)), labels, 2, metric="spearman")


# -- search -----------------------------------------------------------------------------------------


def _planted(atlas, region_sets, noise, seed):
    rng = np.random.default_rng(seed)
    ids = atlas["ids"]
    cols = [np.isin(atlas["index"], np.searchsorted(ids, s)).astype(float) for s in region_sets]
    p = np.stack(cols, axis=1)
    return np.clip(p + noise * rng.standard_normal(p.shape), 0, None)


def _contiguous(atlas, size, min_voxels, seed):
    """A random contiguous set of ``size`` real regions, each of at least ``min_voxels`` voxels."""
    n = len(atlas["ids"])
    counts = np.bincount(atlas["index"], minlength=n)
    big = counts >= min_voxels
    e = atlas["edge_index"]
    e = e[big[e[:, 0]] & big[e[:, 1]]]
    sets = connected_sets(e, n, size)[size - 1]
    pick = sets[np.random.default_rng(seed).integers(len(sets))]
    return atlas["ids"][pick]


def test_planted_pair_and_triple_are_recovered(atlas):
    pair = _contiguous(atlas, 2, 150, seed=0)
    triple = _contiguous(atlas, 3, 150, seed=1)
    p = _planted(atlas, [pair, triple], noise=0.4, seed=0)
    scorer = SetScorer.from_voxels(p, atlas["index"], len(atlas["ids"]))
    result = search_regions(scorer, atlas["edge_index"], max_regions=3)
    ids = atlas["ids"]
    np.testing.assert_array_equal(ids[result.best_sets[1][0]], np.sort(pair))
    np.testing.assert_array_equal(ids[result.best_sets[2][1]], np.sort(triple))
    np.testing.assert_array_equal(result.selected, [2, 3])
    assert result.search == ["exact"] * 3
    assert result.n_candidates[1] == len(atlas["edges"])
    # The single-region table is the score of every region.
    np.testing.assert_allclose(result.region_scores, scorer.score(np.arange(len(ids))).T)


def test_beam_search_equals_exact_search_small_case():
    graph = nx.connected_watts_strogatz_graph(18, 4, 0.3, seed=2)
    edges = np.array(graph.edges)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 18, 600)
    p = rng.random((600, 4)) + np.isin(labels, [0, 1, 2, 3])[:, None] * np.array([2.0, 0, 1, 0])
    scorer = SetScorer.from_voxels(p, labels, 18)
    exact = search_regions(scorer, edges, max_regions=5, max_candidates=None)
    n_sets = max(len(s) for s in connected_sets(edges, 18, 5))
    # A beam holding every connected set of the previous size is the exact search.
    full = search_regions(scorer, edges, max_regions=5, max_candidates=1, beam_width=n_sets)
    assert exact.search == ["exact"] * 5 and full.search == ["exact", "exact", "beam", "beam", "beam"]
    for size in range(5):
        np.testing.assert_array_equal(full.best_sets[size], exact.best_sets[size])
        np.testing.assert_allclose(full.best_scores[size], exact.best_scores[size])
    # A narrow beam still finds the exact optimum here.
    narrow = search_regions(scorer, edges, max_regions=5, max_candidates=1, beam_width=10)
    for size in range(5):
        np.testing.assert_allclose(narrow.best_scores[size], exact.best_scores[size])


def test_beam_finds_planted_four_regions_on_real_annotation(atlas):
    quad = _contiguous(atlas, 3, 100, seed=5)
    # Grow the planted triple by one more adjacent region to get a contiguous 4-set.
    e = atlas["edges"]
    extra = np.setdiff1d(np.concatenate([e[np.isin(e[:, 0], quad), 1], e[np.isin(e[:, 1], quad), 0]]), quad)
    counts = dict(zip(*np.unique(atlas["labels"][atlas["labels"] > 0], return_counts=True), strict=True))
    quad = np.sort(np.r_[quad, max(extra, key=lambda r: counts[r])])
    p = _planted(atlas, [quad], noise=0.3, seed=3)
    scorer = SetScorer.from_voxels(p, atlas["index"], len(atlas["ids"]))
    result = search_regions(scorer, atlas["edge_index"], max_regions=4, max_candidates=1_000_000, beam_width=20)
    assert result.search == ["exact", "exact", "exact", "beam"]
    np.testing.assert_array_equal(atlas["ids"][result.best_sets[3][0]], quad)
    assert result.selected[0] == 4


def test_no_set_of_a_size():
    labels = np.array([0, 0, 1, 1, 2, 2])
    scorer = SetScorer.from_voxels(np.arange(6.0)[:, None], labels, 3)
    result = search_regions(scorer, np.array([[0, 1]]), max_regions=3)  # region 2 touches nothing
    assert result.n_candidates == [3, 1, 0]
    assert (result.best_sets[2] == -1).all() and np.isnan(result.best_scores[2]).all()
