"""``sf.tl.covariate_genes``: genes whose expression follows a per-cell covariate, with FDR control."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scanpy import logging as logg

from spatialfactors._validation import (
    _assert_bool,
    _assert_choice,
    _assert_copy,
    _assert_fits_memory,
    _assert_nonnegative_finite,
    _assert_obs_key,
    _assert_real_range,
    _assert_result_key,
    _assert_str,
    _extract_adata,
    _fix_dtype_hint,
    _get_matrix,
    _get_obsm,
    _is_int,
    _matrix_label,
    _save_results,
)
from spatialfactors.models.domains import proportions
from spatialfactors.models.regression import FDR_METHODS, regress_genes

from ._record import _record


def _covariate(adata, covariate, basis, factors, normalize) -> tuple[np.ndarray, str]:
    """Return the covariate of every cell and its label: an ``.obs`` column, an array, or factors of ``basis``."""
    if (covariate is None) == (factors is None):
        raise ValueError(
            "Pass exactly one of `covariate` (an `.obs` column or an array) and `factors` (factor indices in "
            "`.obsm[basis]`)."
        )
    if covariate is not None:
        if isinstance(covariate, str):
            _assert_obs_key(adata, "covariate", covariate)
            values, label = adata.obs[covariate].to_numpy(), covariate
        else:
            values, label = np.asarray(covariate), "covariate"
        if values.dtype.kind not in "iuf":
            raise TypeError(f"`covariate` must hold real numbers, got dtype {values.dtype}.")
        if values.shape != (adata.n_obs,):
            raise ValueError(f"`covariate` must have one value per obs ({adata.n_obs}), got shape {values.shape}.")
        return values.astype(np.float64), label
    _assert_bool("normalize", normalize)
    weights = _get_obsm(adata, basis, hint="compute the factors first, e.g. `sf.tl.spicemix(adata)`")
    pair = [factors] if _is_int(factors) else list(factors) if isinstance(factors, tuple | list) else None
    if pair is None or len(pair) not in (1, 2) or not all(_is_int(f) for f in pair):
        raise TypeError(f"`factors` must be a factor index or a pair of indices `(a, b)`, got {factors!r}.")
    bad = [int(f) for f in pair if not 0 <= f < weights.shape[1]]
    if bad:
        raise ValueError(f"`factors` {bad} out of range for the {weights.shape[1]} factors of `.obsm[{basis!r}]`.")
    if len(pair) == 2 and pair[0] == pair[1]:
        raise ValueError(f"`factors` must be two different factors, got {factors!r}.")
    if normalize:
        weights = proportions(weights)
    values = weights[:, pair[0]] - (weights[:, pair[1]] if len(pair) == 2 else 0.0)
    what = "proportion" if normalize else "weight"
    label = f"{basis} {what} {pair[0]}" + (f" - {pair[1]}" if len(pair) == 2 else "")
    return values, label


def _cell_mask(adata, groupby, groups, mask) -> np.ndarray:
    keep = np.ones(adata.n_obs, dtype=bool)
    if groupby is not None:
        _assert_str("groupby", groupby)
        _assert_obs_key(adata, "groupby", groupby)
        if groups is None:
            raise ValueError("`groupby` needs `groups`: the group(s) of cells to test in.")
        groups = [groups] if isinstance(groups, str) or not isinstance(groups, Sequence) else list(groups)
        column = adata.obs[groupby].astype(str)
        missing = [g for g in groups if str(g) not in set(column)]
        if missing:
            raise ValueError(f"`groups` {missing} not found in `adata.obs[{groupby!r}]`; it has {sorted(set(column))}.")
        keep &= column.isin([str(g) for g in groups]).to_numpy()
    elif groups is not None:
        raise ValueError("`groups` needs `groupby`: the `.obs` column the groups are read from.")
    if mask is not None:
        if isinstance(mask, str):
            _assert_obs_key(adata, "mask", mask)
            mask = adata.obs[mask].to_numpy()
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != (adata.n_obs,):
            raise TypeError(
                f"`mask` must be a boolean array with one entry per obs ({adata.n_obs}), got dtype {mask.dtype} "
                f"and shape {mask.shape}."
            )
        keep &= mask
    return keep


def covariate_genes(
    adata: AnnData,
    covariate: str | np.ndarray | None = None,
    *,
    basis: str = "X_spicemix",
    factors: int | tuple[int, int] | None = None,
    normalize: bool = True,
    groupby: str | None = None,
    groups: str | Sequence[str] | None = None,
    mask: str | np.ndarray | None = None,
    genes: Sequence[str] | None = None,
    min_fraction: float = 0.3,
    layer: str | None = None,
    method: str = "fdr_tsbh",
    alpha: float = 0.05,
    table_key: str | None = None,
    key_added: str = "covariate_genes",
    copy: bool = False,
) -> AnnData | None:
    """Linear regression of every gene's expression on a per-cell covariate, with FDR control.

    The SpiceMix paper's test for continuous factors of cell identity (Results, "SpiceMix
    identifies continuous myelination stages in oligodendrocytes", Fig. 4f, S6b): within a
    group of cells, each gene's expression is regressed on a covariate built from the latent
    states (e.g. the difference of two metagenes' proportions), genes expressed (> 0) in fewer
    than ``min_fraction`` of the cells are left out, the slope is tested against zero (a t test
    with n - 2 degrees of freedom, as ``scipy.stats.linregress``) and the p-values are
    corrected for multiple testing with ``statsmodels.stats.multitest.multipletests``
    (default: the two-step procedure of Benjamini, Krieger & Yekutieli 2006, the paper's
    "two-step FDR correction").

    Parameters
    ----------
    adata
        Annotated data with non-negative (e.g. log-normalised) expression.
        A :class:`spatialdata.SpatialData` with ``table_key`` works as well.
    covariate
        An ``.obs`` column or an array with one value per cell. Alternatively ``factors``.
    basis
        ``.obsm`` key of the factors (with ``factors``).
    factors
        A factor index ``a`` (covariate: its proportion) or a pair ``(a, b)`` (the proportion
        of ``a`` minus that of ``b``), 0-based columns of ``.obsm[basis]``.
    normalize
        With ``factors``: use proportions (each cell's weights divided by their sum); otherwise
        the weights themselves.
    groupby, groups
        Test within the cells whose ``.obs[groupby]`` is one of ``groups``.
    mask
        Boolean array (or ``.obs`` column of booleans) of cells to test within, combined with
        ``groups``.
    genes
        Genes (``var_names``) to test; all by default.
    min_fraction
        Leave out genes expressed in fewer than this fraction of the tested cells.
    layer
        Expression from ``.layers[layer]`` instead of ``.X``.
    method
        Multiple-testing correction of ``statsmodels.stats.multitest.multipletests``.
    alpha
        FDR level: ``significant`` is ``q < alpha`` (the two-step procedures use it in their
        first step, so their q-values depend on it).
    table_key
        Table of a SpatialData input.
    key_added
        ``.uns`` key of the result; the covariate goes to ``.obs['<key_added>_covariate']``.
    copy
        Return a modified copy.

    Returns
    -------
    ``None`` (or the copy), with ``.obs['<key_added>_covariate']`` (the covariate, NaN outside
    the tested cells) and ``.uns[key_added]``: ``table`` (one row per tested gene, sorted by
    ``q``: ``gene``, ``slope``, ``intercept``, ``r``, ``p``, ``q``, ``significant``,
    ``fraction`` expressing), ``n_cells``, ``n_tested``, ``n_significant``, ``covariate`` (its
    description) and ``params``.

    Examples
    --------
    >>> import spatialfactors as sf
    >>> adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=300)
    >>> sf.tl.covariate_genes(adata, basis="X_true", factors=(4, 5), groupby="cell_type", groups="eL2")
    >>> table = adata.uns["covariate_genes"]["table"]
    >>> list(table.columns[:6])
    ['gene', 'slope', 'intercept', 'r', 'p', 'q']
    """
    start = time.perf_counter()
    adata = _extract_adata(adata, table_key)
    _assert_real_range("min_fraction", min_fraction, 0, 1)
    _assert_choice("method", method, FDR_METHODS)
    _assert_real_range("alpha", alpha, 0, 1, low_open=True)
    _assert_str("key_added", key_added)
    _assert_copy(adata, copy)
    _assert_result_key(adata, key_added, factorisation=False, tool="sf.tl.covariate_genes")
    values, label = _covariate(adata, covariate, basis, factors, normalize)
    keep = _cell_mask(adata, groupby, groups, mask)
    if keep.sum() < 3:
        raise ValueError(f"The regression needs at least 3 cells, the selection has {int(keep.sum())}.")
    if not np.isfinite(values[keep]).all():
        raise ValueError(
            f"The covariate has {int((~np.isfinite(values[keep])).sum())} NaN or infinite values among the "
            "selected cells; leave those cells out with `mask`."
        )
    if np.ptp(values[keep]) == 0:
        raise ValueError("The covariate is constant among the selected cells; nothing can be regressed on it.")
    x = _get_matrix(adata, layer)
    if genes is not None:
        genes = [genes] if isinstance(genes, str) else list(genes)
        missing = [g for g in genes if g not in adata.var_names]
        if missing or not genes:
            raise KeyError(f"`genes` {missing[:5] or '[]'} not in `adata.var_names`; pass gene names present there.")
        cols = adata.var_names.get_indexer(pd.Index(genes).unique())
    else:
        cols = np.arange(adata.n_vars)
    _assert_fits_memory(
        8 * int(keep.sum()) * len(cols) * 3, f"Regression of {len(cols)} genes", "test fewer `genes` or cells"
    )
    y = x[np.flatnonzero(keep)][:, cols]
    y = y.toarray() if sp.issparse(y) else np.asarray(y)
    _assert_nonnegative_finite(y, _matrix_label(layer, "The expression values"), _fix_dtype_hint(layer))
    table = regress_genes(
        values[keep], y, adata.var_names[cols].to_numpy(), min_fraction=min_fraction, method=method, alpha=alpha
    )
    if table.empty:
        raise ValueError(
            f"No gene is expressed in at least {min_fraction:g} of the {int(keep.sum())} cells (and varies "
            "there); lower `min_fraction`."
        )
    n_sig = int(table["significant"].sum())
    logg.info(f"{key_added}: {n_sig} of {len(table)} genes significant at q < {alpha:g} ({method})")
    column = np.where(keep, values, np.nan)
    uns = _record(
        "covariate_genes",
        {
            "table": table,
            "n_cells": int(keep.sum()),
            "n_tested": len(table),
            "n_significant": n_sig,
            "covariate": label,
        },
        {
            "basis": basis if covariate is None else None,
            "factors": np.atleast_1d(np.asarray(factors, dtype=np.int64)).tolist() if factors is not None else None,
            "normalize": bool(normalize),
            "groupby": groupby,
            "groups": [str(g) for g in ([groups] if isinstance(groups, str) else groups)]
            if groups is not None
            else None,
            "min_fraction": float(min_fraction),
            "layer": layer,
            "method": method,
            "alpha": float(alpha),
        },
    )
    target = adata.copy() if copy else adata
    _save_results(
        target,
        [("obs", f"{key_added}_covariate", pd.Series(column, index=adata.obs_names)), ("uns", key_added, uns)],
        start,
    )
    return target if copy else None
