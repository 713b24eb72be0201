"""Spatial matrix factorisation for scanpy workflows.

staNMF principal patterns with stability-driven choice of K, linking of patterns to atlas
regions, marker genes and co-expression networks per pattern, and the SpiceMix NMF-HMRF
model on squidpy spatial graphs.
"""

from importlib.metadata import PackageNotFoundError, version

from . import datasets, get, io, models, pl, pp, tl

try:
    __version__ = version("spatialfactors")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["datasets", "get", "io", "models", "pl", "pp", "tl", "__version__"]
