"""Figures of the staNMF analysis (Cahill et al. 2024, Fig. 1)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from spatialfactors._validation import _assert_str
from spatialfactors.io._volume import _grid, to_volume
from spatialfactors.pl._base import (
    _check_adata,
    _chosen_components,
    _chosen_planes,
    _doc_show,
    _finish,
    _max_projection,
    _new_axes,
    _new_grid,
)
from spatialfactors.pl._metagenes import metagenes

#: What writes each entry of a staNMF result, for the message when it is missing.
_WRITTEN_BY = {
    "instability": "a sweep over K, e.g. `sf.tl.stanmf(adata, n_components=range(8, 31))`",
    "genes": "`sf.tl.stanmf` (SpiceMix results have no per-gene reconstruction accuracy)",
    "morans_i": "`sf.tl.stanmf` when the spatial graph exists",
}


def _result(adata: AnnData, key: str, entry: str | None = None):
    _assert_str("key", key)
    if key not in adata.uns or f"X_{key}" not in adata.obsm or not isinstance(adata.uns[key], dict):
        raise KeyError(
            f"No factorisation result under key {key!r}; run `sf.tl.stanmf(adata, key_added={key!r})` "
            "(or `sf.tl.spicemix`) first."
        )
    uns = adata.uns[key]
    if entry is not None and entry not in uns:
        raise KeyError(f"`adata.uns[{key!r}]` has no {entry!r}; it is written by {_WRITTEN_BY[entry]}.")
    return uns if entry is None else uns[entry]


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
    ax
        Axes to draw into.
    figsize, dpi
        Figure size and resolution when ``ax`` is not given.
    {doc_show}

    Returns
    -------
    The figure, the axes, or None (see ``show`` and ``return_fig``).

    Examples
    --------
    >>> import spatialfactors as sf
    >>> adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=200)
    >>> sf.tl.stanmf(adata, n_components=range(5, 8), n_replicates=4)
    >>> ax = sf.pl.instability(adata, show=False)
    """
    adata = _check_adata(adata, "instability", table_key)
    table = _result(adata, key, "instability")
    fig, ax = _new_axes(ax, figsize=figsize or (4.5, 3.2), dpi=dpi)
    labels = {"nmf": "staNMF", "pca": "PCA", "spicemix": "SpiceMix"}
    for method, sub in table.groupby("method", sort=False):
        sub = sub.sort_values("K")
        ax.errorbar(sub["K"], sub["mean"], yerr=sub["std"], marker="o", ms=3, capsize=2, label=labels.get(method))
    k = adata.uns[key]["k"]
    main = table["method"].iloc[0]  # the factorisation itself (PCA is the comparator)
    best = table[(table["method"] == main) & (table["K"] == k)]["mean"].iloc[0]
    ax.axvline(k, color="0.6", ls="--", lw=0.8)
    ax.annotate(f"K* = {k}", (k, best), xytext=(5, 10), textcoords="offset points")
    ax.set_xlabel("K (number of metagenes)" if main == "spicemix" else "K (number of patterns)")
    ax.set_ylabel(f"instability ({table['metric'].iloc[0]})")
    ax.legend(frameon=False)
    return _finish(fig, ax, show=show, save=save, return_fig=return_fig)


@_doc_show
def patterns(
    adata: AnnData,
    key: str = "stanmf",
    *,
    components: Sequence[int] | None = None,
    planes: Sequence[str] = ("coronal", "sagittal", "horizontal"),
    library_key: str | None = None,
    cmap: str = "magma",
    figsize: tuple[float, float] | None = None,
    dpi: float | None = None,
    table_key: str | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
) -> Figure | list | None:
    """Principal patterns in space: 3D maximum projections for voxels, a scatter for cells (Fig. 1C).

    For voxel data (``.uns['aba']`` holds the grid), every pattern is placed into the volume
    and projected by its maximum onto the coronal, sagittal and horizontal planes, one row per
    pattern. For cells, this is :func:`spatialfactors.pl.metagenes` on ``.obsm['X_{key}']``.

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.stanmf`.
    key
        ``key_added`` of the staNMF run (patterns in ``.obsm['X_{key}']``).
    components
        Patterns to draw; all by default.
    planes
        Projection planes for voxel data.
    library_key
        Field of view column for cells.
    cmap
        Colour map.
    figsize, dpi
        Figure size and resolution.
    {doc_show}

    Returns
    -------
    The figure, the grid of axes, or None (see ``show`` and ``return_fig``).

    Examples
    --------
    >>> import spatialfactors as sf
    >>> adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=200)
    >>> sf.tl.stanmf(adata, n_components=4, pca=False)
    >>> fig = sf.pl.patterns(adata, components=[0, 1], return_fig=True)
    """
    adata = _check_adata(adata, "patterns", table_key)
    _result(adata, key)
    basis = f"X_{key}"
    if "aba" not in adata.uns:
        return metagenes(
            adata,
            basis,
            components=components,
            library_key=library_key,
            cmap=cmap,
            figsize=figsize,
            dpi=dpi,
            show=show,
            save=save,
            return_fig=return_fig,
        )
    planes = _chosen_planes(planes)
    components = _chosen_components(components, adata.obsm[basis].shape[1], f"`adata.obsm[{basis!r}]`")
    _grid(adata)
    fig, axes = _new_grid(len(components), len(planes), panel_size=(2.4, 1.8), figsize=figsize, dpi=dpi)
    for row, c in enumerate(components):
        vol = to_volume(adata, c, basis=basis)
        for col, plane in enumerate(planes):
            axes[row][col].imshow(_max_projection(vol, plane), cmap=cmap, interpolation="nearest")
            axes[row][col].set_xticks([])
            axes[row][col].set_yticks([])
            if row == 0:
                axes[row][col].set_title(plane, fontsize=9)
        axes[row][0].set_ylabel(f"PP {c + 1}")
    return _finish(fig, axes, show=show, save=save, return_fig=return_fig)


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
    ax
        Axes to draw into.
    figsize, dpi
        Figure size and resolution when ``ax`` is not given.
    {doc_show}

    Returns
    -------
    The figure, the axes, or None (see ``show`` and ``return_fig``).

    Examples
    --------
    >>> import spatialfactors as sf
    >>> adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=200)
    >>> sf.tl.stanmf(adata, n_components=5)
    >>> ax = sf.pl.reconstruction(adata, show=False)
    """
    adata = _check_adata(adata, "reconstruction", table_key)
    genes = _result(adata, key, "genes")
    fig, ax = _new_axes(ax, figsize=figsize or (3.6, 3.4), dpi=dpi)
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
    return _finish(fig, ax, show=show, save=save, return_fig=return_fig)


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
    ax
        Axes to draw into.
    figsize, dpi
        Figure size and resolution when ``ax`` is not given.
    {doc_show}

    Returns
    -------
    The figure, the axes, or None (see ``show`` and ``return_fig``).

    Examples
    --------
    >>> import spatialfactors as sf
    >>> adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=200)
    >>> sf.tl.stanmf(adata, n_components=5, pca=False)
    >>> ax = sf.pl.patterns_per_gene(adata, show=False)
    """
    adata = _check_adata(adata, "patterns_per_gene", table_key)
    genes = _result(adata, key, "genes")
    k = adata.uns[key]["k"]
    counts = np.bincount(genes["n_patterns"].to_numpy().astype(int), minlength=k + 1)[1:]
    fig, ax = _new_axes(ax, figsize=figsize or (3.8, 3.0), dpi=dpi)
    ax.bar(np.arange(1, k + 1), counts)
    ax.set_xticks(np.arange(1, k + 1))
    ax.set_xlabel("patterns used by a gene")
    ax.set_ylabel("genes")
    return _finish(fig, ax, show=show, save=save, return_fig=return_fig)


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
    ax
        Axes to draw into.
    figsize, dpi
        Figure size and resolution when ``ax`` is not given.
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
    >>> sf.tl.stanmf(adata, n_components=5)
    >>> ax = sf.pl.morans_i(adata, show=False)
    """
    adata = _check_adata(adata, "morans_i", table_key)
    try:
        table = _result(adata, key, "morans_i")
    except KeyError as err:
        raise KeyError(
            f"{err.args[0]} Moran's I needs a spatial graph: run `sq.gr.spatial_neighbors_delaunay(adata)` "
            "(or another squidpy builder) before `sf.tl.stanmf`."
        ) from None
    table = pd.DataFrame(table).replace({"method": {"nmf": "staNMF", "pca": "PCA"}})
    fig, ax = _new_axes(ax, figsize=figsize or (3.2, 3.2), dpi=dpi)
    sns.boxplot(data=table, x="method", y="morans_i", ax=ax, color="0.85", fliersize=0)
    sns.stripplot(data=table, x="method", y="morans_i", ax=ax, size=4, color="C0")
    ax.set_xlabel("")
    ax.set_ylabel("Moran's I of a pattern")
    return _finish(fig, ax, show=show, save=save, return_fig=return_fig)
