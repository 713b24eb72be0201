"""``sf.tl.stanmf``: stability-driven NMF with K chosen by bootstrap instability."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scanpy import logging as logg
from scanpy import settings
from tqdm.auto import tqdm

from spatialfactors._validation import (
    _assert_bool,
    _assert_choice,
    _assert_copy,
    _assert_device,
    _assert_fits_memory,
    _assert_int_range,
    _assert_n_jobs,
    _assert_no_empty_lines,
    _assert_nonnegative_finite,
    _assert_real_range,
    _assert_result_key,
    _assert_str,
    _constant_columns,
    _extract_adata,
    _factorisation_slots,
    _fix_dtype_hint,
    _get_matrix,
    _int_list,
    _is_int,
    _matrix_label,
    _renamed,
    _save_results,
    _warn_undefined,
)
from spatialfactors.get import _default_names
from spatialfactors.models._operator import DataOperator
from spatialfactors.models.nmf import nmf, scale_exponent
from spatialfactors.models.pca import pca_dictionaries, pca_reconstruction_pcc
from spatialfactors.models.reconstruction import reconstruction_pcc
from spatialfactors.models.stability import METRICS
from spatialfactors.models.stanmf import stability_sweep, sweep_bytes

from ._record import _record


def _morans_i(adata: AnnData, graph: sp.csr_matrix, dictionaries: dict[str, np.ndarray]) -> pd.DataFrame:
    """Moran's I of every pattern with squidpy, on a scratch AnnData (nothing is written to ``adata``).

    ``graph`` is the checked sparse graph; a constant pattern has no Moran's I (NaN, with a warning).
    """
    import squidpy as sq

    scratch = AnnData(obs=pd.DataFrame(index=adata.obs_names))
    scratch.obsp["graph"] = graph
    frames = []
    for method, d in dictionaries.items():
        d = np.asarray(d, dtype=np.float64)
        scratch.obsm["patterns"] = d
        res = sq.gr.spatial_autocorr(
            scratch,
            connectivity_key="graph",
            attr="obsm",
            layer="patterns",
            mode="moran",
            copy=True,
            show_progress_bar=False,
        )
        frames.append(
            pd.DataFrame({"method": method, "pattern": res.index.astype(int), "morans_i": res["I"].to_numpy()})
        )
        constant = _constant_columns(d)
        if constant.size:
            _warn_undefined(
                f"Moran's I of {method} pattern(s) {constant.tolist()}",
                "the pattern is constant over the obs (it has no spatial variation)",
                "fewer `n_factors` may avoid empty patterns",
            )
    return pd.concat(frames, ignore_index=True).sort_values(["method", "pattern"], ignore_index=True)


def _moran_graph(adata: AnnData, connectivity_key: str) -> sp.csr_matrix | None:
    """Return the graph for Moran's I as a checked CSR matrix (dense arrays too), or None without edges (warned)."""
    graph = adata.obsp[connectivity_key]
    weights = graph.data if sp.issparse(graph) else np.asarray(graph)
    if weights.dtype.kind not in "iufb" or not np.isfinite(weights).all():
        raise ValueError(
            f"`adata.obsp[{connectivity_key!r}]` (used for Moran's I) must hold finite real weights; rebuild it "
            "with `sq.gr.spatial_neighbors_delaunay(adata)`, or pass another `connectivity_key`."
        )
    if (weights < 0).any():
        raise ValueError(
            f"`adata.obsp[{connectivity_key!r}]` (used for Moran's I) has negative weights; rebuild it with "
            "`sq.gr.spatial_neighbors_delaunay(adata)`, or pass another `connectivity_key`."
        )
    graph = sp.csr_matrix(graph, dtype=np.float64)
    graph.eliminate_zeros()
    if graph.nnz == 0:
        _warn_undefined(
            "Moran's I",
            f"`adata.obsp[{connectivity_key!r}]` has no edges",
            "it is left out; rebuild the graph, e.g. `sq.gr.spatial_neighbors_delaunay(adata)`",
        )
        return None
    return graph


#: Values of K swept by default (the paper's range).
_DEFAULT_K = range(8, 31)


def stanmf(
    adata: AnnData,
    n_factors: int | Sequence[int] = _DEFAULT_K,
    *,
    n_replicates: int = 100,
    screen: int | None = 20,
    metric: Literal["hungarian", "amari"] = "hungarian",
    layer: str | None = None,
    pca: bool = True,
    init: Literal["nndsvd", "nndsvda"] = "nndsvd",
    tol: float = 1e-4,
    max_iter: int = 200,
    compress: int | Literal["auto"] | None = "auto",
    dtype: Literal["float32", "float64"] = "float32",
    device: str = "cpu",
    batch_size: int | None = None,
    connectivity_key: str = "spatial_connectivities",
    random_state: int = 0,
    n_jobs: int | None = None,
    table_key: str | None = None,
    key_added: str = "stanmf",
    copy: bool = False,
    n_components: int | Sequence[int] | None = None,
) -> AnnData | None:
    """Stability-driven NMF (staNMF): choose K by bootstrap instability and factorise.

    Implements Methods "The staNMF Framework" of :cite:`cahill2024stanmf`. The data
    ``X`` (obs x genes; voxels or cells x genes) is factorised as ``X ~ D A`` with the
    dictionary of principal patterns ``D`` (obs x K) and coefficients ``A`` (K x genes),
    minimising ``||X - D A||_F^2`` subject to ``D, A >= 0`` with scikit-learn's coordinate
    descent (``tol``, ``max_iter``) from a fixed NNDSVD start. For every K, ``n_replicates``
    bootstrap replicates resample the genes with replacement; the instability
    ``gamma(K) = 2 / (N (N-1)) sum_{p<q} dsim(D_p, D_q)`` compares their dictionaries by
    Hungarian matching or by the Amari-type error of their cross-correlation
    (:func:`spatialfactors.models.stability.instability`). ``K* = argmin gamma(K)`` is then fitted on the
    full data.

    Parameters
    ----------
    adata
        Annotated data (or a SpatialData with ``table_key``); non-negative, no NaN.
    n_factors
        Values of K to sweep, or one integer to fit that K without a sweep.
    n_replicates
        Bootstrap replicates per K (at least 2).
    screen
        Screen the K range in stages before fitting all replicates (at least 2). Every K first
        gets ``max(5, screen // 4)`` replicates; the K whose instability is within two standard
        deviations (of the pairwise dissimilarities at the best K) of the lowest get ``screen``;
        of those, the K within one standard deviation get all ``n_replicates``
        (:func:`~spatialfactors.models.stanmf.screen_stages`: 5, 20, 100 at the defaults). Every
        stage reuses the same resamples, so a K that reaches the last stage has exactly the
        instability of a full sweep; the others keep the replicates of the stage they stopped at
        (the table's ``n_replicates`` column). This is our addition to the paper's protocol: the
        paper fits every replicate at every K, although only the K near the minimum decide K*.
        Measured on STARmap and DLPFC 151510 with a single screening stage (K 8-20, 30
        replicates, screen 10): same K*, 2.9x and 5.2x faster
        (``benchmarks/results/stanmf_screen.md``); this call at every default takes 1.1 min on
        STARmap (930 x 1,020) and 5.1 min on DLPFC 151510 (4,634 x 500) on two cores, same K* as
        with one stage (``benchmarks/results/stanmf_defaults.md``). ``None``: every K gets
        ``n_replicates``.
    metric
        ``"hungarian"`` or ``"amari"`` dissimilarity.
    layer
        Layer to factorise instead of ``.X``.
    pca
        Also run the PCA comparator (Fig. 1B): the same bootstrap, principal axes over obs
        as dictionaries, and the PCA reconstruction accuracy at K* (Fig. 1F).
    init
        ``"nndsvd"`` (what the paper's scikit-learn 1.0 used) or ``"nndsvda"``.
    tol, max_iter
        Stopping rule of the coordinate-descent solver (the paper: 1e-4 and 200).
    compress
        Rank of a randomised compression of the obs side, ``X ~ Q B``, shared by all
        replicates of the sweep (compressed NMF; much faster on atlas-sized data); K
        components use its leading ``min(compress, K + 20)`` singular directions, and the
        instability table gets each K's ``compression_error``. The final fit is always on
        the exact data. ``None`` sweeps on the exact data. ``"auto"`` compresses only
        atlas-sized inputs (at least 2e7 entries) whose rank-(K + 20) compression loses at most
        5% of ``||X||_F`` (:func:`~spatialfactors.models.stanmf.stability_sweep`): real cell
        panels are far from low rank (STARmap: 63% lost, and K* changes), so they are swept
        exactly. The rank used is recorded as ``compress`` in ``.uns[key_added]['params']``.
    dtype
        Working precision of the solver.
    device
        Torch device, e.g. ``"cuda"`` (checked to exist before anything is computed).
    batch_size
        Replicates solved together; chosen from the data size by default. Batches round
        differently in float32, so another ``batch_size`` moves the instabilities by ~1e-7.
    connectivity_key
        Key in ``.obsp`` of a squidpy spatial graph; when present, Moran's I of every
        pattern is computed with :func:`squidpy.gr.spatial_autocorr` (Fig. 1C-D).
    random_state
        Seed of the bootstrap resamples; the same seed gives bit-identical results for the
        same ``batch_size`` and torch thread count (the final fit uses torch's threads).
    n_jobs
        joblib workers for the replicates, each on one thread (``None``: all cores); results
        do not depend on it. Under ``joblib.parallel_config(backend="dask")`` the sweep runs on
        a dask.distributed cluster.
    table_key
        Table of a SpatialData input.
    key_added
        Prefix of the outputs.
    copy
        Return a modified copy instead of writing into ``adata``.
    n_components
        Deprecated name of ``n_factors``.

    Returns
    -------
    ``None`` or a copy (``copy=True``), with

    - ``.obsm['X_{key_added}']``: the dictionary ``D`` (obs x K*), pattern weights per obs;
    - ``.varm['{key_added}_loadings']``: the coefficients ``A^T`` (genes x K*);
    - ``.obsm['X_{key_added}_pca']``: principal axes at K* (when ``pca``);
    - ``.uns[key_added]``: ``instability`` (table with columns method, K, metric, mean, std,
      n_replicates), ``k`` (K*), ``genes`` (per gene: ``reconstruction_pcc``,
      ``n_patterns`` with a non-zero coefficient, and ``pca_reconstruction_pcc``),
      ``morans_i`` (when the graph exists; NaN with a warning for a constant pattern),
      ``compression_error``, ``factor_names`` (``PP1`` ... ``PPK*``, see
      :func:`spatialfactors.get.factor_names`), ``tool``, ``loadings_key`` (``'{key_added}_loadings'``:
      the loadings of this run, as :func:`spatialfactors.tl.pattern_genes` reads them) and ``params``
      (``None`` values left out; read them with :func:`spatialfactors.get.params`).

    A result under ``key_added`` replaces every slot of an earlier factorisation under that key (also
    SpiceMix's ``.varm['{key_added}_metagenes']``), so nothing stale stays beside it. NMF is
    scale-equivariant: data with entries beyond ``2**32`` (or all below ``2**-32``), whose sums of
    squares would overflow float32, are factorised times a power of two and the factors scaled back.

    Examples
    --------
    >>> import spatialfactors as sf
    >>> adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=300)
    >>> sf.tl.stanmf(adata, n_factors=range(6, 9), n_replicates=5)
    >>> adata.obsm["X_stanmf"].shape[0], adata.uns["stanmf"]["k"] in (6, 7, 8)
    (300, True)
    """
    start = time.perf_counter()
    adata = _extract_adata(adata, table_key)
    name = "n_factors" if n_components is None else "n_components"
    n_factors = _renamed("n_components", "n_factors", n_components, n_factors, default=_DEFAULT_K, where="sf.tl.stanmf")
    x = _get_matrix(adata, layer)
    ks, sweep = _check(
        adata, x, n_factors, name, n_replicates=n_replicates, screen=screen, metric=metric, pca=pca, init=init,
        tol=tol, max_iter=max_iter, compress=compress, dtype=dtype, batch_size=batch_size, random_state=random_state,
        n_jobs=n_jobs, connectivity_key=connectivity_key, key_added=key_added, copy=copy,
    )  # fmt: skip
    device = _assert_device(device)
    _assert_result_key(adata, key_added, factorisation=True, tool="sf.tl.stanmf")
    _assert_nonnegative_finite(x, _matrix_label(layer), _fix_dtype_hint(layer))
    _assert_no_empty_lines(x)
    graph = _moran_graph(adata, connectivity_key) if connectivity_key in adata.obsp else None
    x, exponent, max_value = _scaled(
        adata, x, ks, sweep, n_replicates=n_replicates, pca=pca, compress=compress, dtype=dtype, batch_size=batch_size
    )
    table, compression_error, k_best = None, None, ks[0]
    if sweep:
        table, compression_error, k_best, compress = _sweep(
            x, ks, n_replicates=n_replicates, screen=screen, metric=metric, pca=pca, random_state=random_state,
            init=init, tol=tol, max_iter=max_iter, compress=compress, dtype=dtype, device=device,
            batch_size=batch_size, n_jobs=n_jobs,
        )  # fmt: skip
    w, h, uns = _final_fit(
        adata, x, k_best, init=init, tol=tol, max_iter=max_iter, dtype=dtype, device=device, pca=pca, graph=graph,
        exponent=exponent, max_value=max_value,
    )  # fmt: skip
    params = {
        "n_factors": ks, "n_replicates": n_replicates if sweep else None, "metric": metric, "layer": layer,
        "screen": screen if sweep else None, "pca": pca, "init": init, "tol": float(tol), "max_iter": max_iter,
        "compress": compress if sweep else None, "dtype": dtype,
        "batch_size": batch_size, "connectivity_key": connectivity_key, "random_state": random_state,
    }  # fmt: skip
    uns = _stanmf_record(uns, key_added, params, table=table, compression_error=compression_error)
    target = adata.copy() if copy else adata
    writes = [("obsm", f"X_{key_added}", w), ("varm", f"{key_added}_loadings", h.T.copy())]
    if pca:
        writes.append(("obsm", f"X_{key_added}_pca", uns.pop("_pca")))
    writes.append(("uns", key_added, uns))
    _save_results(target, writes, start, remove=_factorisation_slots(key_added))
    return target if copy else None


def _check(
    adata, x, n_factors, name, *, n_replicates, screen, metric, pca, init, tol, max_iter, compress, dtype, batch_size,
    random_state, n_jobs, connectivity_key, key_added, copy,
) -> tuple[list[int], bool]:  # fmt: skip
    """Check the parameters of :func:`stanmf`; return the values of K and whether they are a sweep."""
    if adata.n_obs < 2:
        raise ValueError(
            f"staNMF needs at least 2 obs (patterns over obs), `adata` has {adata.n_obs}; check the subsetting."
        )
    sweep = not _is_int(n_factors)
    ks = _int_list(name, n_factors, 1, min(adata.shape))
    if sweep:
        _assert_int_range("n_replicates", n_replicates, 2)
    if screen is not None:
        _assert_int_range("screen", screen, 2)
    _assert_choice("metric", metric, METRICS)
    _assert_bool("pca", pca)
    _assert_choice("init", init, ("nndsvd", "nndsvda"))
    _assert_real_range("tol", tol, 0.0)
    _assert_int_range("max_iter", max_iter, 1)
    _assert_choice("dtype", dtype, ("float32", "float64"))
    if compress is not None and not (isinstance(compress, str) and compress == "auto"):
        if isinstance(compress, str):
            raise ValueError(f"`compress` must be 'auto', None or an integer rank, got {compress!r}.")
        _assert_int_range("compress", compress, max(ks), min(adata.shape))
    if batch_size is not None:
        _assert_int_range("batch_size", batch_size, 1)
    _assert_int_range("random_state", random_state, 0)
    _assert_n_jobs(n_jobs)
    _assert_str("connectivity_key", connectivity_key)
    _assert_str("key_added", key_added)
    _assert_copy(adata, copy)
    return ks, sweep


def _scaled(adata, x, ks, sweep, *, n_replicates, pca, compress, dtype, batch_size):
    """Check that the run fits in memory and the data in the working precision; return them in it.

    NMF is scale-equivariant: data whose squares would overflow (or underflow) the working precision
    are factorised times a power of two (exact), and each factor gets back half of it. Returns the
    data, that exponent and the largest value.
    """
    np_dtype = np.float32 if dtype == "float32" else np.float64
    max_value = float(abs(x).max()) if sp.issparse(x) else float(np.max(x))
    exponent = scale_exponent(max_value)
    if exponent // 2 > np.finfo(np_dtype).maxexp - 8:  # each factor carries about the square root of the scale
        raise ValueError(
            f"The data reach {max_value:.3g}, beyond what {dtype} factors can hold (about its square root each); "
            "pass `dtype='float64'`, or rescale the data first (e.g. `sc.pp.normalize_total` and `sc.pp.log1p`)."
        )
    _assert_fits_memory(
        sweep_bytes(
            adata.n_obs,
            adata.n_vars,
            max(ks),
            itemsize=np.dtype(np_dtype).itemsize,
            nnz=x.nnz if sp.issparse(x) else None,
            n_replicates=n_replicates if sweep else 0,
            pca=pca,
            batch_size=batch_size,
            compress=compress if sweep else None,
            n_ks=len(ks),
        ),
        f"staNMF on {adata.n_obs} obs x {adata.n_vars} genes (K up to {max(ks)}"
        + (f", {n_replicates} replicates)" if sweep else ")"),
        "subset the genes (e.g. highly variable genes) or the obs"
        + (", use `dtype='float32'`" if dtype == "float64" else "")
        + (", fewer `n_replicates` or a smaller `batch_size`" if sweep else "")
        + ("" if sp.issparse(x) else ", or pass a sparse matrix if the data are mostly zeros"),
    )
    if exponent:
        logg.info(f"staNMF: largest value {max_value:.3g}, factorising the data times 2**{-exponent}")
        x = x.copy() if sp.issparse(x) else np.asarray(x)
        if sp.issparse(x):
            x.data = np.ldexp(x.data.astype(np.float64), -exponent)
        else:
            x = np.ldexp(x.astype(np.float64), -exponent)
    # One copy in the working precision; sparse stays sparse.
    x = x.astype(np_dtype) if sp.issparse(x) else np.ascontiguousarray(x, dtype=np_dtype)
    return x, exponent, max_value


def _sweep(x, ks, *, n_replicates, pca, **kwargs) -> tuple[pd.DataFrame, float | None, int, int | None]:
    """Run the bootstrap sweep over K; return the instability table, the compression error, K* and the rank used."""
    # The bar counts work (NMF replicates at the mean K, PCA ones at their measured cost), not
    # tasks: its total is announced by the sweep, and again when each screening stage is planned.
    with tqdm(
        total=len(ks) * n_replicates,
        desc="staNMF replicates",
        unit="fit",
        bar_format="{l_bar}{bar}| [{elapsed}<{remaining}]",
        disable=settings.verbosity == 0,
    ) as bar:

        def total(value: float) -> None:
            bar.total = value
            bar.refresh()

        result = stability_sweep(
            x, ks, n_replicates=n_replicates, pca=pca, progress=bar.update, progress_total=total, **kwargs
        )
    table = result.table
    curve = table[table["method"] == "nmf"]
    k_best = int(curve["K"].to_numpy()[np.argmin(curve["mean"].to_numpy())])
    message = f"staNMF: K* = {k_best} (instability {curve['mean'].min():.4f})"
    if len(ks) > 1 and k_best in (min(ks), max(ks)):
        # scanpy shows warnings at its default verbosity; an edge K* is not a confirmed minimum.
        side = "smallest" if k_best == min(ks) else "largest"
        logg.warning(
            f"{message} is the {side} K swept, so the minimum is not confirmed; extend the range of `n_factors`."
        )
    else:
        logg.info(message)
    return table, result.compression_error, k_best, result.compress


def _final_fit(
    adata, x, k_best, *, init, tol, max_iter, dtype, device, pca, graph, exponent, max_value
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Fit K* on the full data; return the patterns, the coefficients and the results per gene and pattern."""
    op = DataOperator(x, dtype=dtype, device=device)
    fit = nmf(None, k_best, init=init, tol=tol, max_iter=max_iter, operator=op)
    w, h = fit.W[0], fit.H[0]
    if exponent:
        w, h = np.ldexp(w, exponent // 2), np.ldexp(h, exponent // 2)
    if not (np.isfinite(w).all() and np.isfinite(h).all()):
        raise FloatingPointError(
            f"staNMF gave non-finite factors (largest data value {max_value:.3g}); factorise with "
            "`dtype='float64'`, or rescale the data (e.g. `sc.pp.normalize_total` and `sc.pp.log1p`)."
        )
    genes = pd.DataFrame(
        {"reconstruction_pcc": reconstruction_pcc(op, w, h), "n_patterns": (h > 0).sum(axis=0)},
        index=adata.var_names.copy(),
    )
    dictionaries = {"nmf": w}
    if pca:
        axes, _, mean = pca_dictionaries(op, np.ones((1, adata.n_vars)), k_best)
        genes["pca_reconstruction_pcc"] = pca_reconstruction_pcc(op, axes[0], mean[0])
        dictionaries["pca"] = axes[0]
    uns = {
        "k": k_best,
        "genes": genes,
        "n_iter": int(fit.n_iter[0]),
        "reconstruction_err": float(np.ldexp(float(fit.reconstruction_err[0]), exponent)),
    }
    if graph is not None:
        uns["morans_i"] = _morans_i(adata, graph, dictionaries)
    if pca:
        uns["_pca"] = dictionaries["pca"]  # written to .obsm, not .uns
    return w, h, uns


def _stanmf_record(uns: dict, key_added: str, params: dict, *, table, compression_error) -> dict:
    """Return the ``.uns`` record of a staNMF run: results, factor names, loadings key, parameters."""
    entries = {**uns, "factor_names": _default_names("stanmf", uns["k"]), "loadings_key": f"{key_added}_loadings"}
    if table is not None:
        entries["instability"] = table
    if compression_error is not None:
        entries["compression_error"] = float(compression_error)
    return _record("stanmf", entries, params)
