"""``sf.pp.normalize_spicemix``: the SpiceMix paper's normalisation, with scanpy."""

from __future__ import annotations

import time

import numpy as np
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData

from spatialfactors._validation import (
    _assert_categorical,
    _assert_copy,
    _assert_fits_memory,
    _assert_int_range,
    _assert_nonnegative_finite,
    _assert_real_range,
    _extract_adata,
    _fix_dtype_hint,
    _get_matrix,
    _matrix_label,
    _save_results,
)
from spatialfactors.models.hmrf import group_scale


def normalize_spicemix(
    adata: AnnData,
    n_factors: int | None = None,
    *,
    target_sum: float = 1e4,
    library_key: str | None = None,
    layer: str | None = None,
    table_key: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Normalise counts as the SpiceMix paper: per-cell total ``target_sum``, log1p, mean total K.

    Each cell is scaled to ``target_sum`` total counts (:func:`scanpy.pp.normalize_total`)
    and log-transformed (:func:`scanpy.pp.log1p`); with ``n_factors``, each field of view
    (``library_key``) is then scaled so that the mean total per cell is K, "normalize the
    average of the total normalized expression levels in individual cells to K"
    (:cite:`chidester2023spicemix`). :func:`spatialfactors.tl.spicemix` applies that last
    step itself (``rescale=True``), so ``n_factors`` is only needed to inspect the data.

    Parameters
    ----------
    adata
        Cells x genes counts (in ``.X`` or ``layer``; the result replaces it).
    n_factors
        K for the last step; ``None`` skips it.
    target_sum
        Total per cell after the first step.
    library_key
        Categorical ``.obs`` column with the field of view of each cell.
    layer
        Layer to normalise instead of ``.X``.
    table_key
        Table of a SpatialData input.
    copy
        Return a normalised copy.

    Returns
    -------
    ``None`` or the copy; the matrix is replaced by its normalised values.

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> import spatialfactors as sf
    >>> adata = ad.AnnData(np.array([[1.0, 3.0], [2.0, 2.0]]))
    >>> sf.pp.normalize_spicemix(adata, 10)
    >>> float(adata.X.sum(1).mean())
    10.0
    """
    start = time.perf_counter()
    adata = _extract_adata(adata, table_key)
    x = _get_matrix(adata, layer)
    _assert_nonnegative_finite(x, _matrix_label(layer, "The counts"), _fix_dtype_hint(layer))
    _assert_real_range("target_sum", target_sum, 0, low_open=True)
    if n_factors is not None:
        _assert_int_range("n_factors", n_factors, 1)
    if library_key is not None:
        _assert_categorical(adata, library_key)
    _assert_copy(adata, copy)
    totals = np.asarray(x.sum(axis=1)).ravel()
    if (totals == 0).any():
        raise ValueError(
            f"{int((totals == 0).sum())} cells have no counts; remove them first, e.g. "
            "`sc.pp.filter_cells(adata, min_counts=1)`."
        )
    # The float64 copy and scanpy's working copies of it.
    _assert_fits_memory(
        3 * ((x.nnz * 12 + x.shape[0] * 8) if sp.issparse(x) else x.size * 8),
        f"Normalising {x.shape[0]} cells x {x.shape[1]} genes",
        "normalise a subset of the cells or genes, or store the counts sparse (`scipy.sparse.csr_matrix`)",
    )
    # On a scratch AnnData so that an error cannot leave `adata` half-normalised.
    # scanpy's normalize_total mis-shapes scipy sparse *arrays*: work on a CSR matrix, return the input's kind.
    scratch = AnnData(sp.csr_matrix(x, dtype=np.float64, copy=True) if sp.issparse(x) else x.astype(np.float64))
    sc.pp.normalize_total(scratch, target_sum=target_sum)
    sc.pp.log1p(scratch)
    values = scratch.X
    if n_factors is not None:
        codes = adata.obs[library_key].cat.codes.to_numpy() if library_key is not None else np.zeros(len(totals), int)
        factors = group_scale(np.asarray(values.sum(axis=1)).ravel(), codes, n_factors)[codes]
        values = sp.csr_matrix(values.multiply(factors[:, None])) if sp.issparse(values) else values * factors[:, None]
    if isinstance(x, sp.sparray):
        values = sp.csr_array(values)
    target = adata.copy() if copy else adata
    _save_results(target, [("X", None, values) if layer is None else ("layers", layer, values)], start)
    return target if copy else None
