"""What each tool writes, and the one reader that checks a result is there before anything reads it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from anndata import AnnData

from spatialfactors._validation import _assert_str


@dataclass(frozen=True)
class _Kind:
    """A kind of result: what it is called, the call that writes it, and what must be in its record."""

    label: str
    call: str  # formatted with ``key``
    required: tuple[str, ...] = ()
    uns: str = "{key}"  # where the record lives in ``.uns``
    obsm: bool = False  # whether ``.obsm['X_{key}']`` must exist too
    obs: str | None = None  # an ``.obs`` column that must exist too
    written_by: dict[str, str] = field(default_factory=dict)  # optional entries: what writes them
    params: tuple[str, ...] = ()  # parameter names the tool records (None values left out)


#: Every kind of result a tool writes, and how to get one that is missing.
KINDS: dict[str, _Kind] = {
    "stanmf": _Kind(
        "factorisation result",
        "`sf.tl.stanmf(adata, key_added={key!r})` (or `sf.tl.spicemix`)",
        obsm=True,
        written_by={
            "instability": "a sweep over K, e.g. `sf.tl.stanmf(adata, n_factors=range(8, 31))`",
            "genes": "`sf.tl.stanmf` (SpiceMix results have no per-gene reconstruction accuracy)",
            "morans_i": "`sf.tl.stanmf` when the spatial graph exists",
        },
        params=(
            "n_factors",
            "n_replicates",
            "screen",
            "metric",
            "layer",
            "pca",
            "init",
            "tol",
            "max_iter",
            "compress",
            "dtype",
            "batch_size",
            "connectivity_key",
            "random_state",
        ),
    ),
    "spicemix": _Kind(
        "SpiceMix result",
        "`sf.tl.spicemix(adata, key_added={key!r})`",
        required=("affinity",),
        written_by={
            "history": "`sf.tl.spicemix` (a table with `iteration` and `objective`)",
            "instability": "a sweep over K, e.g. `sf.tl.spicemix(adata, n_factors=range(8, 13))`",
        },
        params=(
            "n_factors",
            "connectivity_key",
            "library_key",
            "max_distance",
            "layer",
            "lambda_sigma",
            "lambda_x",
            "max_iter",
            "tol",
            "init_iter",
            "init",
            "init_key",
            "affinity_optimizer",
            "neutral_affinity",
            "prior_from",
            "n_replicates",
            "metric",
            "rescale",
            "random_state",
            "solver",
            "dtype",
        ),
    ),
    "link_regions": _Kind(
        "region linking result",
        "`sf.tl.link_regions(adata, key_added={key!r})`",
        required=("correlation",),
        params=(
            "key",
            "region_key",
            "max_regions",
            "metric",
            "dice_threshold",
            "max_candidates",
            "beam_width",
            "ontology",
            "level",
        ),
    ),
    "pattern_genes": _Kind(
        "pattern-gene result",
        "`sf.tl.pattern_genes(adata, key={key!r})`",
        required=("names",),
        uns="{key}_pattern_genes",
        params=("key", "loadings_key", "n_genes", "n_unassigned"),
    ),
    "sgcn": _Kind(
        "sGCN result",
        "`sf.tl.sgcn(adata, key_added={key!r})`",
        required=("nodes", "edges"),
        params=(
            "key",
            "loadings_key",
            "top_fraction",
            "edge_quantile",
            "n_nodes",
            "n_patterns",
            "patterns",
            "factor_names",
        ),
    ),
    "region_auc": _Kind(
        "region AUC result",
        "`sf.tl.region_auc(adata, key_added={key!r})`",
        required=("auc", "null"),
        params=("key", "region", "patterns", "region_key", "ontology", "n_random", "cv", "C", "random_state"),
    ),
    "covariate_genes": _Kind(
        "covariate-gene regression",
        "`sf.tl.covariate_genes(adata, ..., key_added={key!r})`",
        required=("table",),
        obs="{key}_covariate",
        params=("basis", "factors", "normalize", "groupby", "groups", "min_fraction", "layer", "method", "alpha"),
    ),
    "hmrf_domains": _Kind(
        "HMRF sweep (labels per beta)",
        "`sf.tl.hmrf_domains(adata, key_added={key!r})`",
        required=("labels",),
        params=(
            "basis",
            "n_domains",
            "beta",
            "covariance",
            "n_dims",
            "connectivity_key",
            "library_key",
            "max_distance",
            "max_iter",
            "tol",
            "random_state",
            "reference_key",
        ),
    ),
    "spatial_domains": _Kind(
        "spatial-domain result",
        "`sf.tl.spatial_domains(adata, key_added={key!r})`",
        required=("n_clusters", "vote_rounds"),
        params=(
            "basis",
            "n_clusters",
            "method",
            "normalize",
            "n_smooth",
            "vote",
            "connectivity_key",
            "max_distance",
            "resolution",
            "random_state",
            "reference_key",
        ),
    ),
    "cluster_latent": _Kind(
        "latent clustering",
        "`sf.tl.cluster_latent(adata, key_added={key!r})`",
        required=("calinski_harabasz",),
        params=("basis", "normalize", "method", "reference_key"),
    ),
}

#: Factorisations: the kinds whose patterns are ``.obsm['X_{key}']``.
FACTORISATIONS = ("stanmf", "spicemix")


def _uns_key(key: str, kind: str) -> str:
    return KINDS[kind].uns.format(key=key)


def _missing_message(key: str, kind: str) -> str:
    """Return the one message for a missing ``kind`` result under ``key``, naming the call that writes it."""
    spec = KINDS[kind]
    uns_key = _uns_key(key, kind)
    where = "" if uns_key == key else f" (`adata.uns[{uns_key!r}]`)"
    return (
        f"No {spec.label} under key {key!r}{where}; run {spec.call.format(key=key)} first "
        "(or pass the `key_added` you used as `key=`)."
    )


def _has_result(adata: AnnData, key: str, kind: str) -> bool:
    spec = KINDS[kind]
    record = adata.uns.get(_uns_key(key, kind))
    return (
        isinstance(record, dict)
        and all(entry in record for entry in spec.required)
        and (not spec.obsm or f"X_{key}" in adata.obsm)
        and (spec.obs is None or spec.obs.format(key=key) in adata.obs)
    )


def _result(adata: AnnData, key: str, kind: str, entry: str | None = None):
    """Return the ``.uns`` record of the ``kind`` result under ``key`` (or one ``entry`` of it), checked.

    Every reader of a tool's result goes through here, so a missing result always fails with the
    same message, naming the call that writes it.
    """
    _assert_str("key", key)
    if not _has_result(adata, key, kind):
        raise KeyError(_missing_message(key, kind))
    record = adata.uns[_uns_key(key, kind)]
    if entry is None:
        return record
    if entry not in record:
        written_by = KINDS[kind].written_by.get(entry, f"`{KINDS[kind].call.format(key=key)}`")
        raise KeyError(f"`adata.uns[{_uns_key(key, kind)!r}]` has no {entry!r}; it is written by {written_by}.")
    return record[entry]


def _kind_of(adata: AnnData, key: str) -> str | None:
    """Return the kind of the result recorded in ``.uns[key]`` (its ``tool`` entry, or guessed from older records)."""
    record = adata.uns.get(key)
    if not isinstance(record, dict):
        return None
    tool = record.get("tool")
    if isinstance(tool, str) and tool in KINDS:
        return tool
    if "affinity" in record or str(record.get("loadings_key", "")).endswith("_metagenes"):
        return "spicemix"
    if "loadings_key" in record or "k" in record:
        return "stanmf"
    for kind in ("link_regions", "sgcn", "region_auc", "covariate_genes", "hmrf_domains", "spatial_domains"):
        if _has_result(adata, key, kind):
            return kind
    if "calinski_harabasz" in record:
        return "cluster_latent"
    if "names" in record and "genes" in record and "counts" in record:
        return "pattern_genes"
    return None


def _plain(value):
    """Return a recorded value as plain Python, the same before and after an .h5ad round trip."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
