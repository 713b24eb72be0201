import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import squidpy as sq
from scipy.optimize import linear_sum_assignment

import spatialfactors as sf
from spatialfactors.models.stability import cross_correlation

SWEEP = {"n_factors": range(2, 8), "n_replicates": 10}


def _adata(x, coords):
    adata = ad.AnnData(x.astype(np.float32), obsm={"spatial": coords})
    adata.var_names = [f"g{j}" for j in range(x.shape[1])]
    return adata


@pytest.fixture(scope="module")
def fitted(planted):
    x, w, h, coords = planted
    adata = _adata(x, coords)
    sq.gr.spatial_neighbors_grid(adata, n_neighs=4)
    sf.tl.stanmf(adata, **SWEEP, random_state=0)
    return adata


def test_instability_minimum_at_planted_k(fitted):
    table = fitted.uns["stanmf"]["instability"]
    nmf = table[table["method"] == "nmf"].set_index("K")
    assert fitted.uns["stanmf"]["k"] == 4
    assert nmf["mean"].idxmin() == 4
    assert set(table.columns) == {"method", "K", "metric", "mean", "std", "n_replicates"}
    assert (table["n_replicates"] == 10).all()
    # The PCA comparator on the same bootstrap is less stable (paper, Fig. 1B).
    pca = table[table["method"] == "pca"].set_index("K")
    assert (pca["mean"] > nmf["mean"]).all()


def test_recovers_planted_patterns(fitted, planted):
    _, w_true, _, _ = planted
    c = cross_correlation(fitted.obsm["X_stanmf"], w_true, centered=True)
    rows, cols = linear_sum_assignment(c, maximize=True)
    assert c[rows, cols].min() > 0.95


def test_outputs(fitted):
    k = fitted.uns["stanmf"]["k"]
    assert fitted.obsm["X_stanmf"].shape == (fitted.n_obs, k)
    assert fitted.varm["stanmf_loadings"].shape == (fitted.n_vars, k)
    assert fitted.obsm["X_stanmf_pca"].shape == (fitted.n_obs, k)
    assert (fitted.obsm["X_stanmf"] >= 0).all() and (fitted.varm["stanmf_loadings"] >= 0).all()
    genes = fitted.uns["stanmf"]["genes"]
    assert list(genes.index) == list(fitted.var_names)
    # Per-gene accuracy equals the direct correlation of each gene with its reconstruction.
    recon = fitted.obsm["X_stanmf"] @ fitted.varm["stanmf_loadings"].T
    direct = [np.corrcoef(fitted.X[:, j], recon[:, j])[0, 1] for j in range(5)]
    np.testing.assert_allclose(genes["reconstruction_pcc"].to_numpy()[:5], direct, atol=1e-5)
    assert genes["reconstruction_pcc"].mean() > 0.95
    np.testing.assert_array_equal(genes["n_patterns"], (fitted.varm["stanmf_loadings"] > 0).sum(1))
    assert fitted.uns["stanmf"]["params"]["n_factors"] == list(range(2, 8))


def test_morans_i_from_squidpy(fitted):
    morans = fitted.uns["stanmf"]["morans_i"]
    assert set(morans["method"]) == {"nmf", "pca"}
    scratch = ad.AnnData(obs=pd.DataFrame(index=fitted.obs_names), obsm={"p": fitted.obsm["X_stanmf"]})
    scratch.obsp["spatial_connectivities"] = fitted.obsp["spatial_connectivities"]
    direct = sq.gr.spatial_autocorr(scratch, attr="obsm", layer="p", copy=True, show_progress_bar=False)
    got = morans[morans["method"] == "nmf"].set_index("pattern")["morans_i"]
    np.testing.assert_allclose(got.sort_index().to_numpy(), direct["I"].sort_index().to_numpy())
    # Smooth planted patterns on a grid are strongly autocorrelated.
    assert got.min() > 0.8


def test_round_trip_h5ad(fitted, tmp_path):
    fitted.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    pd.testing.assert_frame_equal(back.uns["stanmf"]["instability"], fitted.uns["stanmf"]["instability"])


def test_reproducible_and_seed_sensitive(planted):
    x, _, _, coords = planted
    runs = []
    for seed in (1, 1, 2):
        adata = _adata(x, coords)
        sf.tl.stanmf(adata, n_factors=[3, 4], n_replicates=4, pca=False, random_state=seed)
        runs.append(adata)
    pd.testing.assert_frame_equal(runs[0].uns["stanmf"]["instability"], runs[1].uns["stanmf"]["instability"])
    np.testing.assert_array_equal(runs[0].obsm["X_stanmf"], runs[1].obsm["X_stanmf"])
    assert not np.array_equal(
        runs[0].uns["stanmf"]["instability"]["mean"], runs[2].uns["stanmf"]["instability"]["mean"]
    )


@pytest.mark.parametrize("compress", [None, 30])
def test_n_jobs_two_equals_serial(planted, compress):
    x, _, _, coords = planted
    out = []
    for n_jobs in (1, 2):
        adata = _adata(x, coords)
        kwargs = {"n_replicates": 4, "pca": False, "n_jobs": n_jobs, "batch_size": 2, "compress": compress}
        sf.tl.stanmf(adata, n_factors=[3, 4], **kwargs)
        out.append(adata.uns["stanmf"]["instability"])
    pd.testing.assert_frame_equal(out[0], out[1])


def test_dask_local_cluster_equals_serial(planted):
    distributed = pytest.importorskip("distributed")
    from joblib import parallel_config

    x, _, _, coords = planted
    serial = _adata(x, coords)
    sf.tl.stanmf(serial, n_factors=[3, 4], n_replicates=4, pca=False, batch_size=2)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster), parallel_config(backend="dask"):
            remote = _adata(x, coords)
            sf.tl.stanmf(remote, n_factors=[3, 4], n_replicates=4, pca=False, batch_size=2)
    pd.testing.assert_frame_equal(serial.uns["stanmf"]["instability"], remote.uns["stanmf"]["instability"])
    np.testing.assert_array_equal(serial.obsm["X_stanmf"], remote.obsm["X_stanmf"])


def test_single_k_skips_the_sweep(planted):
    x, _, _, coords = planted
    adata = _adata(x, coords)
    sf.tl.stanmf(adata, n_factors=4, pca=False)
    assert adata.uns["stanmf"]["k"] == 4
    assert "instability" not in adata.uns["stanmf"]
    assert "morans_i" not in adata.uns["stanmf"]  # no spatial graph


def test_sparse_layer_and_copy(planted):
    x, _, _, coords = planted
    adata = _adata(x, coords)
    adata.layers["counts"] = sp.csr_matrix(np.where(x > 0.005, x, 0).astype(np.float32))
    before = adata.copy()
    out = sf.tl.stanmf(adata, n_factors=[3, 4], n_replicates=3, layer="counts", copy=True)
    assert isinstance(out, ad.AnnData) and "X_stanmf" in out.obsm
    assert "X_stanmf" not in adata.obsm and "stanmf" not in adata.uns
    np.testing.assert_array_equal(adata.X, before.X)
    assert out.uns["stanmf"]["params"]["layer"] == "counts"


def test_compressed_sweep_agrees(planted):
    x, _, _, coords = planted
    adata = _adata(x, coords)
    sf.tl.stanmf(adata, n_factors=range(3, 6), n_replicates=6, pca=False, compress=40)
    assert adata.uns["stanmf"]["k"] == 4
    assert adata.uns["stanmf"]["compression_error"] < 0.05


def test_key_added(planted):
    x, _, _, coords = planted
    adata = _adata(x, coords)
    sf.tl.stanmf(adata, n_factors=3, pca=False, key_added="pp")
    assert "X_pp" in adata.obsm and "pp_loadings" in adata.varm and "pp" in adata.uns


def _assert_unchanged(a, b):
    assert a.obs.equals(b.obs) and a.var.equals(b.var)
    assert set(a.obsm) == set(b.obsm) and set(a.varm) == set(b.varm)
    assert set(a.uns) == set(b.uns) and set(a.layers) == set(b.layers) and set(a.obsp) == set(b.obsp)
    xa, xb = a.X, b.X
    np.testing.assert_array_equal(xa, xb)


@pytest.mark.parametrize(
    ("mutate", "kwargs", "error", "match"),
    [
        (lambda x: x.__setitem__((0, 0), -1.0), {}, ValueError, "negative values"),
        (lambda x: x.__setitem__((0, 0), np.nan), {}, ValueError, "NaN or infinite"),
        (lambda x: x.__setitem__((0, 0), np.inf), {}, ValueError, "NaN or infinite"),
        (lambda x: x.__setitem__((slice(None), 3), 0.0), {}, ValueError, "1 genes are zero in all obs"),
        (lambda x: x.__setitem__((5, slice(None)), 0.0), {}, ValueError, "1 obs have no expression"),
        (None, {"n_factors": 500}, ValueError, "`n_factors` must be at least 1 and at most 150"),
        (None, {"n_factors": [2, 0]}, ValueError, "`n_factors` must be at least 1"),
        (None, {"n_factors": []}, ValueError, "`n_factors` is empty"),
        (None, {"n_factors": [2, 3], "n_replicates": 1}, ValueError, "`n_replicates` must be at least 2"),
        (None, {"n_factors": [2, 3], "metric": "cosine"}, ValueError, "`metric` must be one of"),
        (None, {"layer": "counts"}, KeyError, "Layer 'counts' not found"),
        (None, {"n_factors": 2.5}, TypeError, "`n_factors` must be an integer"),
        (None, {"dtype": "float16"}, ValueError, "`dtype` must be one of"),
        (None, {"n_factors": [3, 4], "compress": 2}, ValueError, "`compress` must be at least 4"),
        (None, {"n_factors": [3, 4], "compress": "fast"}, ValueError, "`compress` must be 'auto', None or an integer"),
        (None, {"n_factors": [3, 4], "screen": 1}, ValueError, "`screen` must be at least 2"),
    ],
)
def test_bad_input_leaves_adata_unchanged(planted, mutate, kwargs, error, match):
    x, _, _, coords = planted
    adata = _adata(x.copy(), coords)
    if mutate is not None:
        mutate(adata.X)
    before = adata.copy()
    kwargs = {"n_factors": 3, "n_replicates": 2, **kwargs}
    with pytest.raises(error, match=match):
        sf.tl.stanmf(adata, **kwargs)
    _assert_unchanged(adata, before)


# ---------------------------------------------------------------------------------------------
# Round two of the reliability review: scale, graphs, stale results, backed data, devices
# ---------------------------------------------------------------------------------------------


def _normalised_fit(adata):
    """The fitted patterns scaled to unit columns, and the reconstruction W H^T."""
    w, h = adata.obsm["X_stanmf"].astype(np.float64), adata.varm["stanmf_loadings"].astype(np.float64)
    return w / np.linalg.norm(w, axis=0), w @ h.T


@pytest.mark.parametrize(
    ("scale", "dtype", "working"),
    [(1e26, np.float32, "float32"), (1e-26, np.float32, "float32"), (1e200, np.float64, "float64")],
)
def test_scale_of_the_data_does_not_change_the_patterns(planted, scale, dtype, working):
    """NMF is scale-equivariant: X * c gives the patterns of X and c times its reconstruction (was all NaN)."""
    x, _, _, coords = planted
    ref = _adata(x, coords)
    sf.tl.stanmf(ref, n_factors=4, pca=False, dtype=working)
    big = ad.AnnData((x.astype(np.float64) * scale).astype(dtype), obsm={"spatial": coords})
    sf.tl.stanmf(big, n_factors=4, pca=False, dtype=working)
    (w_ref, r_ref), (w_big, r_big) = _normalised_fit(ref), _normalised_fit(big)
    assert np.isfinite(w_big).all() and np.isfinite(big.varm["stanmf_loadings"]).all()
    # The same patterns up to order (unit columns): the largest data value only sets the float32 rounding.
    c = w_ref.T @ w_big
    rows, cols = linear_sum_assignment(c, maximize=True)
    assert c[rows, cols].min() > 1 - 1e-4
    np.testing.assert_allclose(r_big / scale, r_ref, rtol=1e-3, atol=1e-3 * np.abs(r_ref).max())
    err_ref, err_big = ref.uns["stanmf"]["reconstruction_err"], big.uns["stanmf"]["reconstruction_err"]
    assert err_big / scale == pytest.approx(err_ref, rel=1e-3)


def test_one_entry_at_the_float32_maximum_gives_finite_factors(planted):
    """A single huge (finite) entry was torch's "non-finite values" error; its pattern is now the fit's first."""
    from spatialfactors._validation import UndefinedScoreWarning

    x, _, _, coords = planted
    x = x.astype(np.float32)
    x[0, 0] = np.finfo(np.float32).max
    adata = _adata(x, coords)
    sq.gr.spatial_neighbors_grid(adata, n_neighs=4)
    with pytest.warns(UndefinedScoreWarning, match="Moran's I of nmf pattern"):  # the other patterns are empty
        sf.tl.stanmf(adata, n_factors=2, pca=False)
    w, h = adata.obsm["X_stanmf"], adata.varm["stanmf_loadings"]
    assert np.isfinite(w).all() and np.isfinite(h).all()
    recon = w.astype(np.float64) @ h.T.astype(np.float64)
    assert recon[0, 0] == pytest.approx(float(np.finfo(np.float32).max), rel=1e-3)
    # Undefined Moran's I is NaN only for the constant pattern, said in the warning.
    morans = adata.uns["stanmf"]["morans_i"]
    constant = np.ptp(w, axis=0) == 0
    assert (morans["morans_i"].isna().to_numpy() == constant).all()


def test_data_beyond_float32_factors_is_refused_before_the_fit(planted):
    x, _, _, coords = planted
    adata = ad.AnnData(x * 1e200, obsm={"spatial": coords})
    with pytest.raises(ValueError, match=r"The data reach .* pass `dtype='float64'`"):
        sf.tl.stanmf(adata, n_factors=2, pca=False)
    assert "X_stanmf" not in adata.obsm


def test_dense_graph_gives_the_same_morans_i(planted):
    """A dense ndarray graph in `.obsp` failed inside squidpy after the fit; it is read as the sparse graph."""
    x, _, _, coords = planted
    sparse = _adata(x, coords)
    sq.gr.spatial_neighbors_grid(sparse, n_neighs=4)
    dense = sparse.copy()
    dense.obsp["spatial_connectivities"] = sparse.obsp["spatial_connectivities"].toarray()
    for a in (sparse, dense):
        sf.tl.stanmf(a, n_factors=3, pca=False)
    pd.testing.assert_frame_equal(sparse.uns["stanmf"]["morans_i"], dense.uns["stanmf"]["morans_i"])


def test_graph_without_edges_warns_and_skips_morans_i(planted):
    from spatialfactors._validation import UndefinedScoreWarning

    x, _, _, coords = planted
    adata = _adata(x, coords)
    adata.obsp["spatial_connectivities"] = sp.csr_matrix((adata.n_obs, adata.n_obs))
    with pytest.warns(UndefinedScoreWarning, match="has no edges"):
        sf.tl.stanmf(adata, n_factors=3, pca=False)
    assert "morans_i" not in adata.uns["stanmf"] and "X_stanmf" in adata.obsm


def test_refit_under_another_factorisations_key_leaves_nothing_stale(planted):
    """staNMF over a SpiceMix result (and back) under one key: only the new run's slots remain."""
    x, _, _, coords = planted
    adata = _adata(x[:120, :30], coords[:120])
    sq.gr.spatial_neighbors_delaunay(adata)
    sf.tl.spicemix(adata, 3, max_iter=1, key_added="f")
    sf.tl.stanmf(adata, n_factors=4, key_added="f")
    assert "f_metagenes" not in adata.varm and adata.uns["f"]["loadings_key"] == "f_loadings"
    sf.tl.pattern_genes(adata, key="f")
    assert adata.varm["f_importance"].shape == (30, 4)
    sf.tl.spicemix(adata, 3, max_iter=1, key_added="f")
    assert "f_loadings" not in adata.varm and "X_f_pca" not in adata.obsm
    sf.tl.pattern_genes(adata, key="f")
    np.testing.assert_allclose(
        adata.varm["f_importance"], adata.varm["f_metagenes"] / adata.varm["f_metagenes"].sum(1, keepdims=True)
    )


@pytest.mark.parametrize("sparse", [False, True])
def test_backed_adata_is_refused_before_the_fit(planted, tmp_path, sparse):
    x, _, _, coords = planted
    adata = _adata(x[:, :20], coords)
    if sparse:
        adata.X = sp.csr_matrix(adata.X)
    adata.write_h5ad(tmp_path / "a.h5ad")
    backed = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")
    with pytest.raises(TypeError, match=r"`adata.X` is read from the file .* `adata = adata.to_memory\(\)`"):
        sf.tl.stanmf(backed, n_factors=2)
    assert "X_stanmf" not in backed.obsm and "stanmf" not in backed.uns
    backed.file.close()


def test_copy_of_a_backed_adata_is_refused_before_the_work(planted, tmp_path):
    """`copy=True` on a backed AnnData failed after the work; every tool now says so first."""
    x, _, _, coords = planted
    adata = _adata(x[:, :20], coords)
    sf.tl.stanmf(adata, n_factors=2, pca=False)
    adata.write_h5ad(tmp_path / "a.h5ad")
    backed = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")
    with pytest.raises(ValueError, match=r"`copy=True` needs an AnnData in memory.*to_memory\(\)"):
        sf.tl.pattern_genes(backed, copy=True)
    sf.tl.pattern_genes(backed)  # in place works: the results go to the in-memory slots
    assert "stanmf_importance" in backed.varm
    backed.file.close()


def test_device_accepts_torch_devices(planted):
    import torch

    x, _, _, coords = planted
    a, b = _adata(x, coords), _adata(x, coords)
    sf.tl.stanmf(a, n_factors=3, pca=False, device="cpu")
    sf.tl.stanmf(b, n_factors=3, pca=False, device=torch.device("cpu"))
    np.testing.assert_array_equal(a.obsm["X_stanmf"], b.obsm["X_stanmf"])


def test_screened_sweep_at_the_defaults_equals_the_full_sweep_near_the_minimum(planted):
    # screen (default 20): every K with the first replicates, all of them for the K near the
    # minimum, whose rows then equal the full sweep's exactly (the same resamples).
    x, _, _, coords = planted
    runs = {}
    for screen in (None, 4):
        adata = _adata(x, coords)
        sf.tl.stanmf(adata, n_factors=range(2, 8), n_replicates=10, screen=screen, pca=False, n_jobs=1)
        runs[screen] = adata
    full, screened = (runs[s].uns["stanmf"]["instability"].set_index("K") for s in (None, 4))
    assert runs[4].uns["stanmf"]["k"] == runs[None].uns["stanmf"]["k"]
    again = screened.index[screened["n_replicates"] == 10]
    assert runs[4].uns["stanmf"]["k"] in again and set(screened["n_replicates"]) == {4, 10}
    pd.testing.assert_series_equal(screened.loc[again, "mean"], full.loc[again, "mean"])
    assert sf.get.params(runs[4], "stanmf")["screen"] == 4 and sf.get.params(runs[None], "stanmf")["screen"] is None
    # compress="auto" (the default) keeps a small panel exact, and records that
    assert sf.get.params(runs[4], "stanmf")["compress"] is None


def test_k_star_at_the_edge_of_the_range_is_a_warning(planted):
    # logged as a warning: scanpy shows warnings at its default verbosity, info it hides
    import io

    import scanpy as sc

    x, _, _, coords = planted
    adata = _adata(x, coords)
    before = sc.settings.logfile, sc.settings.verbosity
    sc.settings.logfile, sc.settings.verbosity = (stream := io.StringIO()), "warning"
    try:
        sf.tl.stanmf(adata, n_factors=[2, 3], n_replicates=4, pca=False, n_jobs=1)
    finally:
        sc.settings.logfile, sc.settings.verbosity = before
    assert "is the largest K swept, so the minimum is not confirmed" in stream.getvalue()
