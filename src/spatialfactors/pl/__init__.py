"""Plotting: one function per figure, reading only what the tools wrote."""

from ._metagenes import metagene_expression, metagenes
from ._spicemix import affinity, convergence
from ._stanmf import instability, morans_i, patterns, patterns_per_gene, reconstruction

__all__ = [
    "affinity",
    "convergence",
    "instability",
    "metagene_expression",
    "metagenes",
    "morans_i",
    "patterns",
    "patterns_per_gene",
    "reconstruction",
]
