"""Plotting: one function per figure, reading only what the tools wrote."""

from ._covariate_genes import covariate_genes
from ._domains import domains
from ._genes import pattern_genes, pattern_with_genes, region_auc, sgcn
from ._metagenes import metagene_expression, metagenes
from ._regions import link_heatmap, linked_regions, region_correlation
from ._spicemix import affinity, convergence
from ._stanmf import instability, morans_i, patterns, patterns_per_gene, reconstruction

__all__ = [
    "affinity",
    "convergence",
    "covariate_genes",
    "domains",
    "instability",
    "link_heatmap",
    "linked_regions",
    "metagene_expression",
    "metagenes",
    "morans_i",
    "pattern_genes",
    "pattern_with_genes",
    "patterns",
    "patterns_per_gene",
    "reconstruction",
    "region_auc",
    "region_correlation",
    "sgcn",
]
