"""Atlas data a tool or plot reads: the voxel grid of ``.uns['aba']`` and a structure ontology."""

from __future__ import annotations

import os

import numpy as np
from anndata import AnnData

from spatialfactors._validation import _extract_adata


def grid(adata: AnnData, *, table_key: str | None = None) -> tuple[tuple[int, int, int], np.ndarray, float]:
    """Return the voxel grid of voxel data: its shape (AP, DV, ML), brain mask and spacing, checked.

    Parameters
    ----------
    adata
        Voxel data read by :func:`spatialfactors.io.read_aba` (``.uns['aba']`` holds the grid), or a
        SpatialData with ``table_key``.
    table_key
        Table of a SpatialData input.

    Returns
    -------
    ``(shape, mask, spacing)``: the grid's size along AP, DV and ML, the boolean mask of the grid
    voxels that are obs (in obs order, C order over the grid) and the voxel size in micrometres.

    Examples
    --------
    >>> import numpy as np, anndata as ad
    >>> import spatialfactors as sf
    >>> mask = np.ones((1, 2, 3), dtype=bool)
    >>> adata = ad.AnnData(np.zeros((6, 1)), uns={"aba": {"grid_shape": (1, 2, 3), "spacing": 200.0, "mask": mask}})
    >>> shape, mask, spacing = sf.get.grid(adata)
    >>> shape, int(mask.sum()), spacing
    ((1, 2, 3), 6, 200.0)
    """
    from spatialfactors.io._volume import _grid  # io reads the grid for `to_volume`: one checker for both

    return _grid(_extract_adata(adata, table_key))


def _resolve_ontology(ontology):
    """Return an Ontology from an Ontology, a structure CSV path or None; anything else is an error."""
    if ontology is None:
        return None
    if isinstance(ontology, str | os.PathLike):
        from spatialfactors.io import read_ontology

        return read_ontology(ontology)
    # Duck-typed: anything with the lookups of an Ontology works (e.g. only `at_depth` for `level=`).
    if not any(hasattr(ontology, name) for name in ("map_to", "at_depth", "descendants", "id_of")):
        raise TypeError(
            "`ontology` must be an `sf.io.Ontology` or the path of Allen's structure CSV (read with "
            f"`sf.io.read_ontology(path)`), got {type(ontology).__name__}."
        )
    return ontology
