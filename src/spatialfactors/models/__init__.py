"""Engines on arrays (numpy, scipy.sparse, torch); no AnnData inside."""

__all__: list[str] = []
