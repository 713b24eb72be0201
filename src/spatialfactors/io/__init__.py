"""Readers and writers: Allen grids, structure ontology, volume <-> AnnData."""

from ._aba import read_aba
from ._metaimage import read_mhd
from ._ontology import Ontology, read_ontology
from ._volume import to_volume

__all__ = ["Ontology", "read_aba", "read_mhd", "read_ontology", "to_volume"]
