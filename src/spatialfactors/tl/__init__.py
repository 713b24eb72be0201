"""Tools: AnnData wrappers that validate input, call an engine and write the results."""

from ._stanmf import stanmf

__all__ = ["stanmf"]
