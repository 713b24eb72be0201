"""Progress of iterative fits: a bar that ends saying how the fit stopped, and the same in scanpy's log."""

from __future__ import annotations

import math
from contextlib import nullcontext

from scanpy import logging as logg
from scanpy import settings
from tqdm.auto import tqdm


def iteration_bar(total: int, desc: str, *, show: bool = True):
    """Return a tqdm bar over ``total`` iterations (hidden at scanpy verbosity 0), or ``nullcontext()``."""
    if not show:
        return nullcontext()
    return tqdm(total=total, desc=desc, disable=settings.verbosity == 0)


def relative_change(prev: float, cur: float) -> float:
    """``|prev - cur| / |cur|``, the change an iteration made to an objective, relative to it."""
    return abs(prev - cur) / max(abs(cur), 1e-300)


def report_stop(
    name: str,
    *,
    n_iter: int,
    max_iter: int,
    tol: float | None,
    change: float,
    converged: bool,
    bar=None,
) -> str:
    """Say how an iterative fit stopped, on its progress bar and in scanpy's log; return the message.

    A bar that stops before ``max_iter`` would otherwise end at e.g. 38/200 without a word. On
    convergence the bar is completed (38/38) with the note "converged", so the outcome is visible
    at scanpy's default verbosity (warnings), and the message is logged at info level. Stopping at
    ``max_iter`` with the tolerance not reached is a logged warning (visible by default).

    Parameters
    ----------
    name
        What was fitted, e.g. ``"SpiceMix"``.
    n_iter
        Iterations run.
    max_iter
        The iteration limit.
    tol
        The relative tolerance, or ``None`` (no convergence test: ``max_iter`` iterations).
    change
        Relative change of the objective over the last iteration (:func:`relative_change`).
    converged
        Whether the fit stopped because ``change`` reached ``tol``.
    bar
        The fit's tqdm bar, if any.

    Returns
    -------
    The message.
    """
    shown = "nan" if math.isnan(change) else f"{change:.2g}"
    if converged:
        msg = f"{name} converged after {n_iter} iterations (relative change {shown} <= tol={tol:g})"
        note = "converged"
    elif tol is None or n_iter == 0:
        msg = f"{name} ran {n_iter} iterations (max_iter={max_iter}, no convergence test)"
        note = "done"
    else:
        msg = (
            f"{name} stopped at max_iter={max_iter} without converging (relative change {shown} > tol={tol:g}); "
            "pass a larger `max_iter` (or a larger `tol`)"
        )
        note = "not converged"
    if bar is not None:
        if converged:
            # A full bar: stopping early is the goal, not an interruption (a notebook bar closed
            # short of its total turns red). tqdm.notebook's widget keeps a maximum of its own.
            bar.total = n_iter
            widget = getattr(bar, "container", None)
            if widget is not None and len(getattr(widget, "children", ())) == 3:
                widget.children[1].max = n_iter
        bar.set_postfix_str(note, refresh=True)
        bar.close()  # before logging, so that the message gets a line of its own
    if converged or tol is None or n_iter == 0:
        logg.info(msg)
    else:
        logg.warning(msg)
    return msg
