"""``sf.tl.region_auc``: how well a set of patterns predicts a region, against random sets of patterns."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from scanpy import logging as logg
from scanpy import settings
from tqdm.auto import tqdm

from spatialfactors._validation import (
    _assert_copy,
    _assert_fits_memory,
    _assert_int_range,
    _assert_real_range,
    _assert_result_key,
    _assert_str,
    _extract_adata,
    _get_patterns,
    _get_region_ids,
    _renamed,
    _save_results,
)
from spatialfactors.get import _resolve_ontology, _select_factors, factor_names
from spatialfactors.models.genes import region_auc as _region_auc_engine

from ._record import _record


def _region_mask(adata: AnnData, region: int | str, region_key: str, ontology) -> tuple[np.ndarray, dict]:
    """Boolean mask of the obs in ``region`` (and its descendants with an ontology) and a description."""
    ids = _get_region_ids(adata, region_key)
    if isinstance(region, bool) or not isinstance(region, str | int | np.integer):
        raise TypeError(f"`region` must be a structure id or an acronym, got {region!r}.")
    if ontology is not None:
        try:
            rid = ontology.id_of(region) if isinstance(region, str) else int(region)
            if rid not in ontology:
                raise KeyError(f"Structure id {rid} is not in the ontology.")
        except KeyError as err:
            raise KeyError(f"Region {region!r} not found: {err.args[0]}") from None
        members = np.asarray(ontology.descendants(rid), dtype=np.int64)  # the region and everything below it
        mask = np.isin(ids, members)
        info = {"region_id": int(rid), "acronym": ontology.acronym_of(rid), "n_structures": int(members.size)}
    elif isinstance(region, str):
        if "acronym" not in adata.obs:
            raise ValueError(
                f"`region={region!r}` is an acronym: pass `ontology=` (e.g. `sf.io.read_ontology(path)`), "
                "or a structure id."
            )
        mask = (adata.obs["acronym"].astype(str) == region).to_numpy()
        found = np.unique(ids[mask])
        info = {"region_id": int(found[0]) if found.size == 1 else -1, "acronym": region, "n_structures": 1}
    else:
        mask = ids == int(region)
        info = {"region_id": int(region), "acronym": str(region), "n_structures": 1}
    n_in = int(mask.sum())
    if n_in == 0:
        extra = " or its descendants" if ontology is not None else ""
        raise ValueError(
            f"Region {region!r} is absent: no obs of `adata.obs[{region_key!r}]` lies in it{extra}."
            + ("" if ontology is not None else " Pass `ontology=` to include its subregions.")
        )
    if n_in == mask.size:
        raise ValueError(f"Every obs lies in region {region!r}; the mask needs obs outside it too.")
    info["n_obs"] = n_in
    return mask, info


def _chosen(factors, names: list[str], what: str) -> list[int]:
    """Return the chosen patterns as 0-based indices: at least one, none repeated."""
    if factors is None:
        raise TypeError(f"`{what}` must name the patterns to test (0-based indices or names), e.g. `{what}=[0, 1]`.")
    if not isinstance(factors, str) and np.ndim(factors) == 1 and len(factors) == 0:
        raise ValueError(f"`{what}` is empty; name the patterns to test, e.g. `{what}=[0, 1, 2]`.")
    chosen = _select_factors(factors, names, what)
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"`{what}` repeats a pattern: {list(np.atleast_1d(factors))}.")
    return chosen


def region_auc(
    adata: AnnData,
    *,
    region: int | str,
    factors: Sequence[int | str] | None = None,
    key: str = "stanmf",
    region_key: str = "region_id",
    ontology=None,
    n_random: int = 1000,
    cv: int | None = None,
    C: float = 1.0,
    random_state: int = 0,
    table_key: str | None = None,
    key_added: str = "region_auc",
    copy: bool = False,
    patterns: Sequence[int | str] | None = None,
) -> AnnData | None:
    """AUC of a set of patterns predicting a region, against random sets of the same size (Fig. 4C).

    The isocortex analysis of :cite:`cahill2024stanmf` (Results, "Substructures of the Mouse
    Isocortex in PPs"): a logistic regression predicts the region's mask from the chosen patterns
    (the paper: PPs 1 to 3 for the isocortex, AUC 0.99) and is compared with ``n_random`` models on
    random subsets of as many patterns (the paper: 1,000, median AUC 0.78). Every random subset is
    drawn uniformly among all subsets of that size, so it may coincide with the chosen one.

    The model is scikit-learn's :class:`~sklearn.linear_model.LogisticRegression` (L2 penalty ``C``,
    lbfgs) on the patterns standardised over obs. The paper scores the model on the voxels it was
    trained on; that is ``cv=None`` here. With a handful of predictors and tens of thousands of
    voxels the in-sample and the cross-validated AUC barely differ; ``cv=5`` gives the out-of-fold
    AUC of a stratified 5-fold split instead.

    Parameters
    ----------
    adata
        Annotated data with patterns in ``.obsm['X_{key}']`` and region ids in ``.obs[region_key]``.
    region
        Structure id, or acronym (resolved with ``ontology``, else matched in ``.obs['acronym']``).
        With an ontology the region includes all its descendants (voxels carry the finest ids).
    factors
        The chosen patterns: 0-based indices or names (:func:`spatialfactors.get.factor_names`, ``'PP1'``
        ...); fewer than K.
    key
        ``key_added`` of the factorisation.
    region_key
        Column of ``.obs`` with the structure id of every obs.
    ontology
        An :class:`~spatialfactors.io.Ontology` or the path of a structure CSV.
    n_random
        Random subsets in the null distribution.
    cv
        Folds of the cross-validated AUC; ``None``: in-sample AUC (the paper).
    C
        Inverse L2 regularisation strength of the logistic regression.
    random_state
        Seed of the random subsets (and of the folds).
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
    ``None`` or a copy (``copy=True``), with ``.uns[key_added]`` holding ``auc`` (the chosen
    patterns), ``null`` (one row per random draw: ``patterns`` joined by ``'+'``, ``auc``),
    ``median_null``, ``percentile`` (percent of random AUCs at or below ``auc``), ``p_value``
    (``(1 + #{null >= auc}) / (1 + n_random)``), ``coefficients`` (per chosen pattern, on the
    standardised patterns, and the ``intercept``), ``region`` (``region_id``, ``acronym``,
    ``n_obs``, ``n_structures``) and ``params``.

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> import spatialfactors as sf
    >>> rng = np.random.default_rng(0)
    >>> d = rng.random((400, 6))
    >>> adata = ad.AnnData(obs={"region_id": np.where(d[:, 0] + d[:, 1] > 1.2, 5, 7)}, obsm={"X_stanmf": d})
    >>> sf.tl.region_auc(adata, region=5, factors=[0, 1], n_random=50)
    >>> res = adata.uns["region_auc"]
    >>> bool(res["auc"] > 0.99), bool(res["auc"] > res["median_null"]), res["percentile"]
    (True, True, 100.0)
    """
    start = time.perf_counter()
    adata = _extract_adata(adata, table_key)
    d = _get_patterns(adata, key)
    n_patterns = d.shape[1]
    what = "factors" if patterns is None else "patterns"
    factors = _renamed("patterns", "factors", patterns, factors, where="sf.tl.region_auc")
    names = np.asarray(factor_names(adata, key), dtype=object)
    chosen = _chosen(factors, list(names), what)
    if len(chosen) >= n_patterns:
        raise ValueError(
            f"`{what}` has {len(chosen)} of the {n_patterns} patterns; random subsets of the same size would "
            "all be the same set. Choose fewer patterns."
        )
    _assert_int_range("n_random", n_random, 1)
    if cv is not None:
        _assert_int_range("cv", cv, 2)
    _assert_real_range("C", C, 0.0, low_open=True)
    _assert_int_range("random_state", random_state, 0)
    _assert_str("key_added", key_added)
    _assert_copy(adata, copy)
    _assert_result_key(adata, key_added, factorisation=False, tool="sf.tl.region_auc")
    # The random subsets (one small array each, then stacked) and the table of their AUCs.
    _assert_fits_memory(
        n_random * (256 + 24 * len(chosen)),
        f"{n_random} random subsets of {len(chosen)} patterns",
        "use fewer `n_random` (the paper: 1000)",
    )
    ontology = _resolve_ontology(ontology)
    mask, info = _region_mask(adata, region, region_key, ontology)
    if cv is not None and min(info["n_obs"], mask.size - info["n_obs"]) < cv:
        raise ValueError(f"`cv={cv}` folds need at least {cv} obs inside and outside the region.")

    with tqdm(total=n_random + 1, desc="region AUC models", disable=settings.verbosity == 0) as bar:
        res = _region_auc_engine(
            d, mask, chosen, n_random=n_random, cv=cv, C=C, random_state=random_state, progress=bar.update
        )
    logg.info(
        f"region_auc: AUC {res.auc:.3f} for {'+'.join(names[chosen])}, median of {n_random} random sets "
        f"{np.median(res.null_auc):.3f} (percentile {res.percentile:.1f})"
    )
    uns = _record(
        "region_auc",
        {
            "auc": res.auc,
            "null": pd.DataFrame({"patterns": ["+".join(names[s]) for s in res.null_subsets], "auc": res.null_auc}),
            "median_null": float(np.median(res.null_auc)),
            "percentile": res.percentile,
            "p_value": res.p_value,
            "coefficients": pd.DataFrame({"coef": res.coef}, index=list(names[chosen])),
            "intercept": res.intercept,
            "region": info,
        },
        {
            "key": key,
            "region": region if isinstance(region, str) else int(region),
            "patterns": list(names[chosen]),
            "region_key": region_key,
            "ontology": ontology is not None,
            "n_random": int(n_random),
            "cv": cv,
            "C": float(C),
            "random_state": int(random_state),
        },
    )
    target = adata.copy() if copy else adata
    _save_results(target, [("uns", key_added, uns)], start)
    return target if copy else None
