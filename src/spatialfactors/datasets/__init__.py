"""Real-data loaders and simulators."""

from ._cortex import CELL_TYPES, LAYERS, METAGENES, SCENARIOS, cortex_proportion_means, simulate_cortex

__all__ = ["CELL_TYPES", "LAYERS", "METAGENES", "SCENARIOS", "cortex_proportion_means", "simulate_cortex"]
