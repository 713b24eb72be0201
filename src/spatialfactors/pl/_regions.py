"""Figures of the pattern-region linking (Cahill et al. 2024, Figs. 2 and 3)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from spatialfactors import get as sfget
from spatialfactors._validation import _assert_int_range, _assert_real_range, _renamed
from spatialfactors.get import _resolve_ontology, _select_factors
from spatialfactors.io import to_volume
from spatialfactors.pl._base import (
    PLANES,
    _check_adata,
    _doc_show,
    _max_projection,
    _Plotter,
)


def _region_columns(table: pd.DataFrame, regions: Sequence | None, info: pd.DataFrame, n_top: int) -> list[str]:
    """Columns of the correlation table to draw: given ids/acronyms, or every pattern's ``n_top`` best."""
    if regions is not None:
        by_acronym = dict(zip(info["acronym"].astype(str), info.index, strict=False))
        cols, unknown = [], []
        for r in regions:
            col = str(r) if str(r) in table.columns else by_acronym.get(str(r))
            (cols if col is not None else unknown).append(col if col is not None else r)
        if unknown:
            raise KeyError(f"Regions {unknown[:8]} are not among the linked regions (ids or acronyms).")
        return list(dict.fromkeys(cols))
    values = table.to_numpy()
    order = np.argsort(-np.where(np.isnan(values), -np.inf, values), axis=1, kind="stable")[:, :n_top]
    return list(dict.fromkeys(table.columns[order.ravel()]))


@_doc_show
def region_correlation(
    adata: AnnData,
    key: str = "link_regions",
    *,
    regions: Sequence[int | str] | None = None,
    n_top: int = 3,
    factors: int | str | Sequence[int | str] | None = None,
    ontology=None,
    groups: int | str | None = "coarse",
    cmap: str = "viridis",
    max_size: float = 200.0,
    ax: Axes | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: float | None = None,
    table_key: str | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
    patterns: Sequence[int | str] | None = None,
) -> Figure | Axes | None:
    """Bubble plot of patterns x regions: each pattern's score with every single region (Fig. 2).

    One bubble per pattern and region; its colour is the score (Pearson correlation, or Dice) and
    its area is proportional to the score clipped at zero (as in the paper, negative correlations
    draw no bubble). Regions follow the ontology's graph order when it is known (an ``ontology``
    here or in :func:`spatialfactors.tl.link_regions`), so that subregions of one structure sit
    together; with an ``ontology`` they are also grouped under ``groups`` with separators and labels.
    Without one, regions are ordered by the pattern they match best, which puts the strongest
    links on a diagonal.

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.link_regions`.
    key
        ``key_added`` of the linking.
    regions
        Region ids or acronyms to show; by default the union of every pattern's ``n_top`` best regions.
    n_top
        Regions per pattern shown by default.
    factors
        Patterns to show: 0-based indices or names (``'PP1'`` ...); all by default.
    ontology
        An :class:`~spatialfactors.io.Ontology` to order and group the regions.
    groups
        With an ontology: ``'coarse'`` (the paper's 12 coarse regions,
        :meth:`~spatialfactors.io.Ontology.paper_regions`), a depth, or ``None`` (no groups).
    cmap
        Colour map of the scores.
    max_size
        Bubble area (points^2) of a score of 1.
    {doc_ax}
    {doc_show}
    patterns
        Former name of ``factors`` (deprecated).

    Returns
    -------
    The figure, the axes, or None (see ``show`` and ``return_fig``).

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> import spatialfactors as sf
    >>> labels = np.repeat([[[1, 1, 2, 2, 3, 3]]], 2, axis=0)
    >>> mask = labels > 0
    >>> adata = ad.AnnData(obs={"region_id": labels[mask]}, uns={"aba": {"grid_shape": labels.shape, "mask": mask}})
    >>> adata.obsm["X_stanmf"] = np.stack([labels[mask] == 2, labels[mask] == 3], axis=1).astype(float)
    >>> sf.tl.link_regions(adata)
    >>> ax = sf.pl.region_correlation(adata, show=False)
    >>> len(ax.collections[0].get_offsets())  # 2 patterns x 3 regions
    6
    """
    adata = _check_adata(adata, "region_correlation", table_key)
    plot = _Plotter("region_correlation", figsize=figsize, dpi=dpi, show=show, save=save, return_fig=return_fig, ax=ax)
    result = sfget.result(adata, key, "link_regions")
    _assert_int_range("n_top", n_top, 1)
    _assert_real_range("max_size", max_size, 0.0, low_open=True)
    if ontology is not None:
        ontology = _resolve_ontology(ontology)
    if isinstance(groups, str):
        if groups != "coarse":
            raise ValueError(f"`groups` must be 'coarse', a depth (integer) or None, got {groups!r}.")
    elif groups is not None:
        _assert_int_range("groups", groups, 0)
    table = result["correlation"]
    info = result["regions"]
    factors = _renamed("patterns", "factors", patterns, factors, where="sf.pl.region_correlation")
    rows = _select_factors(factors, [str(n) for n in table.index], "factors")
    table = table.iloc[rows]
    cols = _region_columns(table, regions, info, n_top)
    graph_order = None
    if ontology is not None:
        graph_order = ontology.df["graph_order"].reindex(info.loc[cols, "region_id"].to_numpy()).to_numpy()
    elif "graph_order" in info:
        graph_order = info.loc[cols, "graph_order"].to_numpy()
    if graph_order is not None:
        cols = [cols[i] for i in np.argsort(graph_order, kind="stable")]
    else:
        values = table[cols].to_numpy()
        filled = np.where(np.isnan(values), -np.inf, values)
        cols = [cols[i] for i in np.lexsort((-filled.max(axis=0), filled.argmax(axis=0)))]
    values = table[cols].to_numpy()
    ids = info.loc[cols, "region_id"].to_numpy()

    n_rows, n_cols = values.shape
    fig, ax = plot.axes((max(3.0, 0.3 * n_cols + 2.0), max(2.0, 0.3 * n_rows + 1.5)))
    x, y = np.meshgrid(np.arange(n_cols), np.arange(n_rows))
    sizes = max_size * np.clip(np.nan_to_num(values), 0.0, None)
    bubbles = ax.scatter(x.ravel(), y.ravel(), s=sizes.ravel(), c=values.ravel(), cmap=cmap, edgecolors="none")
    fig.colorbar(bubbles, ax=ax, label=result["params"]["metric"], shrink=0.7)
    names = ontology.acronym_of(ids) if ontology is not None else info.loc[cols, "acronym"].to_numpy()
    ax.set_xticks(np.arange(n_cols), [str(a) for a in names], rotation=90, fontsize=7)
    ax.set_yticks(np.arange(n_rows), list(table.index))
    ax.set_xlim(-0.5, n_cols - 0.5)
    ax.set_ylim(n_rows - 0.5, -0.5)  # first pattern on top
    ax.set_xticks(np.arange(n_cols + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(n_rows + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="0.9", lw=0.5)
    ax.tick_params(which="minor", length=0)
    colours = None
    if ontology is not None and "color_hex_triplet" in ontology.df:
        colours = ontology.df["color_hex_triplet"].reindex(ids).to_numpy()
    elif "color_hex_triplet" in info:
        colours = info.loc[cols, "color_hex_triplet"].to_numpy()
    if colours is not None:  # Allen colours on the region labels
        for label, colour in zip(ax.get_xticklabels(), colours, strict=True):
            if isinstance(colour, str) and len(colour) == 6:
                label.set_color(f"#{colour}")
    if ontology is not None and groups is not None and n_cols:
        if groups == "coarse":
            group = ontology.paper_regions(ids, acronyms=True)
        else:
            group = ontology.acronym_of(ontology.at_depth(ids, int(groups)))
        group = np.where(group == "", "other", group).astype(str)
        starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
        for s, e in zip(starts, np.r_[starts[1:], n_cols], strict=True):
            if s > 0:
                ax.axvline(s - 0.5, color="0.4", lw=0.8)
            ax.text((s + e - 1) / 2, -0.7, group[s], ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_xlabel("region")
    ax.set_ylabel("pattern")
    return plot.finish(fig, ax)


def _set_ids(row: pd.Series) -> list[int]:
    return [int(row[c]) for c in row.index if c.startswith("region_") and int(row[c]) != 0]


@_doc_show
def linked_regions(
    adata: AnnData,
    key: str = "link_regions",
    *,
    factors: int | str | Sequence[int | str] | None = None,
    n_regions: int | None = None,
    plane: str = "sagittal",
    cmap: str = "magma",
    figsize: tuple[float, float] | None = None,
    dpi: float | None = None,
    table_key: str | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
    patterns: Sequence[int | str] | None = None,
) -> Figure | list | None:
    """Each pattern beside the region set it is linked to, as maximum projections (Fig. 3A).

    One row per pattern: the pattern's maximum projection and the maximum projection of the
    binary mask of its linked region set (the selected set, or the best set of ``n_regions``
    regions), titled with the regions' acronyms and the score.

    Parameters
    ----------
    adata
        Voxel data after :func:`spatialfactors.tl.link_regions`, with the patterns and the grid.
    key
        ``key_added`` of the linking.
    factors
        Patterns to show: 0-based indices or names (``'PP1'`` ...); all by default.
    n_regions
        Show the best set of this many regions instead of each pattern's selected link.
    plane
        ``'coronal'``, ``'sagittal'`` or ``'horizontal'``.
    cmap
        Colour map of the patterns.
    {doc_show}
    patterns
        Former name of ``factors`` (deprecated).

    Returns
    -------
    The figure, the grid of axes (one row per pattern, two columns), or None.

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> import spatialfactors as sf
    >>> labels = np.repeat([[[1, 1, 2, 2, 3, 3]]], 2, axis=0)
    >>> mask = labels > 0
    >>> adata = ad.AnnData(obs={"region_id": labels[mask]}, uns={"aba": {"grid_shape": labels.shape, "mask": mask}})
    >>> adata.obsm["X_stanmf"] = np.stack([labels[mask] == 2, labels[mask] == 3], axis=1).astype(float)
    >>> sf.tl.link_regions(adata)
    >>> axes = sf.pl.linked_regions(adata, show=False)
    >>> len(axes), len(axes[0])
    (2, 2)
    """
    adata = _check_adata(adata, "linked_regions", table_key)
    plot = _Plotter("linked_regions", figsize=figsize, dpi=dpi, show=show, save=save, return_fig=return_fig)
    result = sfget.result(adata, key, "link_regions")
    if plane not in PLANES:
        raise ValueError(f"`plane` must be one of {list(PLANES)}, got {plane!r}.")
    params = result["params"]
    basis = f"X_{params['key']}"
    if basis not in adata.obsm:
        raise KeyError(f"`adata.obsm[{basis!r}]` (the linked patterns) not found.")
    sfget.grid(adata)
    names = list(result["correlation"].index)
    factors = _renamed("patterns", "factors", patterns, factors, where="sf.pl.linked_regions")
    chosen = _select_factors(factors, [str(n) for n in names], "factors")
    links = sfget.link_regions_df(adata, key, n_regions=n_regions)
    region_map = result["region_map"]
    lookup = pd.Series(region_map["linked_id"].to_numpy(), index=region_map["region_id"].to_numpy())
    linked = lookup.reindex(np.asarray(adata.obs[params["region_key"]], dtype=np.int64)).fillna(0).to_numpy()

    fig, axes = plot.grid(len(chosen), 2, (2.6, 1.9))
    for row, k in enumerate(chosen):
        link = links.loc[names[k]]
        pattern_image = _max_projection(to_volume(adata, k, basis=basis), plane)
        mask_image = _max_projection(to_volume(adata, np.isin(linked, _set_ids(link)).astype(float)), plane)
        axes[row][0].imshow(pattern_image, cmap=cmap, interpolation="nearest")
        # Brain in light grey, the linked regions in black, outside the brain blank.
        axes[row][1].imshow(mask_image, cmap="Greys", vmin=-0.25, vmax=1, interpolation="nearest")
        axes[row][0].set_ylabel(names[k])
        axes[row][1].set_title(f"{link['acronyms']} ({link['score']:.2f})", fontsize=8)
        for a in axes[row]:
            a.set_xticks([])
            a.set_yticks([])
        if row == 0:
            axes[row][0].set_title(f"pattern ({plane})", fontsize=8)
    return plot.finish(fig, axes)


@_doc_show
def link_heatmap(
    adata: AnnData,
    key: str = "link_regions",
    *,
    cmap: str = "viridis",
    annot: bool = False,
    ax: Axes | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: float | None = None,
    table_key: str | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """Heatmap of every pattern's score with every pattern's linked region set (Fig. 3B).

    Rows are patterns, columns the region sets they are linked to (labelled with the acronyms);
    a strong diagonal means each pattern maps to its own set and little to the others'.

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.link_regions`.
    key
        ``key_added`` of the linking.
    cmap
        Colour map.
    annot
        Write the scores into the cells.
    {doc_ax}
    {doc_show}

    Returns
    -------
    The figure, the axes, or None (see ``show`` and ``return_fig``).

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> import spatialfactors as sf
    >>> labels = np.repeat([[[1, 1, 2, 2, 3, 3]]], 2, axis=0)
    >>> mask = labels > 0
    >>> adata = ad.AnnData(obs={"region_id": labels[mask]}, uns={"aba": {"grid_shape": labels.shape, "mask": mask}})
    >>> adata.obsm["X_stanmf"] = np.stack([labels[mask] == 2, labels[mask] == 3], axis=1).astype(float)
    >>> sf.tl.link_regions(adata)
    >>> ax = sf.pl.link_heatmap(adata, show=False)
    >>> ax.collections[0].get_array().reshape(2, 2).round(2).tolist()
    [[1.0, -0.5], [-0.5, 1.0]]
    """
    adata = _check_adata(adata, "link_heatmap", table_key)
    plot = _Plotter("link_heatmap", figsize=figsize, dpi=dpi, show=show, save=save, return_fig=return_fig, ax=ax)
    result = sfget.result(adata, key, "link_regions")
    table = result["linked"]
    links = sfget.link_regions_df(adata, key)
    labels = [f"{name}: {links.loc[name, 'acronyms']}" for name in table.columns]
    n = table.shape[0]
    fig, ax = plot.axes((0.45 * n + 3.0, 0.35 * n + 1.5))
    sns.heatmap(
        table.to_numpy(),
        ax=ax,
        cmap=cmap,
        annot=annot,
        fmt=".2f",
        xticklabels=labels,
        yticklabels=list(table.index),
        cbar_kws={"label": result["params"]["metric"], "shrink": 0.7},
    )
    ax.set_xlabel("linked region set")
    ax.set_ylabel("pattern")
    return plot.finish(fig, ax)
