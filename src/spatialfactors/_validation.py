"""Shared input checks and the single place where tools write their results.

Validators are named for what they assert and fail with a message that says how to fix the
input. Tools compute everything first and then call :func:`_save_results` once, so an error
leaves the AnnData untouched.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np
import scipy.sparse as sp
from anndata import AnnData
from scanpy import logging as logg


def _extract_adata(data, table_key: str | None = None) -> AnnData:
    """Return the AnnData of ``data``, resolving a SpatialData to its table ``table_key``."""
    if isinstance(data, AnnData):
        return data
    tables = getattr(data, "tables", None)
    if tables is not None:
        if table_key is None:
            raise ValueError(f"A SpatialData needs `table_key=` to name its table; available tables: {sorted(tables)}.")
        if table_key not in tables:
            raise KeyError(f"Table {table_key!r} not found in the SpatialData; available: {sorted(tables)}.")
        return tables[table_key]
    raise TypeError(f"Expected an AnnData or a SpatialData, got {type(data).__name__}.")


def _get_matrix(adata: AnnData, layer: str | None):
    """``adata.X`` or ``adata.layers[layer]``, with a clear error for a missing layer."""
    if layer is None:
        x = adata.X
        if x is None:
            raise ValueError("`adata.X` is empty; pass `layer=` naming the matrix to use.")
        return x
    if layer not in adata.layers:
        raise KeyError(f"Layer {layer!r} not found in `adata.layers`; available layers: {sorted(adata.layers)}.")
    return adata.layers[layer]


def _assert_nonnegative_finite(x, what: str = "The data") -> None:
    """Fail on NaN/inf or negative entries (dense or sparse)."""
    values = x.data if sp.issparse(x) else np.asarray(x)
    if not np.issubdtype(values.dtype, np.number) or np.issubdtype(values.dtype, np.complexfloating):
        raise TypeError(f"{what} must be real numbers, got dtype {values.dtype}.")
    if not np.isfinite(values).all():
        n_bad = int((~np.isfinite(values)).sum())
        raise ValueError(
            f"{what} contain {n_bad} NaN or infinite values; impute or remove them first "
            "(for Allen voxel grids: `sf.pp.impute_voxels(adata)`)."
        )
    if values.size and values.min() < 0:
        raise ValueError(
            f"{what} contain negative values (minimum {values.min():.4g}); non-negative factorisation needs "
            "counts or normalised expression without centring or scaling."
        )


def _assert_no_empty_lines(x, obs_label: str = "obs", var_label: str = "genes") -> None:
    """Fail when a row (obs) or a column (gene) is all zero."""
    nz = (x != 0) if sp.issparse(x) else (np.asarray(x) != 0)
    rows = np.asarray(nz.sum(axis=1)).ravel() == 0
    cols = np.asarray(nz.sum(axis=0)).ravel() == 0
    if cols.any():
        raise ValueError(
            f"{int(cols.sum())} {var_label} are zero in all {obs_label}; "
            "remove them first, e.g. `sc.pp.filter_genes(adata, min_cells=1)`."
        )
    if rows.any():
        raise ValueError(
            f"{int(rows.sum())} {obs_label} have no expression; "
            "remove them first, e.g. `sc.pp.filter_cells(adata, min_counts=1)`."
        )


def _assert_int_range(name: str, value, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"`{name}` must be an integer, got {value!r}.")
    if value < low or (high is not None and value > high):
        upper = f" and at most {high}" if high is not None else ""
        raise ValueError(f"`{name}` must be at least {low}{upper}, got {value}.")


def _assert_choice(name: str, value, choices: Iterable) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}.")


def _save_results(adata: AnnData, writes: list[tuple[str, str, object]], start: float | None = None) -> None:
    """Write every result in one step and log it like scanpy (``Adding adata.obsm['X_...']``)."""
    for attr, key, value in writes:
        getattr(adata, attr)[key] = value
    keys = ", ".join(f"`adata.{attr}[{key!r}]`" for attr, key, _ in writes)
    logg.info(f"finished ({time.perf_counter() - start:.1f}s)" if start is not None else "finished")
    logg.hint(f"added {keys}")
