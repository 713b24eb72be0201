"""``sf.pp.impute_voxels``: spatial k-nearest-neighbour imputation of missing voxels, as the staNMF paper."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scanpy import logging as logg

from spatialfactors._validation import (
    _assert_bool,
    _assert_copy,
    _assert_fits_memory,
    _assert_int_range,
    _assert_real_dtype,
    _assert_str,
    _extract_adata,
    _fix_dtype_hint,
    _get_matrix,
    _matrix_label,
    _save_results,
    _warn_undefined,
)
from spatialfactors.models.impute import knn_fill


def _holdout(missing: np.ndarray, n_holdout: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n_holdout`` observed voxels per gene drawn without replacement, as (rows, cols)."""
    rows = [rng.choice(np.flatnonzero(~missing[:, j]), size=n_holdout, replace=False) for j in range(missing.shape[1])]
    cols = np.repeat(np.arange(missing.shape[1]), n_holdout)
    return np.concatenate(rows) if rows else np.empty(0, int), cols


def _pcc(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant."""
    a = a - a.mean()
    b = b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


def impute_voxels(
    adata: AnnData,
    n_neighbors: int = 6,
    *,
    layer: str | None = None,
    spatial_key: str = "spatial",
    evaluate: bool = False,
    n_holdout: int = 1000,
    random_state: int = 0,
    table_key: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Fill missing voxels (NaN) of each gene from its nearest observed voxels in space.

    The staNMF paper "imputed missing voxels in the gene expression data using a k-nearest
    neighbors algorithm with six neighbors" (Methods, Data Description and Preprocessing;
    :cite:`cahill2024stanmf`). Here, for every gene separately, a missing voxel gets the mean of
    the ``n_neighbors`` voxels nearest to it in ``.obsm[spatial_key]`` (Euclidean distance;
    ties broken by observation order) among the voxels where that gene is observed, i.e.
    uniform-weight k-nearest-neighbour regression on the voxel coordinates. Only the voxels
    of ``adata`` (the brain mask for :func:`spatialfactors.io.read_aba`) serve as neighbours.
    A gene with fewer than ``n_neighbors`` observed voxels gets the mean of all of them; a
    gene with none is an error (drop it first). Observed values are never changed.

    One neighbour search serves all genes: each voxel's nearest voxels are listed once and the
    list is widened only where a gene's observed voxels are too far away (e.g. a missing
    section), so the cost does not grow with a tree per gene.

    With ``evaluate=True`` the paper's hold-out check is run before imputing: for each gene,
    ``n_holdout`` random observed voxels are hidden, predicted from the remaining observed
    voxels by the same rule, and compared with their measured values (mean absolute error,
    mean signed error, RMSE, Pearson correlation), next to the baseline of predicting the
    gene's mean over the remaining observed voxels. The paper reports, on 1,000 voxels for each
    of 4,345 genes, a mean error below 0.01 and a PCC of 0.52.

    Parameters
    ----------
    adata
        Voxel-by-gene data, missing values as NaN (:func:`spatialfactors.io.read_aba` turns
        Allen's -1 into NaN), voxel centres in ``.obsm[spatial_key]``.
    n_neighbors
        Number k of observed voxels averaged per missing voxel.
    layer
        Layer to impute instead of ``.X`` (it is replaced by the imputed matrix).
    spatial_key
        Key of the voxel coordinates in ``.obsm``.
    evaluate
        Run the hold-out check and store its errors.
    n_holdout
        Observed voxels hidden per gene by the check; must be smaller than every gene's
        number of observed voxels.
    random_state
        Seed of the hold-out draw.
    table_key
        Table of a SpatialData input.
    copy
        Return an imputed copy instead of modifying ``adata``.

    Returns
    -------
    ``None`` or the copy. The matrix has no NaN left and ``.uns['impute_voxels']`` holds
    ``params``, ``n_imputed`` (total number of filled values) and ``per_gene`` (a table indexed
    by gene with ``n_observed``, ``n_imputed`` and, with ``evaluate``, ``mae``, ``mean_error``,
    ``rmse``, ``pcc``, ``baseline_mae``); with ``evaluate`` also ``evaluation``, the same
    measures over all held-out values pooled (and ``n_points``).

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> import spatialfactors as sf
    >>> x = np.array([[1.0], [np.nan], [3.0], [10.0]], dtype=np.float32)
    >>> adata = ad.AnnData(x, obsm={"spatial": np.array([[0.0], [1.0], [2.0], [9.0]])})
    >>> sf.pp.impute_voxels(adata, n_neighbors=2)
    >>> adata.X.ravel()
    array([ 1.,  2.,  3., 10.], dtype=float32)
    >>> int(adata.uns["impute_voxels"]["n_imputed"])
    1
    """
    start = time.perf_counter()
    adata = _extract_adata(adata, table_key)
    x = _get_matrix(adata, layer)
    _assert_int_range("n_neighbors", n_neighbors, 1)
    _assert_bool("evaluate", evaluate)
    _assert_int_range("n_holdout", n_holdout, 1)
    _assert_int_range("random_state", random_state, 0)
    _assert_copy(adata, copy)
    _assert_str("spatial_key", spatial_key)
    if spatial_key not in adata.obsm:
        raise KeyError(
            f"`adata.obsm[{spatial_key!r}]` with the voxel coordinates not found; voxel data read by "
            f"`sf.io.read_aba` carry it (available keys: {sorted(adata.obsm)})."
        )
    coords = np.asarray(adata.obsm[spatial_key])
    if coords.dtype.kind not in "iuf" or coords.ndim != 2 or coords.shape[0] != adata.n_obs:
        raise ValueError(
            f"`adata.obsm[{spatial_key!r}]` must be a real (n_obs, n_dims) array of coordinates, got dtype "
            f"{coords.dtype} and shape {coords.shape}."
        )
    coords = coords.astype(np.float64)
    if not np.isfinite(coords).all():
        raise ValueError(
            f"`adata.obsm[{spatial_key!r}]` must be a finite (n_obs, n_dims) array of coordinates; it has NaN or "
            "infinite values, but every voxel needs a place."
        )
    if sp.issparse(x):
        raise TypeError(
            "Voxel imputation needs a dense matrix with NaN for missing values, got a sparse matrix (whose "
            "missing entries would read as 0); densify it first, e.g. `adata.X = adata.X.toarray()`."
        )
    x = np.asarray(x)
    _assert_real_dtype(x, _matrix_label(layer, "The expression values"), _fix_dtype_hint(layer))
    if np.isinf(x).any():
        raise ValueError(
            f"The matrix contains {int(np.isinf(x).sum())} infinite values; only NaN marks missing. Replace them, "
            "e.g. `x[np.isinf(x)] = np.nan`."
        )
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    memory_hint = (
        "impute a subset of the genes at a time (e.g. `sf.pp.impute_voxels(adata[:, genes].copy())`), "
        "or read the grids as float32 (`sf.io.read_aba(..., dtype='float32')`)"
    )
    what = f"Imputing {x.shape[0]} voxels x {x.shape[1]} genes"
    # The NaN mask and the filled copy; then the indices and predictions of the missing entries.
    _assert_fits_memory(x.size * (1 + np.dtype(dtype).itemsize), what, memory_hint)
    missing = np.isnan(x)
    _assert_fits_memory(x.size * np.dtype(dtype).itemsize + 24 * int(missing.sum()), what, memory_hint)
    n_observed = adata.n_obs - missing.sum(axis=0)
    if (n_observed == 0).any():
        empty = list(adata.var_names[n_observed == 0][:5])
        raise ValueError(
            f"{int((n_observed == 0).sum())} genes have no observed voxel (e.g. {empty}); remove them first, "
            "e.g. `adata = adata[:, ~np.isnan(adata.X).all(0)].copy()`."
        )
    if evaluate and n_holdout >= n_observed.min():
        j = int(np.argmin(n_observed))
        raise ValueError(
            f"`n_holdout={n_holdout}` must be smaller than every gene's number of observed voxels; "
            f"gene {adata.var_names[j]!r} has {int(n_observed[j])}."
        )
    if np.nanmin(x, initial=0) < 0:
        logg.warning("The matrix has negative values; Allen grids mark missing voxels with -1, use NaN instead.")

    per_gene = pd.DataFrame(
        {"n_observed": n_observed.astype(np.int64), "n_imputed": missing.sum(axis=0).astype(np.int64)},
        index=adata.var_names.copy(),
    )
    uns: dict = {
        "params": {
            "n_neighbors": int(n_neighbors),
            "layer": layer if layer is not None else "X",
            "spatial_key": spatial_key,
            "evaluate": bool(evaluate),
            "n_holdout": int(n_holdout),
            "random_state": int(random_state),
        },
        "n_imputed": int(missing.sum()),
        "per_gene": per_gene,
    }
    if evaluate:
        rng = np.random.default_rng(random_state)
        h_rows, h_cols = _holdout(missing, n_holdout, rng)
        hidden = missing.copy()
        hidden[h_rows, h_cols] = True
        truth = x[h_rows, h_cols].astype(np.float64)
        guess = knn_fill(coords, x, hidden, h_rows, h_cols, n_neighbors).astype(dtype).astype(np.float64)
        gene_mean = np.where(hidden, 0, x).sum(axis=0, dtype=np.float64) / (~hidden).sum(axis=0)
        err = guess - truth
        base = np.abs(gene_mean[h_cols] - truth)
        shape = (x.shape[1], n_holdout)  # h_cols is gene-major
        per_gene["mae"] = np.abs(err).reshape(shape).mean(axis=1)
        per_gene["mean_error"] = err.reshape(shape).mean(axis=1)
        per_gene["rmse"] = np.sqrt((err**2).reshape(shape).mean(axis=1))
        per_gene["pcc"] = [_pcc(g, t) for g, t in zip(guess.reshape(shape), truth.reshape(shape), strict=True)]
        per_gene["baseline_mae"] = base.reshape(shape).mean(axis=1)
        undefined = per_gene.index[per_gene["pcc"].isna()]
        if len(undefined):
            _warn_undefined(
                f"The hold-out PCC of {len(undefined)} gene(s) (e.g. {list(undefined[:3])})",
                "their held-out values or their predictions are constant",
                "read their MAE and RMSE instead",
            )
        uns["evaluation"] = {
            "mae": float(np.abs(err).mean()),
            "mean_error": float(err.mean()),
            "rmse": float(np.sqrt((err**2).mean())),
            "pcc": _pcc(guess, truth),
            "baseline_mae": float(base.mean()),
            "n_points": len(truth),
        }
        ev = uns["evaluation"]
        if np.isnan(ev["pcc"]):
            _warn_undefined("The pooled hold-out PCC", "the held-out values or their predictions are constant", None)
        logg.info(
            f"hold-out check on {len(truth)} voxels: MAE {ev['mae']:.4g} (gene mean: {ev['baseline_mae']:.4g}), "
            f"mean error {ev['mean_error']:.3g}, PCC {ev['pcc']:.3f}"
        )

    rows, cols = np.nonzero(missing)
    filled = np.array(x, dtype=dtype, copy=True)
    filled[rows, cols] = knn_fill(coords, x, missing, rows, cols, n_neighbors)

    target = adata.copy() if copy else adata
    writes = [("X", None, filled) if layer is None else ("layers", layer, filled), ("uns", "impute_voxels", uns)]
    _save_results(target, writes, start)
    return target if copy else None
