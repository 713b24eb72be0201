import numpy as np
import pytest

from spatialfactors.models.genes import (
    assign_patterns,
    dictionary_moments,
    importance_scores,
    logistic_auc,
    n_top_genes,
    rank_genes,
    reconstruction_correlation,
    region_auc,
    top_edges,
)


def _smooth_patterns(n_side=30, k=6, seed=0):
    """k Gaussian blobs on an n_side x n_side grid (obs x k), and the grid coordinates."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n_side, 0:n_side]
    centres = rng.uniform(0, n_side, (k, 2))
    d = np.stack([np.exp(-((xx - c[0]) ** 2 + (yy - c[1]) ** 2) / (0.03 * n_side**2)).ravel() for c in centres], 1)
    return d, np.stack([xx.ravel(), yy.ravel()], 1)


def test_importance_rows_sum_to_one_and_zero_genes_are_nan():
    rng = np.random.default_rng(0)
    a = rng.gamma(0.3, 1.0, (500, 7)) * (rng.random((500, 7)) < 0.6)
    a[:, 0] += 0.1  # every gene but the two below has a non-zero loading
    a[[3, 77]] = 0.0
    r = importance_scores(a)
    valid = a.sum(axis=1) > 0
    np.testing.assert_allclose(r[valid].sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert np.isnan(r[~valid]).all() and (~valid).sum() == 2
    np.testing.assert_allclose(r[valid], a[valid] / a[valid].sum(axis=1, keepdims=True))
    assert (r[valid] >= 0).all()


def test_assignment_is_the_highest_coefficient():
    a = np.array([[0.1, 0.5, 0.2], [2.0, 2.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1e-9]])
    assert assign_patterns(a).tolist() == [1, 0, -1, 2]  # ties: first pattern; all-zero: -1
    rng = np.random.default_rng(1)
    a = rng.random((100, 5))
    np.testing.assert_array_equal(assign_patterns(a), np.argmax(importance_scores(a), axis=1))


def test_rank_breaks_ties_by_coefficient_and_skips_zero_genes():
    a = np.array([[2.0, 0.0], [7.0, 0.0], [3.0, 1.0], [0.0, 0.0], [0.0, 5.0], [7.0, 0.0]])
    r = importance_scores(a)
    # r for PP1: 1, 1, 0.75, nan, 0, 1 -> the three r = 1 genes by coefficient (7, 7 by index, then 2).
    assert rank_genes(r, a, 0).tolist() == [1, 5, 0, 2, 4]
    assert rank_genes(r, a, 1).tolist() == [4, 2, 0, 1, 5]  # r = 0 and a = 0 ties: gene order


@pytest.mark.parametrize(
    ("n", "fraction", "expected"),
    [(4345, 0.0025, 11), (4000, 0.0025, 10), (4001, 0.0025, 11), (100, 0.001, 2), (10, 1.0, 10), (1000, 0.01, 10)],
)
def test_number_of_nodes(n, fraction, expected):
    assert n_top_genes(n, fraction) == expected


def test_moments_in_chunks_equal_the_direct_products():
    rng = np.random.default_rng(2)
    d = rng.random((1001, 4)).astype(np.float32)
    gram, sums, n = dictionary_moments(d, chunk_size=128)
    d64 = d.astype(np.float64)
    np.testing.assert_allclose(gram, d64.T @ d64, rtol=1e-12)
    np.testing.assert_allclose(sums, d64.sum(axis=0), rtol=1e-12)
    assert n == 1001


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_closed_form_correlation_equals_the_direct_computation(dtype):
    d, _ = _smooth_patterns(k=6, seed=3)
    d = (d + 0.05 * np.random.default_rng(3).random(d.shape)).astype(dtype)
    a = np.random.default_rng(4).gamma(0.5, 1.0, (40, 6))
    closed = reconstruction_correlation(*dictionary_moments(d), a)
    direct = np.corrcoef((d.astype(np.float64) @ a.T).T)
    np.testing.assert_allclose(closed, direct, rtol=0, atol=1e-10)
    np.testing.assert_allclose(closed, closed.T)


def test_constant_reconstruction_has_no_correlation():
    rng = np.random.default_rng(5)
    d = np.column_stack([np.full(50, 2.0), rng.random(50)])
    a = np.array([[3.0, 0.0], [1.0, 1.0], [0.5, 2.0]])  # gene 0 uses the constant pattern only
    c = reconstruction_correlation(*dictionary_moments(d), a)
    assert np.isnan(c[0]).all() and np.isnan(c[:, 0]).all()
    np.testing.assert_allclose(c[1:, 1:], np.corrcoef((d @ a[1:].T).T), atol=1e-12)


def test_edges_are_exactly_the_top_fraction_of_the_pairs():
    rng = np.random.default_rng(6)
    m = 20
    x = rng.standard_normal((m, 30))
    c = np.corrcoef(x)
    rows, cols, threshold = top_edges(c, 0.95)
    iu = np.triu_indices(m, 1)
    values = c[iu]
    assert threshold == np.quantile(values, 0.95)
    expected = {(i, j) for i, j, v in zip(*iu, values, strict=True) if v >= threshold}
    assert set(zip(rows.tolist(), cols.tolist(), strict=True)) == expected
    # 190 pairs: the 10 largest (ceil(0.05 * 190) = 10), strictly above every other pair, in decreasing order.
    assert len(rows) == 10
    np.testing.assert_array_equal(c[rows, cols], np.sort(values)[::-1][:10])
    assert c[rows, cols].min() > np.sort(values)[::-1][10]
    assert (rows < cols).all()
    # Quantile 0 keeps every pair; NaN pairs never become edges.
    assert len(top_edges(c, 0.0)[0]) == m * (m - 1) // 2
    c[0, :] = c[:, 0] = np.nan
    r0, c0, _ = top_edges(c, 0.0)
    assert len(r0) == (m - 1) * (m - 2) // 2 and 0 not in r0


def test_logistic_auc_in_sample_and_cross_validated():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2000, 2))
    y = x[:, 0] + 0.5 * rng.standard_normal(2000) > 0.5
    auc, coef, intercept = logistic_auc(x, y)
    auc_cv, coef_cv, _ = logistic_auc(x, y, cv=5)
    assert 0.85 < auc < 1 and abs(auc - auc_cv) < 0.01
    assert coef[0] > 1 and abs(coef[1]) < 0.2 and intercept < 0
    np.testing.assert_array_equal(coef, coef_cv)  # the reported model is the one fitted on all obs


def test_planted_patterns_beat_the_random_subsets():
    d, xy = _smooth_patterns(n_side=30, k=8, seed=8)
    # The region is the union of the places where patterns 2 and 5 are strong.
    target = (d[:, 2] > 0.5) | (d[:, 5] > 0.5)
    res = region_auc(d, target, [5, 2], n_random=200, random_state=0)
    assert res.auc > 0.97
    assert res.auc > np.median(res.null_auc)
    assert res.percentile >= 99.0 and res.p_value < 0.05
    assert res.null_subsets.shape == (200, 2)
    assert (np.diff(res.null_subsets, axis=1) > 0).all()  # sorted, no repeated pattern within a subset
    # Coefficients in the order given; draws of the same subset share one AUC.
    assert res.coef.shape == (2,) and (res.coef > 0).all()
    same = (res.null_subsets == [2, 5]).all(axis=1)
    assert same.any() and np.allclose(res.null_auc[same], res.auc)
    # Reproducible with a seed; another seed draws other subsets.
    again = region_auc(d, target, [5, 2], n_random=200, random_state=0)
    np.testing.assert_array_equal(again.null_auc, res.null_auc)
    other = region_auc(d, target, [5, 2], n_random=200, random_state=1)
    assert not np.array_equal(other.null_subsets, res.null_subsets)


def test_progress_is_called_once_per_model_and_draw():
    d, _ = _smooth_patterns(n_side=15, k=4, seed=9)
    calls = []
    region_auc(d, d[:, 0] > 0.5, [0], n_random=30, progress=calls.append)
    assert calls == [1] * 31
