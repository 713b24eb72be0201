"""Figures of the SpiceMix analysis (Chidester et al. 2023): affinity heatmap and convergence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import seaborn as sns
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy.cluster.hierarchy import dendrogram, leaves_list, linkage

from spatialfactors import get as sfget
from spatialfactors._validation import _assert_bool
from spatialfactors.get import _result, factor_names
from spatialfactors.pl._base import _check_adata, _doc_show, _Plotter


@_doc_show
def affinity(
    adata: AnnData,
    key: str = "spicemix",
    *,
    cluster: bool = True,
    cmap: str = "RdBu_r",
    annot: bool = False,
    ax: Axes | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: float | None = None,
    table_key: str | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """Heatmap of the learned metagene spatial affinity ``Sigma_x^-1`` (paper Figs. 2-4).

    Negative entries (blue) mark metagene pairs that are more likely in neighbouring cells
    (the energy ``z_i^T Sigma_x^-1 z_j`` is lower); positive entries (red) pairs that avoid
    each other. The colour range is symmetric around 0 and set by the pairs (the off-diagonal
    entries); the diagonal saturates. Rows and columns are named ``MG1`` ...
    (:func:`spatialfactors.get.factor_names`).

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.spicemix`.
    key
        ``key_added`` of the run.
    cluster
        Order the metagenes by average-linkage clustering of the affinity rows, and draw the
        dendrogram above the columns.
    cmap
        Diverging colour map, centred at zero.
    annot
        Write the values into the cells.
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
    >>> sq.gr.spatial_neighbors_delaunay(adata)
    >>> sf.tl.spicemix(adata, 6, max_iter=3)
    >>> ax = sf.pl.affinity(adata, show=False)
    """
    adata = _check_adata(adata, "affinity", table_key)
    plot = _Plotter("affinity", figsize=figsize, dpi=dpi, show=show, save=save, return_fig=return_fig, ax=ax)
    s = np.asarray(_result(adata, key, "spicemix", "affinity"))
    _assert_bool("cluster", cluster)
    if s.ndim != 2 or s.shape[0] != s.shape[1] or s.dtype.kind not in "iuf" or not np.isfinite(s).all():
        raise ValueError(
            f"`adata.uns[{key!r}]['affinity']` must be a finite square matrix, got shape {s.shape}; rerun "
            f"`sf.tl.spicemix(adata, key_added={key!r})`."
        )
    names = factor_names(adata, key)
    if len(names) != len(s):
        names = [str(i) for i in range(len(s))]
    tree = linkage(s, method="average") if cluster and len(s) > 2 else None
    order = leaves_list(tree) if tree is not None else np.arange(len(s))
    fig, ax = plot.axes((0.32 * len(s) + 2.4, 0.32 * len(s) + (2.0 if tree is not None else 1.2)))
    # The colour range comes from the pairs: the diagonal (each metagene with itself) is larger and
    # would wash out every pair's colour, so it saturates instead.
    off = s[~np.eye(len(s), dtype=bool)]
    vmax = float(np.abs(off).max()) if off.size else float(np.abs(s).max())
    vmax = vmax or 1.0
    labels = [names[i] for i in order]
    sns.heatmap(
        s[np.ix_(order, order)],
        ax=ax,
        cmap=cmap,
        vmin=-vmax,
        vmax=vmax,
        center=0,
        square=True,
        annot=annot,
        fmt=".1f",
        xticklabels=labels,
        yticklabels=labels,
        cbar_kws={
            "label": r"$\Sigma_x^{-1}$ (diagonal saturates)" if np.abs(np.diag(s)).max() > vmax else r"$\Sigma_x^{-1}$",
            "shrink": 0.6,
            "extend": "both" if np.abs(s).max() > vmax else "neither",
        },
    )
    ax.tick_params(labelsize=8)
    if tree is not None:  # the clustering that ordered the rows and columns, above the columns
        top = ax.inset_axes((0.0, 1.01, 1.0, 0.16))
        dendrogram(tree, ax=top, no_labels=True, color_threshold=0, above_threshold_color="0.35")
        top.set_xlim(0, 10 * len(s))
        top.set_axis_off()
    ax.set_xlabel("metagene")
    ax.set_ylabel("metagene")
    return plot.finish(fig, ax)


@_doc_show
def convergence(
    adata: AnnData,
    key: str = "spicemix",
    *,
    ax: Axes | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: float | None = None,
    table_key: str | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """Objective (negative log pseudo-posterior, eq. 12) per SpiceMix iteration.

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.spicemix`.
    key
        ``key_added`` of the run.
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
    >>> sq.gr.spatial_neighbors_delaunay(adata)
    >>> sf.tl.spicemix(adata, 6, max_iter=3)
    >>> ax = sf.pl.convergence(adata, show=False)
    """
    adata = _check_adata(adata, "convergence", table_key)
    plot = _Plotter("convergence", figsize=figsize, dpi=dpi, show=show, save=save, return_fig=return_fig, ax=ax)
    history = sfget.history_df(adata, key)
    fig, ax = plot.axes((4.5, 3.2))
    ax.plot(history["iteration"], history["objective"], marker="o", ms=2)
    ax.set_xlabel("iteration (0 = initialisation)")
    ax.set_ylabel("objective (eq. 12)")
    return plot.finish(fig, ax)
