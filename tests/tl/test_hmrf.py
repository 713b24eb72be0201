import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import squidpy as sq
from sklearn.metrics import adjusted_rand_score

import spatialfactors as sf
from spatialfactors.models.domains import cluster_features


def tissue(n_side=36, noise=3.0, seed=0) -> ad.AnnData:
    """Cells on a jittered grid in two fields of view, four planted domains, 20 noisy genes."""
    rng = np.random.default_rng(seed)
    ii, jj = np.meshgrid(np.arange(n_side), np.arange(n_side), indexing="ij")
    domain = (2 * (ii >= n_side // 2) + (jj >= n_side // 2)).ravel()
    profile = rng.normal(0, 1.0, (4, 20))
    x = profile[domain] + rng.normal(0, noise, (domain.size, 20))
    coords = np.c_[ii.ravel(), jj.ravel()] + 0.2 * rng.random((domain.size, 2))
    fov = np.where(coords[:, 0] < n_side / 2 - 0.5, "a", "b")
    coords[fov == "b", 0] += 100.0
    obs = pd.DataFrame({"domain": domain.astype(str), "fov": pd.Categorical(fov)})
    adata = ad.AnnData(x, obs=obs.set_axis([f"c{i}" for i in range(domain.size)]))
    adata.obsm["spatial"] = coords
    sq.gr.spatial_neighbors_delaunay(adata, library_key="fov")
    sc.tl.pca(adata, n_comps=5)
    return adata


@pytest.fixture(scope="module")
def planted():
    return tissue()


def test_writes_labels_and_record(planted):
    adata = planted.copy()
    sf.tl.hmrf_domains(adata, n_domains=[3, 4, 5], beta=[0.0, 1.0, 2.0], library_key="fov", reference_key="domain")
    col = adata.obs["hmrf"]
    assert isinstance(col.dtype, pd.CategoricalDtype)
    assert (np.diff(col.value_counts().reindex(col.cat.categories).to_numpy()) <= 0).all()  # largest first
    uns = adata.uns["hmrf"]
    table = uns["objective"]
    assert len(table) == 9 and {"ari", "nmi", "bic", "loglik"} <= set(table.columns)
    best = table.loc[table["bic"].idxmin()]
    assert uns["n_domains"] == best["n_domains"] and uns["beta"] == best["beta"]
    assert uns["n_domains"] == 4 and uns["beta"] > 0  # the planted number, with smoothing
    assert uns["means"].shape == (4, 5) and uns["covariances"].shape == (4, 5)
    assert uns["weights"].sum() == pytest.approx(1.0)
    assert list(uns["labels"].columns) == ["0", "1", "2"] and uns["labels"].index.equals(adata.obs_names)
    assert uns["ari"] == pytest.approx(adjusted_rand_score(adata.obs["domain"], col))
    assert uns["params"]["library_key"] == "fov" and list(uns["params"]["beta"]) == [0.0, 1.0, 2.0]
    out = sf.tl.hmrf_domains(planted, n_domains=4, beta=1.0, copy=True, key_added="d")
    assert "d" in out.obs and "d" not in planted.obs


def test_smoothing_beats_kmeans_and_the_mixture(planted):
    adata = planted.copy()
    sf.tl.hmrf_domains(adata, n_domains=4, beta=[0.0, 1.5], reference_key="domain")
    ari = adata.uns["hmrf"]["objective"].set_index("beta")["ari"]
    kmeans = adjusted_rand_score(adata.obs["domain"], cluster_features(adata.obsm["X_pca"], 4, "kmeans"))
    assert ari[1.5] > 0.9 and ari[1.5] > kmeans + 0.4 and ari[1.5] > ari[0.0] + 0.4, (kmeans, ari.to_dict())
    # beta = 0 is a Gaussian mixture from the k-means start: close to k-means' own labels.
    assert abs(ari[0.0] - kmeans) < 0.2


def test_any_representation_and_leading_dims(planted):
    adata = planted.copy()
    adata.obsm["X_other"] = adata.obsm["X_pca"][:, ::-1] * 3.0
    sf.tl.hmrf_domains(adata, "X_other", 4, beta=1.5, key_added="other")
    sf.tl.hmrf_domains(adata, n_domains=4, beta=1.5, n_dims=2, key_added="two")
    assert adata.uns["two"]["means"].shape == (4, 2) and adata.uns["two"]["params"]["n_dims"] == 2
    sf.tl.hmrf_domains(adata, n_domains=4, beta=1.5, covariance="full", key_added="full")
    assert adata.uns["full"]["covariances"].shape == (4, 5, 5)
    for key in ("other", "full"):
        assert adjusted_rand_score(adata.obs["domain"], adata.obs[key]) > 0.85


def test_deterministic_and_seeded(planted):
    a, b = planted.copy(), planted.copy()
    for adata in (a, b):
        sf.tl.hmrf_domains(adata, n_domains=[3, 4], beta=[0.5, 1.5], random_state=7)
    np.testing.assert_array_equal(a.obs["hmrf"], b.obs["hmrf"])
    np.testing.assert_array_equal(a.uns["hmrf"]["means"], b.uns["hmrf"]["means"])
    pd.testing.assert_frame_equal(a.uns["hmrf"]["objective"], b.uns["hmrf"]["objective"])


def test_error_inside_the_engine_leaves_adata_unchanged(planted, monkeypatch):
    import sys

    adata = planted.copy()
    before = adata.copy()

    def boom(*args, **kwargs):
        raise RuntimeError("engine failed")

    monkeypatch.setattr(sys.modules["spatialfactors.tl._hmrf"], "potts_sweep", boom)
    for copy in (False, True):
        with pytest.raises(RuntimeError, match="engine failed"):
            sf.tl.hmrf_domains(adata, n_domains=4, beta=1.0, copy=copy)
    assert set(adata.obs.columns) == set(before.obs.columns) and set(adata.uns) == set(before.uns)


def test_writes_h5ad(planted, tmp_path):
    adata = planted.copy()
    sf.tl.hmrf_domains(adata, n_domains=[3, 4], beta=[0.0, 1.0], reference_key="domain")
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    np.testing.assert_array_equal(back.obs["hmrf"], adata.obs["hmrf"])
    assert back.uns["hmrf"]["objective"].shape == adata.uns["hmrf"]["objective"].shape


def test_missing_pca_names_the_call():
    adata = tissue(n_side=8)
    del adata.obsm["X_pca"]
    with pytest.raises(KeyError, match=r"`sc.tl.pca\(adata\)`"):
        sf.tl.hmrf_domains(adata, n_domains=2, beta=1.0)


def test_plot_domains_per_field_of_view_and_beta(planted):
    adata = planted.copy()
    sf.tl.hmrf_domains(adata, n_domains=4, beta=[0.0, 1.5], library_key="fov")
    axes = sf.pl.domains(adata, show=False)
    assert len(axes) == 2 and len(axes[0]) == 1  # two fields of view (recorded), one panel each
    axes = sf.pl.domains(adata, betas="all", show=False)
    assert len(axes[0]) == 2 and axes[0][1].get_title() == "hmrf, K = 4, beta = 1.5"
    axes = sf.pl.domains(adata, betas=1.5, library_key=None, show=False)
    assert len(axes[0]) == 1
    with pytest.raises(ValueError, match=r"`betas` \['3'\] were not fitted"):
        sf.pl.domains(adata, betas=3.0, show=False)
    # Any categorical labelling, e.g. from sf.tl.spatial_domains.
    axes = sf.pl.domains(adata, "domain", library_key="fov", show=False)
    assert len(axes) == 2
