import anndata as ad
import numpy as np
import pandas as pd
import pytest

import spatialfactors as sf


def _factorised(n_obs=80, n_genes=60, k=4, seed=0, key="stanmf", suffix="loadings"):
    """AnnData with a random non-negative factorisation (two genes with all-zero loadings)."""
    rng = np.random.default_rng(seed)
    d = rng.random((n_obs, k))
    a = rng.gamma(0.4, 1.0, (n_genes, k)) * (rng.random((n_genes, k)) < 0.7)
    a[:, 1] += 0.01 * (a.sum(axis=1) == 0)  # only genes 5 and 9 below are all zero
    a[[5, 9]] = 0.0
    adata = ad.AnnData(
        (d @ a.T).astype(np.float32),
        var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]),
    )
    adata.obsm[f"X_{key}"] = d
    adata.varm[f"{key}_{suffix}"] = a
    return adata


def _snapshot(adata):
    return set(adata.uns), set(adata.varm), set(adata.obsm)


def test_importance_sums_to_one_and_is_written():
    adata = _factorised()
    sf.tl.pattern_genes(adata)
    a = adata.varm["stanmf_loadings"]
    r = adata.varm["stanmf_importance"]
    valid = a.sum(axis=1) > 0
    np.testing.assert_allclose(r[valid].sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(r[valid], a[valid] / a[valid].sum(axis=1, keepdims=True))
    # All-zero genes: NaN scores, no pattern, not ranked, not counted.
    assert np.isnan(r[[5, 9]]).all()
    res = adata.uns["stanmf_pattern_genes"]
    genes = res["genes"]
    assert genes.loc[["g5", "g9"], "pattern"].isna().all() and (genes.loc[["g5", "g9"], "rank"] == 0).all()
    assert res["params"]["n_unassigned"] == 2
    assert res["counts"]["n_genes"].sum() == 58
    assert len(res["names"]) == 58 and not {"g5", "g9"} & set(res["names"]["PP1"])


def test_assignment_ranking_and_counts_follow_the_paper():
    adata = _factorised()
    sf.tl.pattern_genes(adata)
    a = adata.varm["stanmf_loadings"]
    r = adata.varm["stanmf_importance"]
    res = adata.uns["stanmf_pattern_genes"]
    genes = res["genes"]
    valid = a.sum(axis=1) > 0
    best = np.argmax(a, axis=1)
    assert (genes["pattern"].cat.codes.to_numpy()[valid] == best[valid]).all()
    np.testing.assert_array_equal(res["counts"]["n_genes"].to_numpy(), np.bincount(best[valid], minlength=4))
    assert list(res["counts"].index) == ["PP1", "PP2", "PP3", "PP4"]
    for k, name in enumerate(["PP1", "PP2", "PP3", "PP4"]):
        idx = adata.var_names.get_indexer(res["names"][name])
        scores = res["importance"][name]
        np.testing.assert_array_equal(scores, r[idx, k])
        np.testing.assert_array_equal(res["coefficients"][name], a[idx, k])
        # Decreasing importance; ties by decreasing coefficient.
        assert (np.diff(scores) <= 0).all()
        tied = np.flatnonzero(np.diff(scores) == 0)
        assert (a[idx[tied], k] >= a[idx[tied + 1], k]).all()
        # The rank within the assigned genes follows the same order.
        mine = [g for g in res["names"][name] if genes.loc[g, "pattern"] == name]
        assert genes.loc[mine, "rank"].tolist() == list(range(1, len(mine) + 1))


def test_getter_returns_one_pattern_as_a_dataframe():
    adata = _factorised()
    sf.tl.pattern_genes(adata, n_genes=10)
    df = sf.get.pattern_genes_df(adata, "PP3")
    assert list(df.columns) == ["names", "importance", "coefficient", "assigned"]
    assert len(df) == 10
    assert df["names"].tolist() == list(adata.uns["stanmf_pattern_genes"]["names"]["PP3"])
    pd.testing.assert_frame_equal(df, sf.get.pattern_genes_df(adata, 2))
    genes = adata.uns["stanmf_pattern_genes"]["genes"]
    assert (df["assigned"] == (genes.loc[df["names"], "pattern"] == "PP3").to_numpy()).all()
    only = sf.get.pattern_genes_df(adata, 2, assigned_only=True)
    assert only["assigned"].all() and only["names"].tolist() == df["names"][df["assigned"]].tolist()


def test_spicemix_metagenes_key_added_and_copy():
    adata = _factorised(key="spicemix", suffix="metagenes")
    out = sf.tl.pattern_genes(adata, key="spicemix", key_added="sm", copy=True)
    assert "sm_importance" not in adata.varm and "sm_pattern_genes" not in adata.uns
    assert "sm_importance" in out.varm and out.uns["sm_pattern_genes"]["params"]["loadings_key"] == "spicemix_metagenes"
    assert sf.get.pattern_genes_df(out, 0, key="sm").shape[0] == 58


def test_h5ad_round_trip(tmp_path):
    adata = _factorised()
    sf.tl.pattern_genes(adata)
    path = tmp_path / "genes.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    for pattern in range(4):
        pd.testing.assert_frame_equal(sf.get.pattern_genes_df(back, pattern), sf.get.pattern_genes_df(adata, pattern))
    pd.testing.assert_frame_equal(
        back.uns["stanmf_pattern_genes"]["counts"], adata.uns["stanmf_pattern_genes"]["counts"]
    )
    np.testing.assert_array_equal(back.varm["stanmf_importance"], adata.varm["stanmf_importance"])


def test_after_stanmf():
    adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=200)
    sf.tl.stanmf(adata, n_factors=5, pca=False)
    sf.tl.pattern_genes(adata)
    sf.tl.sgcn(adata, top_fraction=0.1)
    assert (
        adata.uns["stanmf_pattern_genes"]["counts"]["n_genes"].sum() == (adata.varm["stanmf_loadings"].sum(1) > 0).sum()
    )
    assert set(adata.uns["sgcn"]["summary"].index) == {f"PP{k}" for k in range(1, 6)}


@pytest.mark.parametrize(
    ("change", "kwargs", "error", "match"),
    [
        (None, {"key": "pca"}, KeyError, r"'pca' is not a factorisation result.*X_pca.*sf.tl.stanmf"),
        ("no_varm", {}, KeyError, r"stanmf_loadings.*stanmf_metagenes.*not found.*sf.tl.stanmf\(adata"),
        ("no_obsm", {}, KeyError, r"`adata.obsm\['X_stanmf'\]` not found"),
        ("negative", {}, ValueError, "finite and non-negative"),
        ("mismatch", {}, ValueError, "3 patterns but .* has 4"),
        (None, {"n_genes": 0}, ValueError, "`n_genes` must be at least 1"),
        (None, {"n_genes": 2.5}, TypeError, "`n_genes` must be an integer"),
    ],
)
def test_bad_input_leaves_adata_unchanged(change, kwargs, error, match):
    adata = _factorised()
    if change == "no_varm":
        del adata.varm["stanmf_loadings"]
    elif change == "no_obsm":
        del adata.obsm["X_stanmf"]
    elif change == "negative":
        adata.varm["stanmf_loadings"][0, 0] = -1.0
    elif change == "mismatch":
        adata.obsm["X_stanmf"] = adata.obsm["X_stanmf"][:, :3]
    before = _snapshot(adata)
    with pytest.raises(error, match=match):
        sf.tl.pattern_genes(adata, **kwargs)
    assert _snapshot(adata) == before


def test_getter_errors():
    adata = _factorised()
    with pytest.raises(KeyError, match=r"run `sf.tl.pattern_genes\(adata, key='stanmf'\)` first"):
        sf.tl.pattern_genes_df(adata, 0)
    sf.tl.pattern_genes(adata)
    with pytest.raises(ValueError, match="out of range for 4 patterns"):
        sf.tl.pattern_genes_df(adata, 4)
    with pytest.raises(ValueError, match="'PP9' is not one of the 4 patterns"):
        sf.tl.pattern_genes_df(adata, "PP9")
