"""Plotting: one function per figure, reading only what the tools wrote."""

from ._metagenes import metagene_expression, metagenes

__all__ = ["metagene_expression", "metagenes"]
