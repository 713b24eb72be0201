"""Preprocessing on AnnData."""

from ._impute import impute_voxels
from ._normalize import normalize_spicemix

__all__ = ["impute_voxels", "normalize_spicemix"]
