"""Settings shared by the tests and the doctests (collected from the repository root)."""

import logging

import matplotlib
import spatialdata  # noqa: F401  (configures the logger below on import)

matplotlib.use("Agg")
# squidpy logs graph building through spatialdata's rich handler on stdout; keep doctest output clean.
logging.getLogger("spatialdata._logging").setLevel(logging.WARNING)
