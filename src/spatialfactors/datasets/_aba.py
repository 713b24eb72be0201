"""Allen Mouse Brain Atlas 200 um expression grids and structure ontology, downloaded once and cached (pooch).

Files live in ``<root>/aba_200um/grids/`` and ``<root>/aba_200um/ontology/``, where ``<root>`` is
``cache_dir``, else the folder in the ``SPATIALFACTORS_DATA`` environment variable, else
``pooch.os_cache("spatialfactors")``. Grids keep Allen's download names
(``<Symbol>_P56_<plane>_<SectionDataSet id>_200um.zip``), so a folder of earlier Allen downloads
is used as it is, without network.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from anndata import AnnData
from scanpy import logging as logg

from spatialfactors._validation import _assert_choice
from spatialfactors.io import Ontology, read_aba, read_ontology

from ._fetch import _fetch as _fetch_file
from ._fetch import _root

#: Allen Brain Map API host: RMA queries (``/api/v2/data/query.json``) and grid downloads (``/grid_data``).
ALLEN_API = "http://api.brain-map.org"
#: The grid annotation Allen ships with the 200 um expression grids (structure id per voxel).
ANNOTATION_URL = (
    "http://download.alleninstitute.org/informatics-archive/current-release/mouse_annotation/"
    "P56_Mouse_gridAnnotation.zip"
)
ANNOTATION_FILE = "P56_Mouse_gridAnnotation.zip"
ONTOLOGY_FILE = "allen_structure_ontology.csv"
# SHA256 of the Allen downloads whose content is known; other grids are used unchecked.
REGISTRY = {
    ANNOTATION_FILE: "sha256:e7c7c625c80f6059f8683af1ac99e39fbf8b1b4ed2713385999161daa47b220c",
    "Nrp1_P56_coronal_74272479_200um.zip": "sha256:79ee124750a4f74f73d5aea53121f70feb6b6d23c639b36163078b42d1960dc5",
    "Pdyn_P56_coronal_71717084_200um.zip": "sha256:36564d3205b9b787b7bcf42a6947f878e27e227437ee858c428073cc0a9c2d08",
}
_TIMEOUT = 60


def _grid_name(symbol: str, plane: str, experiment: int) -> str:
    return f"{symbol}_P56_{plane}_{experiment}_200um.zip"


def _grid_url(experiment: int, api_url: str) -> str:
    # Allen's download of the 200 um `energy` grid of one ISH experiment (as in its experiment manifest).
    return f"{api_url.rstrip('/')}/grid_data/download/{int(experiment)}?include=energy"


def _query_url(gene: str, plane: str, api_url: str) -> str:
    # RMA query of the Allen API: ISH experiments (SectionDataSet) of a mouse gene in one plane.
    criteria = (
        "model::SectionDataSet,rma::criteria,[failed$eqfalse],products[abbreviation$eq'Mouse'],"
        f"plane_of_section[name$eq'{plane}'],genes[acronym$eq'{gene}']"
    )
    return f"{api_url.rstrip('/')}/api/v2/data/query.json?criteria={criteria}"


def _fetch(url: str, fname: str, folder: Path, progress: bool) -> Path:
    """Download into the cache once, checking the registry's checksum when the file's content is known."""
    return _fetch_file(url, fname, folder, progress, REGISTRY.get(fname))


def _from_manifest(genes: list[str], plane: str, manifest: str | os.PathLike) -> dict[str, int]:
    try:
        table = pd.read_csv(manifest)
    except (ValueError, UnicodeError, OverflowError, csv.Error) as err:  # ParserError, EmptyDataError, ...
        raise ValueError(f"The manifest {manifest} is not a readable CSV ({type(err).__name__}: {err}).") from None
    needed = {"acronym", "cutting_plane", "Section_Data_ID"}
    if not needed <= set(table.columns):
        raise ValueError(
            f"The manifest {manifest} lacks the column(s) {sorted(needed - set(table.columns))}; "
            "expected Allen's experiment list (acronym, cutting_plane, Section_Data_ID, ...)."
        )
    # Rows by position: a row with one field too many makes pandas use the first column as a
    # (repeating) index, which would misalign the masks below.
    table = table.reset_index(drop=True)
    # Some Allen symbols carry a trailing '*' (unconfirmed RIKEN clones); match them without it.
    symbols = table["acronym"].astype(str).str.rstrip("*")
    rows = table[(table["cutting_plane"].astype(str).str.lower() == plane).to_numpy(dtype=bool)]
    symbols = symbols[rows.index]
    found = {}
    for gene in genes:
        ids = _experiment_ids(rows.loc[(symbols == gene).to_numpy(dtype=bool), "Section_Data_ID"].tolist())
        if ids is None:
            raise ValueError(f"Gene {gene!r}: the manifest {manifest} has a Section_Data_ID that is not an integer id.")
        if not ids:
            raise ValueError(f"Gene {gene!r} has no {plane} experiment in the manifest {manifest}.")
        if len(ids) > 1:
            logg.warning(f"{gene}: {len(ids)} {plane} experiments in the manifest {ids}; using the first, {ids[0]}.")
        found[gene] = ids[0]
    return found


def _experiment_ids(values: list) -> list[int] | None:
    """Experiment ids as positive ints (from a CSV or a JSON answer); None if one is not such an id."""
    ids = []
    for value in values:
        if isinstance(value, bool):
            return None
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        elif isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or value <= 0:
            return None
        ids.append(value)
    return ids


def _from_api(gene: str, plane: str, api_url: str) -> int:
    url = _query_url(gene, plane, api_url)
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT) as response:
            answer = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise ConnectionError(
            f"Allen API query for {gene!r} failed ({url}): {err}. Pass `manifest=` (a CSV of experiments) "
            "to look genes up offline."
        ) from err
    if not isinstance(answer, dict) or answer.get("success") is not True:
        raise ConnectionError(f"Allen API query for {gene!r} failed ({url}): {str(answer)[:200]}.")
    rows = answer.get("msg")
    ids = None
    if isinstance(rows, list) and all(isinstance(row, dict) and "id" in row for row in rows):
        ids = _experiment_ids([row["id"] for row in rows])
    if ids is None:
        raise ValueError(
            f"Allen API query for {gene!r} ({url}) answered without a list of experiments with integer ids: "
            f"{str(rows)[:200]}."
        )
    ids = sorted(ids)
    if not ids:
        raise ValueError(f"Gene {gene!r} has no {plane} ISH experiment in the Allen Mouse Brain Atlas (query: {url}).")
    if len(ids) > 1:
        logg.warning(f"{gene}: {len(ids)} {plane} experiments {ids}; using the lowest id, {ids[0]}.")
    return ids[0]


def _cached_experiment(gene: str, plane: str, folder: Path) -> int | None:
    """Experiment id of the one grid of ``gene`` already in ``folder``; None if none or several."""
    pattern = re.compile(rf"^{re.escape(gene)}_P56_{plane}_(\d+)_200um\.zip$")
    hits = [m for p in glob.glob(glob.escape(str(folder / gene)) + "_P56_*") if (m := pattern.match(Path(p).name))]
    return int(hits[0][1]) if len(hits) == 1 else None


def aba_ontology(
    *,
    cache_dir: str | os.PathLike | None = None,
    api_url: str = ALLEN_API,
    progress: bool = False,
) -> Ontology:
    """Allen's mouse brain structure ontology, downloaded once from the Allen API.

    The table is the API's structure list of the adult mouse ontology,
    ``<api_url>/api/v2/data/query.csv?criteria=model::Structure,rma::criteria,[ontology_id$eq1],
    rma::options[order$eq'structures.graph_order'][num_rows$eqall]``, cached as
    ``<root>/aba_200um/ontology/allen_structure_ontology.csv`` (root as for
    :func:`~spatialfactors.datasets.aba_grids`). Allen updates it between releases, so it has
    no fixed checksum; :func:`~spatialfactors.io.read_aba` checks that it knows every annotated id.

    Parameters
    ----------
    cache_dir
        Data root; default the ``SPATIALFACTORS_DATA`` folder or ``pooch.os_cache("spatialfactors")``.
    api_url
        Allen API host.
    progress
        Show a download progress bar.

    Returns
    -------
    The ontology (:func:`spatialfactors.io.read_ontology`).

    Examples
    --------
    >>> import spatialfactors as sf
    >>> onto = sf.datasets.aba_ontology()  # doctest: +SKIP
    >>> onto.acronym_of(315)  # doctest: +SKIP
    'Isocortex'
    """
    url = (
        f"{api_url.rstrip('/')}/api/v2/data/query.csv?criteria=model::Structure,rma::criteria,[ontology_id$eq1],"
        "rma::options[order$eq'structures.graph_order'][num_rows$eqall]"
    )
    return read_ontology(_fetch(url, ONTOLOGY_FILE, _root(cache_dir) / "aba_200um" / "ontology", progress))


def aba_grids(
    genes: str | Sequence[str],
    plane: str = "coronal",
    *,
    cache_dir: str | os.PathLike | None = None,
    manifest: str | os.PathLike | None = None,
    annotation: bool | str | os.PathLike = True,
    ontology: bool | Ontology | str | os.PathLike | None = None,
    api_url: str = ALLEN_API,
    annotation_url: str = ANNOTATION_URL,
    progress: bool = False,
) -> AnnData:
    """Allen Mouse Brain Atlas 200 um ISH expression grids of some genes, as a voxel-by-gene AnnData.

    The staNMF paper's data (Methods, "Data Description and Preprocessing"): one P56 ISH experiment
    per gene (the paper's 4,345 genes are the coronal ones), its ``energy`` grid on the 67 x 41 x 58
    grid at 200 um, and the grid annotation. Each file is downloaded once with ``pooch`` into
    ``<root>/aba_200um/grids/`` (root: ``cache_dir``, else ``$SPATIALFACTORS_DATA``, else
    ``pooch.os_cache("spatialfactors")``) and then read from there; files of known content (the
    annotation, Nrp1 and Pdyn coronal) are checked against their SHA256. Files already in the
    folder are used without network.

    A gene becomes an experiment id (SectionDataSet) from, in this order: the ``manifest`` CSV
    when given (Allen's experiment list: columns ``acronym``, ``cutting_plane``,
    ``Section_Data_ID``; the first row of the gene in ``plane``); the one grid of the gene
    already in the folder; or the Allen API query
    ``<api_url>/api/v2/data/query.json?criteria=model::SectionDataSet,rma::criteria,[failed$eqfalse],
    products[abbreviation$eq'Mouse'],plane_of_section[name$eq'<plane>'],genes[acronym$eq'<gene>']``
    (lowest id when several). The grid comes from
    ``<api_url>/grid_data/download/<id>?include=energy``.

    Parameters
    ----------
    genes
        Gene symbols (Allen acronyms, e.g. ``"Nrp1"``).
    plane
        ``"coronal"`` (the paper) or ``"sagittal"``.
    cache_dir
        Data root.
    manifest
        CSV of Allen experiments for an offline gene lookup.
    annotation
        ``True`` downloads Allen's grid annotation; a path uses a local grid annotation instead.
    ontology
        ``True`` adds region acronyms and names from :func:`aba_ontology`; an
        :class:`~spatialfactors.io.Ontology` or a structure CSV does the same from it.
    api_url
        Allen API host (for the queries, the grid downloads and the ontology).
    annotation_url
        Download URL of the grid annotation.
    progress
        Show download and reading progress bars.

    Returns
    -------
    The AnnData of :func:`spatialfactors.io.read_aba`: brain voxels x genes, NaN where Allen has no
    data, ``obsm['spatial']``, ``obs['region_id']``, ``var`` with ``section_data_set_id`` and ``plane``.

    Examples
    --------
    >>> import spatialfactors as sf
    >>> adata = sf.datasets.aba_grids(["Nrp1", "Pdyn"])  # doctest: +SKIP
    >>> adata.shape  # doctest: +SKIP
    (62529, 2)
    """
    genes = [genes] if isinstance(genes, str) else list(genes)
    if not genes:
        raise ValueError("`genes` is empty: pass one or more gene symbols, e.g. `['Nrp1', 'Pdyn']`.")
    bad = [g for g in genes if not isinstance(g, str) or not g or re.search(r"['\"/\\\s\[\]]", g)]
    if bad:
        raise ValueError(f"Invalid gene symbols {bad}; pass Allen gene acronyms such as 'Nrp1'.")
    repeated = sorted({g for g in genes if genes.count(g) > 1})
    if repeated:
        raise ValueError(f"`genes` repeats {repeated}.")
    _assert_choice("plane", plane, ("coronal", "sagittal"))
    if annotation is False:
        raise ValueError("`annotation=False` is not possible: the grid annotation defines the voxels; pass a path.")
    if manifest is not None and not Path(manifest).is_file():
        raise FileNotFoundError(f"Manifest not found: {manifest}.")

    folder = _root(cache_dir) / "aba_200um" / "grids"
    experiments = _from_manifest(genes, plane, manifest) if manifest is not None else {}
    for gene in genes:
        if gene not in experiments:
            cached = _cached_experiment(gene, plane, folder)
            experiments[gene] = cached if cached is not None else _from_api(gene, plane, api_url)
    files = [
        _fetch(_grid_url(experiments[g], api_url), _grid_name(g, plane, experiments[g]), folder, progress)
        for g in genes
    ]
    if annotation is True:
        annotation = _fetch(annotation_url, ANNOTATION_FILE, folder, progress)
    if ontology is True:
        ontology = aba_ontology(cache_dir=cache_dir, api_url=api_url, progress=progress)
    elif ontology is False:
        ontology = None
    return read_aba(files, annotation, ontology=ontology, genes=genes, progress=progress)
