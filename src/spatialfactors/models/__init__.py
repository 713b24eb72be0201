"""Engines on arrays (numpy, scipy.sparse, torch); no AnnData inside."""

from . import nmf, pca, reconstruction, stability, stanmf

__all__ = ["nmf", "pca", "reconstruction", "stability", "stanmf"]
