"""``sf.tl.spatial_domains``: smoothing over neighbours, clustering and a majority vote."""

from __future__ import annotations

import time
from typing import Literal

import pandas as pd
from anndata import AnnData
from scanpy import logging as logg

from spatialfactors._validation import (
    _assert_bool,
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
    _is_int,
    _save_results,
)
from spatialfactors.models.domains import (
    METHODS,
    cluster_features,
    majority_vote,
    order_by_size,
    proportions,
    reference_scores,
    smooth_features,
)
from spatialfactors.tl._record import _record


def spatial_domains(
    adata: AnnData,
    basis: str = "X_spicemix",
    n_clusters: int | None = None,
    *,
    method: Literal["leiden", "ward", "kmeans"] = "leiden",
    normalize: bool | None = None,
    n_smooth: int = 1,
    vote: bool = True,
    connectivity_key: str = "spatial_connectivities",
    max_distance: float | None = None,
    resolution: float = 1.0,
    reference_key: str | None = None,
    random_state: int = 0,
    table_key: str | None = None,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Spatial domains: latent states averaged over neighbours, clustered, then a majority vote.

    The protocol the SpiceMix authors use for Visium DLPFC layers, applied to any
    representation (``X_spicemix``, ``X_stanmf``, ``X_pca``, ...):

    1. each cell's features (as proportions when ``normalize``) are averaged with those of its
       neighbours in ``.obsp[connectivity_key]``, ``n_smooth`` times;
    2. the smoothed features are clustered by Leiden (scanpy's neighbour graph of the features;
       with ``n_clusters`` the resolution is searched until Leiden gives that many clusters), Ward
       or k-means (:func:`~spatialfactors.models.domains.cluster_features`);
    3. with ``vote``, each cell takes the most common label among itself and its spatial
       neighbours, repeated until no label changes.

    Smoothing and voting turn cell states into domains (layers, regions): on Visium DLPFC
    151510, PCA's Ward clusters find the seven layers at ARI 0.25 as they are and 0.47 after
    smoothing and the vote; SpiceMix's states, already spatial, 0.42 either way
    (``benchmarks/results/spatial_domains.md``). For cell types that are interspersed in space,
    use ``n_smooth=0, vote=False`` (or :func:`cluster_latent`).

    Parameters
    ----------
    adata
        Annotated data with a representation in ``.obsm[basis]`` and a spatial graph.
        A :class:`spatialdata.SpatialData` with ``table_key`` works as well.
    basis
        Key in ``.obsm``.
    n_clusters
        Number of domains; ``None`` lets Leiden choose at ``resolution`` (Leiden only).
    method
        ``"leiden"``, ``"ward"`` or ``"kmeans"``.
    normalize
        Divide each cell's features by their sum (metagene proportions). ``None``: when every
        value is non-negative (SpiceMix, NMF, staNMF), not otherwise (PCA).
    n_smooth
        Rounds of neighbour averaging (0: none).
    vote
        Apply the majority vote among spatial neighbours.
    connectivity_key
        Spatial graph in ``.obsp`` (squidpy's).
    max_distance
        Ignore graph edges longer than this (squidpy's ``.obsp['spatial_distances']``), e.g. the
        long edges a Delaunay triangulation draws across gaps in the tissue.
    resolution
        Leiden resolution when ``n_clusters`` is ``None``.
    reference_key
        ``.obs`` column with reference labels: the adjusted Rand index and normalised mutual
        information against it are stored (cells without a label are left out).
    random_state
        Seed of Leiden / k-means.
    table_key
        Table of a SpatialData input.
    key_added
        ``.obs`` column to write (default ``"<basis without X_>_domains"``).
    copy
        Return a modified copy.

    Returns
    -------
    ``None`` (or the copy), with ``.obs[key_added]`` (categorical, numbered from the largest
    domain) and ``.uns[key_added]``: ``n_clusters``, ``vote_rounds``, ``ari`` and ``nmi`` (with
    ``reference_key``) and ``params``.

    Examples
    --------
    >>> import squidpy as sq
    >>> import spatialfactors as sf
    >>> adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=300)
    >>> sq.gr.spatial_neighbors_delaunay(adata)
    >>> sf.tl.spatial_domains(adata, "X_true", 4, method="ward", reference_key="layer")
    >>> adata.obs["true_domains"].nunique()
    4
    """
    start = time.perf_counter()
    adata = _extract_adata(adata, table_key)
    values = _get_obsm(adata, basis, hint="compute a representation first, e.g. `sf.tl.spicemix(adata)`")
    if adata.n_obs < 3:
        raise ValueError(f"Spatial domains need at least 3 obs, `adata` has {adata.n_obs}.")
    _assert_choice("method", method, METHODS)
    if n_clusters is not None:
        if not _is_int(n_clusters):
            raise TypeError(f"`n_clusters` must be an integer or None, got {n_clusters!r}.")
        _assert_int_range("n_clusters", n_clusters, 2, adata.n_obs - 1)
    elif method != "leiden":
        raise ValueError(f"`method={method!r}` needs `n_clusters`; pass it, or use method='leiden' to let it choose.")
    if normalize is not None:
        _assert_bool("normalize", normalize)
    _assert_int_range("n_smooth", n_smooth, 0)
    _assert_bool("vote", vote)
    _assert_real_range("resolution", resolution, 0, low_open=True)
    _assert_int_range("random_state", random_state, 0)
    _assert_str("key_added", key_added, optional=True)
    _assert_copy(adata, copy)
    _assert_result_key(
        adata, key_added or f"{basis.removeprefix('X_')}_domains", factorisation=False, tool="sf.tl.spatial_domains"
    )
    _assert_obs_key(adata, "reference_key", reference_key)
    graph = _get_graph(adata, connectivity_key, max_distance=max_distance)
    if method == "ward":  # Ward linkage holds the condensed distance matrix, n (n - 1) / 2 float64
        n = adata.n_obs
        _assert_fits_memory(
            n * (n - 1) // 2 * 8 + 3 * values.nbytes,
            f"Ward clustering of {n} obs",
            "use method='leiden' or method='kmeans', or cluster a subsample",
        )

    if normalize is None:
        normalize = bool((values >= 0).all())
    if normalize:
        values = proportions(values)
    features = smooth_features(values, graph, n_smooth)
    labels = cluster_features(features, n_clusters, method, resolution=resolution, random_state=random_state)
    rounds = 0
    if vote:
        labels, rounds = majority_vote(labels, graph)
        labels = order_by_size(labels)  # the vote can empty a cluster and change the sizes
    n_found = int(labels.max()) + 1
    if n_clusters is not None and n_found != n_clusters:
        logg.warning(
            f"{n_found} domains instead of {n_clusters} (Leiden found no resolution, or the vote merged some)."
        )

    name = key_added or f"{basis.removeprefix('X_')}_domains"
    column = pd.Categorical(labels.astype(str), categories=[str(i) for i in range(n_found)])
    uns = _record(
        "spatial_domains",
        {"n_clusters": n_found, "vote_rounds": int(rounds)},
        {
            "basis": basis,
            "n_clusters": n_clusters,
            "method": method,
            "normalize": bool(normalize),
            "n_smooth": int(n_smooth),
            "vote": bool(vote),
            "connectivity_key": connectivity_key,
            "max_distance": max_distance,
            "resolution": float(resolution),
            "random_state": int(random_state),
            "reference_key": reference_key,
        },
    )
    if reference_key is not None:
        uns.update(reference_scores(adata.obs[reference_key].to_numpy(), labels))
        logg.info(f"{name}: {n_found} domains, ARI {uns['ari']:.3f}, NMI {uns['nmi']:.3f} against `{reference_key}`")
    target = adata.copy() if copy else adata
    _save_results(target, [("obs", name, pd.Series(column, index=adata.obs_names)), ("uns", name, uns)], start)
    return target if copy else None
