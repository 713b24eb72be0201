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
    _save_results,
    _warn_undefined,
)
from spatialfactors.models.genes import (
    assign_patterns,
    dictionary_moments,
    importance_scores,
    n_top_genes,
    rank_genes,
    reconstruction_correlation,
    top_edges,
)
from spatialfactors.tl._pattern_genes import _factorisation, _pattern_index, _pattern_names


def sgcn(
    adata: AnnData,
    *,
    key: str = "stanmf",
    top_fraction: float = 0.0025,
    edge_quantile: float = 0.95,
    patterns: Sequence[int | str] | None = None,
    table_key: str | None = None,
    key_added: str = "sgcn",
    copy: bool = False,
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
        Fraction of the genes that become nodes, in (0, 1].
    edge_quantile
        Quantile of a pattern's pairwise coefficients above which pairs are joined, in [0, 1).
    patterns
        Patterns (0-based indices or names ``'PP1'`` ...) to build networks for; all by default.
    table_key
        Table of a SpatialData input.
    key_added
        Key in ``.uns`` of the results.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None`` or a copy (``copy=True``), with ``.uns[key_added]`` holding

    - ``nodes``: one row per pattern and node: ``pattern``, ``gene``, ``rank`` (1 = most selective),
      ``selectivity`` (the importance score ``r_kj``), ``coefficient`` (``a_kj``), ``assigned`` (the
      pattern of the gene's highest coefficient) and ``degree``;
    - ``edges``: one row per pattern and edge: ``pattern``, ``gene1``, ``gene2``, ``pcc``;
    - ``summary``: per pattern ``n_nodes``, ``n_pairs``, ``n_edges`` and the ``threshold`` coefficient;
    - ``params``.

    Read one network with :func:`spatialfactors.tl.sgcn_graph`.

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
    >>> graph = sf.tl.sgcn_graph(adata, "PP1")
    >>> graph.number_of_nodes(), graph.number_of_edges()
    (10, 3)
    """
    start = time.perf_counter()
    adata = _extract_adata(adata, table_key)
    dictionary, loadings, loadings_key = _factorisation(adata, key)
    _assert_real_range("top_fraction", top_fraction, 0.0, 1.0, low_open=True)
    _assert_real_range("edge_quantile", edge_quantile, 0.0, 1.0)
    if edge_quantile == 1:
        raise ValueError("`edge_quantile` must be >= 0 and < 1, got 1; 0.95 keeps the top 5% of the pairs.")
    _assert_str("key_added", key_added)
    _assert_copy(adata, copy)
    _assert_result_key(adata, key_added, factorisation=False, tool="sf.tl.sgcn")
    n_patterns = loadings.shape[1]
    if isinstance(patterns, str | int | np.integer):
        patterns = [patterns]
    chosen = (
        list(range(n_patterns)) if patterns is None else [_pattern_index(p, n_patterns, "patterns") for p in patterns]
    )
    if not chosen:
        raise ValueError("`patterns` is empty; pass None for all patterns.")
    chosen = list(dict.fromkeys(chosen))
    if not adata.var_names.is_unique:
        raise ValueError("Gene names must be unique to name network nodes; run `adata.var_names_make_unique()`.")
    importance = importance_scores(loadings)
    n_ranked = int(np.isfinite(importance[:, 0]).sum())
    if n_ranked < 2:
        raise ValueError(f"Only {n_ranked} genes have a non-zero loading; a network needs at least 2.")

    n_nodes = n_top_genes(n_ranked, top_fraction)
    # Per pattern: the node correlations with their covariance and the pairs of the upper triangle.
    _assert_fits_memory(
        6 * n_nodes * n_nodes * 8,
        f"Networks of {n_nodes} genes",
        "use a smaller `top_fraction` (the paper: 0.0025)",
    )
    gram, col_sums, n_obs = dictionary_moments(dictionary)
    assigned = assign_patterns(loadings)
    names = _pattern_names(n_patterns)
    genes = np.asarray(adata.var_names, dtype=object)
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
    uns = {
        "nodes": pd.concat(node_frames, ignore_index=True).astype({"pattern": str, "gene": str, "assigned": str}),
        "edges": pd.concat(edge_frames, ignore_index=True).astype({"pattern": str, "gene1": str, "gene2": str}),
        "summary": summary_df,
        "params": {
            "key": key,
            "loadings_key": loadings_key,
            "top_fraction": float(top_fraction),
            "edge_quantile": float(edge_quantile),
            "n_nodes": int(n_nodes),
            "n_patterns": int(n_patterns),
            "patterns": [names[k] for k in chosen],
        },
    }
    target = adata.copy() if copy else adata
    _save_results(target, [("uns", key_added, uns)], start)
    return target if copy else None


def sgcn_graph(adata: AnnData, pattern: int | str, *, key: str = "sgcn", table_key: str | None = None):
    """Return the sGCN of one pattern as a :class:`networkx.Graph`.

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
    Undirected graph whose nodes are genes, in rank order, with attributes ``rank``,
    ``selectivity``, ``coefficient`` and ``assigned``, and whose edges carry ``pcc``.

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> import spatialfactors as sf
    >>> rng = np.random.default_rng(0)
    >>> adata = ad.AnnData(np.zeros((50, 200)), obsm={"X_stanmf": rng.random((50, 2))})
    >>> adata.varm["stanmf_loadings"] = rng.random((200, 2))
    >>> sf.tl.sgcn(adata, top_fraction=0.05)
    >>> graph = sf.tl.sgcn_graph(adata, 0)
    >>> top = adata.uns["sgcn"]["nodes"]["gene"].iloc[0]  # the most selective gene of PP1
    >>> graph.number_of_nodes(), graph.nodes[top]["rank"], sorted(graph.nodes[top])
    (10, 1, ['assigned', 'coefficient', 'rank', 'selectivity'])
    """
    import networkx as nx

    adata = _extract_adata(adata, table_key)
    _assert_str("key", key)
    result = adata.uns.get(key)
    if not isinstance(result, dict) or "edges" not in result or "nodes" not in result:
        raise KeyError(f"No sGCN result under key {key!r}; run `sf.tl.sgcn(adata, key_added={key!r})` first.")
    result = adata.uns[key]
    nodes, edges = result["nodes"], result["edges"]
    built = [str(p) for p in result["params"]["patterns"]]
    n_patterns = int(result["params"]["n_patterns"])
    name = _pattern_names(n_patterns)[_pattern_index(pattern, n_patterns)]
    if name not in built:
        raise ValueError(f"No network for pattern {pattern!r} under key {key!r}; networks exist for {built}.")
    graph = nx.Graph(pattern=name)
    for row in nodes[nodes["pattern"] == name].itertuples(index=False):
        graph.add_node(
            str(row.gene),
            rank=int(row.rank),
            selectivity=float(row.selectivity),
            coefficient=float(row.coefficient),
            assigned=str(row.assigned),
        )
    for row in edges[edges["pattern"] == name].itertuples(index=False):
        graph.add_edge(str(row.gene1), str(row.gene2), pcc=float(row.pcc))
    return graph
