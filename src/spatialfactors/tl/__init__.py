"""Tools: AnnData wrappers that validate input, call an engine and write the results."""

from ._cluster import cluster_latent
from ._link_regions import link_regions
from ._spicemix import spicemix
from ._stanmf import stanmf

__all__ = ["cluster_latent", "link_regions", "spicemix", "stanmf"]
