"""The small base every plotting function shares: figure set-up and scanpy-style finishing."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scanpy import logging as logg

from spatialfactors._validation import (
    _assert_bool,
    _assert_int_range,
    _assert_real_range,
    _extract_adata,
)

#: The parameters every plot shares, documented once and filled into each docstring by ``_doc_show``.
_DOC_PARAMS = {
    "doc_ax": """ax
    Axes to draw into; a new figure when None (then ``figsize`` and ``dpi`` apply).""",
    "doc_ncols": """ncols
    Panels per row of the grid; further panels wrap onto new rows (as in :func:`scanpy.pl.embedding`).""",
    "doc_show": """figsize
    Figure size (width, height) in inches; chosen from the content when None.
dpi
    Resolution of a new figure in dots per inch; matplotlib's default when None.
table_key
    With a SpatialData, the name of its table that holds the result.
show
    Show the figure. None (the default) shows it and returns nothing, as in scanpy;
    False returns the axes instead.
save
    Write the figure to a file, the way scanpy does. A file name or suffix without a
    directory is written into ``sc.settings.figdir`` after the plot's name: ``save='_starmap.png'``
    in ``sf.pl.metagenes`` writes ``figures/metagenes_starmap.png``; the extension (``.png``,
    ``.pdf``, ``.svg``, ...) sets the format, ``sc.settings.file_format_figs`` when there is none.
    ``True`` writes ``figures/<plot name>.<format>``. A path with a directory (``'out/fig.png'``)
    or a :class:`~pathlib.Path` is written as given, its folder created if needed.
return_fig
    Return the figure (instead of the axes or None).""",
}


def _doc_show(func):
    """Fill ``{doc_show}``, ``{doc_ax}`` and ``{doc_ncols}`` with the shared text (scanpy's ``doc_params``)."""
    doc = func.__doc__
    for name, text in _DOC_PARAMS.items():
        doc = doc.replace("{" + name + "}", textwrap.indent(text, "    ").lstrip())
    func.__doc__ = doc
    return func


#: Projection planes of an (AP, DV, ML) volume: the axis projected away.
PLANES = {"coronal": 0, "sagittal": 2, "horizontal": 1}


def _max_projection(volume: np.ndarray, plane: str) -> np.ndarray:
    """Maximum over the axis normal to ``plane``, NaN where the ray meets no voxel; dorsal up, anterior left."""
    image = np.max(np.where(np.isnan(volume), -np.inf, volume), axis=PLANES[plane])
    image = np.where(np.isinf(image), np.nan, image)
    # coronal: DV x ML as is; sagittal (AP x DV) and horizontal (AP x ML): AP along the columns
    return image if plane == "coronal" else image.T


def _check_adata(adata, function: str, table_key: str | None = None) -> AnnData:
    """Return the AnnData to draw: ``adata`` itself or the SpatialData table ``table_key``."""
    if isinstance(adata, AnnData) or getattr(adata, "tables", None) is not None:
        return _extract_adata(adata, table_key)
    raise TypeError(f"`sf.pl.{function}` expects an AnnData or a SpatialData, got {type(adata).__name__}.")


def _chosen_planes(planes) -> list[str]:
    """Projection planes from one name or a sequence of names, each checked."""
    planes = [planes] if isinstance(planes, str) else list(planes)
    unknown = [p for p in planes if p not in PLANES]
    if unknown or not planes:
        raise ValueError(f"Unknown planes {unknown}; choose one or more of {list(PLANES)}.")
    return planes


_FIGURE_FORMATS = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".tif", ".tiff", ".eps", ".ps", ".webp")


def _save_path(save: str | os.PathLike | bool, name: str) -> Path:
    """Where ``save`` writes the figure of plot ``name``: scanpy's rule for bare names, else the path as given."""
    import scanpy as sc

    if save is True:
        return Path(sc.settings.figdir) / f"{name}.{sc.settings.file_format_figs}"
    if isinstance(save, str) and "/" not in save and os.sep not in save:
        # scanpy: `save='_x.png'` -> figdir / '<name>_x.png'; no known extension -> the default format
        ext = next((e for e in _FIGURE_FORMATS if save.lower().endswith(e)), None)
        stem = save[: -len(ext)] if ext else save
        return Path(sc.settings.figdir) / f"{name}{stem}{ext or '.' + sc.settings.file_format_figs}"
    return Path(save)


class _Plotter:
    """The parameters and behaviour every ``sf.pl`` function shares (decoupler's ``Plotter``).

    One instance per call: it checks the shared parameters once, makes the figure (one axes,
    or a grid of panels wrapped at ``ncols``) and finishes it the way scanpy does (save, show,
    return what was asked for).
    """

    def __init__(
        self,
        name: str,
        *,
        figsize: tuple[float, float] | None = None,
        dpi: float | None = None,
        show: bool | None = None,
        save: str | os.PathLike | bool | None = None,
        return_fig: bool = False,
        ax: Axes | None = None,
        ncols: int | None = None,
    ) -> None:
        if figsize is not None:
            if isinstance(figsize, str) or not isinstance(figsize, Iterable) or len(list(figsize)) != 2:
                raise TypeError(f"`figsize` must be a (width, height) pair of inches, got {figsize!r}.")
            for value in figsize:
                _assert_real_range("figsize", value, 0.0, low_open=True)
            figsize = tuple(float(v) for v in figsize)
        if dpi is not None:
            _assert_real_range("dpi", dpi, 0.0, low_open=True)
        if show is not None:
            _assert_bool("show", show)
        _assert_bool("return_fig", return_fig)
        if save is not None and not isinstance(save, str | os.PathLike | bool):
            raise TypeError(f"`save` must be a file name, a path or True, got {save!r}.")
        if isinstance(save, str) and not save:
            raise ValueError("`save` is an empty string; pass a file name such as '_starmap.png', or True.")
        if save is False:
            save = None
        if ax is not None and not isinstance(ax, Axes):
            raise TypeError(f"`ax` must be a matplotlib Axes, got {type(ax).__name__}.")
        if ncols is not None:
            _assert_int_range("ncols", ncols, 1)
        self.name, self.figsize, self.dpi, self.show, self.save = name, figsize, dpi, show, save
        self.return_fig, self.ax, self.ncols = return_fig, ax, ncols

    def axes(self, size: tuple[float, float]) -> tuple[Figure, Axes]:
        """Return ``(figure, axes)``: the given ``ax``, or a new figure of ``figsize`` (else ``size``)."""
        if self.ax is not None:
            return self.ax.figure, self.ax
        return plt.subplots(figsize=self.figsize or size, dpi=self.dpi, layout="constrained")

    def grid(self, n_rows: int, n_cols: int, panel_size: tuple[float, float]) -> tuple[Figure, list[list[Axes]]]:
        """Return a figure with a ``n_rows`` x ``n_cols`` grid of axes (always 2D)."""
        figsize = self.figsize or (panel_size[0] * n_cols, panel_size[1] * n_rows)
        fig, axes = plt.subplots(n_rows, n_cols, figsize=figsize, dpi=self.dpi, squeeze=False, layout="constrained")
        return fig, [list(row) for row in axes]

    def panels(
        self, n_panels: int, panel_size: tuple[float, float], *, n_blocks: int = 1
    ) -> tuple[Figure, list[list[Axes]], list[tuple[int, int]]]:
        """Lay out ``n_blocks`` blocks of ``n_panels`` panels, ``ncols`` per row, each block on new rows.

        Returns the figure, the 2D grid and, for each block in turn, the (row, column) of every
        panel in it; the cells left over in a block's last row are hidden.
        """
        n_cols = max(1, min(self.ncols or n_panels, n_panels))
        rows_per_block = -(-n_panels // n_cols)
        fig, axes = self.grid(rows_per_block * n_blocks, n_cols, panel_size)
        places = [(b * rows_per_block + i // n_cols, i % n_cols) for b in range(n_blocks) for i in range(n_panels)]
        used = set(places)
        for r, row in enumerate(axes):
            for c, ax in enumerate(row):
                if (r, c) not in used:
                    ax.set_visible(False)
        return fig, axes, places

    def finish(self, fig: Figure, axes: Axes | list) -> Figure | Axes | list | None:
        """Save and show the figure the way scanpy does, and return what the caller asked for.

        ``show=None`` shows the figure and returns nothing (scanpy's default); ``show=False``
        returns the axes; ``return_fig=True`` returns the figure.
        """
        if self.save is not None:
            path = _save_path(self.save, self.name)
            path.parent.mkdir(parents=True, exist_ok=True)
            logg.info(f"saving figure to file {path}")
            fig.savefig(path, bbox_inches="tight")
        if self.return_fig:
            return fig
        if self.show is False:
            return axes
        plt.show()
        if self.save is not None:  # as scanpy: a saved and shown figure is done with
            plt.close(fig)
        return None


def _colorbar(fig: Figure, mappable, ax: Axes, label: str | None = None, **kwargs):
    """Add a colour bar beside ``ax``, sized to that panel (70% of its height) rather than to the figure."""
    # With a fixed aspect the bar's length is the smaller of `shrink` x the panel's height and
    # `aspect` x its width (`fraction` x the panel's width): a wide enough slot makes it the former.
    kwargs = {"fraction": 0.15, "pad": 0.03, "aspect": 20, "shrink": 0.7} | kwargs
    bar = fig.colorbar(mappable, ax=ax, label=label, **kwargs)
    bar.ax.tick_params(labelsize=7)
    bar.ax.locator_params(nbins=4)
    return bar


#: Default colours of spatial panels: from light grey (low, still visible on white) to dark red / copper.
_REDS = ("#d9d9d9", "#fcae91", "#fb6a4a", "#cb181d", "#67000d")
_COPPER = ("#d9d9d9", "#f1c79b", "#d38b4a", "#98521f", "#4a230b")


def _light_cmap(cmap, colours: tuple[str, ...]):
    """Return ``cmap``, or by default a colour map through ``colours`` whose low end is visible on white."""
    if cmap is not None:
        return cmap
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list("spatialfactors", list(colours))
