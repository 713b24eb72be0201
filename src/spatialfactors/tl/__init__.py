"""Tools: AnnData wrappers that validate input, call an engine and write the results."""

from ._cluster import cluster_latent
from ._covariate_genes import covariate_genes
from ._domains import spatial_domains
from ._hmrf import hmrf_domains
from ._link_regions import link_regions
from ._pattern_genes import pattern_genes, pattern_genes_df
from ._region_auc import region_auc
from ._sgcn import sgcn, sgcn_graph
from ._spicemix import spicemix
from ._stanmf import stanmf

__all__ = [
    "cluster_latent",
    "covariate_genes",
    "hmrf_domains",
    "link_regions",
    "pattern_genes",
    "pattern_genes_df",
    "region_auc",
    "sgcn",
    "sgcn_graph",
    "spatial_domains",
    "spicemix",
    "stanmf",
]
