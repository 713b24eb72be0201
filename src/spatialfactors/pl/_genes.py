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
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from spatialfactors._validation import _assert_bool, _assert_int_range, _assert_real_range, _assert_str
from spatialfactors.io._volume import _grid, to_volume
from spatialfactors.models.genes import importance_scores
from spatialfactors.pl._base import (
    PLANES,
    _check_adata,
    _chosen_patterns,
    _doc_show,
    _finish,
    _max_projection,
    _new_axes,
    _new_grid,
)
from spatialfactors.tl._pattern_genes import _factorisation, _pattern_genes_result, pattern_genes_df
from spatialfactors.tl._sgcn import sgcn_graph


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
    figsize, dpi
        Figure size and resolution.
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
    result = _pattern_genes_result(adata, key)
    _assert_bool("counts", counts)
    if vmax is not None:
        _assert_real_range("vmax", vmax, 0.0, low_open=True)
    if values not in ("coefficients", "importance"):
        raise ValueError(f"`values` must be 'coefficients' or 'importance', got {values!r}.")
    if ax is not None and counts:
        raise ValueError("`ax` takes the heatmap alone; pass `counts=False` with it.")
    params = result["params"]
    _, loadings, _ = _factorisation(adata, params["key"])
    genes = result["genes"]
    names = list(result["counts"].index)
    n_patterns = len(names)
    # Fig. 5A order: by assigned pattern, then by rank (importance) within it.
    code = genes["pattern"].cat.codes.to_numpy()
    keep = np.flatnonzero(code >= 0)
    order = keep[np.lexsort((genes["rank"].to_numpy()[keep], code[keep]))]
    matrix = (loadings[order] if values == "coefficients" else importance_scores(loadings[order])).T
    top = vmax if vmax is not None else float(np.nanpercentile(matrix, 99)) if matrix.size else 1.0

    if counts:
        fig, axes = plt.subplots(
            1,
            2,
            figsize=figsize or (9.0, 0.3 * n_patterns + 1.8),
            dpi=dpi,
            sharey=True,
            gridspec_kw={"width_ratios": [5, 1]},
            layout="constrained",
        )
        ax, bar_ax = axes
    else:
        fig, ax = _new_axes(ax, figsize=figsize or (8.0, 0.3 * n_patterns + 1.8), dpi=dpi)
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
        return _finish(fig, ax, show=show, save=save, return_fig=return_fig)
    n_genes = result["counts"]["n_genes"].to_numpy()
    bar_ax.barh(np.arange(n_patterns), n_genes, color="C3")
    bar_ax.set_xlabel("assigned genes")
    bar_ax.tick_params(axis="y", left=False)
    return _finish(fig, [ax, bar_ax], show=show, save=save, return_fig=return_fig)


def _expression(adata: AnnData, gene: str, layer: str | None) -> np.ndarray:
    idx = adata.var_names.get_loc(gene)
    x = adata.X if layer is None else adata.layers[layer]
    col = x[:, idx]
    col = col.toarray() if sp.issparse(col) else np.asarray(col)
    return np.asarray(col, dtype=np.float64).ravel()


@_doc_show
def pattern_with_genes(
    adata: AnnData,
    patterns: int | str | Sequence[int | str] | None = None,
    *,
    key: str = "stanmf",
    n_genes: int = 3,
    plane: Literal["coronal", "sagittal", "horizontal"] = "horizontal",
    layer: str | None = None,
    reconstructed: bool = False,
    library_key: str | None = None,
    library: str | None = None,
    spatial_key: str = "spatial",
    cmap: str = "Reds",
    gene_cmap: str = "copper",
    figsize: tuple[float, float] | None = None,
    dpi: float | None = None,
    table_key: str | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
) -> Figure | list | None:
    """Each pattern beside its top marker genes (Fig. 5C).

    One row per pattern: the pattern, then the expression of its ``n_genes`` best-ranked genes
    (:func:`spatialfactors.tl.pattern_genes`). Voxel data (``.uns['aba']``) are shown as maximum
    projections onto ``plane`` (the paper: horizontal); cells as a scatter of ``.obsm[spatial_key]``.

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.pattern_genes`.
    patterns
        Patterns (0-based indices or names ``'PP1'``); all by default.
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
        Colour maps of the patterns and of the genes (the paper: red and copper).
    figsize, dpi
        Figure size and resolution.
    {doc_show}

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
    >>> len(axes), len(axes[0]), axes[0][1].get_title(loc="left") == sf.tl.pattern_genes_df(adata, 0)["names"][0]
    (2, 3, True)
    """
    adata = _check_adata(adata, "pattern_with_genes", table_key)
    result = _pattern_genes_result(adata, key)
    dictionary, loadings, _ = _factorisation(adata, result["params"]["key"])
    n_patterns = loadings.shape[1]
    chosen = _chosen_patterns(patterns, n_patterns)
    _assert_int_range("n_genes", n_genes, 1)
    _assert_bool("reconstructed", reconstructed)
    if layer is not None and layer not in adata.layers:
        raise KeyError(f"Layer {layer!r} not found in `adata.layers`; available: {sorted(adata.layers)}.")
    if layer is None and adata.X is None and not reconstructed:
        raise ValueError("`adata.X` is empty: pass `layer=` with the expression, or `reconstructed=True`.")
    voxels = "aba" in adata.uns
    if voxels:
        if plane not in PLANES:
            raise ValueError(f"`plane` must be one of {list(PLANES)}, got {plane!r}.")
        _grid(adata)
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

    def draw(ax: Axes, vec: np.ndarray, colours: str) -> None:
        if voxels:
            ax.imshow(_max_projection(to_volume(adata, vec), plane), cmap=colours, interpolation="nearest")
        else:
            ax.scatter(*xy.T, c=vec[select], s=max(2.0, 4000.0 / select.sum()), cmap=colours, linewidths=0)
            ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])

    fig, axes = _new_grid(len(chosen), 1 + n_genes, panel_size=(2.2, 1.9), figsize=figsize, dpi=dpi)
    for row, k in enumerate(chosen):
        draw(axes[row][0], np.asarray(dictionary[:, k], dtype=np.float64), cmap)
        axes[row][0].set_title(f"PP{k + 1}", fontsize=9)
        top = pattern_genes_df(adata, k, key=key)["names"].head(n_genes).tolist()
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
            ax.set_title(gene, fontsize=9, loc="left")
    return _finish(fig, axes, show=show, save=save, return_fig=return_fig)


@_doc_show
def sgcn(
    adata: AnnData,
    pattern: int | str,
    *,
    key: str = "sgcn",
    layout: Literal["circular", "spring", "kamada_kawai"] = "circular",
    node_cmap: str = "Reds",
    edge_cmap: str = "viridis",
    node_size: float = 500.0,
    font_size: float = 7.0,
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
        Node marker area and gene label size.
    seed
        Seed of the spring layout.
    ax, figsize, dpi
        Axes to draw into, or the size of a new figure.
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
    import networkx as nx

    if layout not in ("spring", "circular", "kamada_kawai"):
        raise ValueError(f"`layout` must be 'circular', 'spring' or 'kamada_kawai', got {layout!r}.")
    _assert_real_range("node_size", node_size, 0.0)
    _assert_real_range("font_size", font_size, 0.0)
    _assert_int_range("seed", seed, 0)
    graph = sgcn_graph(adata, pattern, key=key)
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
    fig, ax = _new_axes(ax, figsize=figsize or (5.0, 4.2), dpi=dpi)
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
        node_size=node_size,
        edgecolors="0.3",
        ax=ax,
    )
    edge_norm = Normalize(
        vmin=float(pcc.min()) if pcc.size else 0.0, vmax=float(pcc.max()) + (1e-9 if pcc.size else 1.0)
    )
    colours = plt.get_cmap(edge_cmap)(edge_norm(pcc)) if pcc.size else "0.5"
    lines = nx.draw_networkx_edges(graph, pos, edgelist=edges, edge_color=colours, width=2.5, ax=ax)
    if pcc.size:  # the collection also carries its values and scale (for the colour bar and for readers)
        lines.set_array(pcc)
        lines.set_cmap(edge_cmap)
        lines.set_norm(edge_norm)
    nx.draw_networkx_labels(graph, pos, font_size=font_size, ax=ax)
    ax.margins(0.15)  # room for the node markers and labels at the rim
    fig.colorbar(drawn, ax=ax, label="selectivity", shrink=0.6, pad=0.02, location="right")
    edge_bar = fig.colorbar(
        lines if pcc.size else ScalarMappable(norm=edge_norm, cmap=edge_cmap),
        ax=ax,
        label="PCC",
        shrink=0.6,
        pad=0.02,
        location="bottom",
    )
    edge_bar.formatter.set_useOffset(False)  # PCCs near 1 would otherwise read as an offset
    edge_bar.ax.locator_params(nbins=3)
    edge_bar.ax.tick_params(labelrotation=20)
    ax.set_title(f"{graph.graph['pattern']}: {len(nodes)} genes, {len(edges)} edges", fontsize=9)
    ax.set_axis_off()
    return _finish(fig, ax, show=show, save=save, return_fig=return_fig)


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
    ax, figsize, dpi
        Axes to draw into, or the size of a new figure.
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
    >>> sf.tl.region_auc(adata, region=5, patterns=[0], n_random=40)
    >>> ax = sf.pl.region_auc(adata, show=False)
    >>> bool(ax.lines[0].get_xdata()[0] == adata.uns["region_auc"]["auc"])
    True
    """
    adata = _check_adata(adata, "region_auc", table_key)
    _assert_str("key", key)
    _assert_int_range("bins", bins, 1)
    if not isinstance(adata.uns.get(key), dict) or "null" not in adata.uns[key] or "auc" not in adata.uns[key]:
        raise KeyError(
            f"No region AUC result under key {key!r}; run `sf.tl.region_auc(adata, key_added={key!r})` first."
        )
    result = adata.uns[key]
    null = np.asarray(result["null"]["auc"], dtype=np.float64)
    auc = float(result["auc"])
    names = "+".join(str(p) for p in result["params"]["patterns"])
    region = result["region"]["acronym"]
    fig, ax = _new_axes(ax, figsize=figsize or (4.2, 3.2), dpi=dpi)
    ax.hist(null, bins=bins, color="0.6", edgecolor="white")
    ax.axvline(auc, color="magenta", ls="--", lw=1.5, label=f"{names}: {auc:.3f}")
    ax.axvline(
        float(np.median(null)), color="0.2", ls=":", lw=1.0, label=f"median of random sets: {np.median(null):.3f}"
    )
    ax.set_xlabel(f"AUC for {region}")
    ax.set_ylabel(f"random sets of {len(result['params']['patterns'])} patterns")
    ax.set_title(f"percentile {float(result['percentile']):.1f}", fontsize=9)
    ax.legend(frameon=False, fontsize=8, loc="upper left")
    return _finish(fig, ax, show=show, save=save, return_fig=return_fig)
