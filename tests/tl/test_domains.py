from pathlib import Path

import numpy as np
import pytest
import scanpy as sc
import squidpy as sq

import spatialfactors as sf

DLPFC = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "dlpfc_visium"


@pytest.fixture(scope="module")
def cortex():
    adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=400, random_state=0)
    sq.gr.spatial_neighbors_delaunay(adata)
    return adata


def test_writes_labels_and_record(cortex):
    adata = cortex.copy()
    sf.tl.spatial_domains(adata, "X_true", 4, method="ward", reference_key="layer")
    col = adata.obs["true_domains"]
    assert list(col.cat.categories) == ["0", "1", "2", "3"]
    assert (np.diff(col.value_counts().reindex(col.cat.categories).to_numpy()) <= 0).all()  # largest first
    uns = adata.uns["true_domains"]
    assert uns["n_clusters"] == 4 and 0 <= uns["ari"] <= 1 and 0 <= uns["nmi"] <= 1
    assert uns["params"]["method"] == "ward" and uns["params"]["normalize"] is True  # non-negative states
    out = sf.tl.spatial_domains(cortex, "X_true", 4, method="ward", copy=True, key_added="d")
    assert "d" in out.obs and "d" not in cortex.obs


def test_smoothing_and_vote_find_the_layers(cortex):
    # The simulated tissue has four layers of mixed cell types: the cells' own states give their
    # types, their neighbourhoods give the layers.
    adata = cortex.copy()
    kwargs = {"method": "ward", "reference_key": "layer"}
    sf.tl.spatial_domains(adata, "X_true", 4, n_smooth=0, vote=False, key_added="raw", **kwargs)
    sf.tl.spatial_domains(adata, "X_true", 4, n_smooth=2, vote=True, key_added="dom", **kwargs)
    raw, dom = adata.uns["raw"]["ari"], adata.uns["dom"]["ari"]
    assert dom > raw + 0.2, (raw, dom)
    assert dom > 0.6


def test_leiden_chooses_or_meets_the_number(cortex):
    adata = cortex.copy()
    sf.tl.spatial_domains(adata, "X_true", 6, vote=False)
    assert adata.obs["true_domains"].nunique() == 6
    sf.tl.spatial_domains(adata, "X_true", key_added="free")
    # None is left out of the record (issue 18) and restored by sf.get.params
    assert sf.get.params(adata, "free")["n_clusters"] is None and adata.obs["free"].nunique() >= 2


def test_max_distance_drops_long_edges_without_touching_the_graph(cortex):
    adata = cortex.copy()
    before = adata.obsp["spatial_connectivities"].copy()
    dist = adata.obsp["spatial_distances"]
    cut = float(np.median(dist.data))
    sf.tl.spatial_domains(adata, "X_true", 4, method="ward", max_distance=cut, key_added="cut")
    assert (adata.obsp["spatial_connectivities"] != before).nnz == 0
    # The same as voting on a graph pruned by hand.
    pruned = adata.copy()
    conn = pruned.obsp["spatial_connectivities"].multiply(dist <= cut).tocsr()
    conn.eliminate_zeros()
    pruned.obsp["spatial_connectivities"] = conn
    sf.tl.spatial_domains(pruned, "X_true", 4, method="ward", key_added="cut")
    np.testing.assert_array_equal(adata.obs["cut"].to_numpy(), pruned.obs["cut"].to_numpy())


def test_labels_missing_in_the_reference_are_left_out(cortex):
    adata = cortex.copy()
    sf.tl.spatial_domains(adata, "X_true", 4, method="ward", reference_key="layer", key_added="a")
    adata.obs["partial"] = adata.obs["layer"].astype(object)
    adata.obs.iloc[:50, adata.obs.columns.get_loc("partial")] = None
    sf.tl.spatial_domains(adata, "X_true", 4, method="ward", reference_key="partial", key_added="b")
    from sklearn.metrics import adjusted_rand_score

    known = adata.obs["partial"].notna().to_numpy()
    expected = adjusted_rand_score(adata.obs["layer"][known].astype(str), adata.obs["b"][known])
    assert adata.uns["b"]["ari"] == pytest.approx(expected)


@pytest.mark.skipif(not DLPFC.is_dir(), reason="needs ../shared/data/dlpfc_visium")
def test_dlpfc_layers_need_the_neighbourhood():
    # Real Visium DLPFC 151510 (7 manually annotated layers): PCA + Leiden into 7 clusters finds the
    # layers far better after smoothing and the vote than as is.
    adata = sf.datasets.visium_dlpfc(DLPFC)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.tl.pca(adata)
    sq.gr.spatial_neighbors_grid(adata, n_neighs=6)
    for smooth in (0, 1):
        sf.tl.spatial_domains(
            adata, "X_pca", 7, n_smooth=smooth, vote=bool(smooth), reference_key="layer", key_added=f"s{smooth}"
        )
    assert adata.uns["s1"]["ari"] > adata.uns["s0"]["ari"] + 0.05, (adata.uns["s0"]["ari"], adata.uns["s1"]["ari"])
