"""Figures of the staNMF analysis (Cahill et al. 2024, Fig. 1)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from spatialfactors import get as sfget
from spatialfactors._validation import _renamed
from spatialfactors.get import _result
from spatialfactors.io import to_volume
from spatialfactors.pl._base import (
    _check_adata,
    _chosen_planes,
    _colorbar,
    _doc_show,
    _max_projection,
    _Plotter,
)
from spatialfactors.pl._metagenes import metagenes


@_doc_show
def instability(
    adata: AnnData,
    key: str = "stanmf",
    *,
    ax: Axes | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: float | None = None,
    table_key: str | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """Instability against K with error bars, staNMF and PCA, with K* marked (Fig. 1B).

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.stanmf` or :func:`spatialfactors.tl.spicemix`
        with a sweep over K.
    key
        ``key_added`` of the run.
    {doc_ax}
    {doc_show}

    Returns
    -------
    The figure, the axes, or None (see ``show`` and ``return_fig``).

    Warns
    -----
    UserWarning
        When K* is the smallest or the largest K of the sweep: the instability may fall further
        outside the range, so K* is then not known to be a minimum (the plot marks it too).

    Examples
    --------
    >>> import spatialfactors as sf
    >>> adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=200)
    >>> sf.tl.stanmf(adata, range(5, 8), n_replicates=4)
    >>> ax = sf.pl.instability(adata, show=False)
    """
    adata = _check_adata(adata, "instability", table_key)
    plot = _Plotter("instability", figsize=figsize, dpi=dpi, show=show, save=save, return_fig=return_fig, ax=ax)
    table = sfget.instability_df(adata, key)
    fig, ax = plot.axes((6.0, 4.2))
    labels = {"nmf": "staNMF", "pca": "PCA", "spicemix": "SpiceMix"}
    for method, sub in table.groupby("method", sort=False):
        sub = sub.sort_values("K")
        ax.errorbar(sub["K"], sub["mean"], yerr=sub["std"], marker="o", ms=4, capsize=2, label=labels.get(method))
    k = int(_result(adata, key, "stanmf", "k"))
    main = table["method"].iloc[0]  # the factorisation itself (PCA is the comparator)
    swept = np.sort(table.loc[table["method"] == main, "K"].astype(int).unique())
    best = table[(table["method"] == main) & (table["K"] == k)]["mean"].iloc[0]
    edge = len(swept) > 1 and k in (swept[0], swept[-1])
    colour = "tab:red" if edge else "0.35"
    ax.axvline(k, color=colour, ls="--", lw=0.9)
    ax.plot([k], [best], marker="*", ms=14, color=colour, mec="white", zorder=5, ls="")
    text = f"K* = {k}"
    if edge:
        side = "smallest" if k == swept[0] else "largest"
        text += f"\n{side} K swept:\nminimum not confirmed"
        warnings.warn(
            f"K* = {k} is the {side} K of the sweep ({swept[0]} ... {swept[-1]}), so the instability may be lower "
            f"beyond it; extend the range of K (e.g. to {max(2, swept[0] - 2) if side == 'smallest' else swept[0]}"
            f" ... {swept[-1] + 3 if side == 'largest' else swept[-1]}) to know whether K* is a minimum.",
            UserWarning,
            stacklevel=2,
        )
    right = k == swept[-1] and len(swept) > 1
    ax.annotate(
        text,
        (k, best),
        xytext=(-8 if right else 8, 12),
        textcoords="offset points",
        ha="right" if right else "left",
        color=colour,
        fontsize=9,
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("K (number of metagenes)" if main == "spicemix" else "K (number of patterns)")
    ax.set_ylabel(f"instability ({table['metric'].iloc[0]})")
    ax.legend(frameon=False, loc="best")
    return plot.finish(fig, ax)


@_doc_show
def patterns(
    adata: AnnData,
    key: str = "stanmf",
    *,
    factors: int | str | Sequence[int | str] | None = None,
    planes: Sequence[str] = ("coronal", "sagittal", "horizontal"),
    library_key: str | None = None,
    cmap: str = "magma",
    ncols: int = 4,
    figsize: tuple[float, float] | None = None,
    dpi: float | None = None,
    table_key: str | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
    components: Sequence[int] | None = None,
) -> Figure | list | None:
    """Principal patterns in space: 3D maximum projections for voxels, a scatter for cells (Fig. 1C).

    For voxel data (``.uns['aba']`` holds the grid), every pattern is placed into the volume
    and projected by its maximum onto the coronal, sagittal and horizontal planes, one row per
    pattern, titled with its name (``PP1`` ...). For cells, this is :func:`spatialfactors.pl.metagenes`
    on ``.obsm['X_{key}']``: one panel per pattern, ``ncols`` per row.

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.stanmf`.
    key
        ``key_added`` of the staNMF run (patterns in ``.obsm['X_{key}']``).
    factors
        Patterns to draw: 0-based indices or names (``'PP1'`` ...); all by default.
    planes
        Projection planes for voxel data.
    library_key
        Field of view column for cells.
    cmap
        Colour map.
    {doc_ncols}
        Cells only; voxel data show one row per pattern.
    {doc_show}
    components
        Former name of ``factors`` (deprecated).

    Returns
    -------
    The figure, the grid of axes, or None (see ``show`` and ``return_fig``).

    Examples
    --------
    >>> import spatialfactors as sf
    >>> adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=200)
    >>> sf.tl.stanmf(adata, 4, pca=False)
    >>> fig = sf.pl.patterns(adata, factors=["PP1", "PP2"], return_fig=True)
    """
    from spatialfactors.get import _select_factors, factor_names

    adata = _check_adata(adata, "patterns", table_key)
    plot = _Plotter("patterns", figsize=figsize, dpi=dpi, show=show, save=save, return_fig=return_fig, ncols=ncols)
    factors = _renamed("components", "factors", components, factors, where="sf.pl.patterns")
    _result(adata, key, "stanmf")
    basis = f"X_{key}"
    if "aba" not in adata.uns:
        return metagenes(
            adata,
            basis,
            factors=factors,
            library_key=library_key,
            cmap=cmap,
            ncols=ncols,
            figsize=figsize,
            dpi=dpi,
            show=show,
            save=save,
            return_fig=return_fig,
        )
    planes = _chosen_planes(planes)
    names = factor_names(adata, key)
    chosen = _select_factors(factors, names, "factors")
    sfget.grid(adata)
    fig, axes = plot.grid(len(chosen), len(planes), panel_size=(2.6, 1.9))
    for row, c in enumerate(chosen):
        vol = to_volume(adata, c, basis=basis)
        scale = {"vmin": np.nanmin(vol), "vmax": np.nanmax(vol)}  # one scale for the row, read on its colour bar
        for col, plane in enumerate(planes):
            drawn = axes[row][col].imshow(_max_projection(vol, plane), cmap=cmap, interpolation="nearest", **scale)
            axes[row][col].set_xticks([])
            axes[row][col].set_yticks([])
            if row == 0:
                axes[row][col].set_title(plane, fontsize=9)
        _colorbar(fig, drawn, axes[row][-1])
        axes[row][0].set_ylabel(names[c])
    return plot.finish(fig, axes)


@_doc_show
def reconstruction(
    adata: AnnData,
    key: str = "stanmf",
    *,
    ax: Axes | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: float | None = None,
    table_key: str | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """Per-gene reconstruction accuracy, staNMF against PCA (Fig. 1F).

    Each point is a gene; its coordinates are the Pearson correlations between the gene's
    measured profile and its reconstruction by PCA (x) and staNMF (y). Without a PCA result,
    a histogram of the staNMF accuracies.

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.stanmf`.
    key
        ``key_added`` of the staNMF run.
    {doc_ax}
    {doc_show}

    Returns
    -------
    The figure, the axes, or None (see ``show`` and ``return_fig``).

    Examples
    --------
    >>> import spatialfactors as sf
    >>> adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=200)
    >>> sf.tl.stanmf(adata, n_factors=5)
    >>> ax = sf.pl.reconstruction(adata, show=False)
    """
    adata = _check_adata(adata, "reconstruction", table_key)
    plot = _Plotter("reconstruction", figsize=figsize, dpi=dpi, show=show, save=save, return_fig=return_fig, ax=ax)
    genes = _result(adata, key, "stanmf", "genes")
    fig, ax = plot.axes((3.6, 3.4))
    nmf = genes["reconstruction_pcc"].to_numpy()
    if "pca_reconstruction_pcc" in genes:
        pca = genes["pca_reconstruction_pcc"].to_numpy()
        ax.scatter(pca, nmf, s=6, alpha=0.6, linewidths=0)
        low = min(np.nanmin(pca), np.nanmin(nmf), 0)
        ax.plot([low, 1], [low, 1], color="0.5", lw=0.8, ls="--")
        ax.set_xlabel(f"PCA reconstruction PCC (mean {np.nanmean(pca):.2f})")
        ax.set_ylabel(f"staNMF reconstruction PCC (mean {np.nanmean(nmf):.2f})")
    else:
        ax.hist(nmf, bins=30)
        ax.set_xlabel("staNMF reconstruction PCC")
        ax.set_ylabel("genes")
    return plot.finish(fig, ax)


@_doc_show
def patterns_per_gene(
    adata: AnnData,
    key: str = "stanmf",
    *,
    ax: Axes | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: float | None = None,
    table_key: str | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """Plot how many patterns have a non-zero coefficient in each gene's reconstruction (Fig. 1E).

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.stanmf`.
    key
        ``key_added`` of the staNMF run.
    {doc_ax}
    {doc_show}

    Returns
    -------
    The figure, the axes, or None (see ``show`` and ``return_fig``).

    Examples
    --------
    >>> import spatialfactors as sf
    >>> adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=200)
    >>> sf.tl.stanmf(adata, n_factors=5, pca=False)
    >>> ax = sf.pl.patterns_per_gene(adata, show=False)
    """
    adata = _check_adata(adata, "patterns_per_gene", table_key)
    plot = _Plotter("patterns_per_gene", figsize=figsize, dpi=dpi, show=show, save=save, return_fig=return_fig, ax=ax)
    genes = _result(adata, key, "stanmf", "genes")
    k = _result(adata, key, "stanmf", "k")
    counts = np.bincount(genes["n_patterns"].to_numpy().astype(int), minlength=k + 1)[1:]
    fig, ax = plot.axes((3.8, 3.0))
    ax.bar(np.arange(1, k + 1), counts)
    ax.set_xticks(np.arange(1, k + 1))
    ax.set_xlabel("patterns used by a gene")
    ax.set_ylabel("genes")
    return plot.finish(fig, ax)


@_doc_show
def morans_i(
    adata: AnnData,
    key: str = "stanmf",
    *,
    ax: Axes | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: float | None = None,
    table_key: str | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """Moran's I of the patterns, staNMF against PCA (Fig. 1D).

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.stanmf` with a spatial graph.
    key
        ``key_added`` of the staNMF run.
    {doc_ax}
    {doc_show}

    Returns
    -------
    The figure, the axes, or None (see ``show`` and ``return_fig``).

    Examples
    --------
    >>> import squidpy as sq
    >>> import spatialfactors as sf
    >>> adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=200)
    >>> sq.gr.spatial_neighbors_delaunay(adata)  # doctest: +ELLIPSIS
    >>> sf.tl.stanmf(adata, n_factors=5)
    >>> ax = sf.pl.morans_i(adata, show=False)
    """
    adata = _check_adata(adata, "morans_i", table_key)
    plot = _Plotter("morans_i", figsize=figsize, dpi=dpi, show=show, save=save, return_fig=return_fig, ax=ax)
    try:
        table = _result(adata, key, "stanmf", "morans_i")
    except KeyError as err:
        raise KeyError(
            f"{err.args[0]} Moran's I needs a spatial graph: run `sq.gr.spatial_neighbors_delaunay(adata)` "
            "(or another squidpy builder) before `sf.tl.stanmf`."
        ) from None
    table = pd.DataFrame(table).replace({"method": {"nmf": "staNMF", "pca": "PCA"}})
    fig, ax = plot.axes((3.2, 3.2))
    sns.boxplot(data=table, x="method", y="morans_i", ax=ax, color="0.85", fliersize=0)
    sns.stripplot(data=table, x="method", y="morans_i", ax=ax, size=4, color="C0")
    ax.set_xlabel("")
    ax.set_ylabel("Moran's I of a pattern")
    return plot.finish(fig, ax)
