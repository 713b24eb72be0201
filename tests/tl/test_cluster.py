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
