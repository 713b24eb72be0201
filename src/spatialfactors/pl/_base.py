"""The small base every plotting function shares: figure set-up and scanpy-style finishing."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from spatialfactors._validation import _extract_adata, _is_int

_DOC_SHOW = """table_key
    With a SpatialData, the name of its table that holds the result.
show, save, return_fig
    As in scanpy."""


def _doc_show(func):
    """Fill ``{doc_show}`` in the docstring with the parameters every plot shares (like scanpy's ``doc_params``)."""
    func.__doc__ = func.__doc__.replace("{doc_show}", textwrap.indent(_DOC_SHOW, "    ").lstrip())
    return func


#: Projection planes of an (AP, DV, ML) volume: the axis projected away.
PLANES = {"coronal": 0, "sagittal": 2, "horizontal": 1}


def _max_projection(volume: np.ndarray, plane: str) -> np.ndarray:
    """Maximum over the axis normal to ``plane``, NaN where the ray meets no voxel; dorsal up, anterior left."""
    image = np.max(np.where(np.isnan(volume), -np.inf, volume), axis=PLANES[plane])
    image = np.where(np.isinf(image), np.nan, image)
    # coronal: DV x ML as is; sagittal (AP x DV) and horizontal (AP x ML): AP along the columns
    return image if plane == "coronal" else image.T


def _chosen_patterns(patterns, n_patterns: int, what: str = "patterns") -> list[int]:
    """Pattern indices from None (all), one pattern or a sequence, each an index or a name ``'PP<k>'``."""
    from spatialfactors.tl._pattern_genes import _pattern_index

    if patterns is None:
        return list(range(n_patterns))
    if isinstance(patterns, str | int | np.integer):
        patterns = [patterns]
    return [_pattern_index(p, n_patterns, what) for p in patterns]


def _check_adata(adata, function: str, table_key: str | None = None) -> AnnData:
    """Return the AnnData to draw: ``adata`` itself or the SpatialData table ``table_key``."""
    if isinstance(adata, AnnData) or getattr(adata, "tables", None) is not None:
        return _extract_adata(adata, table_key)
    raise TypeError(f"`sf.pl.{function}` expects an AnnData or a SpatialData, got {type(adata).__name__}.")


def _chosen_components(components, n_factors: int, where: str) -> list[int]:
    """0-based factor indices from None (all), one index or a sequence of indices, each checked."""
    if components is None:
        return list(range(n_factors))
    if _is_int(components):
        components = [components]
    if isinstance(components, str) or not isinstance(components, Iterable):
        raise TypeError(f"`components` must be a sequence of 0-based column indices, got {components!r}.")
    components = list(components)
    wrong = [c for c in components if not _is_int(c)]
    if wrong:
        raise TypeError(f"`components` must be 0-based column indices (integers), got {wrong[:5]}.")
    bad = [int(c) for c in components if not 0 <= c < n_factors]
    if bad:
        raise ValueError(f"`components` {bad} out of range for {n_factors} factors in {where} (0 ... {n_factors - 1}).")
    if not components:
        raise ValueError("`components` is empty; pass None to draw all.")
    return [int(c) for c in components]


def _chosen_planes(planes) -> list[str]:
    """Projection planes from one name or a sequence of names, each checked."""
    planes = [planes] if isinstance(planes, str) else list(planes)
    unknown = [p for p in planes if p not in PLANES]
    if unknown or not planes:
        raise ValueError(f"Unknown planes {unknown}; choose one or more of {list(PLANES)}.")
    return planes


def _new_axes(ax: Axes | None, *, figsize: tuple[float, float] | None, dpi: float | None) -> tuple[Figure, Axes]:
    """Return ``(figure, axes)``, drawing into ``ax`` when one is given."""
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize, dpi=dpi)
    return fig, ax


def _new_grid(
    n_rows: int, n_cols: int, *, panel_size: tuple[float, float], figsize: tuple[float, float] | None, dpi: float | None
) -> tuple[Figure, list[list[Axes]]]:
    """Return a figure with a ``n_rows`` x ``n_cols`` grid of axes (always 2D)."""
    if figsize is None:
        figsize = (panel_size[0] * n_cols, panel_size[1] * n_rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=figsize, dpi=dpi, squeeze=False, layout="constrained")
    return fig, [list(row) for row in axes]


def _finish(
    fig: Figure,
    axes: Axes | list,
    *,
    show: bool | None,
    save: str | Path | None,
    return_fig: bool,
) -> Figure | Axes | list | None:
    """Save and show a figure the way scanpy does, and return what the caller asked for.

    ``show=None`` shows the figure and returns nothing (scanpy's default); ``show=False``
    returns the axes; ``return_fig=True`` returns the figure.
    """
    if save is not None:
        path = Path(save)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, bbox_inches="tight")
    if return_fig:
        return fig
    if show is False:
        return axes
    plt.show()
    return None
