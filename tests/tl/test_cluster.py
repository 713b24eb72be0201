import numpy as np
import pytest

import spatialfactors as sf


@pytest.fixture
def blobs():
    import anndata as ad

    rng = np.random.default_rng(0)
    centres = np.eye(4) * 0.8 + 0.05
    labels = np.repeat(np.arange(4), 50)
    states = (centres[labels] + 0.03 * rng.random((200, 4))) * rng.gamma(5, 1, (200, 1))
    adata = ad.AnnData(np.ones((200, 3)), obsm={"X_spicemix": states})
    adata.obs["truth"] = [f"t{v}" for v in labels]
    return adata


def test_calinski_harabasz_picks_the_planted_number(blobs):
    sf.tl.cluster_latent(blobs, reference_key="truth")
    uns = blobs.uns["spicemix_clusters"]
    assert uns["n_clusters"] == 4
    assert uns["ari"] == pytest.approx(1.0)
    table = uns["calinski_harabasz"]
    assert list(table["n_clusters"]) == list(range(2, 21))
    assert table.loc[table["calinski_harabasz"].idxmax(), "n_clusters"] == 4
    col = blobs.obs["spicemix_clusters"]
    assert list(col.cat.categories) == ["0", "1", "2", "3"]


def test_fixed_number_and_key(blobs):
    sf.tl.cluster_latent(blobs, n_clusters=2, key_added="two")
    assert blobs.obs["two"].nunique() == 2 and blobs.uns["two"]["n_clusters"] == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"basis": "X_missing"}, KeyError, "run the factorisation first"),
        ({"n_clusters": 1}, ValueError, "`n_clusters` must be at least 2"),
        ({"n_clusters": []}, ValueError, "`n_clusters` is empty"),
        ({"reference_key": "nope"}, KeyError, "not a column"),
    ],
)
def test_bad_input_leaves_adata_unchanged(blobs, kwargs, error, match):
    before = blobs.copy()
    with pytest.raises(error, match=match):
        sf.tl.cluster_latent(blobs, **kwargs)
    assert blobs.obs.equals(before.obs) and set(blobs.uns) == set(before.uns)


def test_calinski_harabasz_takes_a_peak_not_the_edge(monkeypatch):
    from spatialfactors.tl import _cluster
    from spatialfactors.tl._cluster import _best_peak

    warnings = []
    monkeypatch.setattr(_cluster.logg, "warning", lambda msg, **kw: warnings.append(msg))

    # Weakly separated data: the index only falls from 2 clusters on; a later peak is preferred.
    assert _best_peak(np.array([500.0, 600.0, 900.0, 880.0, 1000.0, 950.0, 800.0])) == 4
    assert _best_peak(np.array([900.0, 700.0, 750.0, 600.0])) == 2  # interior peak below the edge value
    assert not warnings
    assert _best_peak(np.array([900.0, 800.0, 700.0])) == 0  # no peak: the maximum, with a warning
    assert len(warnings) == 1 and "no peak" in warnings[0]
    assert _best_peak(np.array([np.nan, 3.0, 5.0, 4.0])) == 2


def test_cells_without_a_reference_label_are_left_out(blobs):
    from sklearn.metrics import adjusted_rand_score

    blobs.obs["partial"] = blobs.obs["truth"].astype(object)
    blobs.obs.iloc[:30, blobs.obs.columns.get_loc("partial")] = None
    sf.tl.cluster_latent(blobs, n_clusters=4, reference_key="partial")
    uns, known = blobs.uns["spicemix_clusters"], blobs.obs["partial"].notna().to_numpy()
    expected = adjusted_rand_score(blobs.obs["truth"][known], blobs.obs["spicemix_clusters"][known])
    assert uns["ari"] == pytest.approx(expected) and uns["ari"] == pytest.approx(1.0)  # NaN is not a class
    assert uns["nmi"] == pytest.approx(1.0)


def test_identical_states_warn_that_the_index_is_undefined(blobs):
    from spatialfactors._validation import UndefinedScoreWarning

    blobs.obsm["X_spicemix"] = np.ones_like(blobs.obsm["X_spicemix"])
    with pytest.warns(UndefinedScoreWarning, match=r"Calinski-Harabasz index of \[3\] clusters.*1 distinct"):
        sf.tl.cluster_latent(blobs, n_clusters=3)
    assert blobs.obs["spicemix_clusters"].nunique() == 1
    with pytest.raises(ValueError, match="1 distinct latent state"):
        sf.tl.cluster_latent(blobs, n_clusters=[2, 3], key_added="again")
