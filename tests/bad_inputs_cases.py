"""The bad-input matrix: every public function against every bad input that applies to it.

One table (:data:`CASES`) drives both the parametrised test (``tests/test_bad_inputs.py``) and
the documentation page ``docs/bad_inputs.md``, which lists every bad input with the message it
gets. Regenerate the page after changing a case or a message::

    python tests/bad_inputs_cases.py

Each case names a function, a tiny valid fixture (built here, no downloads), how to make the
input bad (a mutation of the fixture and/or keyword arguments), and the exception type and
message pattern the call must raise. The valid call of every function is :data:`VALID`.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

MEMORY_ENV = "SPATIALFACTORS_AVAILABLE_MEMORY"
DOCS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "bad_inputs.md"
REGENERATE = "python tests/bad_inputs_cases.py"

# ---------------------------------------------------------------------------------------------
# Tiny valid fixtures
# ---------------------------------------------------------------------------------------------

GRID = (4, 3, 5)  # AP, DV, ML: 60 voxels
N_GENES = 12


def _knn_graph(coords: np.ndarray, groups: np.ndarray, k: int = 3) -> sp.csr_matrix:
    """Symmetric kNN graph without self-loops and without edges between groups."""
    from sklearn.neighbors import NearestNeighbors

    rows, cols = [], []
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        _, nn = NearestNeighbors(n_neighbors=k + 1).fit(coords[idx]).kneighbors(coords[idx])
        rows.append(np.repeat(idx, k))
        cols.append(idx[nn[:, 1:]].ravel())
    a = sp.csr_matrix(
        (np.ones(sum(r.size for r in rows)), (np.concatenate(rows), np.concatenate(cols))), (len(coords),) * 2
    )
    a = a.maximum(a.T).tocsr()
    a.setdiag(0)
    a.eliminate_zeros()
    return a


def _meta() -> dict:
    return {"note": "fixture", "nested": {"values": np.arange(3), "table": pd.DataFrame({"a": [1, 2]})}}


def make_cells() -> ad.AnnData:
    """30 cells x 12 genes in two fields of view, counts without empty rows or columns, a kNN graph."""
    rng = np.random.default_rng(0)
    n = 30
    x = rng.poisson(3.0, (n, N_GENES)).astype(np.float64) + 1.0
    fov = np.repeat(["0", "1"], n // 2)
    coords = rng.random((n, 2)) * 100 + np.where(fov == "1", 1000.0, 0.0)[:, None]
    obs = pd.DataFrame(
        {
            "fov": pd.Categorical(fov),
            "fov_str": fov,
            "cell_type": pd.Categorical(np.tile(["a", "b", "c"], n // 3)),
        },
        index=[f"cell{i}" for i in range(n)],
    )
    adata = ad.AnnData(x, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(N_GENES)]))
    adata.layers["counts"] = x.copy()
    adata.obsm["spatial"] = coords
    adata.obsp["spatial_connectivities"] = _knn_graph(coords, fov)
    adata.uns["meta"] = _meta()
    return adata


def _labels() -> np.ndarray:
    ap, _, ml = np.indices(GRID)
    return (1 + 2 * (ap >= 2) + (ml >= 3)).astype(np.int64)  # four regions: 1, 2, 3, 4


def make_voxels() -> ad.AnnData:
    """A 4 x 3 x 5 voxel grid with four regions, 12 genes from three planted patterns, as `read_aba` writes it."""
    rng = np.random.default_rng(1)
    labels = _labels()
    mask = np.ones(GRID, dtype=bool)
    ids = labels[mask]
    voxels = np.column_stack(np.nonzero(mask)).astype(np.float64)
    w = np.stack([ids == 1, np.isin(ids, [2, 4]), ids == 3], axis=1).astype(np.float64) + 0.05
    h = rng.gamma(1.0, 1.0, (3, N_GENES)) + 0.01
    x = (w @ h + 0.01 * rng.random((ids.size, N_GENES))).astype(np.float32)
    obs = pd.DataFrame({"region_id": ids}, index=[f"voxel_{i}" for i in np.flatnonzero(mask)])
    obs["acronym"] = pd.Categorical([f"R{i}" for i in ids])
    adata = ad.AnnData(x, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(N_GENES)]))
    adata.layers["counts"] = x.copy()
    adata.obsm["spatial"] = voxels * 200.0
    adata.obsp["spatial_connectivities"] = _knn_graph(voxels, np.zeros(ids.size, int), k=4)
    adata.uns["aba"] = {"grid_shape": np.array(GRID, dtype=np.int64), "spacing": 200.0, "mask": mask}
    adata.uns["meta"] = _meta()
    return adata


def make_voxels_nan() -> ad.AnnData:
    """The voxel fixture with missing voxels (NaN), as `sf.io.read_aba` reads Allen's -1."""
    adata = make_voxels()
    x = adata.X.copy()
    x[::7, ::3] = np.nan
    adata.X = x
    return adata


def make_voxels_fit() -> ad.AnnData:
    """The voxel fixture after every tool: staNMF sweep, region linking, marker genes, sGCN, region AUC."""
    import spatialfactors as sf

    adata = make_voxels()
    sf.tl.stanmf(adata, n_factors=[2, 3], n_replicates=3, n_jobs=1, random_state=0)
    sf.tl.link_regions(adata, max_regions=2)
    sf.tl.pattern_genes(adata)
    sf.tl.sgcn(adata, top_fraction=0.5, edge_quantile=0.5)
    sf.tl.region_auc(adata, region=1, factors=[0], n_random=5)
    return adata


def make_cells_fit() -> ad.AnnData:
    """The cell fixture after SpiceMix (3 metagenes, 2 iterations)."""
    import spatialfactors as sf

    adata = make_cells()
    sf.tl.spicemix(adata, 3, library_key="fov", max_iter=2, n_jobs=1)
    return adata


def _write_mhd(folder: Path, name: str, array: np.ndarray, etype: str) -> Path:
    dims = " ".join(str(d) for d in array.shape)  # the first axis varies fastest in a Fortran-order payload
    (folder / f"{name}.mhd").write_text(
        f"NDims = 3\nDimSize = {dims}\nElementType = {etype}\nElementSpacing = 200 200 200\n"
        f"ElementDataFile = {name}.raw\n"
    )
    (folder / f"{name}.raw").write_bytes(array.tobytes(order="F"))
    return folder / f"{name}.mhd"


def make_aba(folder: Path) -> dict:
    """Allen-style grid files in ``folder``: an annotation, two genes and a gene on another grid."""
    folder = Path(folder)
    labels = _labels().astype("<u4")
    labels[0, 0, 0] = 0  # one voxel outside the brain
    rng = np.random.default_rng(2)
    genes = [
        _write_mhd(
            folder,
            f"Gene{j}_P56_coronal_{j}_200um",
            np.where(labels > 0, rng.random(GRID), -1).astype("<f4"),
            "MET_FLOAT",
        )
        for j in (1, 2)
    ]
    other = _write_mhd(folder, "Odd_P56_coronal_9_200um", np.ones((2, 2, 2), "<f4"), "MET_FLOAT")
    return {
        "folder": folder,
        "annotation": _write_mhd(folder, "annotation", labels, "MET_UINT"),
        "float_annotation": _write_mhd(folder, "float_annotation", labels.astype("<f4"), "MET_FLOAT"),
        "genes": genes,
        "other_grid": other,
    }


CORPUS = Path(__file__).resolve().parent / "fuzz" / "corpus"


def _dataset_folders(folder: Path, name: str, corpus: str) -> dict:
    """Folders for a data set loader: the fuzz corpus seed (valid), an empty folder, a damaged copy."""
    seed = sorted((CORPUS / corpus).iterdir())[0]
    out = {"folder": folder / name, "empty": folder / f"{name}_empty", "damaged": folder / f"{name}_damaged"}
    for path in out.values():
        path.mkdir(parents=True, exist_ok=True)
    shutil.copy(seed, out["folder"] / seed.name)
    out["file"] = out["damaged"] / seed.name
    out["missing"] = folder / f"{name}_missing"
    return out


def make_dlpfc(folder: Path) -> dict:
    """DR.SC's ``dlpfc151510.rda`` layout (the fuzz seed: 7 spots x 4 genes), and a truncated copy."""
    out = _dataset_folders(Path(folder), "dlpfc", "dlpfc_visium")
    seed = (out["folder"] / out["file"].name).read_bytes()
    out["file"].write_bytes(seed[: len(seed) // 2])
    return out


def make_osmfish(folder: Path) -> dict:
    """The osmFISH loom layout (the fuzz seed: 6 cells x 4 genes), and an HDF5 file that is not a loom."""
    import h5py

    out = _dataset_folders(Path(folder), "osmfish", "osmfish")
    with h5py.File(out["file"], "w") as f:
        f.create_dataset("matrix", data=np.ones((2, 3)))
    return out


#: Fixtures made of files, written once into the session's folder.
FILE_FIXTURES: dict[str, Callable[[Path], dict]] = {"aba": make_aba, "dlpfc": make_dlpfc, "osmfish": make_osmfish}

FIXTURES: dict[str, Callable[[], object]] = {
    "cells": make_cells,
    "cells_fit": make_cells_fit,
    "voxels": make_voxels,
    "voxels_nan": make_voxels_nan,
    "voxels_fit": make_voxels_fit,
}

# ---------------------------------------------------------------------------------------------
# The valid call of every public function (bad cases change one thing of it)
# ---------------------------------------------------------------------------------------------


def _new_axes(_):
    import matplotlib.pyplot as plt

    return plt.subplots()[1]


#: function -> (fixture, keyword arguments of a call that succeeds)
VALID: dict[str, tuple[str, dict | Callable]] = {
    "tl.stanmf": ("voxels", {"n_factors": 2, "pca": False, "n_jobs": 1}),
    "tl.spicemix": ("cells", {"n_factors": 3, "library_key": "fov", "max_iter": 1, "n_jobs": 1}),
    "tl.cluster_latent": ("cells_fit", {"n_clusters": 3}),
    "tl.spatial_domains": ("cells_fit", {"n_clusters": 3, "method": "ward"}),
    "tl.link_regions": ("voxels_fit", {"max_regions": 2}),
    "tl.pattern_genes": ("voxels_fit", {}),
    "tl.pattern_genes_df": ("voxels_fit", {"pattern": 0}),
    "tl.region_auc": ("voxels_fit", {"region": 1, "patterns": [0], "n_random": 5}),
    "tl.sgcn": ("voxels_fit", {"top_fraction": 0.5}),
    "tl.sgcn_graph": ("voxels_fit", {"pattern": 0}),
    "pp.impute_voxels": ("voxels_nan", {}),
    "pp.normalize_spicemix": ("cells", {"n_factors": 3, "library_key": "fov"}),
    "pl.instability": ("voxels_fit", {"show": False}),
    "pl.patterns": ("voxels_fit", {"show": False}),
    "pl.reconstruction": ("voxels_fit", {"show": False}),
    "pl.patterns_per_gene": ("voxels_fit", {"show": False}),
    "pl.morans_i": ("voxels_fit", {"show": False}),
    "pl.affinity": ("cells_fit", {"show": False}),
    "pl.convergence": ("cells_fit", {"show": False}),
    "pl.metagenes": ("cells_fit", {"show": False}),
    "pl.metagene_expression": ("cells_fit", {"show": False}),
    "pl.region_correlation": ("voxels_fit", {"show": False}),
    "pl.linked_regions": ("voxels_fit", {"show": False}),
    "pl.link_heatmap": ("voxels_fit", {"show": False}),
    "pl.pattern_genes": ("voxels_fit", {"show": False}),
    "pl.pattern_with_genes": ("voxels_fit", {"show": False}),
    "pl.sgcn": ("voxels_fit", {"pattern": 0, "show": False}),
    "pl.region_auc": ("voxels_fit", {"show": False}),
    "io.to_volume": ("voxels", {"values": "g0"}),
    "io.read_aba": ("aba", lambda f: {"energy": f["genes"], "annotation": f["annotation"]}),
    "datasets.visium_dlpfc": ("dlpfc", lambda f: {"path": f["folder"]}),
    "datasets.osmfish_cortex": ("osmfish", lambda f: {"path": f["folder"]}),
}


def resolve(func: str) -> Callable:
    import spatialfactors as sf

    module, name = func.split(".")
    return getattr(getattr(sf, module), name)


# ---------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One bad input of one function.

    ``mutate`` changes a fresh copy of the fixture in place (or returns a replacement, e.g. a
    subset or a non-AnnData); ``kwargs`` (a dict, or a function of the fixture) override the
    valid call; ``memory`` pretends that many bytes are available.
    """

    func: str
    bad: str
    error: type[BaseException]
    match: str
    kwargs: dict | Callable = field(default_factory=dict)
    mutate: Callable | None = None
    memory: int | None = None
    fixture: str | None = None  # default: the fixture of the valid call

    @property
    def data(self) -> str:
        return self.fixture or VALID[self.func][0]

    @property
    def id(self) -> str:
        return f"{self.func}:{re.sub(r'[^A-Za-z0-9]+', '_', self.bad).strip('_')}"


def _x(value, dtype=np.float64, fmt=None, layer=None):
    """Mutation: entry (0, 0) of ``.X`` (or a layer) set to ``value`` in ``dtype`` / sparse ``fmt``."""

    def mutate(a):
        x = np.array(a.X if layer is None else a.layers[layer], dtype=np.float64)
        x = x.astype(dtype)
        x[0, 0] = value
        x = x if fmt is None else getattr(sp, f"{fmt}_matrix")(x)
        if layer is None:
            a.X = x
        else:
            a.layers[layer] = x

    return mutate


def _astype(dtype):
    def mutate(a):
        a.X = np.asarray(a.X).astype(dtype)

    return mutate


def _set(attr: str, key: str, value):
    """Mutation: ``getattr(a, attr)[key] = value(a)``."""

    def mutate(a):
        getattr(a, attr)[key] = value(a)

    return mutate


def _drop(attr: str, key: str):
    def mutate(a):
        del getattr(a, attr)[key]

    return mutate


def _drop_entry(uns_key: str, entry: str):
    def mutate(a):
        del a.uns[uns_key][entry]

    return mutate


def _set_X_none(a):
    a.X = None


def _edit_graph(edit):
    def mutate(a):
        g = a.obsp["spatial_connectivities"].tolil()
        edit(g, a)
        a.obsp["spatial_connectivities"] = g.tocsr()

    return mutate


def _cross_fov(g, a):
    g[0, a.n_obs - 1] = g[a.n_obs - 1, 0] = 1.0


def _asymmetric(g, a):
    j = g.rows[0][0]
    g[0, j] = 0.0


def _self_loop(g, a):
    g[0, 0] = 1.0


def _nan_weight(g, a):
    j = g.rows[0][0]
    g[0, j] = g[j, 0] = np.nan


def _negative_weight(g, a):
    j = g.rows[0][0]
    g[0, j] = g[j, 0] = -1.0


def _not_adata(a):
    return np.asarray(a.X)


def _fake_sdata(a):
    return SimpleNamespace(tables={"table": a})


def _sdata_cases(func: str) -> list[Case]:
    """A SpatialData without ``table_key``, and with one naming no table."""
    return [
        Case(func, "SpatialData without table_key", ValueError, r"needs `table_key=`.*\['table'\]", mutate=_fake_sdata),
        Case(
            func,
            "SpatialData table not found",
            KeyError,
            "Table 'nope' not found",
            kwargs={"table_key": "nope"},
            mutate=_fake_sdata,
        ),
    ]


def _first_obs(n):
    def mutate(a):
        return a[:n].copy()

    return mutate


class _MinimalOntology:
    """A duck-typed ontology (only ``at_depth``), enough for ``level=``."""

    def at_depth(self, ids, depth):
        return np.asarray(ids)


def _matrix_cases(func: str, what: str, *, sparse_ok: bool = True) -> list[Case]:
    """The expression-matrix bad inputs of a function that reads ``.X`` or a layer."""
    cases = [
        Case(func, "negative value in X", ValueError, f"{what} contain negative values", mutate=_x(-1.0)),
        Case(func, "NaN in X", ValueError, f"{what} contain 1 NaN or infinite values", mutate=_x(np.nan)),
        Case(func, "inf in X", ValueError, f"{what} contain 1 NaN or infinite values", mutate=_x(np.inf)),
        Case(func, "X of strings", TypeError, "must be real numbers, got strings", mutate=_astype(str)),
        Case(func, "X of Python objects", TypeError, "got Python objects", mutate=_astype(object)),
        Case(func, "complex X", TypeError, "got complex numbers", mutate=_astype(complex)),
        Case(func, "boolean X", TypeError, r"got booleans .*astype\(np.float32\)", mutate=_astype(bool)),
        Case(func, "no obs (0 x genes)", ValueError, r"`adata` is empty \(0 obs", mutate=_first_obs(0)),
        Case(
            func,
            "no genes (obs x 0)",
            ValueError,
            r"`adata` is empty \(\d+ obs x 0 genes\)",
            mutate=lambda a: a[:, :0].copy(),
        ),
        Case(func, "X is None", ValueError, r"`adata.X` is empty; pass `layer=`", mutate=_set_X_none),
        Case(func, "layer not found", KeyError, r"Layer 'nope' not found in `adata.layers`", kwargs={"layer": "nope"}),
        Case(func, "layer not a string", TypeError, "`layer` must be the name of a layer", kwargs={"layer": 0}),
        Case(
            func,
            "negative value in a layer",
            ValueError,
            r"`adata.layers\['counts'\]` contain negative",
            kwargs={"layer": "counts"},
            mutate=_x(-2.0, layer="counts"),
        ),
        Case(func, "not an AnnData", TypeError, "Expected an AnnData or a SpatialData, got ndarray", mutate=_not_adata),
        *_sdata_cases(func),
    ]
    if sparse_ok:
        cases += [
            Case(
                func,
                "CSR X with a negative value",
                ValueError,
                f"{what} contain negative values",
                mutate=_x(-1.0, fmt="csr"),
            ),
            Case(func, "CSC X with a NaN", ValueError, f"{what} contain 1 NaN", mutate=_x(np.nan, fmt="csc")),
        ]
    return cases


def _with_distances(a):
    """squidpy's edge lengths beside the graph (Euclidean, on the graph's edges)."""
    coo = a.obsp["spatial_connectivities"].tocoo()
    length = np.linalg.norm(a.obsm["spatial"][coo.row] - a.obsm["spatial"][coo.col], axis=1)
    a.obsp["spatial_distances"] = sp.csr_matrix((length, (coo.row, coo.col)), shape=coo.shape)


def _common_tool_cases(func: str, key_added: bool = True) -> list[Case]:
    cases = [Case(func, "copy not a bool", TypeError, "`copy` must be True or False", kwargs={"copy": "yes"})]
    if key_added:
        cases.append(
            Case(
                func,
                "key_added not a string",
                TypeError,
                "`key_added` must be a non-empty string",
                kwargs={"key_added": 3},
            )
        )
    return cases


def _graph_cases(func: str) -> list[Case]:
    g = "spatial_connectivities"
    return [
        Case(
            func,
            "graph missing",
            KeyError,
            r"build the spatial graph first, e.g. `sq.gr.spatial_neighbors_delaunay\(adata, library_key='fov'\)`",
            mutate=_drop("obsp", g),
        ),
        Case(
            func,
            "connectivity_key not found",
            KeyError,
            r"`adata.obsp\['knn'\]` not found",
            kwargs={"connectivity_key": "knn"},
        ),
        Case(
            func,
            "connectivity_key not a string",
            TypeError,
            "`connectivity_key` must be a non-empty string",
            kwargs={"connectivity_key": None},
        ),
        Case(
            func,
            "graph with a negative weight",
            ValueError,
            "negative, NaN or infinite weights",
            mutate=_edit_graph(_negative_weight),
        ),
        Case(
            func,
            "graph with a NaN weight",
            ValueError,
            "negative, NaN or infinite weights",
            mutate=_edit_graph(_nan_weight),
        ),
        Case(
            func,
            "graph with a self-loop",
            ValueError,
            r"1 self-loops; remove them, e.g. `A.setdiag\(0\)",
            mutate=_edit_graph(_self_loop),
        ),
        Case(
            func,
            "asymmetric graph",
            ValueError,
            r"not symmetric; symmetrise it, e.g. `A = A.maximum\(A.T\)`",
            mutate=_edit_graph(_asymmetric),
        ),
        Case(
            func,
            "graph without edges",
            ValueError,
            "has no edges: every cell is isolated",
            mutate=_set("obsp", g, lambda a: sp.csr_matrix((a.n_obs, a.n_obs))),
        ),
        Case(
            func,
            "edge between fields of view",
            ValueError,
            "edges between fields of view of `fov`",
            mutate=_edit_graph(_cross_fov),
        ),
        Case(
            func,
            "graph of strings",
            TypeError,
            "must hold real edge weights, got dtype object",
            mutate=_set("obsp", g, lambda a: np.full((a.n_obs, a.n_obs), "x", dtype=object)),
        ),
    ]


def _library_cases(func: str) -> list[Case]:
    return [
        Case(
            func,
            "library_key not a column",
            KeyError,
            r"`library_key='nope'` is not a column of `adata.obs`",
            kwargs={"library_key": "nope"},
        ),
        Case(
            func,
            "library_key not categorical",
            TypeError,
            r"must be categorical; convert it with `adata.obs\['fov_str'\] = ",
            kwargs={"library_key": "fov_str"},
        ),
        Case(
            func,
            "library_key with missing values",
            ValueError,
            r"`adata.obs\['fov'\]` is missing for 1 obs",
            mutate=_set("obs", "fov", lambda a: a.obs["fov"].where(np.arange(a.n_obs) > 0)),
        ),
    ]


def _pl_cases(func: str, missing: str, key: str | None = "nope") -> list[Case]:
    """Not an AnnData, a SpatialData without (or with a wrong) table_key, and the result not computed."""
    name = func.split(".")[1]
    cases = [
        Case(
            func,
            "not an AnnData",
            TypeError,
            f"`sf.pl.{name}` expects an AnnData or a SpatialData, got ndarray",
            mutate=_not_adata,
        ),
        *_sdata_cases(func),
    ]
    if key is not None:
        cases.append(Case(func, "result not computed (unknown key)", KeyError, missing, kwargs={"key": key}))
    return cases


def _nan_in_obsm(key):
    def mutate(a):
        v = np.array(a.obsm[key], dtype=np.float64)
        v[0, 0] = np.nan
        a.obsm[key] = v

    return mutate


def _strings_in(attr, key):
    def mutate(a):
        getattr(a, attr)[key] = np.asarray(getattr(a, attr)[key]).astype(str)

    return mutate


CASES: list[Case] = [
    # ---------------------------------------------------------------- tl.stanmf
    *_matrix_cases("tl.stanmf", "The data"),
    Case(
        "tl.stanmf",
        "gene zero everywhere",
        ValueError,
        r"1 genes are zero in all obs; .*sc.pp.filter_genes",
        mutate=lambda a: setattr(a, "X", np.where(np.arange(a.n_vars) == 0, 0.0, a.X)),
    ),
    Case(
        "tl.stanmf",
        "obs without expression",
        ValueError,
        r"1 obs have no expression; .*sc.pp.filter_cells",
        mutate=lambda a: setattr(a, "X", np.where(np.arange(a.n_obs)[:, None] == 0, 0.0, a.X)),
    ),
    Case(
        "tl.stanmf",
        "n_factors 0",
        ValueError,
        "`n_factors` must be at least 1 and at most 12, got 0",
        kwargs={"n_factors": 0},
    ),
    Case(
        "tl.stanmf",
        "n_factors above min(n_obs, n_genes)",
        ValueError,
        "at most 12, got 13",
        kwargs={"n_factors": 13},
    ),
    Case("tl.stanmf", "n_factors empty", ValueError, "`n_factors` is empty", kwargs={"n_factors": []}),
    Case(
        "tl.stanmf",
        "n_factors a float in a list",
        TypeError,
        "`n_factors` must be an integer, got 2.5",
        kwargs={"n_factors": [2, 2.5]},
    ),
    Case(
        "tl.stanmf",
        "n_factors a string",
        TypeError,
        "`n_factors` must be an integer or a sequence of integers",
        kwargs={"n_factors": "5"},
    ),
    Case(
        "tl.stanmf",
        "n_factors a bool",
        TypeError,
        "`n_factors` must be an integer or a sequence",
        kwargs={"n_factors": True},
    ),
    Case(
        "tl.stanmf",
        "n_replicates 1 in a sweep",
        ValueError,
        "`n_replicates` must be at least 2",
        kwargs={"n_factors": [2, 3], "n_replicates": 1},
    ),
    Case("tl.stanmf", "unknown metric", ValueError, "`metric` must be one of", kwargs={"metric": "cosine"}),
    Case("tl.stanmf", "unknown init", ValueError, "`init` must be one of", kwargs={"init": "random"}),
    Case("tl.stanmf", "unknown dtype", ValueError, "`dtype` must be one of", kwargs={"dtype": "float16"}),
    Case("tl.stanmf", "negative tol", ValueError, "`tol` must be >= 0", kwargs={"tol": -1.0}),
    Case("tl.stanmf", "max_iter 0", ValueError, "`max_iter` must be at least 1", kwargs={"max_iter": 0}),
    Case("tl.stanmf", "compress below K", ValueError, "`compress` must be at least 2", kwargs={"compress": 1}),
    Case("tl.stanmf", "batch_size 0", ValueError, "`batch_size` must be at least 1", kwargs={"batch_size": 0}),
    Case(
        "tl.stanmf",
        "negative random_state",
        ValueError,
        "`random_state` must be at least 0",
        kwargs={"random_state": -1},
    ),
    Case("tl.stanmf", "n_jobs 0", ValueError, "`n_jobs` must be a non-zero integer", kwargs={"n_jobs": 0}),
    Case("tl.stanmf", "pca not a bool", TypeError, "`pca` must be True or False", kwargs={"pca": "no"}),
    Case(
        "tl.stanmf",
        "graph with a NaN weight (Moran's I)",
        ValueError,
        "used for Moran's I\\) must hold finite real weights",
        mutate=_edit_graph(_nan_weight),
    ),
    Case(
        "tl.stanmf",
        "more memory than available",
        MemoryError,
        r"staNMF on 60 obs x 12 genes \(K up to 2\) needs .* but only 1.0 KB .*subset the genes",
        memory=1024,
    ),
    *_common_tool_cases("tl.stanmf"),
    # ---------------------------------------------------------------- tl.spicemix
    *_matrix_cases("tl.spicemix", "The expression values"),
    *_graph_cases("tl.spicemix"),
    *_library_cases("tl.spicemix"),
    Case("tl.spicemix", "n_factors 1", ValueError, "`n_factors` must be at least 2", kwargs={"n_factors": 1}),
    Case("tl.spicemix", "n_factors above the genes", ValueError, "at most 12, got 20", kwargs={"n_factors": 20}),
    Case("tl.spicemix", "n_factors empty", ValueError, "`n_factors` is empty", kwargs={"n_factors": []}),
    Case(
        "tl.spicemix",
        "n_factors a float in a list",
        TypeError,
        "`n_factors` must be an integer, got 3.5",
        kwargs={"n_factors": [3, 3.5]},
    ),
    Case(
        "tl.spicemix",
        "n_replicates 1 in a sweep",
        ValueError,
        "`n_replicates` must be at least 2",
        kwargs={"n_factors": [2, 3], "n_replicates": 1},
    ),
    Case(
        "tl.spicemix", "negative lambda_sigma", ValueError, "`lambda_sigma` must be >= 0", kwargs={"lambda_sigma": -1.0}
    ),
    Case(
        "tl.spicemix", "NaN lambda_x", ValueError, "`lambda_x` must be >= 0, got nan", kwargs={"lambda_x": float("nan")}
    ),
    Case("tl.spicemix", "negative tol", ValueError, "`tol` must be >= 0", kwargs={"tol": -1e-3}),
    Case("tl.spicemix", "negative max_iter", ValueError, "`max_iter` must be at least 0", kwargs={"max_iter": -1}),
    Case("tl.spicemix", "unknown solver", ValueError, "`solver` must be one of", kwargs={"solver": "gurobi"}),
    Case(
        "tl.spicemix",
        "unknown affinity_optimizer",
        ValueError,
        "`affinity_optimizer` must be one of",
        kwargs={"affinity_optimizer": "sgd"},
    ),
    Case("tl.spicemix", "rescale not a bool", TypeError, "`rescale` must be True or False", kwargs={"rescale": "yes"}),
    Case(
        "tl.spicemix",
        "neutral_affinity not a bool",
        TypeError,
        "`neutral_affinity` must be True or False",
        kwargs={"neutral_affinity": 1},
    ),
    Case("tl.spicemix", "n_jobs 0", ValueError, "`n_jobs` must be a non-zero integer", kwargs={"n_jobs": 0}),
    Case(
        "tl.spicemix",
        "init_key not a column",
        KeyError,
        r"compute a clustering first, e.g. `sc.tl.leiden\(adata\)`",
        kwargs={"init_key": "leiden"},
    ),
    Case(
        "tl.spicemix",
        "init_key with another number of clusters",
        ValueError,
        "has 3 clusters but n_factors = 2",
        kwargs={"init_key": "cell_type", "n_factors": 2},
    ),
    Case("tl.spicemix", "init unknown", ValueError, "`init` must be one of", kwargs={"init": "louvain"}),
    Case(
        "tl.spicemix",
        "init_key and init together",
        ValueError,
        "Give either `init_key` or `init='leiden'`",
        kwargs={"init_key": "cell_type", "init": "leiden"},
    ),
    Case(
        "tl.spicemix",
        "init_key with a sweep",
        ValueError,
        "`init_key` needs a single `n_factors`",
        kwargs={"init_key": "cell_type", "n_factors": [2, 3]},
    ),
    Case(
        "tl.spicemix",
        "more memory than available",
        MemoryError,
        r"SpiceMix on a dense 30 cells x 12 genes matrix needs .* subset the genes",
        memory=1024,
    ),
    Case("tl.spicemix", "unknown prior_from", ValueError, "`prior_from` must be one of", kwargs={"prior_from": "mean"}),
    Case(
        "tl.spicemix",
        "max_distance without edge lengths",
        KeyError,
        r"`max_distance` needs the edge lengths in `adata.obsp\['spatial_distances'\]`",
        kwargs={"max_distance": 10.0},
    ),
    Case(
        "tl.spicemix",
        "max_distance negative",
        ValueError,
        "`max_distance` must be > 0",
        kwargs={"max_distance": -1.0},
    ),
    Case(
        "tl.spicemix",
        "max_distance drops every edge",
        ValueError,
        r"`max_distance=0.001` drops every edge",
        kwargs={"max_distance": 0.001},
        mutate=_with_distances,
    ),
    *_common_tool_cases("tl.spicemix"),
    # ---------------------------------------------------------------- tl.cluster_latent
    Case(
        "tl.cluster_latent",
        "basis not found",
        KeyError,
        r"`adata.obsm\['X_nope'\]` not found; run the factorisation first",
        kwargs={"basis": "X_nope"},
    ),
    Case(
        "tl.cluster_latent",
        "basis with NaN",
        ValueError,
        r"`adata.obsm\['X_spicemix'\]` has 1 NaN or infinite values",
        mutate=_nan_in_obsm("X_spicemix"),
    ),
    Case(
        "tl.cluster_latent",
        "basis of strings",
        TypeError,
        "must hold real numbers, got dtype <U",
        mutate=_strings_in("obsm", "X_spicemix"),
    ),
    Case(
        "tl.cluster_latent", "basis not a string", TypeError, "`basis` must be a non-empty string", kwargs={"basis": 0}
    ),
    Case(
        "tl.cluster_latent",
        "reference_key not a column",
        KeyError,
        r"`reference_key='truth'` is not a column",
        kwargs={"reference_key": "truth"},
    ),
    Case("tl.cluster_latent", "n_clusters 1", ValueError, "`n_clusters` must be at least 2", kwargs={"n_clusters": 1}),
    Case(
        "tl.cluster_latent", "n_clusters not below n_obs", ValueError, "at most 29, got 30", kwargs={"n_clusters": 30}
    ),
    Case(
        "tl.cluster_latent",
        "n_clusters a float in a list",
        TypeError,
        "`n_clusters` must be an integer, got 2.5",
        kwargs={"n_clusters": [2, 2.5]},
    ),
    Case("tl.cluster_latent", "n_clusters empty", ValueError, "`n_clusters` is empty", kwargs={"n_clusters": []}),
    Case("tl.cluster_latent", "two obs", ValueError, "Clustering needs at least 3 obs", mutate=_first_obs(2)),
    Case(
        "tl.cluster_latent",
        "normalize not a bool",
        TypeError,
        "`normalize` must be True or False",
        kwargs={"normalize": "yes"},
    ),
    Case("tl.cluster_latent", "not an AnnData", TypeError, "Expected an AnnData or a SpatialData", mutate=_not_adata),
    *_common_tool_cases("tl.cluster_latent"),
    # ---------------------------------------------------------------- tl.spatial_domains
    Case(
        "tl.spatial_domains",
        "basis not found",
        KeyError,
        r"`adata.obsm\['X_nope'\]` not found; compute a representation first",
        kwargs={"basis": "X_nope"},
    ),
    Case(
        "tl.spatial_domains",
        "basis with NaN",
        ValueError,
        r"`adata.obsm\['X_spicemix'\]` has 1 NaN or infinite values",
        mutate=_nan_in_obsm("X_spicemix"),
    ),
    Case(
        "tl.spatial_domains",
        "unknown method",
        ValueError,
        "`method` must be one of",
        kwargs={"method": "dbscan"},
    ),
    Case(
        "tl.spatial_domains",
        "ward without n_clusters",
        ValueError,
        "`method='ward'` needs `n_clusters`",
        kwargs={"n_clusters": None},
    ),
    Case(
        "tl.spatial_domains",
        "n_clusters a float",
        TypeError,
        "`n_clusters` must be an integer or None, got 2.5",
        kwargs={"n_clusters": 2.5},
    ),
    Case("tl.spatial_domains", "n_clusters 1", ValueError, "`n_clusters` must be at least 2", kwargs={"n_clusters": 1}),
    Case(
        "tl.spatial_domains",
        "n_clusters not below n_obs",
        ValueError,
        "at most 29, got 30",
        kwargs={"n_clusters": 30},
    ),
    Case(
        "tl.spatial_domains", "negative n_smooth", ValueError, "`n_smooth` must be at least 0", kwargs={"n_smooth": -1}
    ),
    Case("tl.spatial_domains", "vote not a bool", TypeError, "`vote` must be True or False", kwargs={"vote": 1}),
    Case(
        "tl.spatial_domains",
        "normalize not a bool",
        TypeError,
        "`normalize` must be True or False",
        kwargs={"normalize": "yes"},
    ),
    Case("tl.spatial_domains", "resolution 0", ValueError, "`resolution` must be > 0", kwargs={"resolution": 0.0}),
    Case(
        "tl.spatial_domains",
        "reference_key not a column",
        KeyError,
        r"`reference_key='truth'` is not a column",
        kwargs={"reference_key": "truth"},
    ),
    Case(
        "tl.spatial_domains",
        "graph missing",
        KeyError,
        r"build the spatial graph first, e.g. `sq.gr.spatial_neighbors_delaunay\(adata\)`",
        mutate=_drop("obsp", "spatial_connectivities"),
    ),
    Case(
        "tl.spatial_domains",
        "asymmetric graph",
        ValueError,
        r"not symmetric; symmetrise it",
        mutate=_edit_graph(_asymmetric),
    ),
    Case(
        "tl.spatial_domains",
        "max_distance without edge lengths",
        KeyError,
        r"`max_distance` needs the edge lengths in `adata.obsp\['spatial_distances'\]`",
        kwargs={"max_distance": 10.0},
    ),
    Case(
        "tl.spatial_domains",
        "max_distance 0",
        ValueError,
        "`max_distance` must be > 0",
        kwargs={"max_distance": 0.0},
    ),
    Case(
        "tl.spatial_domains",
        "max_distance drops every edge",
        ValueError,
        r"`max_distance=0.001` drops every edge of `spatial_connectivities`",
        kwargs={"max_distance": 0.001},
        mutate=_with_distances,
    ),
    Case("tl.spatial_domains", "two obs", ValueError, "Spatial domains need at least 3 obs", mutate=_first_obs(2)),
    Case("tl.spatial_domains", "not an AnnData", TypeError, "Expected an AnnData or a SpatialData", mutate=_not_adata),
    *_common_tool_cases("tl.spatial_domains"),
    # ---------------------------------------------------------------- tl.link_regions
    Case(
        "tl.link_regions",
        "patterns not computed",
        KeyError,
        r"`adata.obsm\['X_nope'\]` not found: 'nope' is not a factorisation result",
        kwargs={"key": "nope"},
    ),
    Case("tl.link_regions", "key not a string", TypeError, "`key` must be a non-empty string", kwargs={"key": 5}),
    Case(
        "tl.link_regions",
        "patterns with NaN",
        ValueError,
        r"`adata.obsm\['X_stanmf'\]` has 1 NaN",
        mutate=_nan_in_obsm("X_stanmf"),
    ),
    Case(
        "tl.link_regions",
        "patterns of strings",
        TypeError,
        r"`adata.obsm\['X_stanmf'\]` must hold real numbers",
        mutate=_strings_in("obsm", "X_stanmf"),
    ),
    Case(
        "tl.link_regions",
        "region_key not a column",
        KeyError,
        r"`region_key='nope'` is not a column of `adata.obs`",
        kwargs={"region_key": "nope"},
    ),
    Case(
        "tl.link_regions",
        "region ids as strings",
        TypeError,
        r"must hold integer structure ids .*id_of",
        mutate=_set("obs", "region_id", lambda a: a.obs["region_id"].astype(str)),
    ),
    Case(
        "tl.link_regions",
        "negative region ids",
        ValueError,
        "negative structure ids",
        mutate=_set("obs", "region_id", lambda a: -a.obs["region_id"]),
    ),
    Case(
        "tl.link_regions",
        "no region (all ids 0)",
        ValueError,
        r"has no region \(all ids are 0\)",
        mutate=_set("obs", "region_id", lambda a: np.zeros(a.n_obs, np.int64)),
    ),
    Case(
        "tl.link_regions",
        "voxel grid missing",
        KeyError,
        r"`adata.uns\['aba'\]` with the voxel grid .* not found",
        mutate=_drop("uns", "aba"),
    ),
    Case(
        "tl.link_regions",
        "grid mask not boolean",
        TypeError,
        r"`adata.uns\['aba'\]\['mask'\]` must be a boolean array",
        mutate=lambda a: a.uns["aba"].__setitem__("mask", a.uns["aba"]["mask"].astype(int)),
    ),
    Case(
        "tl.link_regions",
        "grid mask of another size than the obs",
        ValueError,
        "The grid mask has 60 voxels but `adata` has 50 observations",
        mutate=_first_obs(50),
    ),
    Case("tl.link_regions", "max_regions 0", ValueError, "`max_regions` must be at least 1", kwargs={"max_regions": 0}),
    Case("tl.link_regions", "unknown metric", ValueError, "`metric` must be one of", kwargs={"metric": "spearman"}),
    Case(
        "tl.link_regions",
        "dice_threshold above 1",
        ValueError,
        "`dice_threshold` must be >= 0.0 and <= 1.0",
        kwargs={"dice_threshold": 1.5},
    ),
    Case("tl.link_regions", "beam_width 0", ValueError, "`beam_width` must be at least 1", kwargs={"beam_width": 0}),
    Case(
        "tl.link_regions",
        "max_candidates 0",
        ValueError,
        "`max_candidates` must be at least 1",
        kwargs={"max_candidates": 0},
    ),
    Case(
        "tl.link_regions",
        "level without an ontology",
        ValueError,
        r"needs the region hierarchy: pass `ontology=`",
        kwargs={"level": 1},
    ),
    Case(
        "tl.link_regions",
        "ontology of the wrong type",
        TypeError,
        "`ontology` must be an `sf.io.Ontology` or the path",
        kwargs={"ontology": 42},
    ),
    Case(
        "tl.link_regions",
        "unknown level name",
        ValueError,
        "`level` must be one of",
        kwargs=lambda a: {"ontology": _MinimalOntology(), "level": "fine"},
    ),
    Case(
        "tl.link_regions",
        "negative level",
        ValueError,
        "`level` must be at least 0",
        kwargs=lambda a: {"ontology": _MinimalOntology(), "level": -1},
    ),
    *_common_tool_cases("tl.link_regions"),
    # ---------------------------------------------------------------- tl.pattern_genes
    Case(
        "tl.pattern_genes",
        "factorisation not computed",
        KeyError,
        r"'nope' is not a factorisation result: `adata.obsm\['X_nope'\]` and",
        kwargs={"key": "nope"},
    ),
    Case(
        "tl.pattern_genes",
        "loadings missing",
        KeyError,
        r"`adata.varm\['stanmf_loadings'\]` \(or `'stanmf_metagenes'`\) not found",
        mutate=_drop("varm", "stanmf_loadings"),
    ),
    Case(
        "tl.pattern_genes",
        "negative loadings",
        ValueError,
        "must be finite and non-negative",
        mutate=_set("varm", "stanmf_loadings", lambda a: -a.varm["stanmf_loadings"]),
    ),
    Case(
        "tl.pattern_genes",
        "NaN loadings",
        ValueError,
        "must be finite and non-negative",
        mutate=_set("varm", "stanmf_loadings", lambda a: np.full_like(a.varm["stanmf_loadings"], np.nan)),
    ),
    Case(
        "tl.pattern_genes",
        "loadings of strings",
        TypeError,
        r"`adata.varm\['stanmf_loadings'\]` must hold real numbers",
        mutate=_strings_in("varm", "stanmf_loadings"),
    ),
    Case(
        "tl.pattern_genes",
        "patterns and loadings of different K",
        ValueError,
        "they must come from the same factorisation",
        mutate=_set("varm", "stanmf_loadings", lambda a: a.varm["stanmf_loadings"][:, :1]),
    ),
    Case("tl.pattern_genes", "n_genes 0", ValueError, "`n_genes` must be at least 1", kwargs={"n_genes": 0}),
    Case("tl.pattern_genes", "n_genes a float", TypeError, "`n_genes` must be an integer", kwargs={"n_genes": 2.5}),
    Case("tl.pattern_genes", "not an AnnData", TypeError, "Expected an AnnData", mutate=_not_adata),
    *_common_tool_cases("tl.pattern_genes"),
    # ---------------------------------------------------------------- tl.pattern_genes_df
    Case(
        "tl.pattern_genes_df",
        "pattern_genes not run",
        KeyError,
        r"run `sf.tl.pattern_genes\(adata, key='nope'\)` first",
        kwargs={"key": "nope"},
    ),
    Case(
        "tl.pattern_genes_df",
        "pattern index out of range",
        ValueError,
        r"`pattern` 9 is out of range for \d patterns",
        kwargs={"pattern": 9},
    ),
    Case(
        "tl.pattern_genes_df",
        "unknown pattern name",
        ValueError,
        r"`pattern` 'PP9' is not one of the \d patterns",
        kwargs={"pattern": "PP9"},
    ),
    Case(
        "tl.pattern_genes_df",
        "pattern a float",
        TypeError,
        "`pattern` must be a pattern index",
        kwargs={"pattern": 1.5},
    ),
    Case(
        "tl.pattern_genes_df",
        "assigned_only not a bool",
        TypeError,
        "`assigned_only` must be True or False",
        kwargs={"assigned_only": "yes"},
    ),
    # ---------------------------------------------------------------- tl.region_auc
    Case(
        "tl.region_auc",
        "patterns not computed",
        KeyError,
        "'nope' is not a factorisation result",
        kwargs={"key": "nope"},
    ),
    Case(
        "tl.region_auc",
        "region absent",
        ValueError,
        r"Region 99 is absent: no obs of `adata.obs\['region_id'\]` lies in it",
        kwargs={"region": 99},
    ),
    Case(
        "tl.region_auc",
        "acronym without ontology or acronym column",
        ValueError,
        r"is an acronym: pass `ontology=`",
        kwargs={"region": "R1"},
        mutate=_drop("obs", "acronym"),
    ),
    Case(
        "tl.region_auc",
        "region a float",
        TypeError,
        "`region` must be a structure id or an acronym",
        kwargs={"region": 1.5},
    ),
    Case(
        "tl.region_auc",
        "every obs in the region",
        ValueError,
        "Every obs lies in region 1",
        mutate=_set("obs", "region_id", lambda a: np.ones(a.n_obs, np.int64)),
    ),
    Case("tl.region_auc", "patterns empty", ValueError, "`patterns` is empty", kwargs={"patterns": []}),
    Case(
        "tl.region_auc",
        "patterns None",
        TypeError,
        "`factors` must name the patterns to test",
        kwargs={"patterns": None},
    ),
    Case("tl.region_auc", "patterns repeated", ValueError, "`patterns` repeats a pattern", kwargs={"patterns": [0, 0]}),
    Case("tl.region_auc", "pattern out of range", ValueError, "`patterns` 7 is out of range", kwargs={"patterns": [7]}),
    Case("tl.region_auc", "n_random 0", ValueError, "`n_random` must be at least 1", kwargs={"n_random": 0}),
    Case("tl.region_auc", "cv 1", ValueError, "`cv` must be at least 2", kwargs={"cv": 1}),
    Case("tl.region_auc", "C 0", ValueError, "`C` must be > 0.0", kwargs={"C": 0.0}),
    Case(
        "tl.region_auc",
        "negative random_state",
        ValueError,
        "`random_state` must be at least 0",
        kwargs={"random_state": -1},
    ),
    Case(
        "tl.region_auc",
        "ontology of the wrong type",
        TypeError,
        "`ontology` must be an `sf.io.Ontology`",
        kwargs={"ontology": 42},
    ),
    *_common_tool_cases("tl.region_auc"),
    # ---------------------------------------------------------------- tl.sgcn
    Case(
        "tl.sgcn",
        "factorisation not computed",
        KeyError,
        "'nope' is not a factorisation result",
        kwargs={"key": "nope"},
    ),
    Case(
        "tl.sgcn", "top_fraction 0", ValueError, "`top_fraction` must be > 0.0 and <= 1.0", kwargs={"top_fraction": 0.0}
    ),
    Case(
        "tl.sgcn",
        "top_fraction above 1",
        ValueError,
        "`top_fraction` must be > 0.0 and <= 1.0",
        kwargs={"top_fraction": 2.0},
    ),
    Case(
        "tl.sgcn",
        "edge_quantile 1",
        ValueError,
        "`edge_quantile` must be >= 0 and < 1, got 1",
        kwargs={"edge_quantile": 1.0},
    ),
    Case(
        "tl.sgcn",
        "negative edge_quantile",
        ValueError,
        "`edge_quantile` must be >= 0.0",
        kwargs={"edge_quantile": -0.1},
    ),
    Case(
        "tl.sgcn",
        "patterns empty",
        ValueError,
        "`patterns` is empty; pass None for all patterns",
        kwargs={"patterns": []},
    ),
    Case("tl.sgcn", "unknown pattern name", ValueError, "`patterns` 'PP9' is not one of", kwargs={"patterns": "PP9"}),
    Case(
        "tl.sgcn",
        "duplicate gene names",
        ValueError,
        r"Gene names must be unique .*var_names_make_unique",
        mutate=lambda a: setattr(a, "var_names", ["g"] * a.n_vars),
    ),
    Case(
        "tl.sgcn",
        "fewer than 2 genes with a loading",
        ValueError,
        "Only 1 genes have a non-zero loading",
        mutate=_set(
            "varm",
            "stanmf_loadings",
            lambda a: np.where(np.arange(a.n_vars)[:, None] == 0, 1.0, 0.0) * np.ones_like(a.varm["stanmf_loadings"]),
        ),
    ),
    *_common_tool_cases("tl.sgcn"),
    # ---------------------------------------------------------------- tl.sgcn_graph
    Case(
        "tl.sgcn_graph",
        "sgcn not run",
        KeyError,
        r"No sGCN result under key 'nope'; run `sf.tl.sgcn\(adata, key_added='nope'\)` first",
        kwargs={"key": "nope"},
    ),
    Case("tl.sgcn_graph", "pattern out of range", ValueError, "`pattern` 9 is out of range", kwargs={"pattern": 9}),
    Case("tl.sgcn_graph", "key not a string", TypeError, "`key` must be a non-empty string", kwargs={"key": 1}),
    # ---------------------------------------------------------------- pp.impute_voxels
    Case(
        "pp.impute_voxels",
        "X of strings",
        TypeError,
        "The expression values must be real numbers, got strings",
        mutate=_astype(str),
    ),
    Case("pp.impute_voxels", "complex X", TypeError, "got complex numbers", mutate=_astype(complex)),
    Case("pp.impute_voxels", "boolean X", TypeError, "got booleans", mutate=_astype(bool)),
    Case(
        "pp.impute_voxels",
        "inf in X",
        ValueError,
        "The matrix contains 1 infinite values; only NaN marks missing",
        mutate=_x(np.inf, dtype=np.float32),
    ),
    Case(
        "pp.impute_voxels",
        "sparse X",
        TypeError,
        r"needs a dense matrix with NaN .* `adata.X = adata.X.toarray\(\)`",
        mutate=_x(1.0, fmt="csr"),
    ),
    Case(
        "pp.impute_voxels",
        "gene without observed voxels",
        ValueError,
        r"1 genes have no observed voxel \(e.g. \['g0'\]\)",
        mutate=lambda a: setattr(a, "X", np.where(np.arange(a.n_vars) == 0, np.nan, a.X)),
    ),
    Case("pp.impute_voxels", "no obs", ValueError, r"`adata` is empty \(0 obs", mutate=_first_obs(0)),
    Case("pp.impute_voxels", "X is None", ValueError, "`adata.X` is empty", mutate=_set_X_none),
    Case("pp.impute_voxels", "layer not found", KeyError, "Layer 'nope' not found", kwargs={"layer": "nope"}),
    Case(
        "pp.impute_voxels",
        "coordinates missing",
        KeyError,
        r"`adata.obsm\['spatial'\]` with the voxel coordinates not found",
        mutate=_drop("obsm", "spatial"),
    ),
    Case(
        "pp.impute_voxels",
        "coordinates with NaN",
        ValueError,
        "must be a finite .*it has NaN or infinite values",
        mutate=_nan_in_obsm("spatial"),
    ),
    Case(
        "pp.impute_voxels",
        "coordinates of strings",
        ValueError,
        "must be a real \\(n_obs, n_dims\\) array of coordinates, got dtype <U",
        mutate=_strings_in("obsm", "spatial"),
    ),
    Case(
        "pp.impute_voxels", "n_neighbors 0", ValueError, "`n_neighbors` must be at least 1", kwargs={"n_neighbors": 0}
    ),
    Case(
        "pp.impute_voxels",
        "n_neighbors a float",
        TypeError,
        "`n_neighbors` must be an integer",
        kwargs={"n_neighbors": 2.5},
    ),
    Case(
        "pp.impute_voxels",
        "n_holdout not below the observed voxels",
        ValueError,
        "`n_holdout=1000` must be smaller than every gene's number of observed voxels",
        kwargs={"evaluate": True},
    ),
    Case(
        "pp.impute_voxels",
        "negative random_state",
        ValueError,
        "`random_state` must be at least 0",
        kwargs={"random_state": -1},
    ),
    Case(
        "pp.impute_voxels",
        "evaluate not a bool",
        TypeError,
        "`evaluate` must be True or False",
        kwargs={"evaluate": "yes"},
    ),
    Case("pp.impute_voxels", "not an AnnData", TypeError, "Expected an AnnData", mutate=_not_adata),
    Case(
        "pp.impute_voxels",
        "more memory than available",
        MemoryError,
        r"Imputing 60 voxels x 12 genes needs .* impute a subset of the genes",
        memory=1024,
    ),
    *_common_tool_cases("pp.impute_voxels", key_added=False),
    # ---------------------------------------------------------------- pp.normalize_spicemix
    *_matrix_cases("pp.normalize_spicemix", "The counts"),
    *_library_cases("pp.normalize_spicemix"),
    Case(
        "pp.normalize_spicemix",
        "cell without counts",
        ValueError,
        r"1 cells have no counts; .*sc.pp.filter_cells",
        mutate=lambda a: setattr(a, "X", np.where(np.arange(a.n_obs)[:, None] == 0, 0.0, a.X)),
    ),
    Case("pp.normalize_spicemix", "target_sum 0", ValueError, "`target_sum` must be > 0", kwargs={"target_sum": 0}),
    Case("pp.normalize_spicemix", "n_factors 0", ValueError, "`n_factors` must be at least 1", kwargs={"n_factors": 0}),
    Case(
        "pp.normalize_spicemix",
        "more memory than available",
        MemoryError,
        r"Normalising 30 cells x 12 genes needs",
        memory=1024,
    ),
    *_common_tool_cases("pp.normalize_spicemix", key_added=False),
    # ---------------------------------------------------------------- pl (staNMF figures)
    *_pl_cases(
        "pl.instability", r"No factorisation result under key 'nope'; run `sf.tl.stanmf\(adata, key_added='nope'\)`"
    ),
    Case(
        "pl.instability",
        "no sweep over K",
        KeyError,
        r"has no 'instability'; it is written by a sweep over K",
        mutate=_drop_entry("stanmf", "instability"),
    ),
    *_pl_cases("pl.patterns", "No factorisation result under key 'nope'"),
    Case(
        "pl.patterns",
        "factor out of range",
        ValueError,
        r"`factors` 9 is out of range for \d patterns",
        kwargs={"factors": [9]},
    ),
    Case(
        "pl.patterns",
        "factor neither an index nor a name",
        TypeError,
        "`factors` must be a pattern index \\(0-based\\) or a name such as 'PP1'",
        kwargs={"factors": [1.5]},
    ),
    Case("pl.patterns", "unknown plane", ValueError, "Unknown planes \\['axial'\\]", kwargs={"planes": ["axial"]}),
    Case(
        "pl.patterns",
        "grid mask of another size than the obs",
        ValueError,
        "The grid mask has 8 voxels but `adata` has 60 observations",
        mutate=lambda a: (
            a.uns["aba"].__setitem__("mask", np.ones((2, 2, 2), bool))
            or a.uns["aba"].__setitem__("grid_shape", np.array([2, 2, 2]))
        ),
    ),
    *_pl_cases("pl.reconstruction", "No factorisation result under key 'nope'"),
    Case(
        "pl.reconstruction",
        "a SpiceMix result (no per-gene accuracy)",
        KeyError,
        r"has no 'genes'; it is written by `sf.tl.stanmf`",
        kwargs={"key": "spicemix"},
        fixture="cells_fit",
    ),
    *_pl_cases("pl.patterns_per_gene", "No factorisation result under key 'nope'"),
    *_pl_cases("pl.morans_i", "No factorisation result under key 'nope'"),
    Case(
        "pl.morans_i",
        "no spatial graph at fit time",
        KeyError,
        r"Moran's I needs a spatial graph: run `sq.gr.spatial_neighbors_delaunay\(adata\)`",
        mutate=_drop_entry("stanmf", "morans_i"),
    ),
    # ---------------------------------------------------------------- pl (SpiceMix figures)
    *_pl_cases(
        "pl.affinity", r"No SpiceMix result under key 'nope'; run `sf.tl.spicemix\(adata, key_added='nope'\)` first"
    ),
    Case(
        "pl.affinity",
        "affinity with NaN",
        ValueError,
        r"`adata.uns\['spicemix'\]\['affinity'\]` must be a finite square matrix",
        mutate=lambda a: a.uns["spicemix"].__setitem__("affinity", np.full((3, 3), np.nan)),
    ),
    Case("pl.affinity", "cluster not a bool", TypeError, "`cluster` must be True or False", kwargs={"cluster": "yes"}),
    *_pl_cases("pl.convergence", "No SpiceMix result under key 'nope'"),
    Case(
        "pl.convergence",
        "history missing",
        KeyError,
        r"`adata.uns\['spicemix'\]\['history'\]` .* not found; rerun",
        mutate=_drop_entry("spicemix", "history"),
    ),
    *_pl_cases("pl.metagenes", "", key=None),
    Case(
        "pl.metagenes",
        "basis not found",
        KeyError,
        r"`adata.obsm\['X_nope'\]` not found; compute the factors first",
        kwargs={"basis": "X_nope"},
    ),
    Case(
        "pl.metagenes",
        "basis of strings",
        TypeError,
        "must hold real numbers, got dtype <U",
        mutate=_strings_in("obsm", "X_spicemix"),
    ),
    Case(
        "pl.metagenes",
        "factor out of range",
        ValueError,
        r"`factors` 13 is out of range for 3 metagenes",
        kwargs={"factors": [13]},
    ),
    Case(
        "pl.metagenes",
        "factor name unknown",
        ValueError,
        r"`factors` '0' is not one of the 3 metagenes \(MG1 ... MG3\)",
        kwargs={"factors": "0"},
    ),
    Case(
        "pl.metagenes",
        "library_key not a column",
        KeyError,
        r"`adata.obs\['batch'\]` not found",
        kwargs={"library_key": "batch"},
    ),
    Case(
        "pl.metagenes",
        "coordinates missing",
        KeyError,
        r"`adata.obsm\['spatial'\]` not found; coordinates are needed",
        mutate=_drop("obsm", "spatial"),
    ),
    Case(
        "pl.metagenes",
        "coordinates with one column",
        ValueError,
        "must have at least 2 columns",
        mutate=_set("obsm", "spatial", lambda a: a.obsm["spatial"][:, :1]),
    ),
    *_pl_cases("pl.metagene_expression", "", key=None),
    Case(
        "pl.metagene_expression",
        "groupby not a column",
        KeyError,
        r"`adata.obs\['nope'\]` not found",
        kwargs={"groupby": "nope"},
    ),
    Case(
        "pl.metagene_expression",
        "basis not found",
        KeyError,
        r"`adata.obsm\['X_nope'\]` not found",
        kwargs={"basis": "X_nope"},
    ),
    # ---------------------------------------------------------------- pl (region figures)
    *_pl_cases(
        "pl.region_correlation",
        r"No region linking result under key 'nope'; run `sf.tl.link_regions\(adata, key_added='nope'\)` first",
    ),
    Case("pl.region_correlation", "n_top 0", ValueError, "`n_top` must be at least 1", kwargs={"n_top": 0}),
    Case(
        "pl.region_correlation",
        "unknown groups",
        ValueError,
        "`groups` must be 'coarse', a depth",
        kwargs={"groups": "fine"},
    ),
    Case(
        "pl.region_correlation", "negative max_size", ValueError, "`max_size` must be > 0.0", kwargs={"max_size": -1.0}
    ),
    Case(
        "pl.region_correlation",
        "unknown regions",
        KeyError,
        r"Regions \['XYZ'\] are not among the linked regions",
        kwargs={"regions": ["XYZ"]},
    ),
    Case(
        "pl.region_correlation",
        "pattern out of range",
        ValueError,
        "`factors` 9 is out of range",
        kwargs={"factors": [9]},
    ),
    Case(
        "pl.region_correlation",
        "ontology of the wrong type",
        TypeError,
        "`ontology` must be an `sf.io.Ontology`",
        kwargs={"ontology": 42},
    ),
    *_pl_cases("pl.linked_regions", "No region linking result under key 'nope'"),
    Case("pl.linked_regions", "unknown plane", ValueError, "`plane` must be one of", kwargs={"plane": "axial"}),
    Case(
        "pl.linked_regions",
        "n_regions not searched",
        ValueError,
        r"`n_regions` must be one of \[1, 2\], got 7",
        kwargs={"n_regions": 7},
    ),
    Case(
        "pl.linked_regions",
        "patterns removed since linking",
        KeyError,
        r"`adata.obsm\['X_stanmf'\]` \(the linked patterns\) not found",
        mutate=_drop("obsm", "X_stanmf"),
    ),
    *_pl_cases("pl.link_heatmap", "No region linking result under key 'nope'"),
    # ---------------------------------------------------------------- pl (marker genes, sGCN, AUC)
    *_pl_cases("pl.pattern_genes", r"run `sf.tl.pattern_genes\(adata, key='nope'\)` first"),
    Case(
        "pl.pattern_genes",
        "unknown values",
        ValueError,
        "`values` must be 'coefficients' or 'importance'",
        kwargs={"values": "raw"},
    ),
    Case(
        "pl.pattern_genes",
        "ax with the counts panel",
        ValueError,
        "`ax` takes the heatmap alone; pass `counts=False`",
        kwargs=lambda a: {"ax": _new_axes(a)},
    ),
    Case("pl.pattern_genes", "negative vmax", ValueError, "`vmax` must be > 0.0", kwargs={"vmax": -1.0}),
    Case(
        "pl.pattern_genes", "counts not a bool", TypeError, "`counts` must be True or False", kwargs={"counts": "yes"}
    ),
    *_pl_cases("pl.pattern_with_genes", r"run `sf.tl.pattern_genes\(adata, key='nope'\)` first"),
    Case("pl.pattern_with_genes", "n_genes 0", ValueError, "`n_genes` must be at least 1", kwargs={"n_genes": 0}),
    Case(
        "pl.pattern_with_genes", "n_genes a float", TypeError, "`n_genes` must be an integer", kwargs={"n_genes": 1.5}
    ),
    Case("pl.pattern_with_genes", "layer not found", KeyError, "Layer 'nope' not found", kwargs={"layer": "nope"}),
    Case("pl.pattern_with_genes", "unknown plane", ValueError, "`plane` must be one of", kwargs={"plane": "axial"}),
    Case(
        "pl.pattern_with_genes",
        "pattern out of range",
        ValueError,
        "`factors` 9 is out of range",
        kwargs={"factors": 9},
    ),
    Case(
        "pl.pattern_with_genes",
        "X is None",
        ValueError,
        r"`adata.X` is empty: pass `layer=` with the expression, or `reconstructed=True`",
        mutate=_set_X_none,
    ),
    *_pl_cases("pl.sgcn", r"No sGCN result under key 'nope'"),
    Case(
        "pl.sgcn",
        "unknown layout",
        ValueError,
        "`layout` must be 'circular', 'spring' or 'kamada_kawai'",
        kwargs={"layout": "grid"},
    ),
    Case("pl.sgcn", "pattern out of range", ValueError, "`pattern` 9 is out of range", kwargs={"pattern": 9}),
    Case("pl.sgcn", "negative node_size", ValueError, "`node_size` must be >= 0.0", kwargs={"node_size": -1.0}),
    *_pl_cases(
        "pl.region_auc",
        r"No region AUC result under key 'nope'; run `sf.tl.region_auc\(adata, key_added='nope'\)` first",
    ),
    Case("pl.region_auc", "bins 0", ValueError, "`bins` must be at least 1", kwargs={"bins": 0}),
    # ---------------------------------------------------------------- io.to_volume
    Case(
        "io.to_volume",
        "not an AnnData",
        TypeError,
        r"must be an AnnData with the voxel grid in `.uns\['aba'\]`, got ndarray",
        mutate=_not_adata,
    ),
    Case(
        "io.to_volume",
        "voxel grid missing",
        KeyError,
        r"`adata.uns\['aba'\]` with the voxel grid",
        mutate=_drop("uns", "aba"),
    ),
    Case(
        "io.to_volume",
        "grid mask not boolean",
        TypeError,
        "must be a boolean array of the grid shape",
        mutate=lambda a: a.uns["aba"].__setitem__("mask", a.uns["aba"]["mask"].astype(np.uint8)),
    ),
    Case(
        "io.to_volume",
        "grid mask of another size than the obs",
        ValueError,
        r"The grid mask has 60 voxels but `adata` has 50 observations; after subsetting voxels",
        mutate=_first_obs(50),
    ),
    Case(
        "io.to_volume",
        "grid_shape not numbers",
        TypeError,
        r"`adata.uns\['aba'\]\['grid_shape'\]` must be the grid's size",
        mutate=lambda a: a.uns["aba"].__setitem__("grid_shape", ["a", "b", "c"]),
    ),
    Case(
        "io.to_volume",
        "spacing not a number",
        TypeError,
        r"`adata.uns\['aba'\]\['spacing'\]` must be a number",
        mutate=lambda a: a.uns["aba"].__setitem__("spacing", "200um"),
    ),
    Case(
        "io.to_volume",
        "vector of the wrong length",
        ValueError,
        r"`values` has length 5, expected one value per voxel \(60\)",
        kwargs={"values": np.ones(5)},
    ),
    Case(
        "io.to_volume",
        "unknown name",
        KeyError,
        "'nope' is neither a column of `adata.obs` nor a gene",
        kwargs={"values": "nope"},
    ),
    Case(
        "io.to_volume",
        "categorical string column",
        TypeError,
        r"must be numeric .* `adata.obs\[key\].cat.codes.to_numpy\(\)`",
        kwargs={"values": "acronym"},
    ),
    Case(
        "io.to_volume",
        "basis not found",
        KeyError,
        r"`adata.obsm\['X_nope'\]` not found",
        kwargs={"values": 0, "basis": "X_nope"},
    ),
    Case(
        "io.to_volume",
        "basis column out of range",
        ValueError,
        r"column index of `adata.obsm\['spatial'\]` \(0 ... 2\), got 3",
        kwargs={"values": 3, "basis": "spatial"},
    ),
    Case(
        "io.to_volume",
        "basis with a name instead of an index",
        ValueError,
        "`values` must be a column index",
        kwargs={"values": "x", "basis": "spatial"},
    ),
    Case(
        "io.to_volume",
        "fill_value not a number",
        TypeError,
        "`fill_value` must be a number",
        kwargs={"fill_value": "none"},
    ),
    Case(
        "io.to_volume",
        "more memory than available",
        MemoryError,
        r"A float64 volume of shape \(4, 3, 5\) needs 480 B but only 100 B",
        memory=100,
    ),
    # ---------------------------------------------------------------- io.read_aba
    Case("io.read_aba", "no files", ValueError, "`energy` is empty", kwargs=lambda f: {"energy": []}),
    Case(
        "io.read_aba",
        "file not found",
        FileNotFoundError,
        "Expression grid not found: <folder>/missing.mhd",
        kwargs=lambda f: {"energy": [f["folder"] / "missing.mhd"]},
    ),
    Case(
        "io.read_aba",
        "energy not paths",
        TypeError,
        "`energy` must be a path or a sequence of paths",
        kwargs=lambda f: {"energy": 5},
    ),
    Case(
        "io.read_aba",
        "annotation not a path",
        TypeError,
        "`annotation` must be the path of the grid annotation",
        kwargs=lambda f: {"annotation": None},
    ),
    Case(
        "io.read_aba",
        "annotation of floats",
        ValueError,
        "the annotation must hold integer structure ids, got MET_FLOAT",
        kwargs=lambda f: {"annotation": f["float_annotation"]},
    ),
    Case(
        "io.read_aba",
        "gene on another grid",
        ValueError,
        r"grid shape \(2, 2, 2\) differs from the annotation's \(4, 3, 5\)",
        kwargs=lambda f: {"energy": [f["genes"][0], f["other_grid"]]},
    ),
    Case("io.read_aba", "unknown dtype", ValueError, "`dtype` must be one of", kwargs=lambda f: {"dtype": "int8"}),
    Case(
        "io.read_aba",
        "genes of another length",
        ValueError,
        "`genes` has 1 names for 2 files; pass one name per file",
        kwargs=lambda f: {"genes": ["A"]},
    ),
    Case(
        "io.read_aba",
        "genes not strings",
        TypeError,
        "`genes` must be non-empty strings",
        kwargs=lambda f: {"genes": [1, 2]},
    ),
    Case(
        "io.read_aba",
        "mask of another shape",
        ValueError,
        r"`mask` has shape \(2, 2\), but the annotation grid has shape \(4, 3, 5\)",
        kwargs=lambda f: {"mask": np.ones((2, 2), bool)},
    ),
    Case(
        "io.read_aba",
        "mask not boolean",
        TypeError,
        "`mask` must be a boolean array, got dtype int64",
        kwargs=lambda f: {"mask": np.ones(GRID, np.int64)},
    ),
    Case(
        "io.read_aba",
        "mask selecting nothing",
        ValueError,
        "The mask selects no voxels",
        kwargs=lambda f: {"mask": np.zeros(GRID, bool)},
    ),
    Case(
        "io.read_aba",
        "brain_only not a bool",
        TypeError,
        "`brain_only` must be True or False",
        kwargs=lambda f: {"brain_only": "yes"},
    ),
    Case(
        "io.read_aba",
        "more memory than available",
        MemoryError,
        r"The 59 voxels x 2 genes matrix \(float32\) needs .* read fewer genes at a time",
        kwargs=lambda f: {},
        memory=64,
    ),
]


def _loader_cases(func: str, what: str, fname: str) -> list[Case]:
    """Bad arguments and folders of a data set loader (``path`` a folder of the fixture's files)."""
    return [
        Case(func, "path not a folder name", TypeError, r"`path` must be a folder \(a string or path\) or None, got 3",
             kwargs={"path": 3}),
        Case(func, "folder not found", FileNotFoundError, r"Data folder not found: .*_missing",
             kwargs=lambda f: {"path": f["missing"]}),
        Case(func, "folder without the file", FileNotFoundError, rf"{what}: file '{re.escape(fname)}' not found in",
             kwargs=lambda f: {"path": f["empty"]}),
        Case(func, "progress not a bool", TypeError, "`progress` must be True or False, got 'yes'",
             kwargs={"progress": "yes"}),
        Case(func, "base_url not a string", TypeError, "`base_url` must be a non-empty string, got None",
             kwargs={"base_url": None}),
    ]  # fmt: skip


CASES += [
    Case(
        "datasets.visium_dlpfc",
        "sample not available",
        ValueError,
        r"DLPFC sample '151673' is not available; available: \['151510'\]",
        kwargs={"sample": "151673"},
    ),
    Case(
        "datasets.visium_dlpfc",
        "sample not a string",
        TypeError,
        r"`sample` must be the sample id as a string, e\.g\. '151510', got 151510",
        kwargs={"sample": 151510},
    ),
    *_loader_cases("datasets.visium_dlpfc", "Visium DLPFC", "dlpfc151510.rda"),
    Case(
        "datasets.visium_dlpfc",
        "truncated file",
        ValueError,
        r"dlpfc151510\.rda: cannot be read as R data \(EOFError.*Delete it and load again",
        kwargs=lambda f: {"path": f["damaged"]},
    ),
    Case(
        "datasets.osmfish_cortex",
        "filter_excluded not a bool",
        TypeError,
        "`filter_excluded` must be True or False, got 'yes'",
        kwargs={"filter_excluded": "yes"},
    ),
    *_loader_cases("datasets.osmfish_cortex", "osmFISH cortex", "osmFISH_SScortex_mouse_all_cells.loom"),
    Case(
        "datasets.osmfish_cortex",
        "HDF5 file that is not a loom",
        ValueError,
        r"\.loom: has no loom dataset\(s\) \['row_attrs/Gene', .*Delete it and load again",
        kwargs=lambda f: {"path": f["damaged"]},
    ),
]


# Readers, ontology and volumes: round two of the reliability review


def _gene_zip(path: Path, *, xml: bytes | None = None, claim: int | None = None) -> Path:
    """An Allen-style gene download (energy.mhd/.raw, stored), optionally claiming a size for energy.raw."""
    import zipfile

    labels = _labels()
    with zipfile.ZipFile(path, "w") as zf:
        if xml is not None:
            zf.writestr("data_set.xml", xml)
        dims = "2048 2048 4096" if claim else " ".join(map(str, GRID))  # a claim: DimSize asks for 64 GiB
        header = f"NDims = 3\nDimSize = {dims}\nElementType = MET_FLOAT\nElementDataFile = energy.raw\n"
        zf.writestr("energy.mhd", header)
        zf.writestr("energy.raw", np.where(labels > 0, 1.0, -1).astype("<f4").tobytes(order="F"))
        if claim:  # the central directory (zip64) claims `claim` bytes for the stored member
            zf.filelist[-1].file_size = zf.filelist[-1].compress_size = claim
    return path


def make_aba_round2(folder: Path) -> dict:
    """The ABA files plus damaged ones: gene zips, ontologies with cycles, odd headers, and a download cache."""
    folder = Path(folder) / "round2"
    folder.mkdir(parents=True, exist_ok=True)
    out = make_aba(folder)
    xml = b"<section-data-set><id>3</id><plane_of_section/></section-data-set>"
    good = _gene_zip(folder / "Gene3_P56_coronal_3_200um.zip", xml=xml).read_bytes()
    damaged = {
        "random": np.random.default_rng(3).bytes(len(good)),
        "truncated": good[: len(good) // 2],
        "bad_crc": good.replace(b"<section-data-set>", b"<Section-data-set>", 1),  # data_set.xml's CRC fails
    }
    for how, raw in damaged.items():
        (folder / f"Gene_{how}_P56_coronal_4_200um.zip").write_bytes(raw)
        out[f"zip_{how}"] = folder / f"Gene_{how}_P56_coronal_4_200um.zip"
    out["zip64"] = _gene_zip(folder / "Huge_P56_coronal_5_200um.zip", claim=64 * 2**30)
    header = (folder / "Gene1_P56_coronal_1_200um.mhd").read_text()
    for name, spacing in [("spacing_zero", "0 0 0"), ("spacing_negative", "200 -200 200")]:
        text = header.replace("ElementSpacing = 200 200 200", f"ElementSpacing = {spacing}")
        (folder / f"{name}.mhd").write_text(text)
        out[name] = folder / f"{name}.mhd"
    big = _labels().astype("<u8")
    big[big == 4] = 2**63 + 4
    out["annotation_u64"] = _write_mhd(folder, "annotation_u64", big, "MET_ULONG_LONG")
    rows = "id,acronym,name,structure_id_path\n997,root,root,{}\n1,R1,R1,/997/1/\n2,R2,R2,/997/2/\n"
    rows += "3,R3,R3,{}\n4,R4,R4,/997/4/\n"
    (folder / "path_cycle.csv").write_text(rows.format("/3/997/", "/997/3/"))
    (folder / "path_repeat.csv").write_text(rows.format("/997/", "/997/3/997/3/"))
    parents = "id,acronym,name,parent_structure_id\n997,root,root,\n1,R1,R1,997\n2,R2,R2,3\n3,R3,R3,2\n4,R4,R4,997\n"
    (folder / "parent_cycle.csv").write_text(parents)
    for name in ("path_cycle", "path_repeat", "parent_cycle"):
        out[name] = folder / f"{name}.csv"
    cache = folder / "cache" / "aba_200um" / "grids"  # sf.datasets.aba_grids(cache_dir=...) finds grids here
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "Gene3_P56_coronal_3_200um.zip").write_bytes(good)
    (cache / "Bad_P56_coronal_4_200um.zip").write_bytes(damaged["truncated"])
    (cache / "Crc_P56_coronal_6_200um.zip").write_bytes(damaged["bad_crc"])
    shutil.copy(out["zip64"], cache / out["zip64"].name)
    out["cache"] = folder / "cache"
    return out


FILE_FIXTURES["aba_round2"] = make_aba_round2
#: Offline: the grids come from the cache folder, the annotation from a path; nothing is downloaded.
VALID["datasets.aba_grids"] = (
    "aba_round2",
    lambda f: {
        "genes": "Gene3",
        "cache_dir": f["cache"],
        "annotation": f["annotation"],
        "api_url": "http://127.0.0.1:9",
    },
)


def _huge_region_id(a):
    """Mutation: region 4 as the uint64 id 2**63 + 4 (wrapped to a negative int64 when cast)."""
    ids = a.obs["region_id"].to_numpy()
    a.obs["region_id"] = np.where(ids == 4, 2**63 + 4, ids).astype(np.uint64)


_DOWNLOAD_AGAIN = r"damaged or unsupported zip archive \({}.*\); delete it and download it again"


CASES += [
    *[
        Case(
            "io.read_aba",
            f"gene zip {how.replace('_', ' ')}",
            ValueError,
            rf"Gene_{how}_P56_coronal_4_200um\.zip: " + _DOWNLOAD_AGAIN.format(error),
            kwargs=lambda f, how=how: {"energy": [f["genes"][0], f[f"zip_{how}"]]},
            fixture="aba_round2",
        )
        for how, error in [("random", "BadZipFile"), ("truncated", "BadZipFile"), ("bad_crc", "BadZipFile: Bad CRC")]
    ],
    Case(
        "io.read_aba",
        "zip64 directory claiming 64 GiB",
        ValueError,
        r"Huge_P56_coronal_5_200um\.zip: damaged .*member 'energy\.raw' claims 68719476736 compressed bytes, but the "
        r"archive has \d+\); delete it and download it again",
        kwargs=lambda f: {"energy": [f["zip64"]]},
        fixture="aba_round2",
    ),
    *[
        Case(
            "io.read_aba",
            f"ElementSpacing {what}",
            ValueError,
            rf"{name}\.mhd: `ElementSpacing` {re.escape(spacing)} must be positive distances .*fix the header",
            kwargs=lambda f, name=name: {"energy": [f["genes"][0], f[name]]},
            fixture="aba_round2",
        )
        for what, name, spacing in [
            ("0", "spacing_zero", "0.0 0.0 0.0"),
            ("negative", "spacing_negative", "200.0 -200.0 200.0"),
        ]
    ],
    Case(
        "io.read_aba",
        "uint64 region id >= 2**63",
        ValueError,
        r"annotation_u64\.mhd: the annotation holds the id 9223372036854775812, beyond the int64 range",
        kwargs=lambda f: {"annotation": f["annotation_u64"]},
        fixture="aba_round2",
    ),
    *[
        Case(
            "io.read_aba",
            f"ontology {what}",
            ValueError,
            rf"{name}\.csv: The ontology's `{column}` forms a cycle through the structures {ids} .*fix the `{column}`",
            kwargs=lambda f, name=name: {"ontology": f[name]},
            fixture="aba_round2",
        )
        for what, name, column, ids in [
            ("structure_id_path with a cycle", "path_cycle", "structure_id_path", r"\[3, 997\]"),
            ("structure_id_path repeating ids", "path_repeat", "structure_id_path", r"\[3, 997\]"),
            ("parent_structure_id with a cycle", "parent_cycle", "parent_structure_id", r"\[2, 3\]"),
        ]
    ],
    Case(
        "io.to_volume",
        "Series indexed by position",
        ValueError,
        r"`values` is a Series whose index does not match `adata.obs_names`: 60 voxels have no value .*"
        r"pass `values.to_numpy\(\)`",
        kwargs=lambda a: {"values": pd.Series(np.ones(a.n_obs))},
    ),
    Case(
        "io.to_volume",
        "Series repeating labels",
        ValueError,
        r"`values` is a Series whose index repeats labels, e\.g\. \['voxel_0'\]",
        kwargs=lambda a: {"values": pd.Series(np.ones(a.n_obs), index=[a.obs_names[0], *a.obs_names[:-1]])},
    ),
    Case(
        "tl.region_auc",
        "uint64 region id >= 2**63",
        ValueError,
        r"`adata.obs\['region_id'\]` holds the id 9223372036854775812, beyond the int64 range",
        mutate=_huge_region_id,
    ),
    Case(
        "datasets.aba_grids",
        "truncated cached grid",
        ValueError,
        r"Bad_P56_coronal_4_200um\.zip: " + _DOWNLOAD_AGAIN.format("BadZipFile"),
        kwargs={"genes": "Bad"},
    ),
    Case(
        "datasets.aba_grids",
        "cached grid with a bad CRC in data_set.xml",
        ValueError,
        r"Crc_P56_coronal_6_200um\.zip: " + _DOWNLOAD_AGAIN.format("BadZipFile: Bad CRC"),
        kwargs={"genes": "Crc"},
    ),
    Case(
        "datasets.aba_grids",
        "cached grid claiming 64 GiB",
        ValueError,
        r"Huge_P56_coronal_5_200um\.zip: damaged .*claims 68719476736 compressed bytes.*download it again",
        kwargs={"genes": "Huge"},
    ),
]


# Tools: round two of the reliability review (numerics, memory, validation before the fit)
def _device_cases(func: str) -> list[Case]:
    """Devices this machine lacks (no index 99 anywhere, no Apple GPU on the test machines) and non-devices."""
    return [
        Case(func, "device None", TypeError, r"`device` must be a torch device name .* got None",
             kwargs={"device": None}),
        Case(func, "device not a torch name", ValueError, r"`device='gpu0'` is not a torch device name; use 'cpu'",
             kwargs={"device": "gpu0"}),
        Case(func, "CUDA device that does not exist", ValueError,
             r"`device='cuda:99'`: (no CUDA device is available .*use device='cpu'|this machine has \d+ CUDA device)",
             kwargs={"device": "cuda:99"}),
        Case(func, "MPS device without an Apple GPU", ValueError,
             r"`device='mps'`: no MPS \(Apple GPU\) device is available; use device='cpu'", kwargs={"device": "mps"}),
    ]  # fmt: skip


def _with_uns(key: str, value):
    def mutate(a):
        a.uns[key] = value

    return mutate


def _stale_loadings(a):
    """A factorisation record from before `loadings_key`, with loadings of two kinds under one key."""
    del a.uns["stanmf"]["loadings_key"]
    a.varm["stanmf_metagenes"] = np.asarray(a.varm["stanmf_loadings"])[:, :1].repeat(2, axis=1) + 1.0


def _identical_states(a):
    a.obsm["X_spicemix"] = np.ones_like(a.obsm["X_spicemix"])


_FOREIGN = {"params": {"note": "another tool's result"}}

CASES += [
    *_device_cases("tl.stanmf"),
    *_device_cases("tl.spicemix"),
    Case("tl.stanmf", "a million replicates", MemoryError,
         r"staNMF on 60 obs x 12 genes \(K up to 3, 1000000 replicates\) needs .* fewer `n_replicates`",
         kwargs={"n_factors": [2, 3], "n_replicates": 10**6}, memory=2**40),
    Case("tl.stanmf", "values beyond float32 factors", ValueError,
         r"The data reach 1e\+200, beyond what float32 factors can hold .* pass `dtype='float64'`", mutate=_x(1e200)),
    Case("tl.stanmf", "one obs", ValueError, r"staNMF needs at least 2 obs .* `adata` has 1",
         kwargs={"n_factors": 1}, mutate=_first_obs(1)),
    Case("tl.stanmf", "n_factors an endless range", ValueError, r"`n_factors` must be at least 1 and at most 12",
         kwargs={"n_factors": range(1, 10**12)}),
    Case("tl.stanmf", "graph for Moran's I with a negative weight", ValueError,
         r"\(used for Moran's I\) has negative weights", mutate=_edit_graph(_negative_weight)),
    Case("tl.stanmf", "key_added of another tool's result", ValueError,
         r"`key_added='other'` would overwrite `adata.uns\['other'\]`, the result of another tool",
         kwargs={"key_added": "other"}, mutate=_with_uns("other", _FOREIGN)),
    Case("tl.spicemix", "a million replicates", MemoryError,
         r"SpiceMix on a dense 30 cells x 12 genes matrix with 1000000 replicates per K needs .* fewer `n_replicates`",
         kwargs={"n_factors": [2, 3], "n_replicates": 10**6}, memory=2**40),
    Case("tl.spicemix", "key_added of another tool's result", ValueError,
         r"`key_added='other'` would overwrite `adata.uns\['other'\]`, the result of another tool",
         kwargs={"key_added": "other"}, mutate=_with_uns("other", _FOREIGN)),
    Case("tl.cluster_latent", "identical latent states", ValueError,
         r"has 1 distinct latent state\(s\) over 30 obs, too few to cut into 2",
         kwargs={"n_clusters": [2, 3]}, mutate=_identical_states),
    Case("tl.cluster_latent", "more memory than available", MemoryError,
         r"Ward clustering of 30 obs needs .* or use `sf.tl.spatial_domains`", memory=1024),
    Case("tl.cluster_latent", "key_added of a factorisation", ValueError,
         r"`key_added='spicemix'` would overwrite `adata.uns\['spicemix'\]`, the result of a factorisation",
         kwargs={"key_added": "spicemix"}),
    Case("tl.spatial_domains", "more memory than available", MemoryError,
         r"Ward clustering of 30 obs needs .* use method='leiden'", memory=1024),
    Case("tl.spatial_domains", "key_added of a factorisation", ValueError,
         r"`key_added='spicemix'` would overwrite .* pass another `key_added` to `sf.tl.spatial_domains`",
         kwargs={"key_added": "spicemix"}),
    Case("tl.link_regions", "key_added of a factorisation", ValueError,
         r"`key_added='stanmf'` would overwrite `adata.uns\['stanmf'\]`, the result of a factorisation",
         kwargs={"key_added": "stanmf"}),
    Case("tl.region_auc", "key_added of a factorisation", ValueError,
         r"`key_added='stanmf'` would overwrite .* `sf.tl.region_auc`", kwargs={"key_added": "stanmf"}),
    Case("tl.region_auc", "a billion random subsets", MemoryError,
         r"1000000000 random subsets of 1 patterns needs .* use fewer `n_random`",
         kwargs={"n_random": 10**9}, memory=2**30),
    Case("tl.sgcn", "key_added of a factorisation", ValueError,
         r"`key_added='stanmf'` would overwrite .* `sf.tl.sgcn`", kwargs={"key_added": "stanmf"}),
    Case("tl.sgcn", "more memory than available", MemoryError,
         r"Networks of 6 genes needs .* smaller `top_fraction`", memory=1024),
    Case("tl.pattern_genes", "loadings of two runs without a record", ValueError,
         r"Both `adata.varm\['stanmf_loadings'\]` and `adata.varm\['stanmf_metagenes'\]` exist .* one is stale",
         mutate=_stale_loadings),
    Case("tl.pattern_genes", "recorded loadings removed", KeyError,
         r"`adata.uns\['stanmf'\]\['loadings_key'\]` names `adata.varm\['stanmf_metagenes'\]`, which is missing",
         mutate=lambda a: a.uns["stanmf"].__setitem__("loadings_key", "stanmf_metagenes")),
    Case("tl.pattern_genes", "patterns of another run than the record", ValueError,
         r"records a run with K = 5 but `adata.obsm\['X_stanmf'\]` has 3 patterns: they come from different runs",
         mutate=lambda a: a.uns["stanmf"].__setitem__("k", 5)),
    Case("tl.sgcn", "loadings of two runs without a record", ValueError, r"exist .* one is stale",
         mutate=_stale_loadings),
]  # fmt: skip


# Discrete HMRF domains and metagene-gene regression


def make_cells_hmrf() -> ad.AnnData:
    """The SpiceMix cell fixture after HMRF domains (a beta sweep) and a covariate-gene regression."""
    import spatialfactors as sf

    adata = make_cells_fit()
    sf.tl.hmrf_domains(adata, "X_spicemix", 2, beta=[0.0, 1.0], library_key="fov")
    sf.tl.covariate_genes(adata, factors=(0, 1), groupby="fov", groups="0")
    return adata


FIXTURES["cells_hmrf"] = make_cells_hmrf
VALID.update(
    {
        "tl.hmrf_domains": (
            "cells_fit",
            {"basis": "X_spicemix", "n_domains": 2, "beta": [0.0, 1.0], "library_key": "fov"},
        ),
        "tl.covariate_genes": ("cells_fit", {"factors": (0, 1), "groupby": "fov", "groups": "0"}),
        "pl.domains": ("cells_hmrf", {"show": False}),
        "pl.covariate_genes": ("cells_hmrf", {"show": False}),
    }
)


def _constant_column(key):
    def mutate(a):
        v = np.array(a.obsm[key], dtype=np.float64)
        v[:, 0] = 1.0
        a.obsm[key] = v

    return mutate


def _silent_group(a):
    x = np.array(a.X, dtype=np.float64)
    x[:15] = 0.0  # field of view "0": no gene expressed
    a.X = x


_H, _C = "tl.hmrf_domains", "tl.covariate_genes"
_FIRST_TWO = np.arange(30) < 2

CASES += [
    # ---------------------------------------------------------------- tl.hmrf_domains
    Case(_H, "basis not found", KeyError, r"`adata.obsm\['X_nope'\]` not found; compute a representation first",
         kwargs={"basis": "X_nope"}),
    Case(_H, "default PCA not computed", KeyError, r"`adata.obsm\['X_pca'\]` not found; .*`sc.tl.pca\(adata\)`",
         kwargs={"basis": "X_pca"}),
    Case(_H, "basis with NaN", ValueError, r"`adata.obsm\['X_spicemix'\]` has 1 NaN or infinite values",
         mutate=_nan_in_obsm("X_spicemix")),
    Case(_H, "basis with a constant column", ValueError, r"`adata.obsm\['X_spicemix'\]` has constant columns",
         mutate=_constant_column("X_spicemix")),
    Case(_H, "n_domains 1", ValueError, "`n_domains` must be at least 2", kwargs={"n_domains": 1}),
    Case(_H, "n_domains a float", TypeError, "`n_domains` must be an integer or a sequence of integers, got 2.5",
         kwargs={"n_domains": 2.5}),
    Case(_H, "n_domains not below n_obs", ValueError, "at most 29, got 30", kwargs={"n_domains": [2, 30]}),
    Case(_H, "n_domains empty", ValueError, "`n_domains` is empty", kwargs={"n_domains": []}),
    Case(_H, "n_domains a string", TypeError, "`n_domains` must be an integer or a sequence",
         kwargs={"n_domains": "3"}),
    Case(_H, "negative beta", ValueError, "`beta` must be >= 0, got -1.0", kwargs={"beta": [0.0, -1.0]}),
    Case(_H, "NaN beta", ValueError, "`beta` must be >= 0, got nan", kwargs={"beta": float("nan")}),
    Case(_H, "beta a string", TypeError, "`beta` must be a number, got 'high'", kwargs={"beta": "high"}),
    Case(_H, "beta empty", ValueError, "`beta` is empty", kwargs={"beta": []}),
    Case(_H, "unknown covariance", ValueError, "`covariance` must be one of", kwargs={"covariance": "tied"}),
    Case(_H, "n_dims 0", ValueError, "`n_dims` must be at least 1 and at most 3", kwargs={"n_dims": 0}),
    Case(_H, "n_dims above the columns", ValueError, "at most 3, got 4", kwargs={"n_dims": 4}),
    Case(_H, "max_iter 0", ValueError, "`max_iter` must be at least 1", kwargs={"max_iter": 0}),
    Case(_H, "negative tol", ValueError, "`tol` must be >= 0", kwargs={"tol": -1e-6}),
    Case(_H, "negative random_state", ValueError, "`random_state` must be at least 0", kwargs={"random_state": -1}),
    Case(_H, "reference_key not a column", KeyError, r"`reference_key='truth'` is not a column",
         kwargs={"reference_key": "truth"}),
    *_library_cases(_H),
    *_graph_cases(_H),
    Case(_H, "max_distance without edge lengths", KeyError,
         r"`max_distance` needs the edge lengths in `adata.obsp\['spatial_distances'\]`",
         kwargs={"max_distance": 10.0}),
    Case(_H, "max_distance drops every edge", ValueError, r"`max_distance=0.001` drops every edge",
         kwargs={"max_distance": 0.001}, mutate=_with_distances),
    Case(_H, "two obs", ValueError, "HMRF domains need at least 3 obs", mutate=_first_obs(2)),
    Case(_H, "key_added of a factorisation", ValueError,
         r"`key_added='spicemix'` would overwrite .* pass another `key_added` to `sf.tl.hmrf_domains`",
         kwargs={"key_added": "spicemix"}),
    Case(_H, "more memory than available", MemoryError, r"HMRF domains of 30 obs x 3 features needs .* use fewer",
         memory=1024),
    Case(_H, "not an AnnData", TypeError, "Expected an AnnData or a SpatialData", mutate=_not_adata),
    *_sdata_cases(_H),
    *_common_tool_cases(_H),
    # ---------------------------------------------------------------- tl.covariate_genes
    Case(_C, "neither covariate nor factors", ValueError, "Pass exactly one of `covariate`", kwargs={"factors": None}),
    Case(_C, "both covariate and factors", ValueError, "Pass exactly one of `covariate`",
         kwargs={"covariate": "total"}),
    Case(_C, "covariate not a column", KeyError, r"`covariate='depth'` is not a column of `adata.obs`",
         kwargs={"covariate": "depth", "factors": None}),
    Case(_C, "covariate of strings", TypeError, "`covariate` must hold real numbers, got dtype object",
         kwargs={"covariate": "fov_str", "factors": None}),
    Case(_C, "covariate of the wrong length", ValueError, r"one value per obs \(30\), got shape \(29,\)",
         kwargs={"covariate": np.arange(29.0), "factors": None}),
    Case(_C, "covariate with NaN in the group", ValueError, "The covariate has 1 NaN or infinite values",
         kwargs={"covariate": np.r_[np.nan, np.arange(29.0)], "factors": None}),
    Case(_C, "covariate constant in the group", ValueError, "The covariate is constant among the selected cells",
         kwargs={"covariate": np.r_[np.ones(15), np.arange(15.0)], "factors": None}),
    Case(_C, "factor out of range", ValueError, r"`factors` \[3\] out of range for the 3 factors",
         kwargs={"factors": (0, 3)}),
    Case(_C, "the same factor twice", ValueError, "`factors` must be two different factors",
         kwargs={"factors": (1, 1)}),
    Case(_C, "factors of strings", TypeError, "`factors` must be a factor index or a pair",
         kwargs={"factors": ("a", "b")}),
    Case(_C, "three factors", TypeError, "`factors` must be a factor index or a pair", kwargs={"factors": (0, 1, 2)}),
    Case(_C, "basis not found", KeyError, r"`adata.obsm\['X_nope'\]` not found; compute the factors first",
         kwargs={"basis": "X_nope"}),
    Case(_C, "basis with NaN", ValueError, r"`adata.obsm\['X_spicemix'\]` has 1 NaN or infinite values",
         mutate=_nan_in_obsm("X_spicemix")),
    Case(_C, "normalize not a bool", TypeError, "`normalize` must be True or False", kwargs={"normalize": "yes"}),
    Case(_C, "groupby not a column", KeyError, r"`groupby='type'` is not a column", kwargs={"groupby": "type"}),
    Case(_C, "groupby without groups", ValueError, "`groupby` needs `groups`", kwargs={"groups": None}),
    Case(_C, "groups not found", ValueError, r"`groups` \['7'\] not found in `adata.obs\['fov'\]`",
         kwargs={"groups": ["0", "7"]}),
    Case(_C, "groups without groupby", ValueError, "`groups` needs `groupby`", kwargs={"groupby": None}),
    Case(_C, "mask of integers", TypeError, "`mask` must be a boolean array with one entry per obs",
         kwargs={"mask": np.ones(30, dtype=int)}),
    Case(_C, "mask not a column", KeyError, r"`mask='keep'` is not a column", kwargs={"mask": "keep"}),
    Case(_C, "two cells selected", ValueError, "needs at least 3 cells, the selection has 2",
         kwargs={"mask": _FIRST_TWO}),
    Case(_C, "genes not found", KeyError, r"`genes` \['Mbp'\] not in `adata.var_names`",
         kwargs={"genes": ["g1", "Mbp"]}),
    Case(_C, "min_fraction above 1", ValueError, "`min_fraction` must be >= 0 and <= 1", kwargs={"min_fraction": 1.5}),
    Case(_C, "min_fraction a string", TypeError, "`min_fraction` must be a number", kwargs={"min_fraction": "30%"}),
    Case(_C, "no gene expressed in the group", ValueError, "No gene is expressed in at least 0.3 of the 15 cells",
         mutate=_silent_group),
    Case(_C, "unknown correction", ValueError, "`method` must be one of", kwargs={"method": "storey"}),
    Case(_C, "alpha 0", ValueError, "`alpha` must be > 0 and <= 1", kwargs={"alpha": 0.0}),
    Case(_C, "negative value in X", ValueError, "The expression values contain negative values", mutate=_x(-1.0)),
    Case(_C, "NaN in X", ValueError, "The expression values contain 1 NaN", mutate=_x(np.nan)),
    Case(_C, "CSR X with a negative value", ValueError, "contain negative values", mutate=_x(-1.0, fmt="csr")),
    Case(_C, "X of strings", TypeError, "must be real numbers, got strings", mutate=_astype(str)),
    Case(_C, "layer not found", KeyError, r"Layer 'nope' not found in `adata.layers`", kwargs={"layer": "nope"}),
    Case(_C, "layer not a string", TypeError, "`layer` must be the name of a layer", kwargs={"layer": 0}),
    Case(_C, "more memory than available", MemoryError, r"Regression of 12 genes needs .* test fewer", memory=64),
    Case(_C, "key_added of a factorisation", ValueError,
         r"`key_added='spicemix'` would overwrite .* `sf.tl.covariate_genes`", kwargs={"key_added": "spicemix"}),
    Case(_C, "not an AnnData", TypeError, "Expected an AnnData or a SpatialData", mutate=_not_adata),
    *_sdata_cases(_C),
    *_common_tool_cases(_C),
    # ---------------------------------------------------------------- pl.domains, pl.covariate_genes
    *_pl_cases("pl.domains", r"`adata.obs\['nope'\]` not found; compute domains first"),
    Case("pl.domains", "key not a string", TypeError, "`key` must be a non-empty string", kwargs={"key": 1}),
    Case("pl.domains", "beta not fitted", ValueError, r"`betas` \['5'\] were not fitted", kwargs={"betas": 5.0}),
    Case("pl.domains", "betas of a labelling without a sweep", KeyError,
         r"No HMRF sweep \(labels per beta\) under key 'fov'; run `sf.tl.hmrf_domains\(adata, key_added='fov'\)`",
         kwargs={"key": "fov", "betas": 1.0}),
    Case("pl.domains", "spatial_key not found", KeyError, r"`adata.obsm\['xy'\]` not found",
         kwargs={"spatial_key": "xy"}),
    Case("pl.domains", "one coordinate", ValueError, "must have at least 2 columns",
         mutate=_set("obsm", "spatial", lambda a: a.obsm["spatial"][:, :1])),
    Case("pl.domains", "library_key not a column", KeyError, r"`adata.obs\['slide'\]` not found",
         kwargs={"library_key": "slide"}),
    *_pl_cases("pl.covariate_genes", "No covariate-gene regression under key 'nope'"),
    Case("pl.covariate_genes", "genes not tested", KeyError, r"`genes` \['Mbp'\] were not tested",
         kwargs={"genes": ["Mbp"]}),
    Case("pl.covariate_genes", "n_genes 0", ValueError, "`n_genes` must be at least 1", kwargs={"n_genes": 0}),
    Case("pl.covariate_genes", "ncols 0", ValueError, "`ncols` must be at least 1", kwargs={"ncols": 0}),
]  # fmt: skip


VALID.update(
    {
        "get.factor_names": ("voxels_fit", {}),
        "get.factors": ("voxels_fit", {}),
        "get.loadings": ("voxels_fit", {}),
        "get.params": ("voxels_fit", {"key": "stanmf"}),
        "get.result": ("voxels_fit", {"key": "region_auc", "kind": "region_auc"}),
        "get.instability_df": ("voxels_fit", {}),
        "get.history_df": ("cells_fit", {}),
        "get.affinity_df": ("cells_fit", {}),
        "get.link_regions_df": ("voxels_fit", {}),
        "get.pattern_genes_df": ("voxels_fit", {"factor": 0}),
        "get.pattern_genes_result": ("voxels_fit", {}),
        "get.importance": ("voxels_fit", {}),
        "get.sgcn_graph": ("voxels_fit", {"factor": 0}),
        "get.region_auc_result": ("voxels_fit", {}),
        "get.grid": ("voxels_fit", {}),
    }
)

CASES += [
    # ---------------------------------------------------------------- issue 18: sf.get (helper A)
    Case("get.factor_names", "no factorisation under key", KeyError, r"'nope' is not a factorisation result",
         kwargs={"key": "nope"}),
    Case("get.factor_names", "key not a string", TypeError, "`key` must be a non-empty string", kwargs={"key": 1}),
    Case("get.factors", "no factorisation under key", KeyError, r"`adata.obsm\['X_nope'\]` not found",
         kwargs={"key": "nope"}),
    Case("get.loadings", "loadings removed", KeyError,
         r"'stanmf' is not a factorisation result: `adata.varm\['stanmf_loadings'\]`",
         mutate=_drop("varm", "stanmf_loadings")),
    Case("get.loadings", "no factorisation under key", KeyError, "'nope' is not a factorisation result",
         kwargs={"key": "nope"}),
    Case("get.params", "no record under key", KeyError, r"No tool record with parameters under key 'nope'",
         kwargs={"key": "nope"}),
    Case("get.result", "unknown kind", ValueError, r"`kind` must be one of \[", kwargs={"kind": "nmf"}),
    Case("get.result", "result missing", KeyError,
         r"No region AUC result under key 'nope'; run `sf.tl.region_auc\(adata, key_added='nope'\)` first",
         kwargs={"key": "nope"}),
    Case("get.instability_df", "no factorisation under key", KeyError,
         r"No factorisation result under key 'nope'; run `sf.tl.stanmf\(adata, key_added='nope'\)`",
         kwargs={"key": "nope"}),
    Case("get.instability_df", "no sweep over K", KeyError, r"has no 'instability'; it is written by a sweep over K",
         mutate=_drop_entry("stanmf", "instability")),
    Case("get.history_df", "no SpiceMix result", KeyError,
         r"No SpiceMix result under key 'nope'; run `sf.tl.spicemix\(adata, key_added='nope'\)` first",
         kwargs={"key": "nope"}),
    Case("get.history_df", "history removed", KeyError, r"\['history'\]` \(a table with `iteration` and `objective`\)",
         mutate=_drop_entry("spicemix", "history")),
    Case("get.affinity_df", "no SpiceMix result", KeyError, r"No SpiceMix result under key 'nope'",
         kwargs={"key": "nope"}),
    Case("get.affinity_df", "affinity not square", ValueError, "must be a finite square matrix",
         mutate=_set("uns", "spicemix", lambda a: {**a.uns["spicemix"], "affinity": np.ones((2, 3))})),
    Case("get.link_regions_df", "no linking result", KeyError,
         r"No region linking result under key 'nope'; run `sf.tl.link_regions\(adata, key_added='nope'\)` first",
         kwargs={"key": "nope"}),
    Case("get.link_regions_df", "n_regions not searched", ValueError, r"`n_regions` must be one of \[1, 2\], got 5",
         kwargs={"n_regions": 5}),
    Case("get.pattern_genes_df", "pattern_genes not run", KeyError,
         r"run `sf.tl.pattern_genes\(adata, key='nope'\)` first", kwargs={"key": "nope"}),
    Case("get.pattern_genes_df", "factor out of range", ValueError, r"`factor` 9 is out of range for \d patterns",
         kwargs={"factor": 9}),
    Case("get.pattern_genes_df", "unknown factor name", ValueError, r"`factor` 'MG1' is not one of the \d patterns",
         kwargs={"factor": "MG1"}),
    Case("get.pattern_genes_df", "several factors", TypeError, "`factor` must be one factor index",
         kwargs={"factor": [0, 1]}),
    Case("get.pattern_genes_result", "pattern_genes not run", KeyError,
         r"No pattern-gene result under key 'nope' \(`adata.uns\['nope_pattern_genes'\]`\)", kwargs={"key": "nope"}),
    Case("get.importance", "importance removed", KeyError, r"`adata.varm\['stanmf_importance'\]` not found; run",
         mutate=_drop("varm", "stanmf_importance")),
    Case("get.sgcn_graph", "sgcn not run", KeyError, r"No sGCN result under key 'nope'", kwargs={"key": "nope"}),
    Case("get.sgcn_graph", "factor out of range", ValueError, "`factor` 9 is out of range", kwargs={"factor": 9}),
    Case("get.region_auc_result", "region_auc not run", KeyError, r"No region AUC result under key 'nope'",
         kwargs={"key": "nope"}),
    Case("get.grid", "no voxel grid", KeyError, r"`adata.uns\['aba'\]` with the voxel grid",
         mutate=_drop("uns", "aba")),
]  # fmt: skip

VALID.update({"pl.metagene_expression": ("cells_fit", {"groupby": "cell_type", "show": False})})

CASES += [
    # ---------------------------------------------------------------- tl.stanmf: screened sweep, auto compression
    Case("tl.stanmf", "screen 1", ValueError, "`screen` must be at least 2", kwargs={"screen": 1}),
    Case("tl.stanmf", "screen a float", TypeError, "`screen` must be an integer", kwargs={"screen": 2.5}),
    Case("tl.stanmf", "compress an unknown word", ValueError, "`compress` must be 'auto', None or an integer rank",
         kwargs={"compress": "fast"}),
]  # fmt: skip

CASES += [
    # ---------------------------------------------------------------- issue 18: plots (helper B)
    Case("pl.metagenes", "ncols 0", ValueError, "`ncols` must be at least 1, got 0", kwargs={"ncols": 0}),
    Case("pl.metagenes", "ncols not an integer", TypeError, "`ncols` must be an integer", kwargs={"ncols": 2.5}),
    Case("pl.patterns", "ncols 0", ValueError, "`ncols` must be at least 1, got 0", kwargs={"ncols": 0}),
    Case(
        "pl.metagenes",
        "figsize not a pair",
        TypeError,
        r"`figsize` must be a \(width, height\) pair of inches, got 4",
        kwargs={"figsize": 4},
    ),
    Case("pl.metagenes", "figsize with a zero", ValueError, "`figsize` must be > 0", kwargs={"figsize": (0, 3)}),
    Case("pl.instability", "negative dpi", ValueError, "`dpi` must be > 0", kwargs={"dpi": -1}),
    Case("pl.affinity", "show not a bool", TypeError, "`show` must be True or False", kwargs={"show": "yes"}),
    Case(
        "pl.affinity",
        "return_fig not a bool",
        TypeError,
        "`return_fig` must be True or False",
        kwargs={"return_fig": 1},
    ),
    Case(
        "pl.convergence", "save a number", TypeError, "`save` must be a file name, a path or True", kwargs={"save": 3}
    ),
    Case("pl.convergence", "save an empty string", ValueError, "`save` is an empty string", kwargs={"save": ""}),
    Case("pl.morans_i", "ax not an Axes", TypeError, "`ax` must be a matplotlib Axes, got str", kwargs={"ax": "ax"}),
    Case(
        "pl.metagene_expression",
        "groupby missing",
        ValueError,
        r"Pass `groupby`, the `.obs` column of the groups \(rows\); candidates: \['fov', 'fov_str', 'cell_type'\]",
        kwargs={"groupby": None},
    ),
    Case(
        "pl.metagenes",
        "factors and components both",
        TypeError,
        "got both `factors` and its old name `components`",
        kwargs={"factors": [0], "components": [0]},
    ),
    Case(
        "pl.pattern_with_genes",
        "factors and patterns both",
        TypeError,
        "got both `factors` and its old name `patterns`",
        kwargs={"factors": [0], "patterns": [0]},
    ),
]

# ---------------------------------------------------------------------------------------------
# Running a case, comparing AnnData objects, rendering the docs page
# ---------------------------------------------------------------------------------------------


def call_args(case: Case, data) -> dict:
    """Keyword arguments of the call: the valid call's, overridden by the case's."""
    _, valid = VALID[case.func]
    kwargs = dict(valid(data) if callable(valid) else valid)
    kwargs.update(case.kwargs(data) if callable(case.kwargs) else case.kwargs)
    return kwargs


def prepare(case: Case, data):
    """Apply the case's mutation to ``data`` (a fresh copy of its fixture); return the object to call on."""
    if case.mutate is None:
        return data
    out = case.mutate(data)
    return data if out is None else out


def invoke(func: str, target, kwargs: dict):
    fn = resolve(func)
    takes_files = func == "io.read_aba" or func.startswith("datasets.")  # readers: files, no AnnData
    return fn(**kwargs) if takes_files else fn(target, **kwargs)


def message(err: BaseException, folder: Path | None = None) -> str:
    """The message of an exception (``args[0]``: a KeyError's str() adds quotes), paths replaced by ``<folder>``."""
    text = str(err.args[0]) if err.args else str(err)
    if folder is not None:
        text = text.replace(str(folder), "<folder>")
    return text


def run(case: Case, data, folder: Path | None = None) -> BaseException | None:
    """Run one case on ``data`` (its fixture, already copied); return the exception raised (None if none)."""
    target = prepare(case, data)
    kwargs = call_args(case, data)
    old = os.environ.get(MEMORY_ENV)
    if case.memory is not None:
        os.environ[MEMORY_ENV] = str(case.memory)
    try:
        invoke(case.func, target, kwargs)
    except Exception as err:  # noqa: BLE001 - the caller checks the type
        return err
    finally:
        if case.memory is not None:
            if old is None:
                os.environ.pop(MEMORY_ENV, None)
            else:
                os.environ[MEMORY_ENV] = old
    return None


def fresh(name: str, cache: dict, folder: Path | None = None):
    """A copy of fixture ``name`` (built once per ``cache``), or the files of a file fixture (``'aba'``, ...)."""
    if name in FILE_FIXTURES:
        if name not in cache:
            cache[name] = FILE_FIXTURES[name](folder)
        return cache[name]
    if name not in cache:
        cache[name] = FIXTURES[name]()
    return cache[name].copy()


def _escape(text: str) -> str:
    """Markdown-safe table cell: code spans kept, special characters outside them escaped."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):  # outside code spans
        parts[i] = re.sub(r"([\\*_<>\[\]$])", r"\\\1", parts[i])
    if len(parts) % 2 == 0:  # an unmatched backtick: keep it literal
        text = "\\`".join(["`".join(parts[:-1]), parts[-1]])
    else:
        text = "`".join(parts)
    return text.replace("|", "\\|")


def render(messages: dict[str, tuple[str, str]]) -> str:
    """The docs page from ``{case id: (exception name, message)}``, in the order of :data:`CASES`."""
    functions = sorted({c.func for c in CASES})
    lines = [
        "# Bad inputs and their messages",
        "",
        "Every public function checks its input before it computes anything and leaves the AnnData as it",
        "was when it refuses it. This page lists each bad input the test matrix",
        "(`tests/test_bad_inputs.py`) tries, and the message it gets. The page is generated from the",
        f"same table of cases (`tests/bad_inputs_cases.py`); regenerate it with `{REGENERATE}`.",
        "",
        f"{len(CASES)} bad inputs over {len(functions)} functions.",
        "",
        "Memory: before allocating a dense array whose size follows from the input, the tools compare",
        "it with the memory available (psutil, else `/proc/meminfo`); the environment variable",
        f"`{MEMORY_ENV}` (bytes) overrides that figure.",
    ]
    sections = {
        "tl": "Tools (`sf.tl`)",
        "get": "Results (`sf.get`)",
        "pp": "Preprocessing (`sf.pp`)",
        "pl": "Plots (`sf.pl`)",
        "io": "Readers (`sf.io`)",
        "datasets": "Data set loaders (`sf.datasets`)",
    }
    for prefix, title in sections.items():
        lines += ["", f"## {title}", "", "| function | bad input | exception | message |", "|---|---|---|---|"]
        for case in CASES:
            if case.func.split(".")[0] != prefix:
                continue
            error, text = messages[case.id]
            lines.append(f"| `sf.{case.func}` | {_escape(case.bad)} | `{error}` | {_escape(text)} |")
    return "\n".join(lines) + "\n"


def collect_messages() -> dict[str, tuple[str, str]]:
    """Run every case and return ``{case id: (exception name, message)}``."""
    cache: dict = {}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for case in CASES:
            err = run(case, fresh(case.data, cache, folder), folder)
            if not isinstance(err, case.error) or not re.search(case.match, message(err, folder)):
                raise AssertionError(f"{case.id}: expected {case.error.__name__} matching {case.match!r}, got {err!r}")
            out[case.id] = (type(err).__name__, message(err, folder))
    return out


def _equal_values(a, b, where: str) -> None:
    """Assert two stored values are equal (arrays with NaN, sparse, DataFrames, nested dicts)."""
    assert type(a) is type(b), f"{where}: type {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            _equal_values(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=where)
    elif isinstance(a, pd.Series | pd.Index):
        assert a.equals(b), where
    elif sp.issparse(a):
        assert a.format == b.format and a.shape == b.shape and a.dtype == b.dtype, where
        assert (a != b).nnz == 0 if a.dtype.kind != "f" else np.array_equal(a.toarray(), b.toarray(), equal_nan=True), (
            where
        )
    elif isinstance(a, np.ndarray):
        assert a.shape == b.shape and a.dtype == b.dtype, f"{where}: {a.shape} {a.dtype} != {b.shape} {b.dtype}"
        if a.dtype.kind in "fc":
            assert np.array_equal(a, b, equal_nan=True), where
        else:
            assert np.array_equal(a, b), where
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _equal_values(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_adata_equal(before: ad.AnnData, after: ad.AnnData) -> None:
    """Assert that every slot of two AnnData objects is equal (X, layers, obs, var, obsm, varm, obsp, varp, uns)."""
    assert before.shape == after.shape, f"shape {before.shape} != {after.shape}"
    assert before.obs_names.equals(after.obs_names), "obs_names differ"
    assert before.var_names.equals(after.var_names), "var_names differ"
    if before.X is None or after.X is None:
        assert before.X is None and after.X is None, "X"
    else:
        _equal_values(before.X, after.X, "X")
    pd.testing.assert_frame_equal(before.obs, after.obs, check_exact=True, obj="obs")
    pd.testing.assert_frame_equal(before.var, after.var, check_exact=True, obj="var")
    for attr in ("layers", "obsm", "varm", "obsp", "varp"):
        _equal_values(dict(getattr(before, attr)), dict(getattr(after, attr)), attr)
    _equal_values(dict(before.uns), dict(after.uns), "uns")


if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")
    DOCS_PAGE.write_text(render(collect_messages()))
    print(f"wrote {DOCS_PAGE} ({len(CASES)} cases)")
