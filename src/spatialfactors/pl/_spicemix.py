"""Figures of the SpiceMix analysis (Chidester et al. 2023): affinity heatmap and convergence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import seaborn as sns
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy.cluster.hierarchy import leaves_list, linkage

from spatialfactors._validation import _assert_bool, _assert_str
from spatialfactors.pl._base import _check_adata, _doc_show, _finish, _new_axes


def _spicemix_result(adata: AnnData, key: str) -> dict:
    _assert_str("key", key)
    if not isinstance(adata.uns.get(key), dict) or "affinity" not in adata.uns[key]:
        raise KeyError(f"No SpiceMix result under key {key!r}; run `sf.tl.spicemix(adata, key_added={key!r})` first.")
    return adata.uns[key]


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
    each other.

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.spicemix`.
    key
        ``key_added`` of the run.
    cluster
        Order the metagenes by average-linkage clustering of the affinity rows.
    cmap
        Diverging colour map, centred at zero.
    annot
        Write the values into the cells.
    ax, figsize, dpi
        Axes to draw into, or the size of a new figure.
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
    s = np.asarray(_spicemix_result(adata, key)["affinity"])
    _assert_bool("cluster", cluster)
    if s.ndim != 2 or s.shape[0] != s.shape[1] or s.dtype.kind not in "iuf" or not np.isfinite(s).all():
        raise ValueError(
            f"`adata.uns[{key!r}]['affinity']` must be a finite square matrix, got shape {s.shape}; rerun "
            f"`sf.tl.spicemix(adata, key_added={key!r})`."
        )
    order = np.arange(len(s))
    if cluster and len(s) > 2:
        order = leaves_list(linkage(s, method="average"))
    fig, ax = _new_axes(ax, figsize=figsize or (0.35 * len(s) + 2, 0.35 * len(s) + 1.2), dpi=dpi)
    vmax = float(np.abs(s).max()) or 1.0
    labels = [str(i) for i in order]
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
        cbar_kws={"label": r"$\Sigma_x^{-1}$", "shrink": 0.7},
    )
    ax.set_xlabel("metagene")
    ax.set_ylabel("metagene")
    return _finish(fig, ax, show=show, save=save, return_fig=return_fig)


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
    ax, figsize, dpi
        Axes to draw into, or the size of a new figure.
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
    history = _spicemix_result(adata, key).get("history")
    if not hasattr(history, "columns") or not {"iteration", "objective"} <= set(history.columns):
        raise KeyError(
            f"`adata.uns[{key!r}]['history']` (a table with `iteration` and `objective`) not found; rerun "
            f"`sf.tl.spicemix(adata, key_added={key!r})`."
        )
    fig, ax = _new_axes(ax, figsize=figsize or (4.5, 3.2), dpi=dpi)
    ax.plot(history["iteration"], history["objective"], marker="o", ms=2)
    ax.set_xlabel("iteration (0 = initialisation)")
    ax.set_ylabel("objective (eq. 12)")
    return _finish(fig, ax, show=show, save=save, return_fig=return_fig)
