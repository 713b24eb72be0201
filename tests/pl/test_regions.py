from pathlib import Path

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import spatialfactors as sf

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "aba_200um"
ONTOLOGY = DATA / "ontology" / "allen_structure_labels_grid_release.csv"

# Four real structures in a row along ML: MOp1, SSp-m6b (Isocortex), CA1, CA3 (HPF).
ROW = [382, 382, 463, 463, 320, 320, 2, 2]


def _adata():
    labels = np.tile(np.array(ROW), (3, 2, 1))  # AP x DV x ML = 3 x 2 x 8
    mask = labels > 0
    ids = labels[mask]
    adata = ad.AnnData(
        obs=pd.DataFrame({"region_id": ids}, index=[f"voxel_{i}" for i in np.flatnonzero(mask)]),
        uns={"aba": {"grid_shape": np.array(labels.shape), "spacing": 200.0, "mask": mask}},
    )
    rng = np.random.default_rng(0)
    adata.obsm["X_stanmf"] = np.stack(
        [np.isin(ids, [320, 2]) + 0.1 * rng.random(ids.size), np.isin(ids, [382, 463]), ids == 2], axis=1
    ).astype(float)
    return adata


@pytest.fixture(scope="module")
def linked():
    adata = _adata()
    sf.tl.link_regions(adata)
    return adata


@pytest.fixture(scope="module")
def ontology():
    if not ONTOLOGY.is_file():
        pytest.skip("shared Allen data not available")
    return sf.io.read_ontology(ONTOLOGY)


def test_region_correlation_bubbles(linked):
    ax = sf.pl.region_correlation(linked, n_top=4, show=False)
    table = linked.uns["link_regions"]["correlation"]
    bubbles = ax.collections[0]
    assert len(bubbles.get_offsets()) == 3 * 4  # every pattern x every region
    assert len(ax.figure.axes) == 2  # the plot and its colour bar
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert sorted(labels) == sorted(table.columns)  # no ontology: ids as labels
    shown = table[labels].to_numpy()
    np.testing.assert_allclose(bubbles.get_array(), shown.ravel())
    np.testing.assert_allclose(bubbles.get_sizes(), 200.0 * np.clip(shown, 0, None).ravel())
    # Without ontology, regions follow the pattern they match best (a diagonal).
    assert np.all(np.diff(shown.argmax(axis=0)) >= 0)


def test_region_correlation_subset_and_patterns(linked):
    ax = sf.pl.region_correlation(linked, regions=[463, "2"], factors=[0, 2], show=False)
    assert len(ax.collections[0].get_offsets()) == 2 * 2
    assert [t.get_text() for t in ax.get_yticklabels()] == ["PP1", "PP3"]
    with pytest.raises(KeyError, match="not among the linked regions"):
        sf.pl.region_correlation(linked, regions=[999999], show=False)
    with pytest.raises(ValueError, match="out of range"):
        sf.pl.region_correlation(linked, factors=[5], show=False)


def test_region_correlation_ordered_and_grouped_by_ontology(ontology):
    adata = _adata()
    sf.tl.link_regions(adata, ontology=ontology)
    fig, ax = plt.subplots()
    out = sf.pl.region_correlation(adata, n_top=4, ontology=ontology, ax=ax, show=False)
    assert out is ax
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["MOp1", "SSp-m6b", "CA1", "CA3"]  # graph order: isocortex before hippocampus
    assert [t.get_text() for t in ax.texts] == ["Isocortex", "HPF"]  # the paper's coarse groups
    assert len(ax.lines) == 1  # one separator between the two groups
    assert ax.get_xticklabels()[0].get_color() == "#1F9D5A"  # Allen colour of MOp1
    # The regions table written by the tool orders them the same without passing the ontology.
    ax2 = sf.pl.region_correlation(adata, n_top=4, show=False)
    assert [t.get_text() for t in ax2.get_xticklabels()] == labels
    # A linking run without ontology, drawn with one: same order, acronyms and groups.
    plain = _adata()
    sf.tl.link_regions(plain)
    ax3 = sf.pl.region_correlation(plain, n_top=4, ontology=ontology, groups=7, show=False)
    assert [t.get_text() for t in ax3.get_xticklabels()] == labels
    assert [t.get_text() for t in ax3.texts] == ["MOp", "SSp", "CA"]  # ancestors at depth 7
    assert len(ax3.lines) == 2


def test_linked_regions_projections(linked):
    axes = sf.pl.linked_regions(linked, plane="coronal", show=False)
    assert len(axes) == 3 and all(len(row) == 2 for row in axes)
    assert len(axes[0][0].figure.axes) == 6
    best = linked.uns["link_regions"]["best"]
    sel = best[best["selected"]].set_index("pattern")
    # Mask panel = maximum projection of the linked set's mask; pattern panel = the pattern's.
    ids = linked.obs["region_id"].to_numpy()
    for row, name in enumerate(["PP1", "PP2", "PP3"]):
        members = [sel.loc[name, c] for c in ("region_1", "region_2", "region_3") if sel.loc[name, c]]
        mask_vol = sf.io.to_volume(linked, np.isin(ids, members).astype(float))
        np.testing.assert_allclose(axes[row][1].images[0].get_array(), mask_vol.max(axis=0))
        pattern_vol = sf.io.to_volume(linked, row, basis="X_stanmf")
        np.testing.assert_allclose(axes[row][0].images[0].get_array(), pattern_vol.max(axis=0))
        assert axes[row][1].get_title().startswith(sel.loc[name, "acronyms"])
    assert sorted(sel.loc["PP1", ["region_1", "region_2"]]) == [2, 320]


def test_linked_regions_fixed_size_and_save(linked, tmp_path):
    fig = sf.pl.linked_regions(linked, factors=[1], n_regions=1, return_fig=True, save=tmp_path / "links.png")
    assert len(fig.axes) == 2 and (tmp_path / "links.png").is_file()
    assert fig.axes[1].get_title().split(" (")[0] in {"382", "463"}
    with pytest.raises(ValueError, match="n_regions"):
        sf.pl.linked_regions(linked, n_regions=7, show=False)
    with pytest.raises(ValueError, match="plane"):
        sf.pl.linked_regions(linked, plane="axial", show=False)


def test_link_heatmap(linked):
    ax = sf.pl.link_heatmap(linked, show=False)
    table = linked.uns["link_regions"]["linked"]
    np.testing.assert_allclose(np.asarray(ax.collections[0].get_array()).reshape(3, 3), table.to_numpy())
    best = linked.uns["link_regions"]["best"]
    expected = [f"{p}: {a}" for p, a in best[best["selected"]][["pattern", "acronyms"]].to_numpy()]
    assert [t.get_text() for t in ax.get_xticklabels()] == expected
    assert len(ax.figure.axes) == 2  # heatmap and colour bar
    # Each pattern scores highest with its own link: the diagonal dominates its row.
    assert (table.to_numpy().argmax(axis=1) == np.arange(3)).all()


def test_plots_need_the_linking_result():
    adata = _adata()
    for plot in (sf.pl.region_correlation, sf.pl.linked_regions, sf.pl.link_heatmap):
        with pytest.raises(KeyError, match=r"sf\.tl\.link_regions"):
            plot(adata, show=False)
