from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import spatialfactors as sf

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "aba_200um" / "grids"
GENES = ["Nrp1_P56_coronal_74272479_200um", "Pdyn_P56_coronal_71717084_200um"]


def _brute_force(coords, x, missing, rows, cols, k):
    """The documented rule, one (voxel, gene) at a time: mean of the k nearest observed voxels, ties by index."""
    out = np.empty(len(rows))
    for p, (i, j) in enumerate(zip(rows, cols, strict=True)):
        obs = np.flatnonzero(~missing[:, j])
        if len(obs) < k:
            out[p] = x[obs, j].sum(dtype=np.float64) / len(obs)
            continue
        d = np.sqrt(((coords[obs] - coords[i]) ** 2).sum(1))
        near = obs[np.lexsort((obs, d))[:k]]
        out[p] = x[near, j].sum(dtype=np.float64) / k
    return out


def _synthetic(seed=0, shape=(9, 7, 6), n_genes=5):
    """Voxels of a random mask on a 200 um grid; NaN at random, as a missing section, and a nearly empty gene."""
    rng = np.random.default_rng(seed)
    mask = rng.random(shape) < 0.7
    coords = np.argwhere(mask) * 200.0
    n = len(coords)
    x = rng.gamma(2.0, 1.0, (n, n_genes)).astype(np.float32)
    x[rng.random((n, n_genes)) < 0.15] = np.nan
    x[coords[:, 0] < 3 * 200.0, 1] = np.nan  # three missing coronal sections: far neighbours
    keep = rng.choice(n, 3, replace=False)
    x[np.setdiff1d(np.arange(n), keep), 2] = np.nan  # only 3 observed voxels
    adata = ad.AnnData(x, obsm={"spatial": coords})
    adata.var_names = [f"g{i}" for i in range(n_genes)]
    return adata


@pytest.mark.parametrize("k", [1, 3, 6, 10])
def test_equals_brute_force(k):
    adata = _synthetic()
    x = adata.X.copy()
    missing = np.isnan(x)
    out = sf.pp.impute_voxels(adata, n_neighbors=k, copy=True)
    rows, cols = np.nonzero(missing)
    expected = _brute_force(adata.obsm["spatial"], x, missing, rows, cols, k).astype(np.float32)
    np.testing.assert_array_equal(out.X[rows, cols], expected)
    np.testing.assert_array_equal(out.X[~missing], x[~missing])
    assert not np.isnan(out.X).any() and out.X.dtype == np.float32
    uns = out.uns["impute_voxels"]
    np.testing.assert_array_equal(uns["per_gene"]["n_imputed"], missing.sum(0))
    np.testing.assert_array_equal(uns["per_gene"]["n_observed"], (~missing).sum(0))
    assert uns["n_imputed"] == missing.sum()
    assert uns["params"]["n_neighbors"] == k


def test_irregular_coordinates_equal_brute_force():
    rng = np.random.default_rng(3)
    coords = rng.normal(size=(300, 2))
    x = rng.random((300, 4))
    x[rng.random(x.shape) < 0.3] = np.nan
    adata = ad.AnnData(x.copy(), obsm={"spatial": coords})
    sf.pp.impute_voxels(adata, n_neighbors=4)
    missing = np.isnan(x)
    rows, cols = np.nonzero(missing)
    np.testing.assert_array_equal(adata.X[rows, cols], _brute_force(coords, x, missing, rows, cols, 4))


def test_far_neighbours_and_ties():
    # 40 voxels on a line; gene a observed only at both ends (the search must widen to every voxel),
    # gene b at even positions (two neighbours at the same distance: the lower index wins for k=1).
    x = np.full((40, 2), np.nan)
    x[[0, 1, 39], 0] = [1.0, 2.0, 6.0]
    x[::2, 1] = np.arange(0, 40, 2) * 10.0
    adata = ad.AnnData(x, obsm={"spatial": np.arange(40.0)[:, None]})
    out = sf.pp.impute_voxels(adata, n_neighbors=3, copy=True)
    np.testing.assert_array_equal(out.X[2:39, 0], 3.0)
    odd = np.arange(1, 39, 2)
    # k=3 at odd i: i-1 and i+1, then i-3 before i+3 (same distance, lower index); at 1: 0, 2, 4.
    np.testing.assert_array_equal(out.X[odd, 1], np.where(odd == 1, 20.0, (odd - 1) * 10.0))
    one = sf.pp.impute_voxels(adata, n_neighbors=1, copy=True)
    np.testing.assert_array_equal(one.X[odd, 1], (odd - 1) * 10.0)
    two = sf.pp.impute_voxels(adata, n_neighbors=2, copy=True)
    np.testing.assert_array_equal(two.X[odd, 1], odd * 10.0)
    np.testing.assert_array_equal(two.X[39, 1], 370.0)  # nearest observed: 38 and 36


def test_hold_out_check_is_the_documented_draw():
    adata = _synthetic(n_genes=4)
    adata = adata[:, [0, 1, 3]].copy()  # genes with enough observed voxels
    x = adata.X.copy()
    missing = np.isnan(x)
    out = sf.pp.impute_voxels(adata, evaluate=True, n_holdout=20, random_state=7, copy=True)
    rng = np.random.default_rng(7)
    rows = np.concatenate([rng.choice(np.flatnonzero(~missing[:, j]), 20, replace=False) for j in range(3)])
    cols = np.repeat(np.arange(3), 20)
    hidden = missing.copy()
    hidden[rows, cols] = True
    guess = _brute_force(adata.obsm["spatial"], x, hidden, rows, cols, 6).astype(np.float32)
    err = np.abs(guess.astype(np.float64) - x[rows, cols]).reshape(3, 20)
    table = out.uns["impute_voxels"]["per_gene"]
    np.testing.assert_allclose(table["mae"], err.mean(1), rtol=1e-12)
    for j in range(3):
        r = np.corrcoef(guess[cols == j], x[rows, cols][cols == j])[0, 1]
        assert table["pcc"].iloc[j] == pytest.approx(r, rel=1e-10)
    ev = out.uns["impute_voxels"]["evaluation"]
    assert ev["n_points"] == 60 and ev["mae"] == pytest.approx(err.mean(), rel=1e-12)
    # Same seed, same draw; the check does not change what is imputed.
    again = sf.pp.impute_voxels(adata, evaluate=True, n_holdout=20, random_state=7, copy=True)
    np.testing.assert_array_equal(again.uns["impute_voxels"]["per_gene"], table)
    np.testing.assert_array_equal(out.X, sf.pp.impute_voxels(adata, copy=True).X)


def _read_real():
    if not DATA.is_dir():
        pytest.skip("shared Allen grids not available")
    return sf.io.read_aba([DATA / f"{g}.zip" for g in GENES], DATA / "P56_Mouse_gridAnnotation.zip")


def test_real_allen_grids():
    adata = _read_real()
    x = adata.X.copy()
    missing = np.isnan(x)
    assert adata.shape == (62529, 2) and missing.sum() > 1000
    sf.pp.impute_voxels(adata, evaluate=True)
    assert not np.isnan(adata.X).any()
    np.testing.assert_array_equal(adata.X[~missing], x[~missing])
    # Imputed values are means of observed ones: inside the gene's observed range.
    for j in range(2):
        filled = adata.X[missing[:, j], j]
        assert np.nanmin(x[:, j]) <= filled.min() and filled.max() <= np.nanmax(x[:, j])
    table = adata.uns["impute_voxels"]["per_gene"]
    np.testing.assert_array_equal(table["n_imputed"], missing.sum(0))
    # Held-out voxels: far better than predicting the gene's mean, and strongly correlated (paper: PCC 0.52).
    assert (table["mae"] < 0.5 * table["baseline_mae"]).all()
    assert (table["pcc"] > 0.9).all()
    ev = adata.uns["impute_voxels"]["evaluation"]
    assert ev["n_points"] == 2000 and ev["mae"] < ev["baseline_mae"]


def test_copy_and_layer():
    adata = _synthetic()
    x = adata.X.copy()
    adata.layers["raw"] = x.copy()
    out = sf.pp.impute_voxels(adata, layer="raw", copy=True)
    np.testing.assert_array_equal(adata.X, x)
    np.testing.assert_array_equal(adata.layers["raw"], x)
    assert "impute_voxels" not in adata.uns
    np.testing.assert_array_equal(out.X, x)  # only the layer is imputed
    assert not np.isnan(out.layers["raw"]).any()
    assert sf.pp.impute_voxels(adata, layer="raw") is None
    np.testing.assert_array_equal(adata.layers["raw"], out.layers["raw"])
    assert adata.uns["impute_voxels"]["params"]["layer"] == "raw"


def test_nothing_missing_is_a_no_op():
    adata = ad.AnnData(np.arange(6.0).reshape(3, 2), obsm={"spatial": np.arange(3.0)[:, None]})
    out = sf.pp.impute_voxels(adata, copy=True)
    np.testing.assert_array_equal(out.X, adata.X)
    assert out.uns["impute_voxels"]["n_imputed"] == 0


def _no_spatial(a):
    del a.obsm["spatial"]


def _all_nan_gene(a):
    a.X[:, 0] = np.nan


def _inf(a):
    a.X[0, 0] = np.inf


def _sparse(a):
    a.X = sp.csr_matrix(np.nan_to_num(a.X))


def _bad_coords(a):
    a.obsm["spatial"][0, 0] = np.nan


@pytest.mark.parametrize(
    ("mutate", "kwargs", "error", "match"),
    [
        (_no_spatial, {}, KeyError, r"obsm\['spatial'\]` with the voxel coordinates not found"),
        (None, {"n_neighbors": 0}, ValueError, "`n_neighbors` must be at least 1"),
        (None, {"n_neighbors": 2.5}, TypeError, "`n_neighbors` must be an integer"),
        (None, {"evaluate": True, "n_holdout": 400}, ValueError, "`n_holdout=400` must be smaller"),
        (None, {"n_holdout": 0}, ValueError, "`n_holdout` must be at least 1"),
        (None, {"layer": "nope"}, KeyError, "Layer 'nope' not found"),
        (_all_nan_gene, {}, ValueError, r"1 genes have no observed voxel \(e.g. \['g0'\]\)"),
        (_inf, {}, ValueError, "1 infinite values"),
        (_sparse, {}, TypeError, "needs a dense matrix"),
        (_bad_coords, {}, ValueError, "must be a finite"),
    ],
)
def test_bad_input_leaves_adata_unchanged(mutate, kwargs, error, match):
    adata = _synthetic()
    if mutate is not None:
        mutate(adata)
    before = adata.copy()
    with pytest.raises(error, match=match):
        sf.pp.impute_voxels(adata, **kwargs)
    if sp.issparse(adata.X):
        assert (adata.X != before.X).nnz == 0
    else:
        np.testing.assert_array_equal(adata.X, before.X)
    assert "impute_voxels" not in adata.uns
    assert list(adata.obsm) == list(before.obsm)


def test_hold_out_pcc_of_a_constant_gene_warns():
    """A constant gene has no correlation: NaN for it only, with a warning naming it."""
    from spatialfactors._validation import UndefinedScoreWarning

    adata = _synthetic(n_genes=4)
    adata = adata[:, [0, 1, 3]].copy()
    x = adata.X.copy()
    x[:, 1] = np.where(np.isnan(x[:, 1]), np.nan, 2.0)
    adata.X = x
    with pytest.warns(UndefinedScoreWarning, match=rf"hold-out PCC of 1 gene\(s\) \(e.g. \['{adata.var_names[1]}'\]\)"):
        sf.pp.impute_voxels(adata, evaluate=True, n_holdout=20)
    pcc = adata.uns["impute_voxels"]["per_gene"]["pcc"]
    assert pcc.isna().tolist() == [False, True, False]
    assert adata.uns["impute_voxels"]["per_gene"]["mae"].iloc[1] == 0.0  # the constant gene is imputed exactly
