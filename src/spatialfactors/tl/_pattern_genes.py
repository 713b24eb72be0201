"""``sf.tl.pattern_genes``: importance scores and marker genes of every pattern of a factorisation."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from anndata import AnnData

from spatialfactors._validation import (
    _assert_bool,
    _assert_copy,
    _assert_int_range,
    _assert_result_key,
    _assert_str,
    _extract_adata,
    _get_patterns,
    _is_int,
    _save_results,
)
from spatialfactors.models.genes import assign_patterns, importance_scores, rank_genes

#: Where a factorisation keeps its gene loadings, in order of preference (staNMF, SpiceMix).
_LOADINGS = ("loadings", "metagenes")


def _pattern_names(k: int) -> list[str]:
    return [f"PP{i + 1}" for i in range(k)]


def _factorisation(adata: AnnData, key: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Return the dictionary ``.obsm['X_{key}']`` (obs x K), loadings (genes x K) and their ``.varm`` key."""
    _assert_str("key", key)
    basis = f"X_{key}"
    found = [f"{key}_{suffix}" for suffix in _LOADINGS if f"{key}_{suffix}" in adata.varm]
    missing = ([f"`adata.obsm[{basis!r}]`"] if basis not in adata.obsm else []) + (
        [f"`adata.varm[{key + '_loadings'!r}]` (or `{key + '_metagenes'!r}`)"] if not found else []
    )
    if missing:
        raise KeyError(
            f"{key!r} is not a factorisation result: {' and '.join(missing)} not found. Run "
            f"`sf.tl.stanmf(adata, key_added={key!r})` or `sf.tl.spicemix(adata, key_added={key!r})` first, "
            f"or pass the `key` of one. Available: obsm {sorted(adata.obsm)}, varm {sorted(adata.varm)}."
        )
    loadings_key = _loadings_key(adata, key, found)
    loadings = adata.varm[loadings_key]
    loadings = np.asarray(loadings.toarray() if hasattr(loadings, "toarray") else loadings)
    if loadings.dtype.kind not in "iuf":
        raise TypeError(f"`adata.varm[{loadings_key!r}]` must hold real numbers, got dtype {loadings.dtype}.")
    loadings = loadings.astype(np.float64)
    if loadings.ndim != 2 or loadings.shape[0] != adata.n_vars:
        raise ValueError(f"`adata.varm[{loadings_key!r}]` must be (n_vars, K), got shape {loadings.shape}.")
    if not np.isfinite(loadings).all() or (loadings < 0).any():
        raise ValueError(
            f"`adata.varm[{loadings_key!r}]` must be finite and non-negative: importance scores "
            "a_kj / sum_k a_kj need the loadings of a non-negative factorisation."
        )
    dictionary = _get_patterns(adata, key)
    if dictionary.shape[1] != loadings.shape[1]:
        raise ValueError(
            f"`adata.obsm[{basis!r}]` has {dictionary.shape[1]} patterns but `adata.varm[{loadings_key!r}]` "
            f"has {loadings.shape[1]}; they must come from the same factorisation."
        )
    entry = adata.uns.get(key)
    k = entry.get("k") if isinstance(entry, dict) else None
    if k is not None and _is_int(k) and int(k) != dictionary.shape[1]:
        raise ValueError(
            f"`adata.uns[{key!r}]` records a run with K = {int(k)} but `adata.obsm[{basis!r}]` has "
            f"{dictionary.shape[1]} patterns: they come from different runs. Rerun the factorisation "
            f"(`sf.tl.stanmf(adata, key_added={key!r})` or `sf.tl.spicemix`)."
        )
    return dictionary, loadings, loadings_key


def _loadings_key(adata: AnnData, key: str, found: list[str]) -> str:
    """Return the ``.varm`` key of the loadings of the run that wrote ``.obsm['X_{key}']``.

    A factorisation records it in ``.uns[key]['loadings_key']``; without a record (patterns and
    loadings put there by hand), the only loadings under ``key``. Two candidates without a record
    are ambiguous: one of them is stale.
    """
    entry = adata.uns.get(key)
    recorded = entry.get("loadings_key") if isinstance(entry, dict) else None
    if recorded is not None:
        if not isinstance(recorded, str) or recorded not in adata.varm:
            raise KeyError(
                f"`adata.uns[{key!r}]['loadings_key']` names `adata.varm[{recorded!r}]`, which is missing: the "
                f"loadings of this run were removed. Rerun the factorisation (`sf.tl.stanmf(adata, key_added={key!r})` "
                "or `sf.tl.spicemix`)."
            )
        return recorded
    if len(found) > 1:
        raise ValueError(
            f"Both `adata.varm[{found[0]!r}]` and `adata.varm[{found[1]!r}]` exist and nothing records which one "
            f"belongs to `adata.obsm['X_{key}']`, so one is stale; delete it (e.g. `del adata.varm[{found[1]!r}]`) "
            "or rerun the factorisation."
        )
    return found[0]


def _pattern_index(pattern: int | str, n_patterns: int, what: str = "pattern") -> int:
    """0-based index of a pattern given as an index or as its name ``'PP<k>'`` (1-based)."""
    names = _pattern_names(n_patterns)
    if isinstance(pattern, str):
        if pattern not in names:
            raise ValueError(
                f"`{what}` {pattern!r} is not one of the {n_patterns} patterns ({names[0]} ... {names[-1]})."
            )
        return names.index(pattern)
    if not _is_int(pattern):
        raise TypeError(f"`{what}` must be a pattern index (0-based) or a name such as 'PP1', got {pattern!r}.")
    if not 0 <= pattern < n_patterns:
        raise ValueError(
            f"`{what}` {pattern} is out of range for {n_patterns} patterns (0-based indices 0 ... {n_patterns - 1})."
        )
    return int(pattern)


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
      arrays with one field per pattern (``PP1`` ...) and one row per rank, as
      :func:`scanpy.tl.rank_genes_groups` writes them (read one pattern with
      :func:`spatialfactors.tl.pattern_genes_df`); ``genes``, one row per gene: assigned ``pattern``
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
    >>> sf.tl.pattern_genes_df(adata, "PP1")["names"].tolist()
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
    names = _pattern_names(n_patterns)
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
    uns = {
        **tables,
        "genes": per_gene,
        "counts": counts,
        "params": {
            "key": key,
            "loadings_key": loadings_key,
            "n_genes": int(n_rows),
            "n_unassigned": int((~has).sum()),
        },
    }
    target = adata.copy() if copy else adata
    _save_results(
        target, [("varm", f"{prefix}_importance", importance), ("uns", f"{prefix}_pattern_genes", uns)], start
    )
    return target if copy else None


def _pattern_genes_result(adata: AnnData, key: str) -> dict:
    _assert_str("key", key)
    uns_key = f"{key}_pattern_genes"
    if uns_key not in adata.uns or "names" not in adata.uns[uns_key]:
        raise KeyError(
            f"`adata.uns[{uns_key!r}]` not found; run `sf.tl.pattern_genes(adata, key={key!r})` first "
            "(or pass the `key_added` used there as `key`)."
        )
    return adata.uns[uns_key]


def pattern_genes_df(
    adata: AnnData,
    pattern: int | str,
    *,
    key: str = "stanmf",
    assigned_only: bool = False,
    table_key: str | None = None,
) -> pd.DataFrame:
    """Return the ranked genes of one pattern as a DataFrame, like :func:`scanpy.get.rank_genes_groups_df`.

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.pattern_genes`.
    pattern
        Pattern index (0-based) or name (``'PP1'`` ...).
    key
        The ``key_added`` (or ``key``) of :func:`spatialfactors.tl.pattern_genes`.
    assigned_only
        Keep only the genes assigned to this pattern (its marker genes in Fig. 5A).
    table_key
        Table of a SpatialData input.

    Returns
    -------
    One row per gene, best first: ``names``, ``importance``, ``coefficient`` and ``assigned``
    (whether the gene's highest coefficient is on this pattern).

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> import spatialfactors as sf
    >>> adata = ad.AnnData(np.zeros((4, 3)), obsm={"X_stanmf": np.eye(4)[:, :2]})
    >>> adata.varm["stanmf_loadings"] = np.array([[3.0, 1.0], [0.0, 2.0], [4.0, 0.0]])
    >>> sf.tl.pattern_genes(adata)
    >>> sf.tl.pattern_genes_df(adata, 1)
      names  importance  coefficient  assigned
    0     1        1.00          2.0      True
    1     0        0.25          1.0     False
    2     2        0.00          0.0     False
    """
    adata = _extract_adata(adata, table_key)
    result = _pattern_genes_result(adata, key)
    _assert_bool("assigned_only", assigned_only)
    fields = list(result["names"].dtype.names)
    name = fields[_pattern_index(pattern, len(fields))]
    assigned = result["genes"]["pattern"].astype(object)
    assigned = assigned[~assigned.index.duplicated()]
    names = np.asarray(result["names"][name], dtype=object)
    df = pd.DataFrame(
        {
            "names": names,
            "importance": np.asarray(result["importance"][name], dtype=np.float64),
            "coefficient": np.asarray(result["coefficients"][name], dtype=np.float64),
            "assigned": (assigned.reindex(names) == name).to_numpy(),
        }
    )
    if assigned_only:
        df = df[df["assigned"]].reset_index(drop=True)
    return df
