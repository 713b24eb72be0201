"""Tables and networks the tools stored, read back as DataFrames and graphs (like :mod:`scanpy.get`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from spatialfactors._validation import _assert_bool, _assert_str, _extract_adata

from ._factors import _names, _select_factors, factor_names
from ._registry import KINDS, _kind_of, _plain, _result


def params(adata: AnnData, key: str = "stanmf", *, table_key: str | None = None) -> dict:
    """Return the parameters a tool recorded in ``.uns[key]['params']``, with ``None`` restored.

    Tools leave parameters that were ``None`` out of their record (an .h5ad file cannot store
    ``None``); this puts them back, and returns every value as plain Python (lists, ints, floats,
    strings, bools), so that the parameters read the same before and after
    :func:`anndata.AnnData.write_h5ad` / :func:`anndata.read_h5ad`.

    Parameters
    ----------
    adata
        Annotated data after a tool (or a SpatialData with ``table_key``).
    key
        The ``.uns`` key of the tool's record: its ``key_added`` (``'{key}_pattern_genes'`` for
        :func:`spatialfactors.tl.pattern_genes`).
    table_key
        Table of a SpatialData input.

    Returns
    -------
    Parameter name -> value.

    Examples
    --------
    >>> import squidpy as sq
    >>> import spatialfactors as sf
    >>> adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=200)
    >>> sq.gr.spatial_neighbors_delaunay(adata)
    >>> sf.tl.spicemix(adata, 4, max_iter=2)
    >>> p = sf.get.params(adata, "spicemix")
    >>> p["n_factors"], p["library_key"], p["max_distance"]
    ([4], None, None)
    """
    adata = _extract_adata(adata, table_key)
    _assert_str("key", key)
    record = adata.uns.get(key)
    if not isinstance(record, dict) or not isinstance(record.get("params"), dict):
        raise KeyError(
            f"No tool record with parameters under key {key!r} (`adata.uns[{key!r}]['params']`); run the tool first "
            f"(e.g. `sf.tl.stanmf(adata, key_added={key!r})`), or pass the `key_added` you used as `key=`."
        )
    recorded = _plain(dict(record["params"]))
    kind = _kind_of(adata, key)
    names = KINDS[kind].params if kind is not None else ()
    out = {name: recorded.pop(name, None) for name in names}
    out.update(recorded)
    return out


def instability_df(adata: AnnData, key: str = "stanmf", *, table_key: str | None = None) -> pd.DataFrame:
    """Return the instability table of a sweep over K (:func:`spatialfactors.tl.stanmf` or ``tl.spicemix``).

    Parameters
    ----------
    adata
        Annotated data after a sweep over K (or a SpatialData with ``table_key``).
    key
        ``key_added`` of the factorisation.
    table_key
        Table of a SpatialData input.

    Returns
    -------
    One row per method and K: ``method`` (staNMF only: ``'nmf'``, ``'pca'``), ``K``, ``mean``, ``std``,
    ``n_replicates`` and the other recorded columns.

    Examples
    --------
    >>> import spatialfactors as sf
    >>> adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=200)
    >>> sf.tl.stanmf(adata, n_factors=range(6, 8), n_replicates=3, pca=False)
    >>> sf.get.instability_df(adata)["K"].tolist()
    [6, 7]
    """
    adata = _extract_adata(adata, table_key)
    kind = "spicemix" if _kind_of(adata, key) == "spicemix" else "stanmf"
    return _result(adata, key, kind, "instability").copy()


def history_df(adata: AnnData, key: str = "spicemix", *, table_key: str | None = None) -> pd.DataFrame:
    """Return SpiceMix's record per iteration (objective, effective number of metagenes, ...).

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.spicemix` (or a SpatialData with ``table_key``).
    key
        ``key_added`` of :func:`spatialfactors.tl.spicemix`.
    table_key
        Table of a SpatialData input.

    Returns
    -------
    One row per iteration: ``iteration``, ``objective``, ``effective_metagenes``, ... as
    :func:`spatialfactors.tl.spicemix` documents them.

    Examples
    --------
    >>> import squidpy as sq
    >>> import spatialfactors as sf
    >>> adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=200)
    >>> sq.gr.spatial_neighbors_delaunay(adata)
    >>> sf.tl.spicemix(adata, 4, max_iter=2)
    >>> sf.get.history_df(adata)["iteration"].tolist()
    [0, 1, 2]
    """
    adata = _extract_adata(adata, table_key)
    history = _result(adata, key, "spicemix").get("history")
    if not isinstance(history, pd.DataFrame) or not {"iteration", "objective"} <= set(history.columns):
        raise KeyError(
            f"`adata.uns[{key!r}]['history']` (a table with `iteration` and `objective`) not found; rerun "
            f"`sf.tl.spicemix(adata, key_added={key!r})`."
        )
    return history.copy()


def affinity_df(adata: AnnData, key: str = "spicemix", *, table_key: str | None = None) -> pd.DataFrame:
    """Return SpiceMix's affinity between metagenes as a named K x K table.

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.spicemix` (or a SpatialData with ``table_key``).
    key
        ``key_added`` of :func:`spatialfactors.tl.spicemix`.
    table_key
        Table of a SpatialData input.

    Returns
    -------
    The affinity ``Sigma^-1`` (K x K), rows and columns named by :func:`~spatialfactors.get.factor_names` (``MG1`` ...).

    Examples
    --------
    >>> import squidpy as sq
    >>> import spatialfactors as sf
    >>> adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=200)
    >>> sq.gr.spatial_neighbors_delaunay(adata)
    >>> sf.tl.spicemix(adata, 3, max_iter=2)
    >>> list(sf.get.affinity_df(adata).columns)
    ['MG1', 'MG2', 'MG3']
    """
    adata = _extract_adata(adata, table_key)
    s = np.asarray(_result(adata, key, "spicemix", "affinity"))
    if s.ndim != 2 or s.shape[0] != s.shape[1] or s.dtype.kind not in "iuf" or not np.isfinite(s).all():
        raise ValueError(
            f"`adata.uns[{key!r}]['affinity']` must be a finite square matrix, got shape {s.shape}; rerun "
            f"`sf.tl.spicemix(adata, key_added={key!r})`."
        )
    names = factor_names(adata, key) if f"X_{key}" in adata.obsm else []
    if len(names) != s.shape[0]:
        names = _names("MG", s.shape[0])
    return pd.DataFrame(s.astype(np.float64), index=names, columns=names)


def link_regions_df(
    adata: AnnData,
    key: str = "link_regions",
    *,
    n_regions: int | None = None,
    table_key: str | None = None,
) -> pd.DataFrame:
    """Return the region set linked to every factor by :func:`spatialfactors.tl.link_regions`.

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.link_regions` (or a SpatialData with ``table_key``).
    key
        ``key_added`` of :func:`spatialfactors.tl.link_regions`.
    n_regions
        The best set of this many regions for every factor; ``None``: the selected set.
    table_key
        Table of a SpatialData input.

    Returns
    -------
    One row per factor (index: its name): ``n_regions``, ``score``, ``acronyms`` (joined by ``' + '``),
    ``region_1`` ... (structure ids, 0 when unused), ``search`` and ``selected``.

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> import spatialfactors as sf
    >>> mask = np.ones((1, 2, 3), dtype=bool)
    >>> labels = np.array([[[2, 2, 3], [3, 4, 4]]])
    >>> adata = ad.AnnData(np.zeros((6, 1)), obs={"region_id": labels[mask]})
    >>> adata.uns["aba"] = {"grid_shape": (1, 2, 3), "spacing": 1.0, "mask": mask}
    >>> adata.obsm["X_stanmf"] = np.stack([labels[mask] == 2, labels[mask] == 3], axis=1).astype(float)
    >>> sf.tl.link_regions(adata, max_regions=1)
    >>> sf.get.link_regions_df(adata)[["acronyms", "score"]]
        acronyms  score
    PP1        2    1.0
    PP2        3    1.0
    """
    adata = _extract_adata(adata, table_key)
    best = _result(adata, key, "link_regions", "best")
    if n_regions is None:
        rows = best[best["selected"].astype(bool)]
    else:
        sizes = sorted(set(best["n_regions"].astype(int)))
        if isinstance(n_regions, bool) or n_regions not in sizes:
            raise ValueError(f"`n_regions` must be one of {sizes}, got {n_regions!r}.")
        rows = best[best["n_regions"] == n_regions]
    rows = rows.set_index("pattern")
    rows.index = rows.index.astype(str)
    rows.index.name = None
    return rows.copy()


def hmrf_labels_df(adata: AnnData, key: str = "hmrf", *, table_key: str | None = None) -> pd.DataFrame:
    """Return the domain labels of every ``beta`` of the sweep of :func:`spatialfactors.tl.hmrf_domains`.

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.hmrf_domains` (or a SpatialData with ``table_key``).
    key
        ``key_added`` of :func:`spatialfactors.tl.hmrf_domains`.
    table_key
        Table of a SpatialData input.

    Returns
    -------
    One row per obs, one column per ``beta`` of the sweep (named ``f"{beta:g}"``): the labels of the
    best number of domains at that ``beta``.

    Examples
    --------
    >>> import squidpy as sq
    >>> import spatialfactors as sf
    >>> adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=200)
    >>> sq.gr.spatial_neighbors_delaunay(adata)
    >>> sf.tl.hmrf_domains(adata, "X_true", 4, beta=[0.0, 1.0])
    >>> list(sf.get.hmrf_labels_df(adata).columns)
    ['0', '1']
    """
    adata = _extract_adata(adata, table_key)
    return _result(adata, key, "hmrf_domains", "labels").copy()


def covariate_genes_df(adata: AnnData, key: str = "covariate_genes", *, table_key: str | None = None) -> pd.DataFrame:
    """Return the regression of every tested gene on the covariate of :func:`spatialfactors.tl.covariate_genes`.

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.covariate_genes` (or a SpatialData with ``table_key``).
    key
        ``key_added`` of :func:`spatialfactors.tl.covariate_genes`.
    table_key
        Table of a SpatialData input.

    Returns
    -------
    One row per tested gene, sorted by ``q``: ``gene``, ``slope``, ``intercept``, ``r``, ``p``, ``q``,
    ``significant`` and ``fraction``.

    Examples
    --------
    >>> import spatialfactors as sf
    >>> adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=300)
    >>> sf.tl.covariate_genes(adata, basis="X_true", factors=(4, 5), groupby="cell_type", groups="eL2")
    >>> list(sf.get.covariate_genes_df(adata).columns[:3])
    ['gene', 'slope', 'intercept']
    """
    adata = _extract_adata(adata, table_key)
    return _result(adata, key, "covariate_genes", "table").copy()


def pattern_genes_df(
    adata: AnnData,
    factor: int | str,
    *,
    key: str = "stanmf",
    assigned_only: bool = False,
    table_key: str | None = None,
) -> pd.DataFrame:
    """Return the ranked genes of one factor as a DataFrame, like :func:`scanpy.get.rank_genes_groups_df`.

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.pattern_genes` (or a SpatialData with ``table_key``).
    factor
        Factor index (0-based) or name (``'PP1'`` ..., see :func:`~spatialfactors.get.factor_names`).
    key
        The ``key_added`` (or ``key``) of :func:`spatialfactors.tl.pattern_genes`.
    assigned_only
        Keep only the genes assigned to this factor (its marker genes in Fig. 5A).
    table_key
        Table of a SpatialData input.

    Returns
    -------
    One row per gene, best first: ``names``, ``importance``, ``coefficient`` and ``assigned``
    (whether the gene's highest coefficient is on this factor).

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> import spatialfactors as sf
    >>> adata = ad.AnnData(np.zeros((4, 3)), obsm={"X_stanmf": np.eye(4)[:, :2]})
    >>> adata.varm["stanmf_loadings"] = np.array([[3.0, 1.0], [0.0, 2.0], [4.0, 0.0]])
    >>> sf.tl.pattern_genes(adata)
    >>> sf.get.pattern_genes_df(adata, "PP2")
      names  importance  coefficient  assigned
    0     1        1.00          2.0      True
    1     0        0.25          1.0     False
    2     2        0.00          0.0     False
    """
    return _pattern_genes_df(adata, factor, key=key, assigned_only=assigned_only, table_key=table_key, what="factor")


def _pattern_genes_df(adata, factor, *, key, assigned_only, table_key, what) -> pd.DataFrame:
    adata = _extract_adata(adata, table_key)
    result = _result(adata, key, "pattern_genes")
    _assert_bool("assigned_only", assigned_only)
    if _is_many(factor):
        raise TypeError(f"`{what}` must be one factor index (0-based) or name, got {factor!r}.")
    fields = list(result["names"].dtype.names)
    name = fields[_select_factors(factor, fields, what)[0]]
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


def _is_many(value) -> bool:
    return value is None or not (isinstance(value, str) or np.ndim(value) == 0)


def pattern_genes_result(adata: AnnData, key: str = "stanmf", *, table_key: str | None = None) -> dict:
    """Return the whole record of :func:`spatialfactors.tl.pattern_genes` (ranked tables, per-gene table, counts).

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.pattern_genes` (or a SpatialData with ``table_key``).
    key
        The ``key_added`` (or ``key``) of :func:`spatialfactors.tl.pattern_genes`.
    table_key
        Table of a SpatialData input.

    Returns
    -------
    ``.uns['{key}_pattern_genes']``: ``names``, ``importance`` and ``coefficients`` (structured arrays, one
    field per factor), ``genes`` (one row per gene), ``counts`` and ``params``.

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> import spatialfactors as sf
    >>> adata = ad.AnnData(np.zeros((4, 3)), obsm={"X_stanmf": np.eye(4)[:, :2]})
    >>> adata.varm["stanmf_loadings"] = np.array([[3.0, 1.0], [0.0, 2.0], [4.0, 0.0]])
    >>> sf.tl.pattern_genes(adata)
    >>> sf.get.pattern_genes_result(adata)["counts"]["n_genes"].tolist()
    [2, 1]
    """
    adata = _extract_adata(adata, table_key)
    return _result(adata, key, "pattern_genes")


def importance(adata: AnnData, key: str = "stanmf", *, table_key: str | None = None) -> pd.DataFrame:
    """Return the importance scores ``r_kj`` stored by :func:`spatialfactors.tl.pattern_genes` (genes x factors).

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.pattern_genes` (or a SpatialData with ``table_key``).
    key
        The ``key_added`` (or ``key``) of :func:`spatialfactors.tl.pattern_genes`.
    table_key
        Table of a SpatialData input.

    Returns
    -------
    ``.varm['{key}_importance']`` as a DataFrame: var names as index, factor names as columns (rows sum to
    one, NaN for genes whose loadings are all zero).

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> import spatialfactors as sf
    >>> adata = ad.AnnData(np.zeros((4, 3)), obsm={"X_stanmf": np.eye(4)[:, :2]})
    >>> adata.varm["stanmf_loadings"] = np.array([[3.0, 1.0], [0.0, 2.0], [4.0, 0.0]])
    >>> sf.tl.pattern_genes(adata)
    >>> sf.get.importance(adata).loc["0"].tolist()
    [0.75, 0.25]
    """
    adata = _extract_adata(adata, table_key)
    result = _result(adata, key, "pattern_genes")
    varm_key = f"{key}_importance"
    if varm_key not in adata.varm:
        raise KeyError(
            f"`adata.varm[{varm_key!r}]` not found; run `sf.tl.pattern_genes(adata, key={key!r})` first "
            "(or pass the `key_added` you used as `key=`)."
        )
    names = list(result["names"].dtype.names)
    values = np.asarray(adata.varm[varm_key], dtype=np.float64)
    return pd.DataFrame(values, index=adata.var_names.copy(), columns=names)


def sgcn_graph(adata: AnnData, factor: int | str, *, key: str = "sgcn", table_key: str | None = None):
    """Return the sGCN of one factor as a :class:`networkx.Graph`.

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.sgcn` (or a SpatialData with ``table_key``).
    factor
        Factor index (0-based) or name (``'PP1'`` ..., see :func:`~spatialfactors.get.factor_names`).
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
    >>> graph = sf.get.sgcn_graph(adata, "PP1")
    >>> top = adata.uns["sgcn"]["nodes"]["gene"].iloc[0]  # the most selective gene of PP1
    >>> graph.number_of_nodes(), graph.nodes[top]["rank"], sorted(graph.nodes[top])
    (10, 1, ['assigned', 'coefficient', 'rank', 'selectivity'])
    """
    return _sgcn_graph(adata, factor, key=key, table_key=table_key, what="factor")


def _sgcn_graph(adata, factor, *, key, table_key, what):
    import networkx as nx

    adata = _extract_adata(adata, table_key)
    result = _result(adata, key, "sgcn")
    nodes, edges = result["nodes"], result["edges"]
    built = [str(p) for p in np.asarray(result["params"]["patterns"]).ravel()]
    names = _sgcn_names(result)
    if _is_many(factor):
        raise TypeError(f"`{what}` must be one factor index (0-based) or name, got {factor!r}.")
    name = names[_select_factors(factor, names, what)[0]]
    if name not in built:
        raise ValueError(f"No network for pattern {factor!r} under key {key!r}; networks exist for {built}.")
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


def _sgcn_names(result: dict) -> list[str]:
    """Names of every factor of the factorisation an sGCN result was built on."""
    recorded = result["params"].get("factor_names")
    if recorded is not None:
        return [str(n) for n in np.asarray(recorded).ravel()]
    return _names("PP", int(result["params"]["n_patterns"]))


def region_auc_result(adata: AnnData, key: str = "region_auc", *, table_key: str | None = None) -> dict:
    """Return the record of :func:`spatialfactors.tl.region_auc`: its AUC, the random draws and the p-value.

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.region_auc` (or a SpatialData with ``table_key``).
    key
        ``key_added`` of :func:`spatialfactors.tl.region_auc`.
    table_key
        Table of a SpatialData input.

    Returns
    -------
    ``.uns[key]``: ``auc``, ``null`` (one row per random draw), ``median_null``, ``percentile``,
    ``p_value``, ``coefficients`` and ``params``.

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> import spatialfactors as sf
    >>> rng = np.random.default_rng(0)
    >>> adata = ad.AnnData(np.zeros((200, 1)), obs={"region_id": np.repeat([1, 2], 100)})
    >>> adata.obsm["X_stanmf"] = np.column_stack([adata.obs["region_id"] == 1, rng.random((200, 3))]).astype(float)
    >>> sf.tl.region_auc(adata, region=1, factors=[0], n_random=20)
    >>> bool(sf.get.region_auc_result(adata)["auc"] > 0.99)
    True
    """
    adata = _extract_adata(adata, table_key)
    return _result(adata, key, "region_auc")


def covariate_genes_result(adata: AnnData, key: str = "covariate_genes", *, table_key: str | None = None) -> dict:
    """Return the record of :func:`spatialfactors.tl.covariate_genes` (table, counts, covariate, ``params``).

    Parameters
    ----------
    adata
        Annotated data after :func:`spatialfactors.tl.covariate_genes` (or a SpatialData with ``table_key``).
    key
        ``key_added`` of :func:`spatialfactors.tl.covariate_genes`.
    table_key
        Table of a SpatialData input.

    Returns
    -------
    ``.uns[key]``, checked to come with its covariate ``.obs['{key}_covariate']``.

    Examples
    --------
    >>> import spatialfactors as sf
    >>> adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=300)
    >>> sf.tl.covariate_genes(adata, basis="X_true", factors=(4, 5), groupby="cell_type", groups="eL2")
    >>> sf.get.covariate_genes_result(adata)["n_tested"] == len(sf.get.covariate_genes_df(adata))
    True
    """
    adata = _extract_adata(adata, table_key)
    return _result(adata, key, "covariate_genes")


def result(adata: AnnData, key: str, kind: str, *, table_key: str | None = None) -> dict:
    """Return the ``.uns`` record of a tool's result, checked to be there, or fail naming the call that writes it.

    Parameters
    ----------
    adata
        Annotated data after the tool (or a SpatialData with ``table_key``).
    key
        ``key_added`` of the tool (``key`` for :func:`spatialfactors.tl.pattern_genes`).
    kind
        The tool: ``'stanmf'``, ``'spicemix'``, ``'link_regions'``, ``'pattern_genes'``, ``'sgcn'``,
        ``'region_auc'``, ``'covariate_genes'`` or ``'hmrf_domains'``.
    table_key
        Table of a SpatialData input.

    Returns
    -------
    The record (a dict), as the tool wrote it.

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> import spatialfactors as sf
    >>> sf.get.result(ad.AnnData(np.zeros((2, 2))), "stanmf", "stanmf")
    Traceback (most recent call last):
    ...
    KeyError: "No factorisation result under key 'stanmf'; run `sf.tl.stanmf(adata, key_added='stanmf')` (or `sf.tl.spicemix`) first (or pass the `key_added` you used as `key=`)."
    """  # noqa: E501
    adata = _extract_adata(adata, table_key)
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {sorted(KINDS)}, got {kind!r}.")
    return _result(adata, key, kind)
