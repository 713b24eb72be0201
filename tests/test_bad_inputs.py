"""The bad-input matrix: every public function against every bad input that applies to it.

The cases live in ``tests/bad_inputs_cases.py`` (shared with the generated page
``docs/bad_inputs.md``). Each case asserts the exception type, its message, and that the AnnData
is unchanged in every slot. Further tests here: results are written once (an error inside an
engine, after validation, leaves the AnnData as it was, with ``copy=False`` and ``copy=True``),
the memory guard, sparse formats, and that the docs page is up to date.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import types
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import spatialfactors as sf
from spatialfactors import _validation
from spatialfactors.models.stanmf import sweep_bytes

_spec = importlib.util.spec_from_file_location("bad_inputs_cases", Path(__file__).with_name("bad_inputs_cases.py"))
cases = importlib.util.module_from_spec(_spec)
sys.modules["bad_inputs_cases"] = cases  # dataclasses resolve their module by name
_spec.loader.exec_module(cases)

assert_adata_equal = cases.assert_adata_equal

#: Messages seen by the matrix, reused by the docs test (it runs a case itself when absent).
_SEEN: dict[str, tuple[str, str]] = {}


@pytest.fixture(scope="session")
def fixture_cache(tmp_path_factory):
    return {"folder": tmp_path_factory.mktemp("aba")}


def _fresh(name: str, cache: dict):
    return cases.fresh(name, cache, cache["folder"])


def test_matrix_size():
    functions = {c.func for c in cases.CASES}
    assert functions == set(cases.VALID)  # every public function has bad inputs
    public = {f"{m}.{n}" for m in ("tl", "pp", "pl") for n in getattr(sf, m).__all__}
    public |= {"io.read_aba", "io.to_volume"}  # read_mhd / read_ontology: fuzzed in tests/fuzz
    public |= {"datasets.visium_dlpfc", "datasets.osmfish_cortex"}  # the other loaders: tests/datasets, tests/fuzz
    assert public <= functions, public - functions
    assert len(cases.CASES) > 200
    assert len({c.id for c in cases.CASES}) == len(cases.CASES)  # ids are unique


@pytest.mark.parametrize("func", sorted(cases.VALID))
def test_valid_call_succeeds(func, fixture_cache):
    """The call every case spoils works on its fixture, so each failure below comes from the bad input."""
    import matplotlib.pyplot as plt
    import networkx as nx
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    name, _ = cases.VALID[func]
    data = _fresh(name, fixture_cache)
    kwargs = cases.call_args(cases.Case(func, "valid", Exception, ""), data)

    def slots(a):  # what is stored where (identities): a tool's write replaces or adds objects
        if not isinstance(a, ad.AnnData):
            return None
        out = {("X", None): id(a.X)}
        for attr in ("layers", "obsm", "varm", "obsp", "uns"):
            out |= {(attr, k): id(v) for k, v in getattr(a, attr).items()}
        return out

    before = slots(data)
    assert slots(data) == before  # stable when nothing is written
    result = cases.invoke(func, data, kwargs)
    module, short = func.split(".")
    if func in ("tl.pattern_genes_df", "tl.sgcn_graph") or module == "get":  # readers: a non-empty result
        assert isinstance(result, pd.DataFrame | nx.Graph | list | dict | tuple) and len(result) > 0
        assert slots(data) == before  # reading writes nothing
    elif module in ("tl", "pp"):  # tools write into the AnnData in place
        assert result is None
        assert slots(data) != before  # something was written
    elif module == "pl":  # show=False: the axes (or figure) drawn
        drawn = result if isinstance(result, list | np.ndarray) else [result]
        assert len(drawn) > 0 and all(isinstance(a, Axes | Figure) for a in np.ravel(drawn))
        plt.close("all")
    elif short == "to_volume":
        assert isinstance(result, np.ndarray) and result.ndim == 3 and np.isfinite(result).any()
    else:  # io.read_aba and the data set loaders: an AnnData
        assert isinstance(result, ad.AnnData) and result.n_obs > 0 and result.n_vars > 0


@pytest.mark.parametrize("case", cases.CASES, ids=lambda c: c.id)
def test_bad_input(case, fixture_cache, monkeypatch):
    data = _fresh(case.data, fixture_cache)
    target = cases.prepare(case, data)
    before = target.copy() if isinstance(target, ad.AnnData) else None
    if case.memory is not None:
        monkeypatch.setenv(cases.MEMORY_ENV, str(case.memory))
    kwargs = cases.call_args(case, data)
    with pytest.raises(case.error) as info:
        cases.invoke(case.func, target, kwargs)
    text = cases.message(info.value, fixture_cache["folder"])
    assert re.search(case.match, text), f"message {text!r} does not match {case.match!r}"
    if before is not None:
        assert_adata_equal(before, target)
    _SEEN[case.id] = (type(info.value).__name__, text)


# ---------------------------------------------------------------------------------------------
# Write once: an error after validation (inside the engine) leaves the AnnData as it was
# ---------------------------------------------------------------------------------------------

#: function -> (module whose name is patched, name of the engine called after validation)
ENGINES = {
    "tl.stanmf": ("spatialfactors.tl._stanmf", "nmf"),
    "tl.spicemix": ("spatialfactors.tl._spicemix", "fit_hmrf"),
    "tl.cluster_latent": ("spatialfactors.tl._cluster", "calinski_harabasz_score"),
    "tl.link_regions": ("spatialfactors.tl._link_regions", "search_regions"),
    "tl.pattern_genes": ("spatialfactors.tl._pattern_genes", "rank_genes"),
    "tl.region_auc": ("spatialfactors.tl._region_auc", "_region_auc_engine"),
    "tl.sgcn": ("spatialfactors.tl._sgcn", "top_edges"),
    "pp.impute_voxels": ("spatialfactors.pp._impute", "knn_fill"),
    "pp.normalize_spicemix": ("spatialfactors.pp._normalize", "group_scale"),
}


def _fail_late(module: str, name: str, monkeypatch, calls: list) -> None:
    """Patch ``module.name`` to fail on its first call (after the tool has validated its input)."""

    def boom(*args, **kwargs):
        calls.append(name)
        raise RuntimeError(f"{name} failed")

    monkeypatch.setattr(sys.modules[module], name, boom)


@pytest.mark.parametrize("copy", [False, True])
@pytest.mark.parametrize("func", sorted(ENGINES))
def test_error_inside_the_engine_leaves_adata_unchanged(func, copy, fixture_cache, monkeypatch):
    name, _ = cases.VALID[func]
    adata = _fresh(name, fixture_cache)
    before = adata.copy()
    kwargs = cases.call_args(cases.Case(func, "late", Exception, ""), adata)
    if func == "tl.stanmf":  # through the sweep as well: fail in the final fit after it
        kwargs.update(n_factors=[2, 3], n_replicates=2)
    calls: list = []
    _fail_late(*ENGINES[func], monkeypatch, calls)
    with pytest.raises(RuntimeError, match="failed"):
        cases.invoke(func, adata, {**kwargs, "copy": copy})
    assert calls, "the engine was not reached: the test would not show anything"
    assert_adata_equal(before, adata)


def test_error_while_writing_undoes_the_earlier_writes(fixture_cache):
    adata = _fresh("voxels_fit", fixture_cache)
    before = adata.copy()
    new = np.zeros((adata.n_obs, 2))
    bad = np.zeros((adata.n_vars + 1, 2))  # AnnData refuses the shape: the last write fails
    with pytest.raises(ValueError, match="shape"):
        _validation._save_results(
            adata,
            [
                ("obsm", "X_new", new),
                ("obsm", "X_stanmf", new),  # replaces an existing entry
                ("X", None, np.ones(adata.shape)),
                ("uns", "stanmf", {}),
                ("varm", "bad", bad),
            ],
        )
    assert_adata_equal(before, adata)


def test_copy_true_leaves_the_input_alone(fixture_cache):
    adata = _fresh("voxels", fixture_cache)
    before = adata.copy()
    out = sf.tl.stanmf(adata, n_factors=2, pca=False, n_jobs=1, copy=True)
    assert_adata_equal(before, adata)
    assert "X_stanmf" in out.obsm


# ---------------------------------------------------------------------------------------------
# assert_adata_equal sees a change in every slot (so the matrix above can fail)
# ---------------------------------------------------------------------------------------------


def _change_nested(a):
    a.uns["meta"]["nested"]["values"][0] = 99


CHANGES = {
    "X": lambda a: a.X.__setitem__((0, 0), a.X[0, 0] + 1),
    "layers": lambda a: a.layers["counts"].__setitem__((0, 0), -1),
    "new layer": lambda a: a.layers.__setitem__("other", a.X.copy()),
    "obs": lambda a: a.obs.__setitem__("new", 1),
    "var": lambda a: a.var.__setitem__("new", 1),
    "obsm": lambda a: a.obsm["spatial"].__setitem__((0, 0), 1e6),
    "varm": lambda a: a.varm.__setitem__("loadings", np.ones((a.n_vars, 2))),
    "obsp": lambda a: a.obsp.__setitem__("spatial_connectivities", sp.eye(a.n_obs, format="csr")),
    "varp": lambda a: a.varp.__setitem__("corr", np.eye(a.n_vars)),
    "uns": lambda a: a.uns.__setitem__("new", 1),
    "uns nested array": _change_nested,
    "uns nested table": lambda a: a.uns["meta"]["nested"]["table"].iloc.__setitem__((0, 0), 5),
    "obs_names": lambda a: setattr(a, "obs_names", [f"o{i}" for i in range(a.n_obs)]),
    "var_names": lambda a: setattr(a, "var_names", [f"v{i}" for i in range(a.n_vars)]),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_assert_adata_equal_sees_every_slot(change, fixture_cache):
    adata = _fresh("cells", fixture_cache)
    before = adata.copy()
    assert_adata_equal(before, adata)
    CHANGES[change](adata)
    with pytest.raises(AssertionError):
        assert_adata_equal(before, adata)


# ---------------------------------------------------------------------------------------------
# Memory guard
# ---------------------------------------------------------------------------------------------


def test_available_memory_sources(monkeypatch):
    monkeypatch.setenv(_validation.MEMORY_ENV, "12345")
    assert _validation._available_memory() == 12345
    monkeypatch.setenv(_validation.MEMORY_ENV, "lots")
    with pytest.raises(ValueError, match="must be a number of bytes"):
        _validation._available_memory()
    monkeypatch.delenv(_validation.MEMORY_ENV)
    assert _validation._available_memory() > 0  # psutil
    monkeypatch.setitem(sys.modules, "psutil", None)  # psutil not importable: /proc/meminfo or sysconf
    assert _validation._available_memory() > 0


def test_memory_guard_message(monkeypatch):
    monkeypatch.setenv(_validation.MEMORY_ENV, str(2**30))
    _validation._assert_fits_memory(2**30, "A matrix", "use less")  # exactly what is there: fine
    with pytest.raises(MemoryError, match=r"A matrix needs 2.0 GB but only 1.0 GB of memory are available; use less"):
        _validation._assert_fits_memory(2**31, "A matrix", "use less")


def test_memory_guard_leaves_room_for_real_inputs(fixture_cache, monkeypatch):
    """With a realistic amount of memory the tiny fixtures pass the guard (it is not always on)."""
    monkeypatch.setenv(_validation.MEMORY_ENV, str(2**30))
    adata = _fresh("voxels", fixture_cache)
    sf.tl.stanmf(adata, n_factors=[2, 3], n_replicates=2, n_jobs=1, pca=False)
    assert sf.io.to_volume(adata, "g0").shape == cases.GRID


def test_stanmf_memory_estimate_grows_with_the_sweep():
    x = np.ones((1000, 500), np.float32)
    single = sweep_bytes(1000, 500, 10, itemsize=4)
    sweep = sweep_bytes(1000, 500, 10, itemsize=4, n_replicates=100, pca=True)
    assert single >= 2 * x.nbytes
    assert sweep > single + 100 * 1000 * 10 * 4


# ---------------------------------------------------------------------------------------------
# Sparse formats
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csr_matrix", "csc_matrix", "csr_array", "csc_array"])
def test_sparse_formats_give_the_dense_result(fmt, fixture_cache):
    dense = _fresh("voxels", fixture_cache)
    sparse = dense.copy()
    sparse.X = getattr(sp, fmt)(dense.X)
    for adata in (dense, sparse):
        sf.tl.stanmf(adata, n_factors=2, pca=False, n_jobs=1, dtype="float64")
    np.testing.assert_allclose(sparse.obsm["X_stanmf"], dense.obsm["X_stanmf"], rtol=1e-6, atol=1e-9)
    cells = _fresh("cells", fixture_cache)
    sparse_cells = cells.copy()
    sparse_cells.X = getattr(sp, fmt)(cells.X)
    for adata in (cells, sparse_cells):
        sf.pp.normalize_spicemix(adata, 3, library_key="fov")
    np.testing.assert_allclose(sparse_cells.X.toarray(), cells.X, rtol=1e-12)


def test_coo_is_refused_by_anndata_and_read_as_csr_otherwise():
    # AnnData refuses COO (and LIL, DOK, ...) with a clear error at assignment ...
    adata = ad.AnnData(np.ones((3, 2)))
    with pytest.raises(ValueError, match="Only CSR and CSC"):
        adata.X = sp.coo_matrix(np.ones((3, 2)))
    # ... and should one reach a tool another way, it is read as CSR.
    holder = types.SimpleNamespace(X=sp.coo_matrix(np.eye(3, 2)), layers={}, n_obs=3, n_vars=2)
    x = _validation._get_matrix(holder, None)
    assert x.format == "csr"
    np.testing.assert_array_equal(x.toarray(), np.eye(3, 2))


def test_isolated_cell_is_a_warning_not_an_error(fixture_cache):
    adata = _fresh("cells", fixture_cache)
    g = adata.obsp["spatial_connectivities"].tolil()
    g[0, :] = 0
    g[:, 0] = 0
    adata.obsp["spatial_connectivities"] = g.tocsr()
    sf.tl.spicemix(adata, 3, library_key="fov", max_iter=1, n_jobs=1)
    assert np.isfinite(adata.obsm["X_spicemix"]).all()


# ---------------------------------------------------------------------------------------------
# The docs page is generated from the same cases
# ---------------------------------------------------------------------------------------------


def test_docs_page_is_up_to_date(fixture_cache):
    messages = dict(_SEEN)
    missing = [c for c in cases.CASES if c.id not in messages]
    if missing:  # run on its own: compute the messages of the cases not seen yet
        for case in missing:
            err = cases.run(case, _fresh(case.data, fixture_cache), fixture_cache["folder"])
            assert isinstance(err, case.error), f"{case.id}: {err!r}"
            messages[case.id] = (type(err).__name__, cases.message(err, fixture_cache["folder"]))
    expected = cases.render(messages)
    page = cases.DOCS_PAGE
    current = page.read_text() if page.exists() else ""
    assert current == expected, (
        f"docs/bad_inputs.md is out of date with tests/bad_inputs_cases.py; regenerate it with `{cases.REGENERATE}`."
    )


def test_escape_keeps_code_and_escapes_markdown():
    assert cases._escape("a_b `x_y` <k> |") == "a\\_b `x_y` \\<k\\> \\|"
