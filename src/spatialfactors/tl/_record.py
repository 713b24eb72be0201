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


def _renamed(old: str, new: str, old_value, new_value, *, default=None, where: str):
    """Return the value of a renamed keyword: the new one, or the old one with a FutureWarning naming the new.

    ``default`` is the new keyword's default: passing both the old keyword and a non-default new one is an error.
    """
    if old_value is None:
        return new_value
    if new_value is not default and new_value is not None:
        raise TypeError(f"`{where}` got both `{old}` and `{new}`; pass only `{new}`.")
    warnings.warn(
        f"`{old}` of `{where}` is renamed to `{new}`; pass `{new}=` (`{old}` will be removed).",
        FutureWarning,
        stacklevel=3,
    )
    return old_value


def _moved(name: str) -> None:
    """Warn that ``sf.tl.<name>`` moved to the results layer ``sf.get.<name>``."""
    warnings.warn(
        f"`sf.tl.{name}` moved to `sf.get.{name}`; call `sf.get.{name}` (`sf.tl.{name}` will be removed).",
        FutureWarning,
        stacklevel=3,
    )
