"""``sf.tl.hmrf_domains``: discrete spatial domains from a Potts hidden Markov random field."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scanpy import logging as logg
from scanpy import settings
from tqdm.auto import tqdm

from spatialfactors._validation import (
    _assert_categorical,
    _assert_choice,
    _assert_copy,
    _assert_fits_memory,
    _assert_int_range,
    _assert_obs_key,
    _assert_real_range,
    _assert_result_key,
    _assert_str,
    _extract_adata,
    _get_graph,
    _get_obsm,
    _int_list,
    _save_results,
)
from spatialfactors.models.domains import reference_scores
from spatialfactors.models.potts import COVARIANCES, potts_sweep
from spatialfactors.tl._record import _record

#: The default sweep of the smoothing parameter.
BETAS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)


def _beta_list(beta) -> list[float]:
    """One value or a sequence of values ``>= 0``, as a sorted list without repeats."""
    values = [beta] if not isinstance(beta, Iterable) or isinstance(beta, str) else list(beta)
    if not values:
        raise ValueError("`beta` is empty; pass a number or a sequence such as `(0, 1, 2)`.")
    for b in values:
        _assert_real_range("beta", b, 0)
    return sorted({float(b) for b in values})


def hmrf_domains(
    adata: AnnData,
    basis: str = "X_pca",
    n_domains: int | Sequence[int] = range(2, 11),
    *,
    beta: float | Sequence[float] = BETAS,
    covariance: Literal["diag", "full"] = "diag",
    n_dims: int | None = None,
    connectivity_key: str = "spatial_connectivities",
    library_key: str | None = None,
    max_distance: float | None = None,
    reference_key: str | None = None,
    max_iter: int = 100,
    tol: float = 1e-6,
    random_state: int = 0,
    table_key: str | None = None,
    key_added: str = "hmrf",
    copy: bool = False,
) -> AnnData | None:
    """Discrete spatial domains from a hidden Markov random field (the SpiceMix paper's HMRF comparator).

    The model of Zhu et al. (2018), behind Giotto's ``doHMRF``: every cell has one of ``K``
    labels, its features (``.obsm[basis]``) are Gaussian given the label, and neighbouring
    cells in ``.obsp[connectivity_key]`` prefer equal labels through a Potts prior of strength
    ``beta`` (``beta = 0``: a Gaussian mixture that ignores space). It is fitted by
    mean-field-like EM from seeded k-means labels; the details are in
    :func:`~spatialfactors.models.potts.potts_em`.

    With several numbers of domains or values of ``beta``, every combination is fitted and the
    one with the lowest BIC of the mean-field-like likelihood is kept (Forbes & Peyrard 2003):
    the number of domains is chosen under the upper bound ``max(n_domains)``, as the paper's
    HMRF does, and ``beta`` by its pseudo-likelihood. The paper picked ``beta`` by hand to
    maximise the ARI; with ``reference_key`` the ARI of every fit is in the objective table, so
    that best case can be read off.

    Parameters
    ----------
    adata
        Annotated data with features in ``.obsm[basis]`` and a spatial graph.
        A :class:`spatialdata.SpatialData` with ``table_key`` works as well.
    basis
        Key in ``.obsm``: PCA scores (``sc.tl.pca``), or any representation such as
        ``"X_spicemix"``.
    n_domains
        Number of domains, or a sequence of candidates (chosen by BIC).
    beta
        Potts smoothing, one value ``>= 0`` or a sequence (chosen by BIC). It weighs each
        neighbour with the same label, so its scale depends on the number of neighbours
        (1-2 suits the six or so of a Delaunay graph or a Visium grid).
    covariance
        ``"diag"``: a variance per domain and feature (the default: stable with many features
        and small domains); ``"full"``: a covariance matrix per domain, as in Giotto.
    n_dims
        Use the first ``n_dims`` columns of ``.obsm[basis]`` (e.g. the leading PCs); all by
        default.
    connectivity_key
        Spatial graph in ``.obsp`` (squidpy's); edge weights are ignored.
    library_key
        Categorical ``.obs`` column of the fields of view: the graph may not join them (the
        model parameters are shared), and :func:`spatialfactors.pl.domains` draws one panel each.
    max_distance
        Ignore graph edges longer than this (squidpy's ``.obsp['spatial_distances']``).
    reference_key
        ``.obs`` column with reference labels: the adjusted Rand index and normalised mutual
        information of every fit against it are stored (cells without a label are left out).
    max_iter
        Most EM iterations per fit.
    tol
        Stop a fit when its objective changes by less than ``tol`` times its magnitude.
    random_state
        Seed of the k-means initialisation.
    table_key
        Table of a SpatialData input.
    key_added
        ``.obs`` column and ``.uns`` key to write.
    copy
        Return a modified copy.

    Returns
    -------
    ``None`` (or the copy), with ``.obs[key_added]`` (categorical domains, numbered from the
    largest) and ``.uns[key_added]``: ``n_domains`` and ``beta`` of the kept fit, its
    ``means``, ``covariances`` and ``weights`` (the prior label proportions, softmax of the
    external field), ``history`` (objective per EM iteration), ``objective`` (a table with one
    row per fit: ``n_domains``, ``beta``, ``loglik``, ``bic``, ``n_iter``, ``converged``,
    ``n_found``, and ``ari`` / ``nmi`` with ``reference_key``), ``labels`` (cells x ``beta``:
    the labels of every ``beta`` at the kept number of domains), ``ari`` / ``nmi`` of the kept
    fit with ``reference_key``, and ``params``.

    Examples
    --------
    >>> import squidpy as sq
    >>> import spatialfactors as sf
    >>> adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=300)
    >>> sq.gr.spatial_neighbors_delaunay(adata)
    >>> sf.tl.hmrf_domains(adata, "X_true", 4, beta=[0.0, 1.0], reference_key="layer")
    >>> adata.obs["hmrf"].nunique(), adata.uns["hmrf"]["beta"] in (0.0, 1.0)
    (4, True)
    """
    start = time.perf_counter()
    adata = _extract_adata(adata, table_key)
    values = _get_obsm(adata, basis, hint="compute a representation first, e.g. `sc.tl.pca(adata)`")
    if adata.n_obs < 3:
        raise ValueError(f"HMRF domains need at least 3 obs, `adata` has {adata.n_obs}.")
    ks = _int_list("n_domains", n_domains, 2, adata.n_obs - 1)
    betas = _beta_list(beta)
    _assert_choice("covariance", covariance, COVARIANCES)
    if n_dims is not None:
        _assert_int_range("n_dims", n_dims, 1, values.shape[1])
        values = values[:, :n_dims]
    _assert_int_range("max_iter", max_iter, 1)
    _assert_real_range("tol", tol, 0)
    _assert_int_range("random_state", random_state, 0)
    _assert_str("key_added", key_added)
    _assert_copy(adata, copy)
    _assert_result_key(adata, key_added, factorisation=False, tool="sf.tl.hmrf_domains")
    _assert_obs_key(adata, "reference_key", reference_key)
    if library_key is not None:
        _assert_categorical(adata, library_key)
    graph = _get_graph(adata, connectivity_key, library_key, max_distance=max_distance)
    n, d = values.shape
    cov_bytes = max(ks) * d * (d if covariance == "full" else 1) * 8
    _assert_fits_memory(
        8 * n * max(ks) * 8 + 4 * values.nbytes + 3 * cov_bytes,
        f"HMRF domains of {n} obs x {d} features",
        "use fewer `n_domains`, `n_dims` or covariance='diag'",
    )
    if not np.all(values.std(0) > 0):
        raise ValueError(f"`adata.obsm[{basis!r}]` has constant columns; drop them (e.g. with `n_dims`).")

    truth = adata.obs[reference_key].to_numpy() if reference_key is not None else None
    with tqdm(total=len(ks) * len(betas), desc="HMRF fits", disable=settings.verbosity == 0) as bar:
        sweep = potts_sweep(
            values,
            graph,
            ks,
            betas,
            covariance=covariance,
            max_iter=max_iter,
            tol=tol,
            random_state=random_state,
            score=(lambda labels: reference_scores(truth, labels)) if truth is not None else None,
            progress=bar.update,
        )
    fit = sweep.best
    k = len(fit.means)
    n_found = int(fit.labels.max()) + 1
    if n_found < k:
        logg.warning(f"{k - n_found} of the {k} domains kept no cell; `.obs[{key_added!r}]` has {n_found}.")
    if not fit.converged:
        logg.warning(f"The kept fit did not converge in {max_iter} EM iterations; raise `max_iter`.")

    column = pd.Categorical(fit.labels.astype(str), categories=[str(i) for i in range(n_found)])
    weights = np.exp(fit.field - fit.field.max())
    uns = {
        "n_domains": k,
        "beta": fit.beta,
        "means": fit.means,
        "covariances": fit.covariances,
        "weights": weights / weights.sum(),
        "loglik": fit.loglik,
        "bic": fit.bic,
        "history": np.asarray(fit.history),
        "objective": sweep.table,
        "labels": sweep.labels.set_axis(adata.obs_names, axis=0),
    }
    params = {
        "basis": basis,
        "n_domains": np.asarray(ks, dtype=np.int64),
        "beta": np.asarray(betas),
        "covariance": covariance,
        "n_dims": int(n_dims) if n_dims is not None else d,
        "connectivity_key": connectivity_key,
        "library_key": library_key,
        "max_distance": max_distance,
        "max_iter": int(max_iter),
        "tol": float(tol),
        "random_state": int(random_state),
        "reference_key": reference_key if truth is not None else None,
    }
    uns = _record("hmrf_domains", uns, params)
    if truth is not None:
        uns.update(reference_scores(truth, fit.labels))
    text = f", ARI {uns['ari']:.3f} against `{reference_key}`" if truth is not None else ""
    logg.info(f"{key_added}: {n_found} domains at beta {fit.beta:g}{text}")
    target = adata.copy() if copy else adata
    _save_results(
        target, [("obs", key_added, pd.Series(column, index=adata.obs_names)), ("uns", key_added, uns)], start
    )
    return target if copy else None
