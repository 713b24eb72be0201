"""Results: read what the tools stored, as named tables, with one message per missing result (like ``sc.get``)."""

from ._atlas import _resolve_ontology, grid
from ._factors import _default_names, _factorisation, _select_factors, factor_names, factors, loadings
from ._registry import KINDS, _kind_of, _result
from ._tables import (
    _sgcn_graph,
    affinity_df,
    covariate_genes_df,
    covariate_genes_result,
    history_df,
    hmrf_labels_df,
    importance,
    instability_df,
    link_regions_df,
    params,
    pattern_genes_df,
    pattern_genes_result,
    region_auc_result,
    result,
    sgcn_graph,
)

__all__ = [
    "affinity_df",
    "covariate_genes_df",
    "covariate_genes_result",
    "factor_names",
    "factors",
    "grid",
    "history_df",
    "hmrf_labels_df",
    "importance",
    "instability_df",
    "link_regions_df",
    "loadings",
    "params",
    "pattern_genes_df",
    "pattern_genes_result",
    "region_auc_result",
    "result",
    "sgcn_graph",
]
