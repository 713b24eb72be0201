"""``sf.tl.pattern_genes``: importance scores and marker genes of every pattern of a factorisation."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from anndata import AnnData

from spatialfactors._validation import (
    _assert_copy,
    _assert_int_range,
    _assert_result_key,
    _assert_str,
    _extract_adata,
    _save_results,
)
from spatialfactors.get import _factorisation, factor_names
from spatialfactors.get._tables import _pattern_genes_df
from spatialfactors.models.genes import assign_patterns, importance_scores, rank_genes

from ._record import _moved, _record


def pattern_genes(
    adata: AnnData,
    *,
    key: str = "stanmf",
    n_genes: int | None = None,
    table_key: str | None = None,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Score the importance of every pattern for every gene and rank marker genes (Fig. 5).

    For every gene ``j`` with coefficients ``a_kj`` on the K patterns (``k = 1 ... K``), the
    importance score of pattern ``k`` is ``r_kj = a_kj / sum_k a_kj``; the gene is assigned to
    the pattern with its highest coefficient (ties: the first). Per pattern, genes are ranked by
    importance, ties (genes loading on one pattern only have ``r = 1``) broken by the larger
    coefficient; the paper's marker genes of a pattern are the top of this ranking (the top three
    in Fig. 5C), and the top ``top_fraction`` of it are the nodes of :func:`spatialfactors.tl.sgcn`.
    Genes whose loadings are all zero have no importance (NaN), no pattern and are not ranked.

    Results, "From PPs to Marker Genes", of :cite:`cahill2024stanmf`. Works on any non-negative
    factorisation with patterns in ``.obsm['X_{key}']`` and loadings in ``.varm['{key}_loadings']``
    (:func:`spatialfactors.tl.stanmf`) or ``.varm['{key}_metagenes']`` (:func:`spatialfactors.tl.spicemix`).
    The scores depend on how the factorisation splits the scale between patterns and loadings (NMF
    leaves it free); they are computed on the stored loadings as they are, as in the paper. The
    loadings are those the run recorded in ``.uns[key]['loadings_key']``; patterns and loadings that
    do not come from the same run (another K, or two kinds of loadings without a record) are refused.

    Parameters
    ----------
    adata
        Annotated data after a factorisation (or a SpatialData with ``table_key``).
    key
        ``key_added`` of the factorisation.
    n_genes
        Genes kept in the ranked tables per pattern; all ranked genes by default.
    table_key
        Table of a SpatialData input.
    key_added
        Prefix of the results; ``key`` by default.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None`` or a copy (``copy=True``), with

    - ``.varm['{key_added}_importance']``: importance scores ``r_kj`` (genes x K; rows sum to one, NaN
      for all-zero genes);
    - ``.uns['{key_added}_pattern_genes']``: ``names``, ``importance`` and ``coefficients``, structured
      arrays with one field per pattern, named by :func:`spatialfactors.get.factor_names` (staNMF's
      ``PP1`` ..., SpiceMix's ``MG1`` ...), and one row per rank, as
      :func:`scanpy.tl.rank_genes_groups` writes them (read one pattern with
      :func:`spatialfactors.get.pattern_genes_df`); ``genes``, one row per gene: assigned ``pattern``
      (categorical, NaN when unassigned), its ``importance`` and ``coefficient`` there, and ``rank``
      among that pattern's assigned genes (1 = best, 0 when unassigned); ``counts``: assigned genes per
      pattern (Fig. 5B), and ``params``.

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> import spatialfactors as sf
    >>> adata = ad.AnnData(np.zeros((4, 3)), obsm={"X_stanmf": np.eye(4)[:, :2]})
    >>> adata.varm["stanmf_loadings"] = np.array([[3.0, 1.0], [0.0, 2.0], [4.0, 0.0]])
    >>> sf.tl.pattern_genes(adata)
    >>> adata.varm["stanmf_importance"][0].tolist()
    [0.75, 0.25]
    >>> sf.get.pattern_genes_df(adata, "PP1")["names"].tolist()
    ['2', '0', '1']
    >>> adata.uns["stanmf_pattern_genes"]["counts"]["n_genes"].tolist()
    [2, 1]
    """
    start = time.perf_counter()
    adata = _extract_adata(adata, table_key)
    _, loadings, loadings_key = _factorisation(adata, key)
    if n_genes is not None:
        _assert_int_range("n_genes", n_genes, 1)
    _assert_str("key_added", key_added, optional=True)
    _assert_copy(adata, copy)
    prefix = key if key_added is None else key_added
    _assert_result_key(adata, f"{prefix}_pattern_genes", factorisation=False, tool="sf.tl.pattern_genes")

    importance = importance_scores(loadings)
    assigned = assign_patterns(loadings)
    n_patterns = loadings.shape[1]
    names = factor_names(adata, key)
    genes = np.asarray(adata.var_names, dtype=object)
    orders = [rank_genes(importance, loadings, k) for k in range(n_patterns)]
    n_ranked = orders[0].size  # the same genes (with a finite score) for every pattern
    n_rows = n_ranked if n_genes is None else min(n_genes, n_ranked)
    tables = {
        "names": np.rec.fromarrays([genes[o[:n_rows]] for o in orders], names=names),
        "importance": np.rec.fromarrays([importance[o[:n_rows], k] for k, o in enumerate(orders)], names=names),
        "coefficients": np.rec.fromarrays([loadings[o[:n_rows], k] for k, o in enumerate(orders)], names=names),
    }

    # Per gene: its pattern and rank among the genes assigned there (Fig. 5A order).
    rank = np.zeros(adata.n_vars, dtype=np.int64)
    for k, order in enumerate(orders):
        mine = order[assigned[order] == k]
        rank[mine] = np.arange(1, mine.size + 1)
    has = assigned >= 0
    rows = np.arange(adata.n_vars)
    per_gene = pd.DataFrame(
        {
            "pattern": pd.Categorical.from_codes(assigned, categories=names),
            "importance": np.where(has, importance[rows, np.maximum(assigned, 0)], np.nan),
            "coefficient": np.where(has, loadings[rows, np.maximum(assigned, 0)], 0.0),
            "rank": rank,
        },
        index=adata.var_names.copy(),
    )
    counts = pd.DataFrame({"n_genes": np.bincount(assigned[has], minlength=n_patterns).astype(np.int64)}, index=names)
    uns = _record(
        "pattern_genes",
        {**tables, "genes": per_gene, "counts": counts},
        {"key": key, "loadings_key": loadings_key, "n_genes": int(n_rows), "n_unassigned": int((~has).sum())},
    )
    target = adata.copy() if copy else adata
    _save_results(
        target, [("varm", f"{prefix}_importance", importance), ("uns", f"{prefix}_pattern_genes", uns)], start
    )
    return target if copy else None


def pattern_genes_df(
    adata: AnnData,
    pattern: int | str,
    *,
    key: str = "stanmf",
    assigned_only: bool = False,
    table_key: str | None = None,
) -> pd.DataFrame:
    """Return the ranked genes of one pattern (deprecated: use :func:`spatialfactors.get.pattern_genes_df`).

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.pattern_genes`.
    pattern
        Pattern index (0-based) or name (``'PP1'`` ...).
    key
        The ``key_added`` (or ``key``) of :func:`spatialfactors.tl.pattern_genes`.
    assigned_only
        Keep only the genes assigned to this pattern.
    table_key
        Table of a SpatialData input.

    Returns
    -------
    What :func:`spatialfactors.get.pattern_genes_df` returns.

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> import spatialfactors as sf
    >>> adata = ad.AnnData(np.zeros((4, 3)), obsm={"X_stanmf": np.eye(4)[:, :2]})
    >>> adata.varm["stanmf_loadings"] = np.array([[3.0, 1.0], [0.0, 2.0], [4.0, 0.0]])
    >>> sf.tl.pattern_genes(adata)
    >>> sf.get.pattern_genes_df(adata, 1)["names"].tolist()  # instead of sf.tl.pattern_genes_df
    ['1', '0', '2']
    """
    _moved("pattern_genes_df")
    return _pattern_genes_df(adata, pattern, key=key, assigned_only=assigned_only, table_key=table_key, what="pattern")
