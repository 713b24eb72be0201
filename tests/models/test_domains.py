import numpy as np
import pytest
import scipy.sparse as sp

from spatialfactors.models.domains import cluster_features, majority_vote, smooth_features


def _path(n):
    return sp.diags([1.0, 1.0], [-1, 1], shape=(n, n), format="csr")


def _grid(side):
    line = _path(side)
    eye = sp.eye(side)
    return (sp.kron(line, eye) + sp.kron(eye, line)).tocsr()


def test_smoothing_is_the_mean_over_the_closed_neighbourhood():
    rng = np.random.default_rng(0)
    a = _grid(6)
    a.data[:] = rng.random(a.nnz) + 0.5  # weights are ignored: an edge is an edge
    f = rng.random((36, 3))
    out = smooth_features(f, a)
    for i in range(36):
        members = np.r_[i, a[i].indices]
        np.testing.assert_allclose(out[i], f[members].mean(0), rtol=1e-12)
    np.testing.assert_array_equal(smooth_features(f, a, 0), f)
    np.testing.assert_allclose(smooth_features(f, a, 2), smooth_features(smooth_features(f, a), a), rtol=1e-12)
    # Averaging never leaves the range of the data and keeps a constant field constant.
    assert out.min() >= f.min() and out.max() <= f.max()
    np.testing.assert_allclose(smooth_features(np.ones((36, 2)), a), 1.0)


def test_majority_vote_removes_isolated_labels_and_keeps_domains():
    side = 10
    labels = (np.arange(side * side) % side >= side // 2).astype(np.int64)  # two half-planes
    noisy = labels.copy()
    noisy[[22, 56, 77]] = 1 - noisy[[22, 56, 77]]  # isolated flips inside the domains
    out, rounds = majority_vote(noisy, _grid(side))
    np.testing.assert_array_equal(out, labels)
    assert rounds >= 1
    same, rounds = majority_vote(labels, _grid(side))
    np.testing.assert_array_equal(same, labels)
    assert rounds == 0


def test_majority_vote_keeps_the_own_label_on_ties():
    # 0 - 1 - 2: the middle node sees one of each label: it keeps its own.
    out, _ = majority_vote(np.array([0, 1, 2]), _path(3))
    assert out[1] == 1


@pytest.mark.parametrize("method", ["ward", "kmeans", "leiden"])
def test_clusters_recover_separated_groups(method):
    rng = np.random.default_rng(1)
    truth = np.repeat(np.arange(4), 40)
    f = np.eye(4)[truth] * 5 + rng.normal(0, 0.3, (160, 4))
    labels = cluster_features(f, 4, method)
    assert len(np.unique(labels)) == 4
    # The same partition, numbered from the largest cluster down.
    pairs = set(zip(truth.tolist(), labels.tolist(), strict=True))
    assert len(pairs) == 4
    counts = np.bincount(labels)
    assert (np.diff(counts) <= 0).all()


def test_leiden_searches_the_resolution_for_the_number_asked():
    rng = np.random.default_rng(2)
    f = rng.random((300, 5))
    for n in (3, 7, 12):
        assert len(np.unique(cluster_features(f, n, "leiden"))) == n


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="`method` must be one of"):
        cluster_features(np.zeros((4, 2)), 2, "dbscan")
