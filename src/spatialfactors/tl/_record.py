"""The ``.uns`` record every tool writes: its results, its kind and its parameters, in one convention."""

from __future__ import annotations

import warnings

import numpy as np


def _recorded(value):
    """Return ``value`` as an .h5ad file stores it: numpy scalars as Python, sequences as lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, range | tuple):
        return list(value)
    return value


def _params(**values) -> dict:
    """Return the ``params`` of a record: ``None`` values left out (an .h5ad file cannot store ``None``).

    :func:`spatialfactors.get.params` puts them back, so one convention holds for every tool,
    before and after ``write_h5ad`` / ``read_h5ad``.
    """
    return {name: _recorded(value) for name, value in values.items() if value is not None}


def _record(tool: str, entries: dict, params: dict) -> dict:
    """Return the ``.uns`` record of a run of ``tool``: its ``entries``, its kind and its parameters.

    Every name in ``params`` belongs in ``KINDS[tool].params`` (:mod:`spatialfactors.get`), so that
    :func:`spatialfactors.get.params` restores it when it was ``None`` (tests/get checks this).
    """
    return {"tool": tool, **entries, "params": _params(**params)}


def _moved(name: str) -> None:
    """Warn that ``sf.tl.<name>`` moved to the results layer ``sf.get.<name>``."""
    warnings.warn(
        f"`sf.tl.{name}` moved to `sf.get.{name}`; call `sf.get.{name}` (`sf.tl.{name}` will be removed).",
        FutureWarning,
        stacklevel=3,
    )
