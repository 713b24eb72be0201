"""Per-voxel vectors <-> 3D volumes, using the grid that voxel AnnData objects carry in ``.uns['aba']``."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from spatialfactors._validation import _assert_fits_memory, _is_int


def _grid(adata: AnnData) -> tuple[tuple[int, int, int], np.ndarray, float]:
    """Grid shape (AP, DV, ML), brain mask and spacing from ``.uns['aba']``, checked."""
    info = adata.uns.get("aba")
    if not isinstance(info, dict) or "mask" not in info:
        raise KeyError(
            "`adata.uns['aba']` with the voxel grid (`grid_shape`, `spacing`, `mask`) not found; "
            "voxel data read by `sf.io.read_aba` carry it."
        )
    mask = np.asarray(info["mask"])
    if mask.dtype != bool:
        raise TypeError(
            f"`adata.uns['aba']['mask']` must be a boolean array of the grid shape, got dtype {mask.dtype}; "
            "it marks the grid voxels that are obs, as `sf.io.read_aba` writes it."
        )
    try:
        shape = tuple(int(s) for s in np.asarray(info.get("grid_shape", mask.shape)).ravel())
    except (TypeError, ValueError):
        raise TypeError(
            f"`adata.uns['aba']['grid_shape']` must be the grid's size along each axis, got {info['grid_shape']!r}."
        ) from None
    if mask.shape != shape:
        raise ValueError(f"`adata.uns['aba']['mask']` has shape {mask.shape}, expected the grid shape {shape}.")
    if int(mask.sum()) != adata.n_obs:
        raise ValueError(
            f"The grid mask has {int(mask.sum())} voxels but `adata` has {adata.n_obs} observations; after "
            "subsetting voxels, update the mask too (or subset genes only: `adata[:, genes]`)."
        )
    spacing = info.get("spacing", 1.0)
    if isinstance(spacing, bool) or not isinstance(spacing, int | float | np.integer | np.floating):
        raise TypeError(f"`adata.uns['aba']['spacing']` must be a number (micrometres), got {spacing!r}.")
    return shape, mask, float(spacing)


def _align_to_obs(values: pd.Series, adata: AnnData) -> np.ndarray:
    """Return a Series' values in the order of ``adata.obs_names``, matched by its index (not by position)."""
    index = values.index
    if index.equals(adata.obs_names):
        return values.to_numpy()
    if index.has_duplicates:
        raise ValueError(
            f"`values` is a Series whose index repeats labels, e.g. {index[index.duplicated()][:3].tolist()}; "
            "it is matched to `adata.obs_names`, so each voxel needs exactly one value."
        )
    missing = adata.obs_names.difference(index, sort=False)
    extra = index.difference(adata.obs_names, sort=False)
    if len(missing) or len(extra):
        raise ValueError(
            f"`values` is a Series whose index does not match `adata.obs_names`: {len(missing)} voxels have no value "
            f"(e.g. {missing[:3].tolist()}) and {len(extra)} labels are not voxels (e.g. {extra[:3].tolist()}); "
            "index it by `adata.obs_names`, or pass `values.to_numpy()` to place the values in obs order."
        )
    return values.reindex(adata.obs_names).to_numpy()


def to_volume(
    adata: AnnData,
    values: np.ndarray | str,
    *,
    basis: str | None = None,
    fill_value: float = np.nan,
) -> np.ndarray:
    """Place a per-voxel vector back into the 3D grid (axes AP, DV, ML).

    Observations are the voxels where ``adata.uns['aba']['mask']`` is true, in C order of the
    grid (``np.flatnonzero(mask)``); voxels outside the mask get ``fill_value``.

    Parameters
    ----------
    adata
        Voxel-by-gene data with ``.uns['aba']`` (``grid_shape``, ``spacing``, ``mask``).
    values
        A vector over obs (a Series is matched to ``adata.obs_names`` by its index), or a name: a
        column of ``.obs``, a gene (a column of ``.X``), or, with ``basis``, the index of a column of
        ``.obsm[basis]``.
    basis
        Key of ``.obsm`` when ``values`` is a column index.
    fill_value
        Value outside the mask.

    Returns
    -------
    Float array of the grid shape.

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> import spatialfactors as sf
    >>> mask = np.zeros((2, 2, 2), bool)
    >>> mask[0, :, 0] = True
    >>> adata = ad.AnnData(np.ones((2, 1)), uns={"aba": {"grid_shape": (2, 2, 2), "spacing": 200.0, "mask": mask}})
    >>> sf.io.to_volume(adata, np.array([1.0, 2.0]), fill_value=0)[0]
    array([[1., 0.],
           [2., 0.]])
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"`adata` must be an AnnData with the voxel grid in `.uns['aba']`, got {type(adata).__name__}.")
    shape, mask, _ = _grid(adata)
    if basis is not None:
        if not isinstance(basis, str):
            raise TypeError(f"`basis` must be a key of `adata.obsm` (a string), got {basis!r}.")
        if basis not in adata.obsm:
            raise KeyError(f"`adata.obsm[{basis!r}]` not found; available keys: {sorted(adata.obsm)}.")
        matrix = adata.obsm[basis]
        n_cols = matrix.shape[1] if getattr(matrix, "ndim", 1) == 2 else 0
        if not _is_int(values) or not 0 <= values < n_cols:
            raise ValueError(
                f"With `basis`, `values` must be a column index of `adata.obsm[{basis!r}]` (0 ... {n_cols - 1}), "
                f"got {values!r}."
            )
        vec = np.asarray(matrix.iloc[:, int(values)] if hasattr(matrix, "iloc") else matrix[:, int(values)])
        vec = vec.toarray() if hasattr(vec, "toarray") else vec
    elif isinstance(values, str):
        if values in adata.obs:
            vec = adata.obs[values].to_numpy()
        elif values in adata.var_names:
            col = adata[:, values].X
            vec = np.asarray(col.todense() if hasattr(col, "todense") else col)
        else:
            raise KeyError(f"{values!r} is neither a column of `adata.obs` nor a gene in `adata.var_names`.")
    elif isinstance(values, pd.Series):
        vec = _align_to_obs(values, adata)
    else:
        vec = np.asarray(values)
    vec = np.asarray(vec).ravel()
    if vec.dtype.kind not in "iufb":
        raise TypeError(
            f"`values` must be numeric to place into a volume, got dtype {vec.dtype}; for a categorical column "
            "use its codes, e.g. `adata.obs[key].cat.codes.to_numpy()`."
        )
    if vec.shape[0] != adata.n_obs:
        raise ValueError(f"`values` has length {vec.shape[0]}, expected one value per voxel ({adata.n_obs}).")
    if isinstance(fill_value, bool) or not isinstance(fill_value, int | float | np.integer | np.floating):
        raise TypeError(f"`fill_value` must be a number, got {fill_value!r}.")
    _assert_fits_memory(
        8 * int(np.prod(shape, dtype=np.float64)),
        f"A float64 volume of shape {shape}",
        "check `adata.uns['aba']['grid_shape']`, or place the values on a coarser grid",
    )
    volume = np.full(shape, fill_value, dtype=np.float64)
    volume[mask] = vec
    return volume
