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

from spatialfactors._validation import _assert_str, _get_obsm

from ._base import _check_adata, _doc_show, _finish, _new_grid


def _beta_labels(adata: AnnData, key: str, betas) -> list[tuple[str, pd.Categorical]]:
    """(title, labels) per panel column: the kept labels, or those of the requested ``betas`` of an HMRF sweep."""
    if betas is None:
        column = adata.obs[key]
        return [(key, pd.Categorical(column))]
    record = adata.uns.get(key)
    if not isinstance(record, dict) or "labels" not in record:
        raise KeyError(
            f"`betas` needs the sweep of an HMRF run in `adata.uns[{key!r}]['labels']`; run "
            f"`sf.tl.hmrf_domains(adata, key_added={key!r})` with several `beta` first."
        )
    table = record["labels"]
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
    figsize: tuple[float, float] | None = None,
    dpi: float | None = None,
    table_key: str | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
) -> Figure | list | None:
    """Draw domain labels (or any categorical labelling) of the cells in space, one row per field of view.

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
    figsize, dpi
        Figure size and resolution.
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
        record = adata.uns.get(key)
        recorded = record.get("params", {}).get("library_key", "") if isinstance(record, dict) else ""
        library_key = recorded if recorded and recorded in adata.obs else None
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
    fig, axes = _new_grid(len(libraries), len(panels), panel_size=(3.0, 2.6), figsize=figsize, dpi=dpi)
    for col, (title, labels) in enumerate(panels):
        codes = np.asarray(labels).astype(str)
        for row, lib in enumerate(libraries):
            ax = axes[row][col]
            sel = np.ones(adata.n_obs, bool) if lib is None else (adata.obs[library_key] == lib).to_numpy()
            s = size if size is not None else max(2.0, 4000.0 / max(sel.sum(), 1))
            known = sel & ~pd.isna(labels)
            ax.scatter(*xy[known].T, c=[lookup[c] for c in codes[known]], s=s, linewidths=0)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=9)
            if col == 0 and lib is not None:
                ax.set_ylabel(f"{library_key} {lib}")
    handles = [Line2D([], [], marker="o", ls="", color=lookup[c], label=c) for c in categories]
    # At most 12 entries per legend column, so that many domains stay within the figure.
    fig.legend(handles=handles, loc="outside right center", frameon=False, fontsize=8, ncols=-(-len(handles) // 12))
    return _finish(fig, axes, show=show, save=save, return_fig=return_fig)
