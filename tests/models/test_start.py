import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score

from spatialfactors.models import domains
from spatialfactors.models._start import _merge_to, leiden_start
from spatialfactors.models.hmrf import _initial_metagenes, fit_hmrf


def _blobs(k=4, per=60, g=12, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.gamma(1.0, 1.0, (k, g)) * 4
    truth = np.repeat(np.arange(k), per)
    return centres[truth] + rng.random((k * per, g)), truth


@pytest.mark.parametrize("k", [3, 4, 6])
def test_leiden_start_recovers_separated_clusters(k):
    y, truth = _blobs(k)
    rows, labels = leiden_start(y, k)
    np.testing.assert_array_equal(rows, np.arange(len(y)))
    assert sorted(np.unique(labels)) == list(range(k))
    assert adjusted_rand_score(truth, labels) == 1.0


def test_leiden_start_sparse_equals_dense():
    y, _ = _blobs()
    dense = leiden_start(y, 4, random_state=3)
    sparse = leiden_start(sp.csr_matrix(y), 4, random_state=3)
    np.testing.assert_array_equal(dense[0], sparse[0])
    assert adjusted_rand_score(dense[1], sparse[1]) == 1.0


def test_leiden_start_clusters_a_subset_of_large_data():
    y, truth = _blobs(per=100)
    rows, labels = leiden_start(y, 4, max_cells=150, random_state=1)
    assert len(rows) == 150 and np.all(np.diff(rows) > 0)
    assert adjusted_rand_score(truth[rows], labels) == 1.0
    again = leiden_start(y, 4, max_cells=150, random_state=1)
    np.testing.assert_array_equal(rows, again[0])
    np.testing.assert_array_equal(labels, again[1])


def test_leiden_start_merges_when_no_resolution_gives_k(monkeypatch):
    # When the resolution search ends above k clusters, the smallest are merged into the nearest
    # until k remain.
    y, truth = _blobs(k=4)
    search = domains.cluster_features
    monkeypatch.setattr(domains, "cluster_features", lambda f, k, *a, **kw: search(f, 2 * k, *a, **kw))
    rows, labels = leiden_start(y, 4)
    assert sorted(np.unique(labels)) == [0, 1, 2, 3]
    assert adjusted_rand_score(truth, labels) > 0.5


def test_leiden_start_returns_none_when_the_search_ends_below_k(monkeypatch):
    y, _ = _blobs(k=4)
    monkeypatch.setattr(domains, "cluster_features", lambda f, k, *a, **kw: np.arange(len(f)) % (k - 1))
    assert leiden_start(y, 4) is None


def test_merge_to_joins_the_smallest_cluster_to_the_nearest():
    coords = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [0.3], [9.0], [9.1]])
    codes = np.array([0, 0, 0, 1, 1, 2, 3, 3])
    np.testing.assert_array_equal(_merge_to(codes, 3, coords), [0, 0, 0, 1, 1, 0, 2, 2])
    np.testing.assert_array_equal(_merge_to(codes, 4, coords), [0, 0, 0, 1, 1, 2, 3, 3])


def test_leiden_start_returns_none_without_k_clusters():
    assert leiden_start(np.ones((3, 4)), 3) is None  # no more cells than clusters
    assert leiden_start(np.ones((40, 4)), 3) is None  # identical cells
    assert leiden_start(sp.csr_matrix(np.ones((40, 4))), 3) is None


def test_leiden_start_metagenes_are_its_cluster_means():
    y, _ = _blobs()
    _, labels = leiden_start(y, 4, random_state=2)
    np.testing.assert_allclose(
        _initial_metagenes(y, 4, 2, init="leiden"), _initial_metagenes(y, 4, 2, labels=labels), rtol=0, atol=0
    )


@pytest.mark.filterwarnings("ignore:Number of distinct clusters:sklearn.exceptions.ConvergenceWarning")
def test_fit_hmrf_leiden_start_falls_back_to_k_means():
    import io

    import scanpy as sc

    y = np.tile(np.array([[1.0, 2.0, 3.0, 4.0]]), (30, 1))  # identical cells: no clusters to find
    a = sp.diags([1.0, 1.0], [-1, 1], shape=(30, 30)).tocsr()
    log, sc.settings.logfile = sc.settings.logfile, io.StringIO()
    try:
        res = fit_hmrf(y, a, 3, init="leiden", max_iter=2)
        text = sc.settings.logfile.getvalue()
    finally:
        sc.settings.logfile = log
    assert "SpiceMix starts from k-means" in text
    ref = fit_hmrf(y, a, 3, max_iter=2)
    np.testing.assert_array_equal(res.M, ref.M)


def test_fit_hmrf_rejects_an_unknown_start():
    with pytest.raises(ValueError, match="`init` must be one of"):
        fit_hmrf(np.ones((5, 3)), sp.eye(5), 2, init="louvain")


def test_fit_hmrf_leiden_start_is_reproducible():
    y, _ = _blobs()
    a = sp.diags([1.0, 1.0], [-1, 1], shape=(len(y), len(y))).tocsr()
    first = fit_hmrf(y, a, 4, init="leiden", max_iter=3, random_state=5)
    second = fit_hmrf(y, a, 4, init="leiden", max_iter=3, random_state=5)
    np.testing.assert_array_equal(first.X, second.X)
    np.testing.assert_array_equal(first.M, second.M)
