import itertools

import numpy as np
import pytest

from spatialfactors.models.stability import cross_correlation, dissimilarity, instability, nested_instability


@pytest.fixture(scope="module")
def dictionary():
    return np.random.default_rng(0).random((200, 5))


@pytest.mark.parametrize("metric", ["hungarian", "amari"])
def test_zero_for_identical_permuted_rescaled(dictionary, metric):
    perm = dictionary[:, [3, 0, 4, 1, 2]] * np.array([2.0, 0.5, 7.0, 1.0, 3.0])
    result = instability([dictionary, dictionary.copy(), perm], metric)
    assert result.mean == pytest.approx(0.0, abs=1e-12)
    assert result.std == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(result.pairwise, 0.0, atol=1e-12)


def test_hand_computed_small_case():
    d1 = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    d2 = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    c = cross_correlation(d1, d2)
    r = 1 / np.sqrt(2)
    # Unit-norm columns: <(1,1,0), (0,1,1)> / 2 = 1/2, <(1,1,0), (1,0,0)> / sqrt2, <(0,1,1), (0,1,1)> / 2 = 1.
    np.testing.assert_allclose(c, [[0.5, r], [1.0, 0.0]])
    # Hungarian: the assignment (0->1, 1->0) keeps r and 1.
    assert dissimilarity(c, "hungarian") == pytest.approx(1 - (r + 1.0) / 2)
    # Amari: column maxima 1 and r, row maxima r and 1 -> (4 - 2 (1 + r)) / 4.
    assert dissimilarity(c, "amari") == pytest.approx((4 - 2 * (1 + r)) / 4)


def test_hungarian_is_the_best_permutation():
    rng = np.random.default_rng(3)
    c = rng.uniform(-1, 1, (5, 5))
    best = max(np.mean(c[range(5), list(p)]) for p in itertools.permutations(range(5)))
    assert dissimilarity(c, "hungarian") == pytest.approx(1 - best)


def test_centered_option_is_pearson(dictionary):
    other = np.random.default_rng(1).random((200, 5))
    c = cross_correlation(dictionary, other, centered=True)
    np.testing.assert_allclose(c, np.corrcoef(dictionary.T, other.T)[:5, 5:], atol=1e-12)


def test_mean_and_std_follow_the_definitions():
    rng = np.random.default_rng(2)
    dicts = [rng.random((50, 3)) for _ in range(6)]
    result = instability(dicts, "amari")
    pairs = [
        dissimilarity(cross_correlation(dicts[p], dicts[q]), "amari") for p, q in itertools.combinations(range(6), 2)
    ]
    assert result.mean == pytest.approx(np.mean(pairs))
    assert result.std == pytest.approx(np.sqrt(2 * np.var(pairs) / 6))
    np.testing.assert_allclose(result.pairwise, result.pairwise.T)


@pytest.mark.parametrize(("metric", "centered", "absolute"), [("hungarian", False, False), ("amari", True, True)])
def test_nested_instability_equals_one_instability_per_k(metric, centered, absolute):
    # The principal axes at K are the leading K at the largest K: one Gram matrix serves every K.
    rng = np.random.default_rng(4)
    dicts = [rng.normal(size=(120, 7)) for _ in range(5)]
    got = nested_instability(dicts, [2, 5, 7], metric, centered=centered, absolute=absolute)
    assert list(got) == [2, 5, 7]
    for k, inst in got.items():
        want = instability([d[:, :k] for d in dicts], metric, centered=centered, absolute=absolute)
        assert inst.mean == pytest.approx(want.mean, rel=1e-12, abs=1e-14)
        assert inst.std == pytest.approx(want.std, rel=1e-10, abs=1e-14)
        np.testing.assert_allclose(inst.pairwise, want.pairwise, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="`metric` must be one of"):
        nested_instability(dicts, [2], "cosine")


def test_bad_arguments(dictionary):
    with pytest.raises(ValueError, match="at least 2 replicates"):
        instability([dictionary])
    with pytest.raises(ValueError, match="`metric` must be one of"):
        instability([dictionary, dictionary], "cosine")
    with pytest.raises(ValueError, match="`metric` must be one of"):
        dissimilarity(np.eye(2), "cosine")


def test_memory_estimates_grow_with_the_replicates():
    """The instability's Gram matrix grows with the square of the replicates: the guard must see it."""
    from spatialfactors.models.stability import instability_bytes
    from spatialfactors.models.stanmf import bootstrap_bytes, sweep_bytes

    small, large = (sweep_bytes(100, 50, 5, itemsize=4, n_replicates=n) for n in (100, 10_000))
    assert large > 5_000 * small  # about quadratic: x100 replicates, x7,500 memory
    assert large >= instability_bytes(10_000, 100, 5) + bootstrap_bytes(50, 10_000)
    assert instability_bytes(10_000, 100, 5) >= (10_000 * 5) ** 2 * 8  # the float64 Gram matrix itself
