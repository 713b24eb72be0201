"""Real-data loaders and simulators."""

from ._aba import aba_grids, aba_ontology
from ._cortex import CELL_TYPES, LAYERS, METAGENES, SCENARIOS, cortex_proportion_means, simulate_cortex
from ._dlpfc import visium_dlpfc
from ._osmfish import osmfish_cortex
from ._seqfish import seqfish_plus_cortex
from ._starmap import starmap_3d_cortex, starmap_visual_cortex

__all__ = [
    "CELL_TYPES",
    "LAYERS",
    "METAGENES",
    "SCENARIOS",
    "aba_grids",
    "aba_ontology",
    "cortex_proportion_means",
    "osmfish_cortex",
    "seqfish_plus_cortex",
    "simulate_cortex",
    "starmap_3d_cortex",
    "starmap_visual_cortex",
    "visium_dlpfc",
]
