"""``sf.tl.link_regions``: link every pattern to the atlas regions and contiguous region sets it matches best."""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scanpy import logging as logg

from spatialfactors._validation import (
    _assert_choice,
    _assert_copy,
    _assert_int_range,
    _assert_real_range,
    _assert_result_key,
    _assert_str,
    _extract_adata,
    _get_patterns,
    _get_region_ids,
    _save_results,
    _warn_undefined,
)
from spatialfactors.get import _resolve_ontology, factor_names, grid
from spatialfactors.models.regions import METRICS, SetScorer, region_adjacency, search_regions

from ._record import _record


def _map_level(ids: np.ndarray, ontology, level: int | str) -> np.ndarray:
    """Each nonzero id replaced by its region at ``level`` (0 where it falls outside the level's regions)."""
    out = np.zeros_like(ids)
    inside = ids > 0
    uniq, inverse = np.unique(ids[inside], return_inverse=True)
    if isinstance(level, str):
        mapped = np.asarray(ontology.map_to(uniq, ontology.level(level)), dtype=np.int64)
    else:
        mapped = np.asarray(ontology.at_depth(uniq, level), dtype=np.int64)
    out[inside] = np.maximum(mapped, 0)[inverse]  # map_to gives -1 outside every target region
    return out


def _region_table(
    adata: AnnData, ids: np.ndarray, counts: np.ndarray, ontology, linked: np.ndarray, level
) -> pd.DataFrame:
    table = pd.DataFrame(
        {"region_id": ids.astype(np.int64), "n_voxels": counts.astype(np.int64)}, index=[str(i) for i in ids]
    )
    if getattr(ontology, "df", None) is not None:
        info = ontology.df.loc[ids]
        table["acronym"] = info["acronym"].astype(str).to_numpy()
        for col in ("name", "graph_order", "depth", "color_hex_triplet"):
            if col in info:
                table[col] = info[col].to_numpy()
    elif "acronym" in adata.obs and level is None:
        first = pd.Series(adata.obs["acronym"].astype(str).to_numpy()).groupby(linked).first()
        table["acronym"] = first.reindex(ids).fillna("").to_numpy()
        table.loc[table["acronym"] == "", "acronym"] = table["region_id"].astype(str)
    else:
        table["acronym"] = [str(i) for i in ids]
    return table


def _warn_undefined_scores(scorer: SetScorer, result, region_ids: np.ndarray, names: list[str]) -> None:
    """Say why scores are NaN: a constant pattern, a region (or set) covering every voxel searched."""
    if scorer.metric != "pearson":
        return
    constant = np.flatnonzero(scorer.norm <= 0)
    if constant.size:
        _warn_undefined(
            f"The Pearson correlation of pattern(s) {[names[k] for k in constant]} with every region set",
            "the pattern is constant over the voxels",
            "leave it out or refit with fewer components",
        )
    whole = region_ids[scorer.counts >= scorer.n_voxels]
    if whole.size:
        _warn_undefined(
            f"The Pearson correlation with region {int(whole[0])}",
            "it covers every voxel, so its mask is constant",
            "include voxels outside it (id 0) or search finer regions (`level=`, `region_key=`)",
        )
    varying = scorer.norm > 0
    for size, scores in enumerate(result.best_scores, start=1):
        if size > 1 and varying.any() and np.isnan(np.asarray(scores)[varying]).all():
            _warn_undefined(
                f"The best score of sets of {size} regions",
                f"no contiguous set of {size} regions exists, or each covers every voxel",
                "lower `max_regions`",
            )


def link_regions(
    adata: AnnData,
    *,
    key: str = "stanmf",
    region_key: str = "region_id",
    ontology=None,
    max_regions: int = 3,
    level: int | str | None = None,
    metric: Literal["pearson", "dice"] = "pearson",
    dice_threshold: float = 0.5,
    max_candidates: int | None = 30_000_000,
    beam_width: int = 200,
    table_key: str | None = None,
    key_added: str = "link_regions",
    copy: bool = False,
) -> AnnData | None:
    """Link every pattern to the atlas region and the contiguous region sets whose mask it matches best.

    Spatial correlation analysis and entity linking of Cahill et al. (Methods, "Spatial
    Neighborhood Query" and "Spatial Correlation Analysis and Entity Linking"; Figs. 2-3): each
    pattern (a column of ``.obsm['X_{key}']``) is correlated with the binary mask of every region,
    of every spatially contiguous pair and of every contiguous triple of regions, and linked to
    the best of each size.

    Adjacency. Two regions are contiguous when a voxel of one shares a face with a voxel of the
    other. The paper finds these pairs by dilating every region and testing its overlap with every
    other; the 6-connected dilation of a region touches another region if and only if some pair of
    face-adjacent voxels carries the two labels, so one pass over the face-adjacent voxel pairs of
    the grid gives the same pairs (:func:`spatialfactors.models.regions.region_adjacency`).
    Voxels outside ``.uns['aba']['mask']`` and voxels with region id 0 are background and create
    no adjacency. A triple is contiguous when its third region touches at least one region of a
    contiguous pair (the paper's rule), i.e. the triples are the connected 3-node induced subgraphs
    of the region adjacency graph; larger sets likewise.

    Search. Regions are disjoint, so the correlation of a pattern ``p`` with the union ``u`` of a
    set of regions follows from per-region sums and voxel counts:
    ``corr(p, u) = (S_u - n_u mean(p)) / (sqrt(n_u (1 - n_u / n)) sqrt(sum (p - mean(p))^2))`` with
    ``S_u`` and ``n_u`` the sums of the regions' pattern sums and voxel counts, ``n`` the number of
    voxels. All sets of all sizes are scored for all patterns at once with numpy, without touching
    voxels per set. Sets of up to ``max_regions`` regions are enumerated exactly while one size
    generates at most ``max_candidates`` candidates (on the 200 um Allen grid: 649 regions, 4,834
    pairs, 127,967 triples, 8.0 million 4-sets from 26 million candidates; 5-sets would need 2.7
    billion); larger sizes use a beam search: per pattern, the ``beam_width`` best sets of the
    previous size are extended by every adjacent region and the ``beam_width`` best extensions kept.

    Dice (``metric='dice'``, the paper's SI Fig. S4): the main text does not say how a continuous
    pattern enters the Dice coefficient; here each pattern is binarised at ``dice_threshold`` of its
    range (voxels with ``p >= min + dice_threshold (max - min)``, half of the range by default) and
    ``2 |t & u| / (|t| + |u|)`` is computed from per-region counts in the same way.

    Each pattern's link is its best single region, replaced by its best set of 2, then 3, ...
    regions only when that scores more than ``1e-4`` higher (the paper's margin).

    Parameters
    ----------
    adata
        Voxel data with ``.uns['aba']`` (the grid, as :func:`spatialfactors.io.read_aba` writes),
        region ids in ``.obs[region_key]`` and patterns in ``.obsm['X_{key}']``.
    key
        ``key_added`` of the factorisation (:func:`spatialfactors.tl.stanmf`).
    region_key
        Column of ``.obs`` with the structure id of every voxel (0: no region).
    ontology
        An :class:`~spatialfactors.io.Ontology` (or a structure CSV) for acronyms, names and the
        graph order of regions; needed with ``level``.
    max_regions
        Largest number of regions in a linked set (the paper: 3).
    level
        Search among the regions of one ontology level: a depth (every voxel's region is replaced
        by its ancestor at that depth, regions shallower than that stay), or ``'coarse'`` /
        ``'medium'`` (:meth:`~spatialfactors.io.Ontology.level`; voxels outside those regions
        belong to none). ``None``: the regions of ``.obs[region_key]``.
    metric
        ``'pearson'`` (the paper's main analysis) or ``'dice'``.
    dice_threshold
        Fraction of each pattern's range at which it is binarised for Dice.
    max_candidates
        Cap on the candidate sets generated for one exact size (before removing duplicates);
        beyond it the beam search takes over. The default keeps 4-sets exact on the 200 um grid
        (about 4 s and 1.5 GB); ``None``: always exact (may exhaust memory).
    beam_width
        Sets kept per pattern and size by the beam search.
    table_key
        Table of a SpatialData input.
    key_added
        Key in ``.uns`` of the results.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None`` or a copy (``copy=True``), with ``.uns[key_added]`` holding

    - ``correlation``: DataFrame patterns (named by :func:`spatialfactors.get.factor_names`: ``PP1`` ...
      for staNMF, ``MG1`` ... for SpiceMix) x regions (columns: region ids as strings),
      the score (``metric``) of every pattern with every single region;
    - ``regions``: one row per region (index as the columns of ``correlation``): ``region_id``,
      ``acronym`` (from the ontology, else from ``.obs['acronym']``, else the id), ``n_voxels``, and
      with an ontology ``name``, ``graph_order``, ``depth``, ``color_hex_triplet``;
    - ``best``: one row per pattern and set size: ``pattern``, ``n_regions``, ``score``, ``acronyms``
      (joined by ``' + '``), ``region_1`` ... ``region_{max_regions}`` (ids, 0 when unused),
      ``search`` (``'exact'`` or ``'beam'``) and ``selected`` (the pattern's link);
    - ``linked``: DataFrame patterns x links (column ``PP<j>``: the set ``PP<j>`` is linked to, see
      ``best``), the score of every pattern with every pattern's linked set (the paper's Fig. 3B);
    - ``adjacency``: the edge list (``region_a``, ``region_b``) of contiguous region pairs;
    - ``search``: per set size, ``n_candidates`` scored and ``search``;
    - ``summary``: ``n_voxels``, ``n_regions``, ``n_adjacent_pairs``, ``n_contiguous_pairs``,
      ``n_contiguous_triples`` (when searched exactly);
    - ``region_map``: ``region_id`` of ``.obs[region_key]`` -> ``linked_id`` searched (differs with ``level``);
    - ``tool`` and ``params`` (``None`` values left out; read them with :func:`spatialfactors.get.params`).

    Read every pattern's link with :func:`spatialfactors.get.link_regions_df`.

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> import spatialfactors as sf
    >>> labels = np.repeat([[[1, 1, 2, 2, 3, 3]]], 2, axis=0)  # three regions in a row, 2 x 1 x 6 grid
    >>> mask = labels > 0
    >>> adata = ad.AnnData(obs={"region_id": labels[mask]}, uns={"aba": {"grid_shape": labels.shape, "mask": mask}})
    >>> adata.obsm["X_stanmf"] = np.stack([labels[mask] == 2, np.isin(labels[mask], [2, 3])], axis=1).astype(float)
    >>> sf.tl.link_regions(adata)
    >>> best = adata.uns["link_regions"]["best"]
    >>> best[best["selected"]][["pattern", "acronyms"]].to_numpy().tolist(), best["score"].round(6).max()
    ([['PP1', '2'], ['PP2', '2 + 3']], np.float64(1.0))
    """
    start = time.perf_counter()
    adata = _extract_adata(adata, table_key)
    patterns, ids, linked, region_ids, ontology = _check_inputs(
        adata, key, region_key, ontology, max_regions, level, metric, dice_threshold, max_candidates, beam_width
    )
    _assert_str("key_added", key_added)
    _assert_copy(adata, copy)
    _assert_result_key(adata, key_added, factorisation=False, tool="sf.tl.link_regions")
    names = factor_names(adata, key)
    scorer, result, edges_ids = _search(
        adata,
        patterns,
        linked,
        region_ids,
        names,
        metric=metric,
        dice_threshold=dice_threshold,
        max_regions=max_regions,
        max_candidates=max_candidates,
        beam_width=beam_width,
    )
    entries = _link_entries(
        adata, ids, linked, region_ids, scorer, result, edges_ids, ontology, level, names, max_regions
    )
    params = {
        "key": key,
        "region_key": region_key,
        "max_regions": int(max_regions),
        "metric": metric,
        "dice_threshold": float(dice_threshold),
        "max_candidates": max_candidates,
        "beam_width": int(beam_width),
        "ontology": ontology is not None,
        "level": level if level is None or isinstance(level, str) else int(level),
    }
    target = adata.copy() if copy else adata
    _save_results(target, [("uns", key_added, _record("link_regions", entries, params))], start)
    return target if copy else None


def _check_inputs(
    adata, key, region_key, ontology, max_regions, level, metric, dice_threshold, max_candidates, beam_width
):
    """Check the inputs of :func:`link_regions`; return patterns, region ids, ids searched, regions, ontology."""
    patterns = _get_patterns(adata, key)
    ids = _get_region_ids(adata, region_key)
    grid(adata)
    _assert_int_range("max_regions", max_regions, 1)
    _assert_choice("metric", metric, METRICS)
    _assert_real_range("dice_threshold", dice_threshold, 0.0, 1.0)
    _assert_int_range("beam_width", beam_width, 1)
    if max_candidates is not None:
        _assert_int_range("max_candidates", max_candidates, 1)
    return (patterns, ids, *_searched_regions(adata, ids, region_key, ontology, level))


def _searched_regions(adata, ids, region_key, ontology, level):
    """Return every voxel's region as searched (its ancestor at ``level``), the regions searched and the ontology."""
    ontology = _resolve_ontology(ontology)
    if level is not None:
        if ontology is None:
            raise ValueError(
                f"`level={level!r}` needs the region hierarchy: pass `ontology=` "
                "(e.g. `sf.io.read_ontology(path)` on Allen's structure CSV)."
            )
        if isinstance(level, str):
            _assert_choice("level", level, ("coarse", "medium"))
        else:
            _assert_int_range("level", level, 0)
        linked = _map_level(ids, ontology, level)
    else:
        linked = ids
    region_ids = np.unique(linked[linked > 0])
    if region_ids.size == 0:
        raise ValueError(f"`adata.obs[{region_key!r}]` has no region (all ids are 0).")
    if getattr(ontology, "df", None) is not None:
        missing = [int(i) for i in region_ids if int(i) not in ontology.df.index]
        if missing:
            raise KeyError(f"{len(missing)} region ids are not in the ontology, e.g. {missing[:8]}.")
    return linked, region_ids, ontology


def _search(
    adata, patterns, linked, region_ids, names, *, metric, dice_threshold, max_regions, max_candidates, beam_width
):
    """Score every pattern against every contiguous set of up to ``max_regions`` regions."""
    shape, mask, _ = grid(adata)
    # Label volume of the regions searched; outside the mask and id 0 are background.
    volume = np.zeros(shape, dtype=np.int64)
    volume[mask] = linked
    edges_ids = region_adjacency(volume, background=0)
    edges = np.searchsorted(region_ids, edges_ids)
    index = np.where(linked > 0, np.searchsorted(region_ids, linked), -1)
    scorer = SetScorer.from_voxels(patterns, index, region_ids.size, metric=metric, dice_threshold=dice_threshold)
    result = search_regions(
        scorer, edges, max_regions=max_regions, max_candidates=max_candidates, beam_width=beam_width
    )
    _warn_undefined_scores(scorer, result, region_ids, names)
    logg.info(
        f"link_regions: {region_ids.size} regions, {len(edges)} contiguous pairs, "
        + ", ".join(
            f"{n} sets of {s + 1} ({m})"
            for s, (n, m) in enumerate(zip(result.n_candidates, result.search, strict=True))
        )
    )
    return scorer, result, edges_ids


def _link_entries(
    adata, ids, linked, region_ids, scorer, result, edges_ids, ontology, level, names, max_regions
) -> dict:
    """Return the tables of the ``.uns`` record of :func:`link_regions` (all but ``params``)."""
    n_patterns = len(names)
    columns = [str(i) for i in region_ids]
    regions = _region_table(adata, region_ids, scorer.counts, ontology, linked, level)
    acronym = regions["acronym"].to_numpy(dtype=object)

    rows = []
    for k in range(n_patterns):
        for size in range(1, max_regions + 1):
            sets, scores = result.best_sets[size - 1], result.best_scores[size - 1]
            found = sets[k][0] >= 0
            row = {
                "pattern": names[k],
                "n_regions": size,
                "score": float(scores[k]),
                "acronyms": " + ".join(acronym[sets[k]]) if found else "",
            }
            for j in range(max_regions):
                row[f"region_{j + 1}"] = int(region_ids[sets[k][j]]) if found and j < size else 0
            row["search"] = result.search[size - 1]
            row["selected"] = bool(result.selected[k] == size)
            rows.append(row)
    best = pd.DataFrame(rows)

    links = [result.best_sets[result.selected[k] - 1][k] for k in range(n_patterns)]
    linked_scores = np.column_stack([scorer.score(s[None, :])[0] for s in links])
    # Columns named by pattern only: acronyms such as 'PERI2/3' are not valid h5 keys.
    linked_table = pd.DataFrame(linked_scores, index=names, columns=names)

    summary = {
        "n_voxels": int(adata.n_obs),
        "n_regions": int(region_ids.size),
        "n_adjacent_pairs": int(len(edges_ids)),
    }
    if max_regions >= 2:
        summary["n_contiguous_pairs"] = int(result.n_candidates[1])
    if max_regions >= 3 and result.search[2] == "exact":
        summary["n_contiguous_triples"] = int(result.n_candidates[2])
    obs_ids, first = np.unique(ids, return_index=True)
    return {
        "correlation": pd.DataFrame(result.region_scores, index=names, columns=columns),
        "regions": regions,
        "best": best,
        "linked": linked_table,
        "adjacency": pd.DataFrame({"region_a": edges_ids[:, 0], "region_b": edges_ids[:, 1]}).astype(np.int64),
        "search": pd.DataFrame(
            {
                "n_regions": np.arange(1, max_regions + 1),
                "n_candidates": np.asarray(result.n_candidates, dtype=np.int64),
                "search": result.search,
            }
        ),
        "summary": summary,
        "region_map": pd.DataFrame({"region_id": obs_ids, "linked_id": linked[first]}).astype(np.int64),
    }
