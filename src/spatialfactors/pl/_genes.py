"""Figures of marker genes, gene networks and region AUCs (Cahill et al. 2024, Figs. 4C, 5 and 6)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import matplotlib.pyplot as plt
import numpy as np
import scipy.sparse as sp
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FormatStrFormatter, MaxNLocator

from spatialfactors import get as sfget
from spatialfactors._validation import _assert_bool, _assert_int_range, _assert_real_range, _assert_str, _renamed
from spatialfactors.get import _select_factors, _sgcn_graph, factor_names
from spatialfactors.io import to_volume
from spatialfactors.pl._base import (
    _COPPER,
    _REDS,
    PLANES,
    _check_adata,
    _colorbar,
    _doc_show,
    _light_cmap,
    _max_projection,
    _Plotter,
)
from spatialfactors.pl._metagenes import _panel_size, _spatial_panel


@_doc_show
def pattern_genes(
    adata: AnnData,
    key: str = "stanmf",
    *,
    values: Literal["coefficients", "importance"] = "coefficients",
    counts: bool = True,
    vmax: float | None = None,
    cmap: str = "Reds",
    ax: Axes | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: float | None = None,
    table_key: str | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
) -> Figure | Axes | list | None:
    """Heatmap of every gene's coefficients on the patterns, genes grouped by assigned pattern (Fig. 5A, 5B).

    Rows are patterns, columns genes: first the genes assigned to PP1 (their highest coefficient
    is on PP1) by decreasing importance, then those of PP2, and so on; a box marks each pattern's
    own genes. Genes with all-zero loadings are left out. Beside it (``counts``), the number of
    genes assigned to each pattern (Fig. 5B).

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.pattern_genes`.
    key
        ``key_added`` (or ``key``) of :func:`spatialfactors.tl.pattern_genes`.
    values
        ``'coefficients'`` (``a_kj``, as in the paper) or ``'importance'`` (``r_kj``).
    counts
        Add the bar chart of genes per pattern.
    vmax
        Top of the colour scale; by default the 99th percentile of the values.
    cmap
        Colour map.
    ax
        Axes to draw the heatmap into (only with ``counts=False``).
    {doc_show}

    Returns
    -------
    The figure, the axes (the heatmap's, or both as a list with ``counts``), or None.

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> import spatialfactors as sf
    >>> rng = np.random.default_rng(0)
    >>> adata = ad.AnnData(np.zeros((30, 50)), obsm={"X_stanmf": rng.random((30, 3))})
    >>> adata.varm["stanmf_loadings"] = rng.gamma(0.5, 1.0, (50, 3))
    >>> sf.tl.pattern_genes(adata)
    >>> heatmap, bars = sf.pl.pattern_genes(adata, show=False)
    >>> (
    ...     heatmap.images[0].get_array().shape,
    ...     [round(p.get_width()) for p in bars.patches]
    ...     == list(adata.uns["stanmf_pattern_genes"]["counts"]["n_genes"]),
    ... )
    ((3, 50), True)
    """
    adata = _check_adata(adata, "pattern_genes", table_key)
    plot = _Plotter("pattern_genes", figsize=figsize, dpi=dpi, show=show, save=save, return_fig=return_fig, ax=ax)
    result = sfget.pattern_genes_result(adata, key)
    _assert_bool("counts", counts)
    if vmax is not None:
        _assert_real_range("vmax", vmax, 0.0, low_open=True)
    if values not in ("coefficients", "importance"):
        raise ValueError(f"`values` must be 'coefficients' or 'importance', got {values!r}.")
    if ax is not None and counts:
        raise ValueError("`ax` takes the heatmap alone; pass `counts=False` with it.")
    params = result["params"]
    # What `sf.tl.pattern_genes` stored: the importance scores, else the factorisation's loadings.
    stored = sfget.loadings(adata, params["key"]) if values == "coefficients" else sfget.importance(adata, key)
    genes = result["genes"]
    names = list(result["counts"].index)
    n_patterns = len(names)
    # Fig. 5A order: by assigned pattern, then by rank (importance) within it.
    code = genes["pattern"].cat.codes.to_numpy()
    keep = np.flatnonzero(code >= 0)
    order = keep[np.lexsort((genes["rank"].to_numpy()[keep], code[keep]))]
    matrix = stored.to_numpy()[order].T
    top = vmax if vmax is not None else float(np.nanpercentile(matrix, 99)) if matrix.size else 1.0

    if counts:
        fig, axes = plt.subplots(
            1,
            2,
            figsize=plot.figsize or (9.0, 0.3 * n_patterns + 1.8),
            dpi=plot.dpi,
            sharey=True,
            gridspec_kw={"width_ratios": [5, 1]},
            layout="constrained",
        )
        ax, bar_ax = axes
    else:
        fig, ax = plot.axes((8.0, 0.3 * n_patterns + 1.8))
    image = ax.imshow(matrix, aspect="auto", cmap=cmap, vmin=0, vmax=top if top > 0 else 1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, label=values, shrink=0.8, location="left" if counts else "right")
    block = genes["pattern"].cat.codes.to_numpy()[order]
    for k in range(n_patterns):  # the paper's boxes: each pattern's own genes
        cols = np.flatnonzero(block == k)
        if cols.size:
            ax.add_patch(Rectangle((cols[0] - 0.5, k - 0.5), cols.size, 1, fill=False, edgecolor="0.15", linewidth=0.8))
    ax.set_yticks(np.arange(n_patterns), names)
    ax.set_xticks([])
    ax.set_xlabel(f"genes ({order.size}), grouped by assigned pattern")
    ax.set_ylabel("pattern")
    if not counts:
        return plot.finish(fig, ax)
    n_genes = result["counts"]["n_genes"].to_numpy()
    bar_ax.barh(np.arange(n_patterns), n_genes, color="C3")
    bar_ax.set_xlabel("assigned genes")
    bar_ax.tick_params(axis="y", left=False)
    return plot.finish(fig, [ax, bar_ax])


def _expression(adata: AnnData, gene: str, layer: str | None) -> np.ndarray:
    idx = adata.var_names.get_loc(gene)
    x = adata.X if layer is None else adata.layers[layer]
    col = x[:, idx]
    col = col.toarray() if sp.issparse(col) else np.asarray(col)
    return np.asarray(col, dtype=np.float64).ravel()


@_doc_show
def pattern_with_genes(
    adata: AnnData,
    factors: int | str | Sequence[int | str] | None = None,
    *,
    key: str = "stanmf",
    n_genes: int = 3,
    plane: Literal["coronal", "sagittal", "horizontal"] = "horizontal",
    layer: str | None = None,
    reconstructed: bool = False,
    library_key: str | None = None,
    library: str | None = None,
    spatial_key: str = "spatial",
    cmap: str | Colormap | None = None,
    gene_cmap: str | Colormap | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: float | None = None,
    table_key: str | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
    patterns: int | str | Sequence[int | str] | None = None,
) -> Figure | list | None:
    """Each pattern beside its top marker genes (Fig. 5C).

    One row per pattern: the pattern, then the expression of its ``n_genes`` best-ranked genes
    (:func:`spatialfactors.tl.pattern_genes`), each panel with its own colour bar. Voxel data
    (``.uns['aba']``) are shown as maximum projections onto ``plane`` (the paper: horizontal); cells
    as a scatter of ``.obsm[spatial_key]``.

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.pattern_genes`.
    factors
        Patterns to draw: 0-based indices or names (``'PP1'`` ..., see
        :func:`spatialfactors.get.factor_names`); all by default.
    key
        ``key_added`` (or ``key``) of :func:`spatialfactors.tl.pattern_genes`.
    n_genes
        Marker genes per pattern.
    plane
        Projection plane of voxel data.
    layer
        Layer with the expression instead of ``.X``.
    reconstructed
        Show the genes' reconstructions ``D a_j`` instead of the measured expression.
    library_key, library
        For cells: the ``.obs`` column of fields of view and the one to draw (the first by default).
    spatial_key
        Coordinates of cells in ``.obsm``.
    cmap, gene_cmap
        Colour maps of the patterns and of the genes. By default red and copper as in the paper,
        each starting from light grey so that low values stay visible on white.
    {doc_show}
    patterns
        Former name of ``factors`` (deprecated).

    Returns
    -------
    The figure, the grid of axes (a row per pattern, ``1 + n_genes`` columns), or None.

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> import spatialfactors as sf
    >>> mask = np.ones((4, 3, 5), bool)
    >>> rng = np.random.default_rng(0)
    >>> d, a = rng.random((60, 2)), rng.random((6, 2))
    >>> adata = ad.AnnData(d @ a.T, uns={"aba": {"grid_shape": (4, 3, 5), "spacing": 200.0, "mask": mask}})
    >>> adata.obsm["X_stanmf"], adata.varm["stanmf_loadings"] = d, a
    >>> sf.tl.pattern_genes(adata)
    >>> axes = sf.pl.pattern_with_genes(adata, n_genes=2, show=False)
    >>> len(axes), len(axes[0]), axes[0][1].get_title(loc="left") == sf.get.pattern_genes_df(adata, 0)["names"][0]
    (2, 3, True)
    """
    adata = _check_adata(adata, "pattern_with_genes", table_key)
    plot = _Plotter("pattern_with_genes", figsize=figsize, dpi=dpi, show=show, save=save, return_fig=return_fig)
    result = sfget.pattern_genes_result(adata, key)
    dictionary = sfget.factors(adata, result["params"]["key"]).to_numpy()
    loadings = sfget.loadings(adata, result["params"]["key"]).to_numpy()
    factors = _renamed("patterns", "factors", patterns, factors, where="sf.pl.pattern_with_genes")
    names = factor_names(adata, result["params"]["key"])
    chosen = _select_factors(factors, names, "factors")
    _assert_int_range("n_genes", n_genes, 1)
    cmap = _light_cmap(cmap, _REDS)
    gene_cmap = _light_cmap(gene_cmap, _COPPER)
    _assert_bool("reconstructed", reconstructed)
    if layer is not None and layer not in adata.layers:
        raise KeyError(f"Layer {layer!r} not found in `adata.layers`; available: {sorted(adata.layers)}.")
    if layer is None and adata.X is None and not reconstructed:
        raise ValueError("`adata.X` is empty: pass `layer=` with the expression, or `reconstructed=True`.")
    voxels = "aba" in adata.uns
    if voxels:
        if plane not in PLANES:
            raise ValueError(f"`plane` must be one of {list(PLANES)}, got {plane!r}.")
        sfget.grid(adata)
        select = np.ones(adata.n_obs, bool)
    else:
        _assert_str("spatial_key", spatial_key)
        if spatial_key not in adata.obsm:
            raise KeyError(
                f"`adata.obsm[{spatial_key!r}]` not found; coordinates are needed to plot cells in space "
                f"(available: {sorted(adata.obsm)})."
            )
        select = np.ones(adata.n_obs, bool)
        if library_key is not None:
            if library_key not in adata.obs:
                raise KeyError(f"`adata.obs[{library_key!r}]` not found.")
            libs = adata.obs[library_key].astype(str)
            library = str(library) if library is not None else libs.iloc[0]
            select = (libs == library).to_numpy()
            if not select.any():
                raise ValueError(f"No cells with `{library_key}` == {library!r}.")
        xy = np.asarray(adata.obsm[spatial_key])[select, :2]

    def draw(ax: Axes, vec: np.ndarray, colours) -> None:
        if voxels:
            drawn = ax.imshow(_max_projection(to_volume(adata, vec), plane), cmap=colours, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            drawn = _spatial_panel(ax, xy, vec[select], size=None, cmap=colours)
        _colorbar(fig, drawn, ax)

    if voxels:
        shape = _max_projection(np.zeros(sfget.grid(adata)[0]), plane).shape
        panel = (2.0 * float(np.clip(shape[1] / shape[0], 0.5, 2.5)) + 0.8, 2.35)
    else:
        panel = _panel_size(xy)
    fig, axes = plot.grid(len(chosen), 1 + n_genes, panel)
    for row, k in enumerate(chosen):
        draw(axes[row][0], np.asarray(dictionary[:, k], dtype=np.float64), cmap)
        axes[row][0].set_title(names[k], fontsize=9, fontweight="bold")
        top = sfget.pattern_genes_df(adata, k, key=key)["names"].head(n_genes).tolist()
        for col in range(n_genes):
            ax = axes[row][col + 1]
            if col >= len(top):
                ax.axis("off")
                continue
            gene = str(top[col])
            if reconstructed:
                vec = np.asarray(dictionary, dtype=np.float64) @ loadings[adata.var_names.get_loc(gene)]
            else:
                vec = _expression(adata, gene, layer)
            draw(ax, vec, gene_cmap)
            ax.set_title(gene, fontsize=8 if len(gene) > 8 else 9, loc="left")
    return plot.finish(fig, axes)


@_doc_show
def sgcn(
    adata: AnnData,
    pattern: int | str,
    *,
    key: str = "sgcn",
    layout: Literal["circular", "spring", "kamada_kawai"] = "circular",
    node_cmap: str = "Reds",
    edge_cmap: str = "viridis",
    node_size: float | None = None,
    font_size: float = 8.0,
    seed: int = 0,
    ax: Axes | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: float | None = None,
    table_key: str | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """Draw the spatial gene co-expression network of one pattern (Fig. 6).

    Nodes are the pattern's most selective genes, coloured by their selectivity (importance score);
    edges join co-expressed genes, coloured by the Pearson correlation of their reconstructions.

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.sgcn`.
    pattern
        Pattern index (0-based) or name (``'PP1'`` ...).
    key
        ``key_added`` of :func:`spatialfactors.tl.sgcn`.
    layout
        networkx layout: ``'circular'`` (genes in rank order around a circle), ``'spring'`` (seeded)
        or ``'kamada_kawai'``.
    node_cmap, edge_cmap
        Colour maps of selectivity and correlation.
    node_size, font_size
        Node marker area (by default smaller for larger networks) and gene label size.
    seed
        Seed of the spring layout.
    {doc_ax}
    {doc_show}

    Returns
    -------
    The figure, the axes, or None (see ``show`` and ``return_fig``).

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> import spatialfactors as sf
    >>> rng = np.random.default_rng(0)
    >>> adata = ad.AnnData(np.zeros((50, 200)), obsm={"X_stanmf": rng.random((50, 2))})
    >>> adata.varm["stanmf_loadings"] = rng.random((200, 2))
    >>> sf.tl.sgcn(adata, top_fraction=0.05, edge_quantile=0.8)
    >>> ax = sf.pl.sgcn(adata, "PP2", show=False)
    >>> len(ax.collections[0].get_offsets()), len(ax.collections[1].get_segments())
    (10, 9)
    """
    adata = _check_adata(adata, "sgcn", table_key)
    plot = _Plotter("sgcn", figsize=figsize, dpi=dpi, show=show, save=save, return_fig=return_fig, ax=ax)
    import networkx as nx

    if layout not in ("spring", "circular", "kamada_kawai"):
        raise ValueError(f"`layout` must be 'circular', 'spring' or 'kamada_kawai', got {layout!r}.")
    if node_size is not None:
        _assert_real_range("node_size", node_size, 0.0)
    _assert_real_range("font_size", font_size, 0.0)
    _assert_int_range("seed", seed, 0)
    graph = _sgcn_graph(adata, pattern, key=key, table_key=None, what="pattern")
    nodes = list(graph.nodes)
    edges = list(graph.edges)
    pcc = np.array([graph.edges[e]["pcc"] for e in edges], dtype=np.float64)
    if layout == "spring":
        # Unweighted with wide spacing: PCC weights near 1 would pull co-expressed genes onto each other.
        pos = nx.spring_layout(graph, seed=seed, weight=None, k=2.0 / np.sqrt(max(len(nodes), 1)))
    elif layout == "circular":
        pos = nx.circular_layout(graph)
    else:
        pos = nx.kamada_kawai_layout(graph)
    grow = min(4.0, 0.08 * max(len(nodes) - 12, 0))  # more room for larger networks
    fig, ax = plot.axes((5.0 + grow, 4.2 + grow))
    selectivity = np.array([graph.nodes[n]["selectivity"] for n in nodes])
    node_norm = Normalize(vmin=float(selectivity.min()), vmax=float(max(selectivity.max(), selectivity.min() + 1e-9)))
    drawn = nx.draw_networkx_nodes(
        graph,
        pos,
        nodelist=nodes,
        node_color=selectivity,
        cmap=node_cmap,
        vmin=node_norm.vmin,
        vmax=node_norm.vmax,
        node_size=node_size if node_size is not None else float(np.clip(6000.0 / max(len(nodes), 1), 60.0, 300.0)),
        edgecolors="0.3",
        ax=ax,
    )
    # At least 0.05 wide: edges tied near PCC 1 would otherwise get a scale of 1e-9 with unreadable ticks.
    top = min(1.0, float(pcc.max())) if pcc.size else 1.0
    edge_norm = Normalize(vmin=min(float(pcc.min()) if pcc.size else 0.0, top - 0.05), vmax=top)
    colours = plt.get_cmap(edge_cmap)(edge_norm(pcc)) if pcc.size else "0.5"
    lines = nx.draw_networkx_edges(graph, pos, edgelist=edges, edge_color=colours, width=2.5, ax=ax)
    if pcc.size:  # the collection also carries its values and scale (for the colour bar and for readers)
        lines.set_array(pcc)
        lines.set_cmap(edge_cmap)
        lines.set_norm(edge_norm)
    # Labels beside the nodes, pushed outwards from the centre so that they neither cover the
    # markers nor each other (there is no label repulsion in matplotlib).
    xy = np.array([pos[n] for n in nodes], dtype=np.float64).reshape(-1, 2)
    centre = xy.mean(axis=0) if len(xy) else np.zeros(2)
    span = float(np.ptp(xy, axis=0).max()) if len(xy) > 1 else 1.0
    for n, p in zip(nodes, xy, strict=True):
        d = p - centre
        d = d / np.linalg.norm(d) if np.linalg.norm(d) > 1e-9 else np.array([0.0, 1.0])
        ax.text(
            *(p + 0.07 * span * d),
            str(n),
            fontsize=font_size,
            ha="left" if d[0] > 0.3 else "right" if d[0] < -0.3 else "center",
            va="bottom" if d[1] > 0.3 else "top" if d[1] < -0.3 else "center",
            zorder=4,
        )
    ax.margins(0.25)  # room for the labels at the rim
    node_bar = fig.colorbar(drawn, ax=ax, label="selectivity", shrink=0.6, pad=0.02, aspect=15, location="right")
    node_bar.ax.locator_params(nbins=4)
    edge_bar = fig.colorbar(
        lines if pcc.size else ScalarMappable(norm=edge_norm, cmap=edge_cmap),
        ax=ax,
        label="PCC of the reconstructions",
        shrink=0.5,
        pad=0.02,
        aspect=25,
        location="bottom",
    )
    edge_bar.formatter = FormatStrFormatter("%.2f")
    edge_bar.ax.xaxis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 5, 10]))
    edge_bar.ax.tick_params(labelsize=8)
    n_edges = len(edges)
    title = f"{graph.graph['pattern']}: {len(nodes)} genes, {n_edges} edge{'' if n_edges == 1 else 's'}"
    ax.set_title(title, fontsize=10)
    ax.set_axis_off()
    return plot.finish(fig, ax)


@_doc_show
def region_auc(
    adata: AnnData,
    key: str = "region_auc",
    *,
    bins: int = 30,
    ax: Axes | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: float | None = None,
    table_key: str | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """Histogram of the AUCs of random pattern sets, with the chosen set's AUC marked (Fig. 4C).

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.region_auc`.
    key
        ``key_added`` of :func:`spatialfactors.tl.region_auc`.
    bins
        Histogram bins.
    {doc_ax}
    {doc_show}

    Returns
    -------
    The figure, the axes, or None (see ``show`` and ``return_fig``).

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> import spatialfactors as sf
    >>> rng = np.random.default_rng(0)
    >>> d = rng.random((300, 6))
    >>> adata = ad.AnnData(obs={"region_id": np.where(d[:, 0] > 0.6, 5, 7)}, obsm={"X_stanmf": d})
    >>> sf.tl.region_auc(adata, region=5, factors=[0], n_random=40)
    >>> ax = sf.pl.region_auc(adata, show=False)
    >>> bool(ax.lines[0].get_xdata()[0] == adata.uns["region_auc"]["auc"])
    True
    """
    adata = _check_adata(adata, "region_auc", table_key)
    plot = _Plotter("region_auc", figsize=figsize, dpi=dpi, show=show, save=save, return_fig=return_fig, ax=ax)
    _assert_str("key", key)
    _assert_int_range("bins", bins, 1)
    result = sfget.region_auc_result(adata, key)
    null = np.asarray(result["null"]["auc"], dtype=np.float64)
    auc = float(result["auc"])
    names = "+".join(str(p) for p in result["params"]["patterns"])
    region = result["region"]["acronym"]
    fig, ax = plot.axes((4.2, 3.2))
    ax.hist(null, bins=bins, color="0.6", edgecolor="white")
    ax.axvline(auc, color="magenta", ls="--", lw=1.5, label=f"{names}: {auc:.3f}")
    ax.axvline(
        float(np.median(null)), color="0.2", ls=":", lw=1.0, label=f"median of random sets: {np.median(null):.3f}"
    )
    ax.set_xlabel(f"AUC for {region}")
    ax.set_ylabel(f"random sets of {len(result['params']['patterns'])} patterns")
    ax.set_title(f"percentile {float(result['percentile']):.1f}", fontsize=9)
    ax.legend(frameon=False, fontsize=8, loc="upper left")
    return plot.finish(fig, ax)
