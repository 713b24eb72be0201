"""Readers and writers: Allen grids, structure ontology, volume <-> AnnData."""

from ._volume import to_volume

__all__ = ["to_volume"]
