"""Spatial domains in space, one row of panels per field of view."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from anndata import AnnData
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from spatialfactors import get as sfget
from spatialfactors._validation import _assert_str, _get_obsm

from ._base import _check_adata, _doc_show, _Plotter


def _beta_labels(adata: AnnData, key: str, betas) -> list[tuple[str, pd.Categorical]]:
    """(title, labels) per panel column: the kept labels, or those of the requested ``betas`` of an HMRF sweep."""
    if betas is None:
        column = adata.obs[key]
        return [(key, pd.Categorical(column))]
    record = sfget.result(adata, key, "hmrf_domains")  # `betas` are the sweep of an HMRF run
    table = sfget.hmrf_labels_df(adata, key)
    names = list(table.columns) if isinstance(betas, str) and betas == "all" else None
    if names is None:
        betas = [betas] if isinstance(betas, int | float) else list(betas)
        names = [f"{float(b):g}" for b in betas]
        missing = [n for n in names if n not in table.columns]
        if missing:
            raise ValueError(f"`betas` {missing} were not fitted; the sweep has beta {list(table.columns)}.")
    k = record.get("n_domains", "")
    return [
        (f"{key}, K = {k}, beta = {n}", pd.Categorical(np.asarray(table[n]).astype(str), ordered=False)) for n in names
    ]


@_doc_show
def domains(
    adata: AnnData,
    key: str = "hmrf",
    *,
    betas: float | Sequence[float] | str | None = None,
    library_key: str | None = None,
    spatial_key: str = "spatial",
    palette: str | Sequence[str] | None = None,
    size: float | None = None,
    ncols: int = 4,
    figsize: tuple[float, float] | None = None,
    dpi: float | None = None,
    table_key: str | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
) -> Figure | list | None:
    """Draw domain labels (or any categorical labelling) of the cells in space, a block of rows per field of view.

    Reads ``.obs[key]``, as written by :func:`spatialfactors.tl.hmrf_domains` or
    :func:`spatialfactors.tl.spatial_domains`; with ``betas``, the labels that an HMRF sweep
    found at other values of the smoothing ``beta`` (one column of panels each, compare the
    SpiceMix paper's Fig. 2e).

    Parameters
    ----------
    adata
        Annotated data with labels in ``.obs[key]`` and coordinates in ``.obsm[spatial_key]``.
    key
        ``.obs`` column of the labels (the ``key_added`` of the tool).
    betas
        Values of ``beta`` of an HMRF sweep to draw (or ``"all"``), from
        ``.uns[key]['labels']``; ``None`` draws ``.obs[key]``.
    library_key
        Categorical ``.obs`` column of the fields of view, one row each; by default the one the
        HMRF run recorded, else all cells in one row.
    spatial_key
        Key of the coordinates in ``.obsm``.
    palette
        Colours of the labels: a seaborn / matplotlib palette name or a list of colours.
    size
        Marker size; chosen from the number of cells by default.
    {doc_ncols}
    {doc_show}

    Returns
    -------
    The figure, the grid of axes, or None (see ``show`` and ``return_fig``).

    Examples
    --------
    >>> import squidpy as sq
    >>> import spatialfactors as sf
    >>> adata = sf.datasets.simulate_cortex(n_fovs=2, n_cells=200)
    >>> sq.gr.spatial_neighbors_delaunay(adata, library_key="fov")
    >>> sf.tl.hmrf_domains(adata, "X_true", 4, beta=[0.0, 1.0], library_key="fov")
    >>> fig = sf.pl.domains(adata, betas="all", return_fig=True)
    """
    adata = _check_adata(adata, "domains", table_key)
    plot = _Plotter("domains", figsize=figsize, dpi=dpi, show=show, save=save, return_fig=return_fig, ncols=ncols)
    _assert_str("key", key)
    if key not in adata.obs:
        raise KeyError(
            f"`adata.obs[{key!r}]` not found; compute domains first, e.g. `sf.tl.hmrf_domains(adata, "
            f"key_added={key!r})`. Available columns: {list(adata.obs.columns)}."
        )
    panels = _beta_labels(adata, key, betas)
    xy = _get_obsm(adata, spatial_key, hint="coordinates are needed to plot in space", finite=False)
    if xy.shape[1] < 2:
        raise ValueError(f"`adata.obsm[{spatial_key!r}]` must have at least 2 columns (x, y), got {xy.shape[1]}.")
    xy = xy[:, :2]
    if library_key is None:
        try:  # the fields of view the domains were computed on, when a tool recorded them
            recorded = sfget.params(adata, key).get("library_key")
        except KeyError:
            recorded = None
        library_key = recorded if isinstance(recorded, str) and recorded in adata.obs else None
    if library_key is None:
        libraries = [None]
    else:
        _assert_str("library_key", library_key)
        if library_key not in adata.obs:
            raise KeyError(f"`adata.obs[{library_key!r}]` not found; available: {list(adata.obs.columns)}.")
        libraries = list(pd.Categorical(adata.obs[library_key]).categories)

    categories = list(dict.fromkeys(str(c) for _, labels in panels for c in labels.categories))
    if all(c.lstrip("-").isdigit() for c in categories):  # numbered domains: 0, 1, 2, ... 10, not 0, 1, 10
        categories.sort(key=int)
    colours = sns.color_palette(palette if palette is not None else "tab20", len(categories))
    lookup = dict(zip(categories, colours, strict=True))
    fig, axes, places = plot.panels(len(panels), (3.0, 2.6), n_blocks=len(libraries))
    for i, (title, labels) in enumerate(panels):
        codes = np.asarray(labels).astype(str)
        for b, lib in enumerate(libraries):
            row, col = places[b * len(panels) + i]
            ax = axes[row][col]
            sel = np.ones(adata.n_obs, bool) if lib is None else (adata.obs[library_key] == lib).to_numpy()
            s = size if size is not None else max(2.0, 4000.0 / max(sel.sum(), 1))
            known = sel & ~pd.isna(labels)
            ax.scatter(*xy[known].T, c=[lookup[c] for c in codes[known]], s=s, linewidths=0)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if b == 0:  # the first field of view's panels carry the titles
                ax.set_title(title, fontsize=9)
            if col == 0 and lib is not None:
                ax.set_ylabel(f"{library_key} {lib}")
    handles = [Line2D([], [], marker="o", ls="", color=lookup[c], label=c) for c in categories]
    # At most 12 entries per legend column, so that many domains stay within the figure.
    fig.legend(handles=handles, loc="outside right center", frameon=False, fontsize=8, ncols=-(-len(handles) // 12))
    return plot.finish(fig, axes)
