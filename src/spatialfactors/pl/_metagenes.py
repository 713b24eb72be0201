"""Metagene weights in space and per cell type."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from spatialfactors._validation import _assert_bool, _assert_str, _get_obsm

from ._base import _check_adata, _chosen_components, _doc_show, _finish, _new_axes, _new_grid


def _factor_frame(adata: AnnData, basis: str, *, normalize: bool = False) -> pd.DataFrame:
    """Return ``.obsm[basis]`` as a cells x factors DataFrame, optionally as proportions per cell."""
    _assert_bool("normalize", normalize)
    numbers = _get_obsm(adata, basis, hint="compute the factors first, e.g. `sf.tl.spicemix(adata)`", finite=False)
    values = adata.obsm[basis]
    if isinstance(values, pd.DataFrame):
        values = pd.DataFrame(numbers, index=adata.obs_names, columns=[str(c) for c in values.columns])
    else:
        values = pd.DataFrame(numbers, index=adata.obs_names, columns=[str(k) for k in range(numbers.shape[1])])
    if normalize:
        values = values.div(values.sum(axis=1).replace(0, np.nan), axis=0)
    return values


def metagenes(
    adata: AnnData,
    basis: str = "X_spicemix",
    *,
    components: Sequence[int] | None = None,
    library_key: str | None = None,
    normalize: bool = False,
    spatial_key: str = "spatial",
    cmap: str = "viridis",
    size: float | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: float | None = None,
    table_key: str | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
) -> Figure | list | None:
    """Plot metagene (or pattern) weights of every cell in space, one row per field of view.

    Parameters
    ----------
    adata
        Annotated data with the weights in ``.obsm[basis]`` and coordinates in
        ``.obsm[spatial_key]``.
    basis
        Key of the cells x factors weights in ``.obsm``.
    components
        Indices of the factors to draw; all by default.
    library_key
        Categorical column of ``.obs`` naming the field of view of each cell; one row of
        panels per category. ``None`` draws all cells in one row.
    normalize
        Divide every cell's weights by their sum first, so panels show proportions.
    spatial_key
        Key of the coordinates in ``.obsm``.
    cmap
        Colour map of the weights; every panel of a factor shares one colour scale.
    size
        Marker size; chosen from the number of cells by default.
    figsize, dpi
        Figure size and resolution.
    table_key
        With a SpatialData, the name of its table that holds the result.
    show, save, return_fig
        As in scanpy: ``show=False`` returns the grid of axes, ``save`` writes the figure to
        that path, ``return_fig=True`` returns the figure.

    Returns
    -------
    The figure, the axes, or None (see ``show`` and ``return_fig``).

    Examples
    --------
    >>> import spatialfactors as sf
    >>> adata = sf.datasets.simulate_cortex(n_fovs=2, n_cells=200)
    >>> fig = sf.pl.metagenes(adata, "X_true", library_key="fov", components=[4, 5], return_fig=True)
    """
    adata = _check_adata(adata, "metagenes", table_key)
    weights = _factor_frame(adata, basis, normalize=normalize)
    xy = _get_obsm(adata, spatial_key, hint="coordinates are needed to plot in space", finite=False)
    if xy.shape[1] < 2:
        raise ValueError(f"`adata.obsm[{spatial_key!r}]` must have at least 2 columns (x, y), got {xy.shape[1]}.")
    xy = xy[:, :2]
    components = _chosen_components(components, weights.shape[1], f"`.obsm[{basis!r}]`")
    if library_key is None:
        libraries = [None]
    else:
        _assert_str("library_key", library_key)
        if library_key not in adata.obs:
            raise KeyError(f"`adata.obs[{library_key!r}]` not found; available: {list(adata.obs.columns)}.")
        libraries = list(pd.Categorical(adata.obs[library_key]).categories)

    fig, axes = _new_grid(len(libraries), len(components), panel_size=(2.6, 2.4), figsize=figsize, dpi=dpi)
    for col, k in enumerate(components):
        values = weights.iloc[:, k].to_numpy()
        vmin, vmax = np.nanmin(values), np.nanmax(values)
        for row, lib in enumerate(libraries):
            ax = axes[row][col]
            sel = np.ones(adata.n_obs, bool) if lib is None else (adata.obs[library_key] == lib).to_numpy()
            s = size if size is not None else max(2.0, 4000.0 / max(sel.sum(), 1))
            sc = ax.scatter(*xy[sel].T, c=values[sel], s=s, cmap=cmap, vmin=vmin, vmax=vmax, linewidths=0)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"{basis} {weights.columns[k]}", fontsize=9)
            if col == 0 and lib is not None:
                ax.set_ylabel(f"{library_key} {lib}")
        fig.colorbar(sc, ax=[axes[r][col] for r in range(len(libraries))], location="bottom", shrink=0.8, aspect=15)
    return _finish(fig, axes, show=show, save=save, return_fig=return_fig)


@_doc_show
def metagene_expression(
    adata: AnnData,
    basis: str = "X_spicemix",
    *,
    groupby: str = "cell_type",
    normalize: bool = True,
    cmap: str = "rocket_r",
    ax: Axes | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: float | None = None,
    table_key: str | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """Heatmap of the mean metagene weight per group of cells (the paper's Fig. 2b and 4c).

    Parameters
    ----------
    adata
        Annotated data with the weights in ``.obsm[basis]``.
    basis
        Key of the cells x factors weights in ``.obsm``.
    groupby
        Categorical column of ``.obs`` defining the groups (rows).
    normalize
        Divide every cell's weights by their sum first, so rows show mean proportions.
    cmap
        Colour map.
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
    >>> adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=300)
    >>> ax = sf.pl.metagene_expression(adata, "X_true", groupby="cell_type", show=False)
    """
    adata = _check_adata(adata, "metagene_expression", table_key)
    weights = _factor_frame(adata, basis, normalize=normalize)
    _assert_str("groupby", groupby)
    if groupby not in adata.obs:
        raise KeyError(f"`adata.obs[{groupby!r}]` not found; available: {list(adata.obs.columns)}.")
    means = weights.groupby(pd.Categorical(adata.obs[groupby]), observed=True).mean()
    fig, ax = _new_axes(ax, figsize=figsize or (0.45 * means.shape[1] + 2, 0.35 * means.shape[0] + 1.5), dpi=dpi)
    sns.heatmap(means, ax=ax, cmap=cmap, cbar_kws={"label": "mean proportion" if normalize else "mean weight"})
    ax.set_xlabel(basis)
    ax.set_ylabel(groupby)
    return _finish(fig, ax, show=show, save=save, return_fig=return_fig)
