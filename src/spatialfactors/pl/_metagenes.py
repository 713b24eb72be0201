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

from spatialfactors._validation import _assert_bool, _assert_str, _get_obsm, _renamed

from ._base import _check_adata, _colorbar, _doc_show, _Plotter


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


def _factor_labels(adata: AnnData, basis: str, weights: pd.DataFrame) -> list[str]:
    """One name per column of ``.obsm[basis]``: the factor names of a factorisation, else the column names."""
    from spatialfactors.get import factor_names

    key = basis[2:] if basis.startswith("X_") else basis
    named = isinstance(adata.obsm[basis], pd.DataFrame)
    if not named and (isinstance(adata.uns.get(key), dict) or any(k.startswith(f"{key}_") for k in adata.varm)):
        names = factor_names(adata, key)
        if len(names) == weights.shape[1]:
            return names
    return [str(c) for c in weights.columns] if named else [f"{basis} {c}" for c in weights.columns]


def _panel_size(xy: np.ndarray, height: float = 2.6) -> tuple[float, float]:
    """Size of one spatial panel with room for its colour bar, following the aspect of the tissue."""
    extent = np.nanmax(xy, axis=0) - np.nanmin(xy, axis=0) if len(xy) else np.ones(2)
    aspect = float(extent[0] / extent[1]) if extent[1] > 0 else 1.0
    width = float(np.clip(height * aspect, 0.9, 2.2 * height))
    return width + 0.9, height + 0.35  # colour bar and title


def _spatial_panel(ax: Axes, xy: np.ndarray, values: np.ndarray, *, size: float | None, **kwargs):
    """Scatter ``values`` at ``xy`` in one panel: equal aspect, no ticks, the marker size from the cell count."""
    s = size if size is not None else float(np.clip(4000.0 / max(len(xy), 1), 0.5, 30.0))
    drawn = ax.scatter(*xy.T, c=values, s=s, linewidths=0, rasterized=len(xy) > 5000, **kwargs)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    return drawn


@_doc_show
def metagenes(
    adata: AnnData,
    basis: str = "X_spicemix",
    *,
    factors: int | str | Sequence[int | str] | None = None,
    library_key: str | None = None,
    normalize: bool = False,
    spatial_key: str = "spatial",
    cmap: str = "viridis",
    size: float | None = None,
    ncols: int = 4,
    figsize: tuple[float, float] | None = None,
    dpi: float | None = None,
    table_key: str | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
    components: Sequence[int] | None = None,
) -> Figure | list | None:
    """Plot metagene (or pattern) weights of every cell in space, one panel per factor.

    Panels fill a grid of ``ncols`` columns, each with its own colour bar; every field of view
    (``library_key``) starts a new block of rows, and a factor's panels share one colour scale.

    Parameters
    ----------
    adata
        Annotated data with the weights in ``.obsm[basis]`` and coordinates in
        ``.obsm[spatial_key]``.
    basis
        Key of the cells x factors weights in ``.obsm``.
    factors
        Factors to draw: 0-based indices or names (``'MG3'``, ``'PP1'``, see
        :func:`spatialfactors.get.factor_names`); all by default.
    library_key
        Categorical column of ``.obs`` naming the field of view of each cell; one block of
        rows per category. ``None`` draws all cells together.
    normalize
        Divide every cell's weights by their sum first, so panels show proportions.
    spatial_key
        Key of the coordinates in ``.obsm``.
    cmap
        Colour map of the weights.
    size
        Marker size; chosen from the number of cells by default.
    {doc_ncols}
    {doc_show}
    components
        Former name of ``factors`` (deprecated).

    Returns
    -------
    The figure, the grid of axes (a list of rows), or None (see ``show`` and ``return_fig``).

    Examples
    --------
    >>> import spatialfactors as sf
    >>> adata = sf.datasets.simulate_cortex(n_fovs=2, n_cells=200)
    >>> fig = sf.pl.metagenes(adata, "X_true", library_key="fov", factors=["L3", "L4"], return_fig=True)
    """
    from spatialfactors.get import _select_factors

    adata = _check_adata(adata, "metagenes", table_key)
    plot = _Plotter("metagenes", figsize=figsize, dpi=dpi, show=show, save=save, return_fig=return_fig, ncols=ncols)
    factors = _renamed("components", "factors", components, factors, where="sf.pl.metagenes")
    weights = _factor_frame(adata, basis, normalize=normalize)
    names = _factor_labels(adata, basis, weights)
    xy = _get_obsm(adata, spatial_key, hint="coordinates are needed to plot in space", finite=False)
    if xy.shape[1] < 2:
        raise ValueError(f"`adata.obsm[{spatial_key!r}]` must have at least 2 columns (x, y), got {xy.shape[1]}.")
    xy = xy[:, :2]
    chosen = _select_factors(factors, names, "factors")
    if library_key is None:
        libraries = [None]
    else:
        _assert_str("library_key", library_key)
        if library_key not in adata.obs:
            raise KeyError(f"`adata.obs[{library_key!r}]` not found; available: {list(adata.obs.columns)}.")
        libraries = list(pd.Categorical(adata.obs[library_key]).categories)
    selections = [
        np.ones(adata.n_obs, bool) if lib is None else (adata.obs[library_key] == lib).to_numpy() for lib in libraries
    ]

    fig, axes, places = plot.panels(len(chosen), _panel_size(xy[selections[0]]), n_blocks=len(libraries))
    for b, (lib, sel) in enumerate(zip(libraries, selections, strict=True)):
        for i, k in enumerate(chosen):
            row, col = places[b * len(chosen) + i]
            ax = axes[row][col]
            values = weights.iloc[:, k].to_numpy()
            vmin, vmax = np.nanmin(values), np.nanmax(values)
            drawn = _spatial_panel(ax, xy[sel], values[sel], size=size, cmap=cmap, vmin=vmin, vmax=vmax)
            _colorbar(fig, drawn, ax)
            ax.set_title(names[k], fontsize=9)
            if col == 0 and lib is not None:
                ax.set_ylabel(f"{library_key} {lib}")
    return plot.finish(fig, axes)


@_doc_show
def metagene_expression(
    adata: AnnData,
    basis: str = "X_spicemix",
    *,
    groupby: str | None = None,
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
        Categorical column of ``.obs`` defining the groups (rows), e.g. the cell types; required
        (the error lists the categorical columns when it is missing).
    normalize
        Divide every cell's weights by their sum first, so rows show mean proportions.
    cmap
        Colour map.
    {doc_ax}
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
    plot = _Plotter("metagene_expression", figsize=figsize, dpi=dpi, show=show, save=save, return_fig=return_fig, ax=ax)
    weights = _factor_frame(adata, basis, normalize=normalize)
    if groupby is None or groupby not in adata.obs:
        grouping = [  # columns that look like labels: not real numbers, and not one value per cell
            c
            for c in adata.obs.columns
            if not pd.api.types.is_float_dtype(adata.obs[c]) and adata.obs[c].nunique() <= max(100, adata.n_obs // 10)
        ]
        if groupby is None:
            raise ValueError(f"Pass `groupby`, the `.obs` column of the groups (rows); candidates: {grouping}.")
        _assert_str("groupby", groupby)
        raise KeyError(f"`adata.obs[{groupby!r}]` not found; columns that could group the cells: {grouping}.")
    means = weights.groupby(pd.Categorical(adata.obs[groupby]), observed=True).mean()
    means.columns = _factor_labels(adata, basis, weights)
    fig, ax = plot.axes((0.45 * means.shape[1] + 2.5, 0.35 * means.shape[0] + 1.5))
    sns.heatmap(means, ax=ax, cmap=cmap, cbar_kws={"label": "mean proportion" if normalize else "mean weight"})
    ax.set_xlabel(basis)
    ax.set_ylabel(groupby)
    return plot.finish(fig, ax)
