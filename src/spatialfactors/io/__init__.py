"""Readers and writers: Allen grids, structure ontology, volume <-> AnnData."""

__all__: list[str] = []
