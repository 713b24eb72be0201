"""Per-voxel vectors <-> 3D volumes, using the grid that voxel AnnData objects carry in ``.uns['aba']``."""

from __future__ import annotations

import numpy as np
from anndata import AnnData


def _grid(adata: AnnData) -> tuple[tuple[int, int, int], np.ndarray, float]:
    """Grid shape (AP, DV, ML), brain mask and spacing from ``.uns['aba']``."""
    info = adata.uns.get("aba")
    if not isinstance(info, dict) or "mask" not in info:
        raise KeyError(
            "`adata.uns['aba']` with the voxel grid (`grid_shape`, `spacing`, `mask`) not found; "
            "voxel data read by `sf.io.read_aba` carry it."
        )
    mask = np.asarray(info["mask"], dtype=bool)
    shape = tuple(int(s) for s in info.get("grid_shape", mask.shape))
    if mask.shape != shape:
        raise ValueError(f"`adata.uns['aba']['mask']` has shape {mask.shape}, expected the grid shape {shape}.")
    if int(mask.sum()) != adata.n_obs:
        raise ValueError(f"The grid mask has {int(mask.sum())} voxels but `adata` has {adata.n_obs} observations.")
    return shape, mask, float(info.get("spacing", 1.0))


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
        A vector over obs, or a name: a column of ``.obs``, a gene (a column of ``.X``), or,
        with ``basis``, the index of a column of ``.obsm[basis]``.
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
    shape, mask, _ = _grid(adata)
    if basis is not None:
        if basis not in adata.obsm:
            raise KeyError(f"`adata.obsm[{basis!r}]` not found.")
        vec = np.asarray(adata.obsm[basis])[:, int(values)]
    elif isinstance(values, str):
        if values in adata.obs:
            vec = adata.obs[values].to_numpy()
        elif values in adata.var_names:
            col = adata[:, values].X
            vec = np.asarray(col.todense() if hasattr(col, "todense") else col).ravel()
        else:
            raise KeyError(f"{values!r} is neither a column of `adata.obs` nor a gene in `adata.var_names`.")
    else:
        vec = np.asarray(values).ravel()
    if vec.shape[0] != adata.n_obs:
        raise ValueError(f"`values` has length {vec.shape[0]}, expected one value per voxel ({adata.n_obs}).")
    volume = np.full(shape, fill_value, dtype=np.float64)
    volume[mask] = vec
    return volume
