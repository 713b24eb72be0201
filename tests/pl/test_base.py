"""The shared plot base (issue 18): save paths like scanpy's, show / return_fig, panel grids,
renamed keywords, and the figures fixed to be readable at their defaults."""

import inspect
import re

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import squidpy as sq
from matplotlib.axes import Axes
from matplotlib.figure import Figure

import spatialfactors as sf
from spatialfactors.pl._base import _Plotter, _save_path


@pytest.fixture(scope="module")
def cortex():
    return sf.datasets.simulate_cortex(n_fovs=2, n_cells=150, random_state=0)


@pytest.fixture
def figdir(tmp_path):
    before = sc.settings.figdir, sc.settings.file_format_figs
    sc.settings.figdir, sc.settings.file_format_figs = tmp_path / "figures", "png"
    yield tmp_path / "figures"
    sc.settings.figdir, sc.settings.file_format_figs = before


# ------------------------------------------------------------------------------------- save paths


@pytest.mark.parametrize(
    ("save", "expected"),
    [
        ("_starmap.png", "metagenes_starmap.png"),  # scanpy: the plot's name, then the suffix
        ("_starmap.pdf", "metagenes_starmap.pdf"),
        ("_starmap", "metagenes_starmap.png"),  # no extension: sc.settings.file_format_figs
        (True, "metagenes.png"),
    ],
)
def test_bare_save_names_go_to_scanpy_figdir(figdir, save, expected):
    assert _save_path(save, "metagenes") == figdir / expected


def test_save_paths_with_a_directory_stay_literal(figdir, tmp_path):
    assert str(_save_path("out/fig.png", "metagenes")) == "out/fig.png"
    assert _save_path(tmp_path / "a.svg", "metagenes") == tmp_path / "a.svg"


def test_plot_writes_into_figdir_like_scanpy(cortex, figdir):
    sf.pl.metagenes(cortex, "X_true", factors=[0], save="_fov.png", show=False)
    assert (figdir / "metagenes_fov.png").stat().st_size > 0
    sf.pl.metagene_expression(cortex, "X_true", groupby="cell_type", save=True, show=False)
    assert (figdir / "metagene_expression.png").is_file()


def test_literal_save_path_creates_its_folder(cortex, tmp_path):
    path = tmp_path / "deep" / "er" / "m.pdf"
    sf.pl.metagenes(cortex, "X_true", factors=[0], save=path, show=False)
    assert path.is_file() and path.read_bytes()[:4] == b"%PDF"


# ----------------------------------------------------------------------------- show / return_fig


def test_show_and_return_fig(cortex, monkeypatch):
    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(True))
    assert sf.pl.metagene_expression(cortex, "X_true", groupby="cell_type") is None
    assert shown == [True]  # show=None shows, as in scanpy
    assert isinstance(sf.pl.metagene_expression(cortex, "X_true", groupby="cell_type", show=False), Axes)
    fig = sf.pl.metagene_expression(cortex, "X_true", groupby="cell_type", return_fig=True)
    assert isinstance(fig, Figure) and shown == [True]
    fig, ax = plt.subplots()
    assert sf.pl.metagene_expression(cortex, "X_true", groupby="cell_type", ax=ax, show=False) is ax


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"ncols": 0}, ValueError, "`ncols` must be at least 1"),
        ({"ncols": 2.5}, TypeError, "`ncols` must be an integer"),
        ({"figsize": (0, 3)}, ValueError, "`figsize` must be > 0"),
        ({"figsize": 4}, TypeError, "`figsize` must be a \\(width, height\\) pair"),
        ({"dpi": -1}, ValueError, "`dpi` must be > 0"),
        ({"show": "yes"}, TypeError, "`show` must be True or False"),
        ({"return_fig": None}, TypeError, "`return_fig` must be True or False"),
        ({"save": 3}, TypeError, "`save` must be a file name"),
        ({"save": ""}, ValueError, "`save` is an empty string"),
    ],
)
def test_shared_parameters_are_checked_once(cortex, kwargs, error, match):
    with pytest.raises(error, match=match):
        sf.pl.metagenes(cortex, "X_true", **{"show": False, **kwargs})
    with pytest.raises(error, match=match):
        _Plotter("any", **kwargs)


def test_every_plot_documents_the_shared_parameters():
    for name in sf.pl.__all__:
        doc = getattr(sf.pl, name).__doc__
        assert "{doc_" not in doc, name
        for param in ("figsize\n", "dpi\n", "table_key\n", "show\n", "save\n", "return_fig\n"):
            assert f"    {param}" in doc, (name, param)
        assert "sc.settings.figdir" in doc, name
        # every parameter of the signature is described (numpydoc: alone or in a comma-separated group)
        documented = {
            p.strip() for line in doc.splitlines() if re.fullmatch(r"    \w+(, \w+)*", line) for p in line.split(",")
        }
        assert set(inspect.signature(getattr(sf.pl, name)).parameters) <= documented, name


# ----------------------------------------------------------------------------------- panel grids


def test_metagenes_wrap_at_ncols_with_a_colour_bar_per_panel(cortex):
    fig = sf.pl.metagenes(cortex, "X_true", factors=range(5), ncols=2, return_fig=True)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in panels] == list(cortex.obsm["X_true"].columns[:5])
    # 5 panels in 3 rows of 2, the sixth cell hidden; one colour bar per panel
    axes = sf.pl.metagenes(cortex, "X_true", factors=range(5), ncols=2, show=False)
    assert [len(row) for row in axes] == [2, 2, 2]
    assert [ax.get_visible() for row in axes for ax in row] == [True] * 5 + [False]
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 5
    for bar, panel in zip(bars, panels, strict=True):  # each bar sits beside its panel and is shorter
        fig.canvas.draw()
        b, p = bar.get_position(), panel.get_position()
        assert b.x0 > p.x0 and b.height < p.height * 1.01 and b.width < p.width


def test_metagenes_default_grid_is_four_wide(cortex):
    axes = sf.pl.metagenes(cortex, "X_true", show=False)
    k = cortex.obsm["X_true"].shape[1]
    assert len(axes[0]) == 4 and len(axes) == -(-k // 4)


def test_fields_of_view_start_new_rows(cortex):
    axes = sf.pl.metagenes(cortex, "X_true", factors=range(3), library_key="fov", ncols=2, show=False)
    assert [len(row) for row in axes] == [2, 2, 2, 2]
    assert [row[0].get_ylabel() for row in axes] == ["fov 0", "fov 0", "fov 1", "fov 1"]
    assert not axes[1][1].get_visible() and not axes[3][1].get_visible()
    sel = (cortex.obs["fov"] == "1").to_numpy()
    np.testing.assert_allclose(axes[2][0].collections[0].get_array(), cortex.obsm["X_true"].iloc[sel.nonzero()[0], 0])


# ------------------------------------------------------------------------------ renamed keywords


def test_old_selection_keywords_warn_and_still_work(cortex):
    with pytest.warns(FutureWarning, match="is renamed to `factors`"):
        old = sf.pl.metagenes(cortex, "X_true", components=[1], show=False)
    new = sf.pl.metagenes(cortex, "X_true", factors=[1], show=False)
    np.testing.assert_array_equal(old[0][0].collections[0].get_array(), new[0][0].collections[0].get_array())
    with pytest.raises(TypeError, match="got both `factors` and its old name `components`"):
        sf.pl.metagenes(cortex, "X_true", factors=[1], components=[1], show=False)


def test_metagene_expression_needs_groupby(cortex):
    with pytest.raises(ValueError, match=r"Pass `groupby`.*'cell_type'"):
        sf.pl.metagene_expression(cortex, "X_true", show=False)


# ----------------------------------------------------------------------------------- instability


@pytest.fixture(scope="module")
def swept(planted):
    x, _, _, coords = planted
    adata = ad.AnnData(x.astype(np.float32), obsm={"spatial": coords})
    sf.tl.stanmf(adata, range(3, 7), n_replicates=3, pca=False)
    return adata


def _with_kstar(adata, k):
    """A copy whose staNMF instability has its minimum at ``k``."""
    adata = adata.copy()
    table = adata.uns["stanmf"]["instability"].copy()
    table["mean"] = 0.1 + 0.05 * np.abs(table["K"] - k)
    adata.uns["stanmf"]["instability"] = table
    adata.uns["stanmf"]["k"] = k
    return adata


@pytest.mark.parametrize(("k", "side"), [(3, "smallest"), (6, "largest")])
def test_kstar_at_the_edge_warns_and_is_marked(swept, k, side):
    with pytest.warns(UserWarning, match=f"K\\* = {k} is the {side} K of the sweep \\(3 ... 6\\)"):
        ax = sf.pl.instability(_with_kstar(swept, k), show=False)
    texts = [t.get_text() for t in ax.texts]
    assert any(t.startswith(f"K* = {k}") and "minimum not confirmed" in t for t in texts)
    assert ax.lines[-1].get_marker() == "*" and list(ax.lines[-1].get_xdata()) == [k]


def test_kstar_inside_the_range_is_marked_without_warning(swept, recwarn):
    ax = sf.pl.instability(_with_kstar(swept, 4), show=False)
    assert not [w for w in recwarn if issubclass(w.category, UserWarning) and "K*" in str(w.message)]
    assert [t.get_text() for t in ax.texts] == ["K* = 4"]
    assert all(float(t).is_integer() for t in ax.get_xticks())  # integer K ticks
    fig = ax.figure
    assert tuple(fig.get_size_inches()) == (6.0, 4.2)


# -------------------------------------------------------------------------------------- affinity


def test_affinity_colour_range_excludes_the_diagonal_and_shows_the_dendrogram():
    adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=150, random_state=0)
    sq.gr.spatial_neighbors_delaunay(adata)
    sf.tl.spicemix(adata, 5, max_iter=2)
    s = np.array(adata.uns["spicemix"]["affinity"], dtype=float)
    s[np.diag_indices(5)] = 40.0  # a diagonal far larger than any pair
    adata.uns["spicemix"]["affinity"] = s
    ax = sf.pl.affinity(adata, show=False)
    off = np.abs(s[~np.eye(5, dtype=bool)]).max()
    mesh = ax.collections[0]
    assert mesh.norm.vmax == pytest.approx(off) and mesh.norm.vmin == pytest.approx(-off)
    assert [t.get_text() for t in ax.get_xticklabels()] != [] and all(
        t.get_text().startswith("MG") for t in ax.get_xticklabels()
    )
    insets = list(ax.child_axes)
    assert len(insets) == 1 and len(insets[0].collections) + len(insets[0].lines) > 0  # the dendrogram
    assert not sf.pl.affinity(adata, cluster=False, show=False).child_axes


# ------------------------------------------------------------------------------------------ sgcn


@pytest.fixture(scope="module")
def tied_network():
    """A 1,020-gene panel whose top genes load on one pattern only: every edge has PCC 1."""
    rng = np.random.default_rng(0)
    d = rng.random((80, 3))
    a = rng.gamma(0.5, 1.0, (1020, 3))
    a[:40, 1:] = 0.0
    a[:40, 0] += 5.0
    adata = ad.AnnData(np.zeros((80, 1020)), obsm={"X_stanmf": d})
    adata.varm["stanmf_loadings"] = a
    sf.tl.sgcn(adata, top_fraction=0.012)
    return adata


def test_sgcn_colour_bar_has_a_readable_range(tied_network):
    fig = sf.pl.sgcn(tied_network, "PP1", return_fig=True)
    ax = fig.axes[0]
    edges = ax.collections[1]
    assert edges.norm.vmax - edges.norm.vmin >= 0.05 - 1e-12 and edges.norm.vmax <= 1.0
    graph = sf.get.sgcn_graph(tied_network, "PP1")
    assert {t.get_text() for t in ax.texts} == set(graph.nodes)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    inside = fig.bbox
    for text in ax.texts:  # labels stay within the figure
        box = text.get_window_extent(renderer)
        assert box.x0 >= inside.x0 - 1 and box.x1 <= inside.x1 + 1


def test_sgcn_default_network_is_readable_on_a_1k_gene_panel():
    rng = np.random.default_rng(1)
    adata = ad.AnnData(np.zeros((60, 1020)), obsm={"X_stanmf": rng.random((60, 4))})
    adata.varm["stanmf_loadings"] = rng.gamma(0.5, 1.0, (1020, 4))
    sf.tl.sgcn(adata)
    ax = sf.pl.sgcn(adata, "PP1", show=False)
    n_nodes = len(ax.collections[0].get_offsets())
    n_edges = len(ax.collections[1].get_segments())
    # at least 10 nodes (the paper's 0.25% would give 3), edges by the paper's top 5% of the pairs
    assert n_nodes == 10 and n_edges >= 3
    assert adata.uns["sgcn"]["params"].get("top_fraction") is None


def test_pattern_with_genes_panels_have_colour_bars_and_visible_lows():
    rng = np.random.default_rng(1)
    n = 100
    d, a = rng.random((n, 2)), rng.random((12, 2))
    adata = ad.AnnData(d @ a.T, obs=pd.DataFrame(index=[f"c{i}" for i in range(n)]))
    adata.obsm["spatial"] = rng.random((n, 2))
    adata.obsm["X_stanmf"], adata.varm["stanmf_loadings"] = d, a
    sf.tl.pattern_genes(adata)
    fig = sf.pl.pattern_with_genes(adata, n_genes=2, return_fig=True)
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 2 * 3
    panel = fig.axes[0]
    low = panel.collections[0].get_cmap()(0.0)
    assert max(low[:3]) < 0.9  # the lowest value is not white on white
    assert [ax.get_title() for ax in fig.axes if ax.get_title()][:1] == ["PP1"]
    with pytest.warns(FutureWarning, match="is renamed to `factors`"):
        sf.pl.pattern_with_genes(adata, patterns=["PP2"], n_genes=1, show=False)
