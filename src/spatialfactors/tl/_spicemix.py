"""``sf.tl.spicemix``: the NMF-HMRF model of SpiceMix on a squidpy spatial graph."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Literal

import numpy as np
import scipy.sparse as sp
from anndata import AnnData
from scanpy import logging as logg
from scanpy import settings
from tqdm.auto import tqdm

from spatialfactors._validation import (
    _assert_bool,
    _assert_categorical,
    _assert_choice,
    _assert_copy,
    _assert_device,
    _assert_fits_memory,
    _assert_int_range,
    _assert_n_jobs,
    _assert_nonnegative_finite,
    _assert_real_range,
    _assert_result_key,
    _assert_str,
    _extract_adata,
    _factorisation_slots,
    _fix_dtype_hint,
    _get_graph,
    _get_matrix,
    _int_list,
    _is_int,
    _matrix_label,
    _save_results,
)
from spatialfactors.get import _default_names
from spatialfactors.models.hmrf import INITS, PRIORS, SOLVERS, fit_bytes, fit_hmrf, hmrf_stability
from spatialfactors.models.stability import METRICS, instability_bytes
from spatialfactors.models.stanmf import REPLICATE_OVERHEAD, bootstrap_bytes

from ._record import _record


def spicemix(
    adata: AnnData,
    n_factors: int | Sequence[int] = 10,
    *,
    connectivity_key: str = "spatial_connectivities",
    library_key: str | None = None,
    max_distance: float | None = None,
    layer: str | None = None,
    lambda_sigma: float = 1e-4,
    lambda_x: float = 1.0,
    max_iter: int = 200,
    tol: float | None = 1e-6,
    init_iter: int = 5,
    init: Literal["kmeans", "leiden"] = "kmeans",
    init_key: str | None = None,
    affinity_optimizer: Literal["lbfgs", "adam"] = "lbfgs",
    neutral_affinity: bool = True,
    prior_from: Literal["data", "map"] = "data",
    n_replicates: int = 10,
    metric: Literal["hungarian", "amari"] = "hungarian",
    rescale: bool = True,
    random_state: int = 0,
    solver: Literal["fast", "cvxpy"] = "fast",
    dtype: Literal["float32", "float64"] = "float64",
    device: str = "cpu",
    n_jobs: int | None = None,
    table_key: str | None = None,
    key_added: str = "spicemix",
    copy: bool = False,
) -> AnnData | None:
    """SpiceMix: metagenes, cell latent states and their spatial affinity (NMF-HMRF).

    Fits the model of :cite:`chidester2023spicemix` (Methods eqs. 1-12, Algorithm 1): the
    expression of each cell is a non-negative mixture of K metagenes, and neighbouring
    cells' metagene proportions interact through a learned affinity matrix
    ``Sigma_x^-1``. Fields of view (``library_key``) share the metagenes, the affinity and
    the noise level; each has its own graph. The engine is
    :func:`~spatialfactors.models.hmrf.fit_hmrf` (see there for the updates). With a range
    of ``n_factors``, K is chosen by the staNMF stability criterion: ``n_replicates``
    bootstrap resamples of the genes per K, instability of the latent states, K* = argmin.

    Parameters
    ----------
    adata
        Cells x genes, non-negative, normalised as the paper does (see
        :func:`spatialfactors.pp.normalize_spicemix`), with a spatial graph in ``.obsp``.
        A :class:`spatialdata.SpatialData` with ``table_key`` works as well.
    n_factors
        K, or a sequence of K values to choose from by stability.
    connectivity_key
        Key of the spatial graph in ``.obsp``, as written by squidpy's
        ``sq.gr.spatial_neighbors_delaunay`` (or ``_knn``, ``_radius``). Symmetric, no
        self-loops, no edges between fields of view. Cells without neighbours have no
        spatial term (for them the model is NMF with an L1 prior).
    library_key
        Categorical ``.obs`` column naming each cell's field of view.
    max_distance
        Ignore graph edges longer than this (squidpy's ``.obsp['spatial_distances']``, in the units
        of ``.obsm['spatial']``): a Delaunay triangulation also joins cells across gaps and along
        the tissue's edge (the SpiceMix paper cuts STARmap's edges at 600 px, seqFISH+'s at 300 px).
        ``.obsp`` is not changed.
    layer
        Layer to use instead of ``.X`` (dense or sparse; sparse data stay sparse through the fit).
    lambda_sigma
        Weight of the Gaussian prior on the affinity (the paper: 1e-4), per edge. It bounds how
        strongly neighbours shape each cell's state. With the default ``prior_from="data"`` the
        affinity no longer grows over the iterations, and one value serves the data sets of
        ``benchmarks/results/spatial_domains.md`` (STARmap, Visium DLPFC, osmFISH, simulations).
        With the paper's scheme (``prior_from="map"``) it also limits the runaway: on STARmap,
        1e-4 splits the excitatory neurons into thin depth bands, 1e-3 stays closer to the
        published types (``benchmarks/results/spicemix_starmap.md``). The authors' code divides
        its affinity data term by twice the number of edges and stops Adam early, so its values
        are not on the same scale.
    lambda_x
        Rate of the exponential prior on the latent states (the paper: 1).
    max_iter, tol
        Iterations after the initialisation; stop earlier when the objective changes by less
        than ``tol`` (relative) over an iteration (``None``: run all).
    init_iter
        ``T0``, non-spatial alternations after the start (the paper: 5).
    init
        The clustering whose cluster means start the metagenes: ``"kmeans"`` (the paper's
        Algorithm 1) or ``"leiden"``, a Leiden clustering of the first 50 principal components
        (20 neighbours) with its resolution searched until there are K clusters, as the
        authors' current code does with Louvain. Both on at most 20,000 cells. Over five seeds
        (``benchmarks/results/spatial_domains_leiden_start.md``) neither is better everywhere:
        Leiden gains 0.01-0.02 ARI on STARmap's excitatory layers and osmFISH and loses 0.01 on
        STARmap's cell types, DLPFC and two of four simulations, and 0.15 on the authors'
        synthetic cortex, so k-means stays the default.
    init_key
        ``.obs`` column with a clustering of exactly K clusters (e.g. from ``sc.tl.leiden``) to
        start the metagenes from its cluster means (instead of ``init``). Only with a single
        ``n_factors``.
    affinity_optimizer
        ``"lbfgs"`` minimises the convex affinity objective to convergence each iteration;
        ``"adam"`` takes the paper's Adam steps.
    neutral_affinity
        Constrain the affinity to prefer no metagene in the average neighbourhood, so that it
        models how a cell's neighbours differ from the average rather than how common each
        metagene is. Without the constraint (``False``, the paper's estimate) the commonest
        metagene slowly absorbs the others as the iterations go on; with it, SpiceMix's
        clusters stay above NMF's on noisy data (``benchmarks/results/spicemix_scenarios.md``).
    prior_from
        ``"data"`` (default): the spatial prior is built from every cell's proportions fitted to
        its own expression alone (the affinity's estimate, and the neighbours' states in each
        cell's MAP update), so the affinity cannot feed on the smoothing it causes. ``"map"``:
        the paper's scheme, from the spatially smoothed MAP states: there the affinity grows at
        every iteration (||S|| 20 -> 50-90 on real tissue) until a few metagenes absorb the
        others. On STARmap (K = 10, seed 0; the STARmap tutorial) the default ends with 8.7 of 10
        metagenes in use, ``||S||`` 23 and ARI 0.47 against the published types, the paper's
        scheme with 6.8, 46 and 0.40. See :func:`~spatialfactors.models.hmrf.fit_hmrf` and
        ``benchmarks/results/spatial_domains.md``.
    n_replicates, metric
        Stability selection of K (only used when ``n_factors`` is a sequence).
    rescale
        Scale each field of view so that the mean total expression per cell is K (paper).
    random_state
        Seed of the k-means start and the bootstrap resamples.
    solver
        ``"fast"`` (batched exact active-set solvers) or ``"cvxpy"`` (reference; slow).
    dtype, device
        Precision and torch device (``"cuda"`` for a GPU; checked to exist before anything is computed).
    n_jobs
        joblib workers for the stability replicates.
    table_key
        Table of a SpatialData input.
    key_added
        Prefix of the results.
    copy
        Return a modified copy instead of writing to ``adata``.

    Returns
    -------
    ``None`` (or the copy), with

    - ``.obsm['X_spicemix']``: latent states (cells x K, in units of the rescaled data);
    - ``.varm['spicemix_metagenes']``: metagenes (genes x K, columns sum to one);
    - ``.uns['spicemix']``: ``affinity`` (K x K), ``sigma_y``, ``history`` (per iteration:
      objective, energy, rss, sigma_y, affinity_loss, ``effective_metagenes`` and
      ``max_proportion`` (a fit degenerating shows as the first falling and the second rising
      towards 1; a warning is logged below K/2 metagenes), ``affinity_norm``, seconds), ``scale`` (per field of
      view with cells; unused categories of ``library_key`` are left out), ``k``, ``n_iter``, ``instability``
      (for a range of K), ``factor_names`` (``MG1`` ... ``MGK``, see :func:`spatialfactors.get.factor_names`),
      ``tool``, ``loadings_key`` (``'{key_added}_metagenes'``) and ``params`` (``None`` values left out;
      read them with :func:`spatialfactors.get.params`).

    A result under ``key_added`` replaces every slot of an earlier factorisation under that key (also
    staNMF's ``.varm['{key_added}_loadings']``), so nothing stale stays beside it.

    Examples
    --------
    >>> import squidpy as sq
    >>> import spatialfactors as sf
    >>> adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=200)
    >>> sq.gr.spatial_neighbors_delaunay(adata)
    >>> sf.tl.spicemix(adata, 8, max_iter=5)
    >>> adata.obsm["X_spicemix"].shape, adata.uns["spicemix"]["affinity"].shape
    ((200, 8), (8, 8))
    """
    start = time.perf_counter()
    adata = _extract_adata(adata, table_key)
    x = _get_matrix(adata, layer)
    ks, sweep = _check(
        adata, n_factors, n_replicates=n_replicates, metric=metric, lambda_sigma=lambda_sigma, lambda_x=lambda_x,
        max_iter=max_iter, init_iter=init_iter, init=init, init_key=init_key, tol=tol,
        affinity_optimizer=affinity_optimizer, neutral_affinity=neutral_affinity, prior_from=prior_from,
        rescale=rescale, random_state=random_state, solver=solver, dtype=dtype, n_jobs=n_jobs, key_added=key_added,
        copy=copy,
    )  # fmt: skip
    device = _assert_device(device)
    _assert_result_key(adata, key_added, factorisation=True, tool="sf.tl.spicemix")
    _assert_nonnegative_finite(x, _matrix_label(layer, "The expression values"), _fix_dtype_hint(layer))
    if library_key is not None:
        _assert_categorical(adata, library_key)
    init_labels = _init_labels(adata, init_key, ks, sweep) if init_key is not None else None
    graph, libraries, groups = _graph(adata, connectivity_key, library_key, max_distance)
    _assert_fits(adata, x, ks, sweep, n_replicates=n_replicates, n_jobs=n_jobs)
    # Sparse data stay sparse: the engine needs only y @ M, y^T X and ||y||^2.
    y = sp.csr_matrix(x, dtype=np.float64) if sp.issparse(x) else np.asarray(x, dtype=np.float64)
    fit_kwargs = {
        "lambda_x": lambda_x, "lambda_sigma": lambda_sigma, "max_iter": max_iter, "tol": tol, "init_iter": init_iter,
        "init": init, "affinity_optimizer": affinity_optimizer, "neutral_affinity": neutral_affinity,
        "prior_from": prior_from, "rescale": rescale, "solver": solver, "dtype": dtype, "device": device,
    }  # fmt: skip
    table, k_best = None, int(ks[0])
    if sweep:
        table, k_best = _choose_k(
            y, graph, ks, n_replicates=n_replicates, groups=groups, metric=metric, random_state=random_state,
            n_jobs=n_jobs, **fit_kwargs,
        )  # fmt: skip
    # The engine's bar ends saying whether the fit converged (and warns when it stopped at max_iter).
    res = fit_hmrf(
        y, graph, k_best, groups=groups, random_state=random_state, init_labels=init_labels, progress_bar=True,
        **fit_kwargs,
    )  # fmt: skip
    _warn_degenerate(res.history, k_best)
    params = {
        "n_factors": [int(k) for k in ks], "connectivity_key": connectivity_key, "library_key": library_key,
        "max_distance": max_distance, "layer": layer, "lambda_sigma": float(lambda_sigma),
        "lambda_x": float(lambda_x), "max_iter": max_iter, "tol": tol, "init_iter": init_iter, "init": init,
        "init_key": init_key,
        "affinity_optimizer": affinity_optimizer, "neutral_affinity": neutral_affinity, "prior_from": prior_from,
        "n_replicates": n_replicates if sweep else None, "metric": metric, "rescale": rescale,
        "random_state": random_state, "solver": solver, "dtype": dtype,
    }  # fmt: skip
    target = adata.copy() if copy else adata
    writes = [
        ("obsm", f"X_{key_added}", res.X),
        ("varm", f"{key_added}_metagenes", res.M),
        ("uns", key_added, _spicemix_record(res, k_best, key_added, libraries, table, params)),
    ]
    _save_results(target, writes, start, remove=_factorisation_slots(key_added))
    return target if copy else None


def _check(
    adata, n_factors, *, n_replicates, metric, lambda_sigma, lambda_x, max_iter, init_iter, init, init_key, tol,
    affinity_optimizer, neutral_affinity, prior_from, rescale, random_state, solver, dtype, n_jobs, key_added, copy,
) -> tuple[list[int], bool]:  # fmt: skip
    """Check the parameters of :func:`spicemix`; return the values of K and whether they are a sweep."""
    sweep = not _is_int(n_factors)
    ks = _int_list("n_factors", n_factors, 2, min(adata.n_vars, adata.n_obs))
    if sweep:
        _assert_int_range("n_replicates", n_replicates, 2)
        _assert_choice("metric", metric, METRICS)
    _assert_real_range("lambda_sigma", lambda_sigma, 0)
    _assert_real_range("lambda_x", lambda_x, 0)
    _assert_int_range("max_iter", max_iter, 0)
    _assert_int_range("init_iter", init_iter, 0)
    _assert_choice("init", init, INITS)
    if init_key is not None and init != "kmeans":
        raise ValueError(f"Give either `init_key` or `init={init!r}`: both choose the clustering the fit starts from.")
    if tol is not None:
        _assert_real_range("tol", tol, 0)
    _assert_choice("affinity_optimizer", affinity_optimizer, ("lbfgs", "adam"))
    _assert_bool("neutral_affinity", neutral_affinity)
    _assert_choice("prior_from", prior_from, PRIORS)
    _assert_bool("rescale", rescale)
    _assert_int_range("random_state", random_state, 0)
    _assert_choice("solver", solver, SOLVERS)
    _assert_choice("dtype", dtype, ("float32", "float64"))
    _assert_n_jobs(n_jobs)
    _assert_str("key_added", key_added)
    _assert_copy(adata, copy)
    return ks, sweep


def _graph(adata, connectivity_key, library_key, max_distance) -> tuple[sp.csr_matrix, list[str], np.ndarray | None]:
    """Return the checked spatial graph, the fields of view with cells and every cell's field of view."""
    graph = _get_graph(adata, connectivity_key, library_key, max_distance=max_distance)
    isolated = int((np.diff(graph.indptr) == 0).sum())
    if isolated:
        logg.warning(f"{isolated} cells have no neighbours in `{connectivity_key}`; they get no spatial term.")
    # Fields of view without cells (unused categories) have no scale: only the ones present count.
    libraries = (
        list(adata.obs[library_key].cat.remove_unused_categories().cat.categories)
        if library_key is not None
        else ["all"]
    )
    groups = adata.obs[library_key].cat.codes.to_numpy() if library_key is not None else None
    return graph, libraries, groups


def _assert_fits(adata, x, ks, sweep, *, n_replicates, n_jobs) -> None:
    """Fail before fitting when the fit (and the sweep's replicates) would not fit in memory."""
    n_workers = (os.cpu_count() or 1) if n_jobs is None or n_jobs < 0 else n_jobs
    n_bytes = fit_bytes(
        adata.n_obs,
        adata.n_vars,
        n_parallel=min(n_replicates, n_workers) if sweep else 0,
        nnz=x.nnz if sp.issparse(x) else None,
        n_factors=max(ks),
    )
    if sweep:
        # The resamples, one task per replicate and K, each K's states and their pairwise instability.
        n_bytes += bootstrap_bytes(adata.n_vars, n_replicates) + len(ks) * n_replicates * REPLICATE_OVERHEAD
        n_bytes += n_replicates * adata.n_obs * max(ks) * 4 + instability_bytes(n_replicates, adata.n_obs, max(ks))
    _assert_fits_memory(
        n_bytes,
        f"SpiceMix on a {'sparse' if sp.issparse(x) else 'dense'} {adata.n_obs} cells x {adata.n_vars} genes matrix"
        + (f" with {n_replicates} replicates per K" if sweep else ""),
        "subset the genes first (e.g. `sc.pp.highly_variable_genes(adata, subset=True)`) or the cells"
        + (", or use fewer `n_replicates`" if sweep else ""),
    )


def _choose_k(y, graph, ks, *, n_replicates, **kwargs) -> tuple:
    """Choose K by stability: return the instability table and K*."""
    with tqdm(total=len(ks) * n_replicates, desc="SpiceMix replicates", disable=settings.verbosity == 0) as bar:
        table = hmrf_stability(y, graph, ks, n_replicates=n_replicates, progress=bar.update, **kwargs)
    k_best = int(table["K"].to_numpy()[np.argmin(table["mean"].to_numpy())])
    logg.info(f"SpiceMix: K* = {k_best} (instability {table['mean'].min():.4f})")
    return table, k_best


def _spicemix_record(res, k_best: int, key_added: str, libraries: list, table, params: dict) -> dict:
    """Return the ``.uns`` record of a SpiceMix run: results, factor names, loadings key, parameters."""
    entries = {
        "k": k_best,
        "factor_names": _default_names("spicemix", k_best),
        "loadings_key": f"{key_added}_metagenes",
        "affinity": res.affinity,
        "sigma_y": float(res.sigma_y),
        "history": res.history,
        "n_iter": int(res.n_iter),
        "scale": dict(zip([str(lib) for lib in libraries], res.scale.tolist(), strict=True)),
    }
    if table is not None:
        entries["instability"] = table
    return _record("spicemix", entries, params)


def _init_labels(adata: AnnData, init_key: str, ks: list[int], sweep: bool) -> np.ndarray:
    _assert_str("init_key", init_key)
    if sweep:
        raise ValueError("`init_key` needs a single `n_factors`: a clustering has one number of clusters.")
    if init_key not in adata.obs:
        raise KeyError(f"`adata.obs[{init_key!r}]` not found; compute a clustering first, e.g. `sc.tl.leiden(adata)`.")
    labels = adata.obs[init_key]
    if labels.isna().any():
        raise ValueError(f"`adata.obs[{init_key!r}]` has missing values; every cell needs a cluster.")
    n_clusters = labels.nunique()
    if n_clusters != ks[0]:
        raise ValueError(
            f"`adata.obs[{init_key!r}]` has {n_clusters} clusters but n_factors = {ks[0]}; the metagenes start "
            "as the cluster means, so the numbers must agree (tune the clustering's resolution)."
        )
    return labels.astype(str).to_numpy()


def _warn_degenerate(history, k: int) -> None:
    """Warn when a few metagenes have absorbed the others (the runaway of alternating MAP fits)."""
    last = history.iloc[-1]
    if last["iteration"] > 0 and last["effective_metagenes"] < k / 2:
        # Not always a fault: one metagene per domain on DLPFC 151510's seven layers, whose sizes
        # differ tenfold, is an effective number of 5.0.
        logg.warning(
            f"SpiceMix: only {last['effective_metagenes']:.1f} of {k} metagenes remain in use (effective number, "
            f"`.uns[...]['history']`; mean largest proportion {last['max_proportion']:.2f}). Unless a few large "
            "domains make up the tissue, the spatial term dominates the data: use fewer metagenes, a larger "
            "`lambda_sigma`, or `max_distance` to drop long edges."
        )
