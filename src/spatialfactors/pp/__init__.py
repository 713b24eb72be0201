"""Preprocessing on AnnData."""

__all__: list[str] = []
