"""``sf.tl.sgcn``: spatial gene co-expression networks of the patterns of a factorisation."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from scanpy import logging as logg

from spatialfactors._validation import (
    _assert_copy,
    _assert_fits_memory,
    _assert_real_range,
    _assert_result_key,
    _assert_str,
    _extract_adata,
    _renamed,
    _save_results,
    _warn_undefined,
)
from spatialfactors.get import _factorisation, _select_factors, factor_names
from spatialfactors.get._tables import _sgcn_graph
from spatialfactors.models.genes import (
    assign_patterns,
    dictionary_moments,
    importance_scores,
    n_top_genes,
    rank_genes,
    reconstruction_correlation,
    top_edges,
)

from ._record import _moved, _record

#: The paper's node fraction (0.25% of the genes: 11 nodes on the atlas' 4,345 genes) ...
PAPER_TOP_FRACTION = 0.0025
#: ... and the fewest nodes of a default network (a 1,020-gene panel would get 3).
MIN_NODES = 10


def sgcn(
    adata: AnnData,
    *,
    key: str = "stanmf",
    top_fraction: float | None = None,
    edge_quantile: float = 0.95,
    factors: int | str | Sequence[int | str] | None = None,
    table_key: str | None = None,
    key_added: str = "sgcn",
    copy: bool = False,
    patterns: Sequence[int | str] | None = None,
) -> AnnData | None:
    """Build the spatial gene co-expression network (sGCN) of every pattern (Fig. 6).

    Results "From PPs to sGCNs" and Methods "sGCNs" of :cite:`cahill2024stanmf`.

    Nodes: for each pattern ``k``, the genes with the top ``top_fraction`` importance scores
    ``r_kj = a_kj / sum_k a_kj`` (the paper: 0.25%), i.e. the first ``max(2, ceil(top_fraction * n))``
    genes of the ranking of :func:`spatialfactors.tl.pattern_genes` (ties broken by the larger
    coefficient), ``n`` the genes with a non-zero loading (genes whose loadings are all zero are never
    nodes). On the atlas's 4,345 genes: 11 nodes per pattern (the paper reports 10 or 11).

    Edges: the Pearson correlation of the reconstructed images ``x_j = D a_j`` of every pair of nodes,
    kept when it is in the top ``1 - edge_quantile`` of that pattern's pairwise coefficients (the
    paper: top 5%), i.e. at or above their ``edge_quantile`` quantile
    (:func:`spatialfactors.models.genes.top_edges`). Pairs tied at the threshold are all kept: with
    sparse loadings, genes loading on a single pattern have identical images up to scale (PCC 1), and
    when more such pairs exist than the fraction allows, they all become edges (``summary`` reports
    the count).

    The correlations follow in closed form from the dictionary's Gram matrix ``D^T D``, its column
    sums and the loadings (:func:`spatialfactors.models.genes.reconstruction_correlation`); the
    obs x genes reconstruction is never formed.

    Parameters
    ----------
    adata
        Annotated data after a factorisation (patterns ``.obsm['X_{key}']``, loadings
        ``.varm['{key}_loadings']`` or ``.varm['{key}_metagenes']``), with unique gene names.
    key
        ``key_added`` of the factorisation.
    top_fraction
        Fraction of the genes that become nodes, in (0, 1]. ``None`` (default): the paper's
        0.25%, but at least ``MIN_NODES`` (10) genes, so that a 1,000-gene panel gets a network
        of the size the paper's 4,345-gene atlas gets (11 nodes) instead of 3 nodes.
    edge_quantile
        Quantile of a pattern's pairwise coefficients above which pairs are joined, in [0, 1).
    factors
        Patterns (0-based indices or names from :func:`spatialfactors.get.factor_names`, ``'PP1'`` ...) to
        build networks for; all by default.
    table_key
        Table of a SpatialData input.
    key_added
        Key in ``.uns`` of the results.
    copy
        Return a modified copy instead of writing into ``adata``.
    patterns
        Deprecated name of ``factors``.

    Returns
    -------
    ``None`` or a copy (``copy=True``), with ``.uns[key_added]`` holding

    - ``nodes``: one row per pattern and node: ``pattern``, ``gene``, ``rank`` (1 = most selective),
      ``selectivity`` (the importance score ``r_kj``), ``coefficient`` (``a_kj``), ``assigned`` (the
      pattern of the gene's highest coefficient) and ``degree``;
    - ``edges``: one row per pattern and edge: ``pattern``, ``gene1``, ``gene2``, ``pcc``;
    - ``summary``: per pattern ``n_nodes``, ``n_pairs``, ``n_edges`` and the ``threshold`` coefficient;
    - ``params``.

    Patterns are named by :func:`spatialfactors.get.factor_names` (staNMF's ``PP1`` ..., SpiceMix's
    ``MG1`` ...). Read one network with :func:`spatialfactors.get.sgcn_graph`.

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> import spatialfactors as sf
    >>> rng = np.random.default_rng(0)
    >>> adata = ad.AnnData(np.zeros((100, 400)), obsm={"X_stanmf": rng.random((100, 3))})
    >>> adata.varm["stanmf_loadings"] = rng.gamma(0.5, 1.0, (400, 3))
    >>> sf.tl.sgcn(adata, top_fraction=0.025)
    >>> adata.uns["sgcn"]["summary"][["n_nodes", "n_pairs", "n_edges"]].iloc[0].tolist()
    [10, 45, 3]
    >>> graph = sf.get.sgcn_graph(adata, "PP1")
    >>> graph.number_of_nodes(), graph.number_of_edges()
    (10, 3)
    """
    start = time.perf_counter()
    adata = _extract_adata(adata, table_key)
    dictionary, loadings, loadings_key = _factorisation(adata, key)
    if top_fraction is not None:
        _assert_real_range("top_fraction", top_fraction, 0.0, 1.0, low_open=True)
    _assert_real_range("edge_quantile", edge_quantile, 0.0, 1.0)
    if edge_quantile == 1:
        raise ValueError("`edge_quantile` must be >= 0 and < 1, got 1; 0.95 keeps the top 5% of the pairs.")
    _assert_str("key_added", key_added)
    _assert_copy(adata, copy)
    _assert_result_key(adata, key_added, factorisation=False, tool="sf.tl.sgcn")
    n_patterns = loadings.shape[1]
    names = factor_names(adata, key)
    what = "factors" if patterns is None else "patterns"
    factors = _renamed("patterns", "factors", patterns, factors, where="sf.tl.sgcn")
    chosen = list(dict.fromkeys(_select_factors(factors, names, what)))
    if not adata.var_names.is_unique:
        raise ValueError("Gene names must be unique to name network nodes; run `adata.var_names_make_unique()`.")
    importance = importance_scores(loadings)
    n_ranked = int(np.isfinite(importance[:, 0]).sum())
    if n_ranked < 2:
        raise ValueError(f"Only {n_ranked} genes have a non-zero loading; a network needs at least 2.")

    if top_fraction is None:
        n_nodes = n_top_genes(n_ranked, PAPER_TOP_FRACTION, minimum=MIN_NODES)
    else:
        n_nodes = n_top_genes(n_ranked, top_fraction)
    # Per pattern: the node correlations with their covariance and the pairs of the upper triangle.
    _assert_fits_memory(
        6 * n_nodes * n_nodes * 8,
        f"Networks of {n_nodes} genes",
        "use a smaller `top_fraction` (the paper: 0.0025)",
    )
    node_frames, edge_frames, summary, constant = _networks(
        dictionary,
        loadings,
        importance,
        chosen,
        names,
        np.asarray(adata.var_names, dtype=object),
        n_nodes,
        edge_quantile,
    )
    summary_df = pd.DataFrame(summary, index=[names[k] for k in chosen])
    if constant:
        _warn_undefined(
            f"The correlation of {len(constant)} node(s) with the others (e.g. {constant[:3]})",
            "their reconstructed images are constant over the obs; they get no edges",
            None,
        )
    logg.info(
        f"sgcn: {n_nodes} nodes per pattern, {int(summary_df['n_edges'].sum())} edges over {len(chosen)} patterns"
    )
    uns = _record(
        "sgcn",
        {
            "nodes": pd.concat(node_frames, ignore_index=True).astype({"pattern": str, "gene": str, "assigned": str}),
            "edges": pd.concat(edge_frames, ignore_index=True).astype({"pattern": str, "gene1": str, "gene2": str}),
            "summary": summary_df,
        },
        {
            "key": key,
            "loadings_key": loadings_key,
            "top_fraction": None if top_fraction is None else float(top_fraction),
            "edge_quantile": float(edge_quantile),
            "n_nodes": int(n_nodes),
            "n_patterns": int(n_patterns),
            "patterns": [names[k] for k in chosen],
            "factor_names": names,
        },
    )
    target = adata.copy() if copy else adata
    _save_results(target, [("uns", key_added, uns)], start)
    return target if copy else None


def _networks(dictionary, loadings, importance, chosen, names, genes, n_nodes, edge_quantile):
    """Build the network of every chosen pattern: node and edge tables, a summary row, and constant nodes."""
    gram, col_sums, n_obs = dictionary_moments(dictionary)
    assigned = assign_patterns(loadings)
    node_frames, edge_frames, summary, constant = [], [], [], []
    for k in chosen:
        nodes = rank_genes(importance, loadings, k)[:n_nodes]
        corr = reconstruction_correlation(gram, col_sums, n_obs, loadings[nodes])
        rows, cols, threshold = top_edges(corr, edge_quantile)
        constant += [f"{names[k]}: {genes[j]}" for j in nodes[np.isnan(np.diag(corr))]]
        degree = np.bincount(np.r_[rows, cols], minlength=nodes.size)
        node_frames.append(
            pd.DataFrame(
                {
                    "pattern": names[k],
                    "gene": genes[nodes],
                    "rank": np.arange(1, nodes.size + 1),
                    "selectivity": importance[nodes, k],
                    "coefficient": loadings[nodes, k],
                    "assigned": np.asarray(names, dtype=object)[assigned[nodes]],
                    "degree": degree.astype(np.int64),
                }
            )
        )
        edge_frames.append(
            pd.DataFrame(
                {"pattern": names[k], "gene1": genes[nodes[rows]], "gene2": genes[nodes[cols]], "pcc": corr[rows, cols]}
            )
        )
        summary.append(
            {
                "n_nodes": int(nodes.size),
                "n_pairs": int(nodes.size * (nodes.size - 1) // 2),
                "n_edges": int(rows.size),
                "threshold": threshold,
            }
        )
    return node_frames, edge_frames, summary, constant


def sgcn_graph(adata: AnnData, pattern: int | str, *, key: str = "sgcn", table_key: str | None = None):
    """Return the sGCN of one pattern (deprecated: use :func:`spatialfactors.get.sgcn_graph`).

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.sgcn`.
    pattern
        Pattern index (0-based) or name (``'PP1'`` ...).
    key
        ``key_added`` of :func:`spatialfactors.tl.sgcn`.
    table_key
        Table of a SpatialData input.

    Returns
    -------
    What :func:`spatialfactors.get.sgcn_graph` returns.

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> import spatialfactors as sf
    >>> rng = np.random.default_rng(0)
    >>> adata = ad.AnnData(np.zeros((50, 200)), obsm={"X_stanmf": rng.random((50, 2))})
    >>> adata.varm["stanmf_loadings"] = rng.random((200, 2))
    >>> sf.tl.sgcn(adata, top_fraction=0.05)
    >>> sf.get.sgcn_graph(adata, 0).number_of_nodes()  # instead of sf.tl.sgcn_graph
    10
    """
    _moved("sgcn_graph")
    return _sgcn_graph(adata, pattern, key=key, table_key=table_key, what="pattern")
