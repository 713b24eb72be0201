"""``sf.tl.cluster_latent``: hierarchical clustering of latent states, K by Calinski-Harabasz."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from scanpy import logging as logg
from scipy.cluster.hierarchy import fcluster, linkage
from sklearn.metrics import calinski_harabasz_score

from spatialfactors._validation import (
    _assert_bool,
    _assert_copy,
    _assert_fits_memory,
    _assert_obs_key,
    _assert_result_key,
    _assert_str,
    _extract_adata,
    _get_obsm,
    _int_list,
    _save_results,
    _warn_undefined,
)
from spatialfactors.models.domains import order_by_size, proportions, reference_scores
from spatialfactors.tl._record import _record


def cluster_latent(
    adata: AnnData,
    basis: str = "X_spicemix",
    *,
    n_clusters: int | Sequence[int] | None = None,
    normalize: bool = True,
    reference_key: str | None = None,
    table_key: str | None = None,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Ward hierarchical clustering of latent states, as the SpiceMix paper evaluates them.

    The cells' latent states (``.obsm[basis]``), as metagene proportions by default, are
    clustered with Ward linkage (:func:`scipy.cluster.hierarchy.linkage`); the tree is cut
    into ``n_clusters`` clusters, or into the number in ``range(2, 21)`` (or the given
    sequence) with the highest Calinski-Harabasz index
    (:func:`sklearn.metrics.calinski_harabasz_score`): the highest of its interior peaks (a
    candidate scoring above both neighbours), since the index of weakly separated data only
    falls from 2 clusters on, which says nothing about their number. Without a peak, the
    best-scoring candidate is taken with a warning. With ``reference_key`` the adjusted Rand
    index against that labelling is stored too. For spatial domains (layers, regions) see
    :func:`spatial_domains`.

    Parameters
    ----------
    adata
        Annotated data with latent states in ``.obsm[basis]``.
    basis
        Key in ``.obsm`` (``"X_spicemix"``, ``"X_stanmf"``, ...).
    n_clusters
        Number of clusters, candidates to choose from, or ``None`` for ``range(2, 21)``.
    normalize
        Divide each cell's state by its sum (proportions; cells with zero sum stay zero).
    reference_key
        ``.obs`` column with reference labels for the adjusted Rand index.
    table_key
        Table of a SpatialData input.
    key_added
        ``.obs`` column to write (default ``"<basis without X_>_clusters"``).
    copy
        Return a modified copy.

    Returns
    -------
    ``None`` (or the copy), with ``.obs[key_added]`` (categorical) and ``.uns[key_added]``:
    ``n_clusters``, ``calinski_harabasz`` (table of candidates and scores), ``ari`` and ``nmi``
    (with ``reference_key``; cells without a reference label are left out) and ``params``.

    Examples
    --------
    >>> import spatialfactors as sf
    >>> adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=200)
    >>> sf.tl.cluster_latent(adata, "X_true", n_clusters=8, reference_key="cell_type")
    >>> adata.obs["true_clusters"].nunique(), 0 <= adata.uns["true_clusters"]["ari"] <= 1
    (8, True)
    """
    start = time.perf_counter()
    adata = _extract_adata(adata, table_key)
    values = _get_obsm(adata, basis, hint="run the factorisation first, e.g. `sf.tl.spicemix(adata)` for 'X_spicemix'")
    _assert_obs_key(adata, "reference_key", reference_key)
    if adata.n_obs < 3:
        raise ValueError(f"Clustering needs at least 3 obs, `adata` has {adata.n_obs}.")
    default = range(2, min(21, adata.n_obs))  # a cut needs fewer clusters than obs
    candidates = _int_list("n_clusters", default if n_clusters is None else n_clusters, 2, adata.n_obs - 1)
    _assert_bool("normalize", normalize)
    _assert_str("key_added", key_added, optional=True)
    _assert_copy(adata, copy)
    name = key_added or f"{basis.removeprefix('X_')}_clusters"
    _assert_result_key(adata, name, factorisation=False, tool="sf.tl.cluster_latent")
    n = adata.n_obs
    # Ward linkage holds the condensed distance matrix (n (n - 1) / 2 float64) and the data.
    _assert_fits_memory(
        n * (n - 1) // 2 * 8 + 2 * values.nbytes,
        f"Ward clustering of {n} obs",
        "cluster a subsample, or use `sf.tl.spatial_domains` (Leiden on a neighbour graph)",
    )
    if normalize:
        values = proportions(values)

    tree = linkage(values, method="ward")
    scores, labelings = [], {}
    for k in candidates:
        labels = fcluster(tree, t=k, criterion="maxclust")
        labelings[k] = labels
        n_found = len(np.unique(labels))
        scores.append(calinski_harabasz_score(values, labels) if 1 < n_found < len(values) else np.nan)
    table = pd.DataFrame({"n_clusters": candidates, "calinski_harabasz": scores})
    n_distinct = len(np.unique(values, axis=0))
    undefined = [k for k, score in zip(candidates, scores, strict=True) if np.isnan(score)]
    if len(candidates) > 1 and len(undefined) == len(candidates):
        raise ValueError(
            f"No candidate number of clusters gives a valid Calinski-Harabasz index: `adata.obsm[{basis!r}]` has "
            f"{n_distinct} distinct latent state(s) over {n} obs, too few to cut into {candidates[0]} or more "
            "clusters; check the factorisation (identical states carry no clustering)."
        )
    if undefined:
        _warn_undefined(
            f"The Calinski-Harabasz index of {undefined} clusters",
            f"`adata.obsm[{basis!r}]` has {n_distinct} distinct latent state(s), so the tree cannot be cut into "
            "that many clusters",
            "pass fewer `n_clusters`",
        )
    if len(candidates) == 1:
        k_best = candidates[0]
    else:
        k_best = candidates[_best_peak(np.asarray(scores, dtype=np.float64))]
    labels = labelings[k_best]
    labels = order_by_size(labels)  # numbered from 0 in order of size, as scanpy's leiden/louvain
    n_found = int(labels.max()) + 1
    column = pd.Categorical(labels.astype(str), categories=[str(i) for i in range(n_found)])
    uns = _record(
        "cluster_latent",
        {"n_clusters": int(k_best), "calinski_harabasz": table},
        {"basis": basis, "normalize": bool(normalize), "method": "ward", "reference_key": reference_key},
    )
    if reference_key is not None:
        uns.update(reference_scores(adata.obs[reference_key].to_numpy(), labels))
        logg.info(f"{name}: {k_best} clusters, ARI {uns['ari']:.3f} against `{reference_key}`")
    target = adata.copy() if copy else adata
    _save_results(target, [("obs", name, pd.Series(column, index=adata.obs_names)), ("uns", name, uns)], start)
    return target if copy else None


def _best_peak(scores: np.ndarray) -> int:
    """Index of the highest interior local maximum of ``scores`` (NaN ignored), else of the maximum."""
    filled = np.where(np.isnan(scores), -np.inf, scores)
    inner = np.arange(1, len(scores) - 1)
    peaks = inner[(filled[inner] > filled[inner - 1]) & (filled[inner] > filled[inner + 1])]
    if len(peaks):
        return int(peaks[np.argmax(filled[peaks])])
    best = int(np.argmax(filled))
    logg.warning(
        "cluster_latent: the Calinski-Harabasz index has no peak between the candidates (largest at "
        f"{'the smallest' if best == 0 else 'the largest'} candidate): it gives no evidence for a number of "
        "clusters; pass `n_clusters`, or use `sf.tl.spatial_domains` (Leiden)."
    )
    return best
