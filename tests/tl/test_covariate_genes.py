import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats
from statsmodels.stats.multitest import multipletests

import spatialfactors as sf


@pytest.fixture(scope="module")
def cells():
    """200 cells of two types; within type "o", gene "up" follows factor 0 minus factor 1."""
    rng = np.random.default_rng(0)
    n = 200
    kind = np.where(np.arange(n) < 120, "o", "a")
    states = rng.gamma(1.0, 1.0, (n, 3))
    z = states / states.sum(1, keepdims=True)
    covariate = z[:, 0] - z[:, 1]
    x = rng.poisson(2.0, (n, 30)).astype(np.float64)
    x[:, 0] = np.log1p(np.clip(4 + 3 * covariate + 0.5 * rng.normal(size=n), 0, None))  # "up"
    x[:, 1] = np.where(kind == "a", 5.0, 0.0) + (rng.random(n) < 0.1)  # expressed in few "o" cells
    x[kind == "a", 0] = 9.0  # outside the group the gene does not follow the covariate
    genes = ["up", "sparse"] + [f"g{j}" for j in range(2, 30)]
    obs = pd.DataFrame({"kind": pd.Categorical(kind), "pseudo": covariate}, index=[f"c{i}" for i in range(n)])
    adata = ad.AnnData(x, obs=obs, var=pd.DataFrame(index=genes))
    adata.obsm["X_spicemix"] = states
    return adata


def test_finds_the_planted_gene_within_the_group(cells):
    adata = cells.copy()
    sf.tl.covariate_genes(adata, factors=(0, 1), groupby="kind", groups="o")
    uns = adata.uns["covariate_genes"]
    table = uns["table"]
    assert table["gene"].iloc[0] == "up" and table["significant"].iloc[0] and table["slope"].iloc[0] > 0
    assert "sparse" not in set(table["gene"])  # expressed in < 30% of the group
    assert uns["n_cells"] == 120 and uns["n_tested"] == len(table) == 29
    assert uns["n_significant"] == int(table["significant"].sum()) <= 3
    assert uns["covariate"] == "X_spicemix proportion 0 - 1"
    cov = adata.obs["covariate_genes_covariate"]
    assert cov.isna().sum() == 80
    np.testing.assert_allclose(cov.dropna(), cells.obs["pseudo"][cells.obs["kind"] == "o"])
    # Every row is scipy's linregress on the group's cells; q is statsmodels' two-step FDR.
    inside = (cells.obs["kind"] == "o").to_numpy()
    for _, row in table.head(5).iterrows():
        ref = stats.linregress(cells.obs["pseudo"][inside], cells[inside, row["gene"]].X.ravel())
        assert row["slope"] == pytest.approx(ref.slope) and row["r"] == pytest.approx(ref.rvalue)
        assert row["p"] == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-300)
    np.testing.assert_allclose(table["q"], multipletests(table["p"], alpha=0.05, method="fdr_tsbh")[1])


def test_covariate_column_array_mask_and_genes_give_the_same(cells):
    adata = cells.copy()
    inside = (cells.obs["kind"] == "o").to_numpy()
    sf.tl.covariate_genes(adata, factors=(0, 1), groupby="kind", groups=["o"], key_added="a")
    sf.tl.covariate_genes(adata, "pseudo", mask=inside, key_added="b")
    sf.tl.covariate_genes(adata, cells.obs["pseudo"].to_numpy(), mask=inside, key_added="c")
    for key in ("b", "c"):
        pd.testing.assert_frame_equal(adata.uns["a"]["table"], adata.uns[key]["table"])
    sf.tl.covariate_genes(adata, "pseudo", mask=inside, genes=["up", "g5", "sparse"], key_added="d")
    assert set(adata.uns["d"]["table"]["gene"]) == {"up", "g5"}
    assert adata.uns["b"]["covariate"] == "pseudo"


def test_single_factor_weights_sparse_and_layer(cells):
    adata = cells.copy()
    adata.X = sp.csr_matrix(adata.X)
    adata.layers["expr"] = adata.X.copy()
    sf.tl.covariate_genes(adata, factors=2, normalize=False, groupby="kind", groups="o", layer="expr", min_fraction=0)
    uns = adata.uns["covariate_genes"]
    assert uns["covariate"] == "X_spicemix weight 2" and uns["n_tested"] == 30
    np.testing.assert_allclose(adata.obs["covariate_genes_covariate"].dropna(), cells.obsm["X_spicemix"][:120, 2])


def test_copy_and_plot(cells):
    out = sf.tl.covariate_genes(cells, factors=(0, 1), groupby="kind", groups="o", copy=True)
    assert "covariate_genes" in out.uns and "covariate_genes" not in cells.uns
    axes = sf.pl.covariate_genes(out, n_genes=4, ncols=3, show=False)
    assert len(axes) == 2 and len(axes[0]) == 3
    assert axes[0][0].get_title().startswith("up  q = ") and axes[0][0].get_title().endswith("*")
    assert not axes[1][2].get_visible()
    axes = sf.pl.covariate_genes(out, genes=["up"], show=False)
    assert len(axes[0]) == 1 and len(axes[0][0].collections[0].get_offsets()) == 120


def test_writes_h5ad(cells, tmp_path):
    adata = cells.copy()
    sf.tl.covariate_genes(adata, factors=(0, 1), groupby="kind", groups="o")
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    pd.testing.assert_frame_equal(back.uns["covariate_genes"]["table"], adata.uns["covariate_genes"]["table"])


def test_error_inside_the_engine_leaves_adata_unchanged(cells, monkeypatch):
    import sys

    adata = cells.copy()

    def boom(*args, **kwargs):
        raise RuntimeError("engine failed")

    monkeypatch.setattr(sys.modules["spatialfactors.tl._covariate_genes"], "regress_genes", boom)
    for copy in (False, True):
        with pytest.raises(RuntimeError, match="engine failed"):
            sf.tl.covariate_genes(adata, factors=(0, 1), groupby="kind", groups="o", copy=copy)
    assert list(adata.obs.columns) == list(cells.obs.columns) and set(adata.uns) == set(cells.uns)
