"""Preprocessing on AnnData."""

from ._normalize import normalize_spicemix

__all__ = ["normalize_spicemix"]
