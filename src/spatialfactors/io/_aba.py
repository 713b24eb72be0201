"""Allen Mouse Brain Atlas 3D expression grids + grid annotation -> voxel-by-gene AnnData."""

from __future__ import annotations

import os
import re
import time
import warnings
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from scanpy import logging as logg
from tqdm.auto import tqdm

from spatialfactors._validation import _assert_bool, _assert_choice, _assert_fits_memory

from ._metaimage import read_mhd
from ._ontology import Ontology, _as_ontology, _structure_ids
from ._zip import is_zip, open_member, open_zip

# Allen's grid downloads are named <Symbol>_P56_<plane>_<SectionDataSet id>_<resolution>um.zip;
# symbols may hold '_', '.', '-', '*' (the manifest marks unconfirmed RIKEN symbols with '*').
_FILENAME = re.compile(r"^(?P<symbol>.+?)_P\d+_(?P<plane>coronal|sagittal)_(?P<id>\d+)_\d+um$", re.IGNORECASE)


def _data_set_xml(path: Path, *, need_plane: bool) -> dict:
    """Section data set id (and plane) from ``data_set.xml`` inside an Allen zip, if there is one.

    The file is 0.1-0.2 MB (mostly the section image list); it is parsed incrementally and left as
    soon as the top-level ``<id>`` is seen, unless the plane (the last field) is still needed.
    """
    if not is_zip(path):
        return {}
    out: dict = {}
    with open_zip(path) as zf:
        member = next((n for n in zf.namelist() if Path(n).name == "data_set.xml"), None)
        if member is None:
            return {}
        parser = ET.XMLPullParser(events=("start", "end"))
        depth = 0
        with open_member(zf, zf.getinfo(member), path) as (fh, _):
            try:
                while chunk := fh.read(1 << 14):
                    parser.feed(chunk)
                    for event, elem in parser.read_events():
                        depth += 1 if event == "start" else -1
                        if event != "end" or depth != 1:  # only direct children of <section-data-set>
                            continue
                        if elem.tag == "id" and (elem.text or "").strip().isdigit():
                            out["section_data_set_id"] = int(elem.text)
                        elif elem.tag == "plane_of_section":  # empty in the 2015 downloads; text or <name>
                            text = (elem.findtext("name") or elem.text or "").strip()
                            if text:
                                out["plane"] = text.lower()
                        elem.clear()
                    if "section_data_set_id" in out and ("plane" in out or not need_plane):
                        break
            except ET.ParseError:
                return out
    return out


def _gene_metadata(path: Path) -> dict:
    """Gene symbol, section data set id and plane from an Allen file name and its ``data_set.xml``."""
    stem = path.name.removesuffix(path.suffix)
    match = _FILENAME.match(stem)
    meta = {"gene_symbol": stem, "section_data_set_id": None, "plane": None}
    if match:
        meta.update(gene_symbol=match["symbol"], section_data_set_id=int(match["id"]), plane=match["plane"].lower())
    xml = _data_set_xml(path, need_plane=meta["plane"] is None)
    if "section_data_set_id" in xml:
        if meta["section_data_set_id"] not in (None, xml["section_data_set_id"]):
            warnings.warn(
                f"{path.name}: the file name says section data set {meta['section_data_set_id']} but its "
                f"data_set.xml says {xml['section_data_set_id']}; using data_set.xml.",
                UserWarning,
                stacklevel=3,
            )
        meta["section_data_set_id"] = xml["section_data_set_id"]
    if "plane" in xml:
        meta["plane"] = xml["plane"]
    return meta


def _unique_names(symbols: list[str], ids: list[int | None]) -> list[str]:
    """Gene symbols as var names; a symbol measured in several experiments gets ``_<data set id>``."""
    counts = Counter(symbols)
    names = [s if counts[s] == 1 or i is None else f"{s}_{i}" for s, i in zip(symbols, ids, strict=True)]
    if len(set(names)) < len(names):  # no data set id to tell repeats apart
        seen: Counter = Counter()
        unique = []
        for n in names:
            unique.append(n if seen[n] == 0 else f"{n}-{seen[n]}")
            seen[n] += 1
        names = unique
    return names


def _spacing(header: dict, where: str) -> float:
    spacing = tuple(float(s) for s in header.get("ElementSpacing", (1.0,) * len(header["DimSize"])))
    if len(set(spacing)) != 1:
        raise ValueError(f"{where}: anisotropic ElementSpacing {spacing} is not supported; Allen grids are isotropic.")
    return spacing[0]


def read_aba(
    energy: str | os.PathLike | Sequence[str | os.PathLike],
    annotation: str | os.PathLike,
    *,
    ontology: Ontology | str | os.PathLike | None = None,
    mask: np.ndarray | None = None,
    brain_only: bool = True,
    genes: Sequence[str] | None = None,
    dtype: str = "float32",
    progress: bool = False,
) -> AnnData:
    r"""Read Allen Mouse Brain Atlas 3D expression grids into a voxel-by-gene AnnData.

    Every file is one gene's grid (an ``energy`` volume, one ISH experiment) as Allen serves it
    (``<Symbol>_P56_<plane>_<id>_200um.zip`` holding ``energy.mhd``/``energy.raw``, or an unpacked
    ``.mhd``); the annotation is the grid annotation on the same grid (``gridAnnotation`` zip or
    ``.mhd``). Observations are brain voxels, as in the paper's preprocessing (Methods, "Data
    Description and Preprocessing": the voxel-by-gene matrix restricted to a brain mask).

    Voxels without data (Allen's -1, any negative value) become NaN: impute them with
    :func:`spatialfactors.pp.impute_voxels`. The matrix is allocated once and filled one gene at a
    time, so memory stays at the final matrix plus one grid.

    Parameters
    ----------
    energy
        One grid file or a sequence of them (zip or ``.mhd``), one gene each.
    annotation
        The grid annotation (structure id per voxel, 0 outside the brain).
    ontology
        An :class:`~spatialfactors.io.Ontology` or a structure CSV; adds ``obs['acronym']`` and
        ``obs['name']`` and checks that every annotated id is a known structure.
    mask
        Boolean array of the grid shape selecting the voxels to keep; overrides the annotation mask.
    brain_only
        Keep the voxels with a nonzero annotation; otherwise all voxels of the grid (ignored with ``mask``).
    genes
        Gene symbols, one per file, used instead of the symbols in Allen's file names.
    dtype
        ``"float32"`` or ``"float64"`` for ``.X``.
    progress
        Show a progress bar over files.

    Returns
    -------
    AnnData with voxels as obs (order ``np.flatnonzero(mask)``, names ``voxel_<flat index>``) and genes
    as var:

    - ``.X``: expression energy, NaN where Allen has no data.
    - ``.obs['region_id']``: annotation id (int64); ``'acronym'``, ``'name'`` with an ontology.
    - ``.var``: ``'gene_symbol'``, ``'section_data_set_id'``, ``'plane'`` (from the file name or the
      archive's ``data_set.xml``); var names are the symbols, with ``_<section_data_set_id>`` appended
      to symbols read from several experiments.
    - ``.obsm['spatial']``: voxel centres in micrometres (index x spacing; axes AP, DV, ML).
    - ``.uns['aba']``: ``'grid_shape'`` (int array, e.g. ``[67, 41, 58]``), ``'spacing'`` (float, um), ``'mask'``
      (bool array of the grid shape); :func:`~spatialfactors.io.to_volume` reads them.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> import spatialfactors as sf
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> def write(name, array, etype):
    ...     (folder / f"{name}.mhd").write_text(
    ...         f"NDims = 3\nDimSize = 3 2 2\nElementType = {etype}\nElementSpacing = 200 200 200\n"
    ...         f"ElementDataFile = {name}.raw\n"
    ...     )
    ...     (folder / f"{name}.raw").write_bytes(array.tobytes(order="F"))
    >>> labels = np.zeros((3, 2, 2), "<u4")
    >>> labels[:2, 0, 0] = 315
    >>> write("annotation", labels, "MET_UINT")
    >>> write("Gene1_P56_coronal_1_200um", np.where(labels > 0, 2.5, -1).astype("<f4"), "MET_FLOAT")
    >>> adata = sf.io.read_aba(folder / "Gene1_P56_coronal_1_200um.mhd", folder / "annotation.mhd")
    >>> adata.shape, adata.var_names.tolist(), adata.obsm["spatial"][1].tolist()
    ((2, 1), ['Gene1'], [200.0, 0.0, 0.0])
    """
    start = time.perf_counter()
    _assert_choice("dtype", dtype, ("float32", "float64"))
    _assert_bool("brain_only", brain_only)
    _assert_bool("progress", progress)
    if isinstance(energy, str | os.PathLike):
        files = [Path(energy)]
    elif isinstance(energy, Sequence) and all(isinstance(f, str | os.PathLike) for f in energy):
        files = [Path(f) for f in energy]
    else:
        raise TypeError(f"`energy` must be a path or a sequence of paths to Allen grid files, got {energy!r}.")
    if not isinstance(annotation, str | os.PathLike):
        raise TypeError(f"`annotation` must be the path of the grid annotation, got {annotation!r}.")
    if not files:
        raise ValueError("`energy` is empty: pass one or more Allen grid files.")
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"Expression grid not found: {f}.")
    if genes is not None:
        genes = [genes] if isinstance(genes, str) else list(genes)
        if len(genes) != len(files):
            raise ValueError(f"`genes` has {len(genes)} names for {len(files)} files; pass one name per file.")
        if not all(isinstance(g, str) and g for g in genes):
            raise TypeError(f"`genes` must be non-empty strings, one per file, got {genes[:5]!r}.")

    labels, header = read_mhd(annotation)
    where = str(annotation)
    if labels.ndim != 3:
        raise ValueError(f"{where}: the annotation must be a 3D grid, got shape {labels.shape}.")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{where}: the annotation must hold integer structure ids, got {header['ElementType']}.")
    spacing = _spacing(header, where)
    shape = tuple(int(s) for s in labels.shape)
    if mask is None:
        mask = labels > 0 if brain_only else np.ones(shape, dtype=bool)
    else:
        mask = np.asarray(mask)
        if mask.dtype != bool:
            raise TypeError(f"`mask` must be a boolean array, got dtype {mask.dtype}.")
        if mask.shape != shape:
            raise ValueError(f"`mask` has shape {mask.shape}, but the annotation grid has shape {shape}.")
        mask = mask.copy()
    if not mask.any():
        raise ValueError("The mask selects no voxels.")
    # Obs are the mask's voxels in C order of the grid (the order `to_volume` places them back in).
    voxels = np.nonzero(mask)
    flat = np.flatnonzero(mask)
    region_id = _structure_ids(labels[voxels], f"{where}: the annotation")

    obs = pd.DataFrame({"region_id": region_id}, index=pd.Index([f"voxel_{i}" for i in flat]))
    if ontology is not None:
        onto = _as_ontology(ontology)
        present = np.unique(region_id)
        absent = [int(i) for i in present if i != 0 and i not in onto]
        if absent:
            raise ValueError(
                f"{len(absent)} structure ids of the annotation {where} are not in the ontology, e.g. {absent[:8]}; "
                "use the ontology that belongs to this annotation."
            )
        known = present[present != 0]
        lookup = pd.DataFrame(
            {"acronym": onto.acronym_of(known), "name": onto.name_of(known)}, index=pd.Index(known)
        ).reindex(region_id)  # the background id 0 (only with a custom mask) gets NaN
        obs["acronym"] = pd.Categorical(lookup["acronym"].to_numpy())
        obs["name"] = pd.Categorical(lookup["name"].to_numpy())

    metas = [_gene_metadata(f) for f in files]
    symbols = genes if genes is not None else [m["gene_symbol"] for m in metas]
    ids = [m["section_data_set_id"] for m in metas]
    var = pd.DataFrame(
        {
            "gene_symbol": pd.array(symbols, dtype=object),
            "section_data_set_id": pd.array(ids, dtype="Int64"),
            "plane": pd.Categorical([m["plane"] for m in metas]),
        },
        index=pd.Index(_unique_names(list(symbols), ids)),
    )

    # One preallocated matrix, filled column by column: peak memory = X + one grid (a 4,345-gene
    # 200 um atlas is 1.1 GB in float32; no list of volumes, no stacking copy).
    _assert_fits_memory(
        len(flat) * len(files) * np.dtype(dtype).itemsize + 8 * mask.size,
        f"The {len(flat)} voxels x {len(files)} genes matrix ({dtype})",
        "read fewer genes at a time (a list of files) or keep fewer voxels with `mask=`"
        + (", or use `dtype='float32'`" if dtype == "float64" else ""),
    )
    x = np.empty((len(flat), len(files)), dtype=dtype)
    for j, f in enumerate(tqdm(files, desc="ABA grids", unit="gene", disable=not progress)):
        volume, gene_header = read_mhd(f, name="energy" if _has_several_headers(f) else None)
        if volume.shape != shape:
            raise ValueError(f"{f}: grid shape {volume.shape} differs from the annotation's {shape} ({where}).")
        if "ElementSpacing" in gene_header and _spacing(gene_header, str(f)) != spacing:
            raise ValueError(f"{f}: spacing {_spacing(gene_header, str(f))} differs from the annotation's {spacing}.")
        column = volume[voxels]
        x[:, j] = column
        x[column < 0, j] = np.nan  # Allen's -1: no data for this voxel

    adata = AnnData(X=x, obs=obs, var=var)
    adata.obsm["spatial"] = np.column_stack(voxels).astype(np.float64) * spacing
    # grid_shape as an int array (not a tuple): anndata cannot write tuples to .h5ad.
    adata.uns["aba"] = {"grid_shape": np.array(shape, dtype=np.int64), "spacing": spacing, "mask": mask}
    logg.info(f"read {len(files)} ABA grids, {adata.n_obs} voxels ({time.perf_counter() - start:.1f}s)")
    return adata


def _has_several_headers(path: Path) -> bool:
    """Tell whether a zip holds several MetaImages (e.g. energy + density), so that ``energy`` is picked."""
    if not is_zip(path):
        return False
    with open_zip(path) as zf:
        return sum(Path(n).suffix.lower() in (".mhd", ".mha") for n in zf.namelist()) > 1
