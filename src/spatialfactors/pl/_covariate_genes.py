"""Expression against a per-cell covariate for the genes of ``sf.tl.covariate_genes`` (the paper's Fig. 4f)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from anndata import AnnData
from matplotlib.figure import Figure

from spatialfactors import get as sfget
from spatialfactors._validation import _assert_int_range

from ._base import _check_adata, _doc_show, _Plotter


@_doc_show
def covariate_genes(
    adata: AnnData,
    key: str = "covariate_genes",
    *,
    genes: Sequence[str] | None = None,
    n_genes: int = 6,
    ncols: int = 3,
    size: float = 8.0,
    figsize: tuple[float, float] | None = None,
    dpi: float | None = None,
    table_key: str | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    return_fig: bool = False,
) -> Figure | list | None:
    """Scatter of each gene's expression against the covariate, with the fitted line (the paper's Fig. 4f, S6b).

    One panel per gene, titled with the gene, its corrected p-value (``q``) and an asterisk
    when it is significant, as in the paper.

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.covariate_genes`.
    key
        ``key_added`` of that call.
    genes
        Genes to draw (they must have been tested); by default the ``n_genes`` with the
        smallest ``q``.
    n_genes
        Number of genes drawn when ``genes`` is not given.
    {doc_ncols}
    size
        Marker size.
    {doc_show}

    Returns
    -------
    The figure, the grid of axes, or None (see ``show`` and ``return_fig``).

    Examples
    --------
    >>> import spatialfactors as sf
    >>> adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=300)
    >>> sf.tl.covariate_genes(adata, basis="X_true", factors=(4, 5), groupby="cell_type", groups="eL2")
    >>> fig = sf.pl.covariate_genes(adata, n_genes=3, return_fig=True)
    """
    adata = _check_adata(adata, "covariate_genes", table_key)
    plot = _Plotter(
        "covariate_genes", figsize=figsize, dpi=dpi, show=show, save=save, return_fig=return_fig, ncols=ncols
    )
    record = sfget.covariate_genes_result(adata, key)
    table = record["table"].set_index("gene")
    if genes is None:
        _assert_int_range("n_genes", n_genes, 1)
        chosen = list(table.index[:n_genes])
    else:
        chosen = [genes] if isinstance(genes, str) else list(genes)
        missing = [g for g in chosen if g not in table.index]
        if missing or not chosen:
            raise KeyError(
                f"`genes` {missing[:5] or '[]'} were not tested under {key!r}; tested: {list(table.index)[:10]}."
            )
    x = adata.obs[f"{key}_covariate"].to_numpy(dtype=np.float64)
    cells = np.flatnonzero(np.isfinite(x))
    layer = sfget.params(adata, key).get("layer")
    matrix = adata.layers[layer] if layer else adata.X
    cols = adata.var_names.get_indexer(chosen)
    y = matrix[cells][:, cols]
    y = y.toarray() if sp.issparse(y) else np.asarray(y, dtype=np.float64)
    x = x[cells]

    n_cols = min(ncols, len(chosen))
    n_rows = -(-len(chosen) // n_cols)
    fig, axes = plot.grid(n_rows, n_cols, (2.8, 2.4))
    grid = np.linspace(x.min(), x.max(), 2)
    for i, gene in enumerate(chosen):
        ax = axes[i // n_cols][i % n_cols]
        row = table.loc[gene]
        ax.scatter(x, y[:, i], s=size, color="0.3", alpha=0.6, linewidths=0)
        ax.plot(grid, row["intercept"] + row["slope"] * grid, color="tab:red", lw=1.5)
        ax.set_title(f"{gene}  q = {row['q']:.2g}{'*' if row['significant'] else ''}", fontsize=9)
        if i // n_cols == n_rows - 1:
            ax.set_xlabel(record.get("covariate", "covariate"), fontsize=8)
        if i % n_cols == 0:
            ax.set_ylabel("expression")
    for j in range(len(chosen), n_rows * n_cols):
        axes[j // n_cols][j % n_cols].set_visible(False)
    return plot.finish(fig, axes)
