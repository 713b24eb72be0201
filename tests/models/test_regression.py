import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from spatialfactors.models.regression import linear_fits, regress_genes


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n, g = 80, 40
    x = rng.normal(size=n)
    y = rng.gamma(2.0, 1.0, (n, g))
    y[:, 0] += 1.5 * (x - x.min())  # planted: rises with x
    y[:, 1] = np.clip(3 - 0.8 * x + 0.3 * rng.normal(size=n), 0, None)  # planted: falls
    y[: int(0.8 * n), 2] = 0.0  # expressed in 20% of cells only
    y[:, 3] = 2.0  # constant
    return x, y, np.array([f"g{j}" for j in range(g)])


def test_linear_fits_agree_with_linregress(data):
    x, y, _ = data
    fit = linear_fits(x, y[:, [0, 1, 4, 5]])
    for i, j in enumerate([0, 1, 4, 5]):
        ref = stats.linregress(x, y[:, j])
        assert fit["slope"][i] == pytest.approx(ref.slope, rel=1e-10)
        assert fit["intercept"][i] == pytest.approx(ref.intercept, rel=1e-10)
        assert fit["r"][i] == pytest.approx(ref.rvalue, rel=1e-10)
        assert fit["p"][i] == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-300)


def test_constant_gene_gets_nan(data):
    x, y, _ = data
    fit = linear_fits(x, y[:, [3]])
    assert np.isnan(fit["r"][0]) and np.isnan(fit["p"][0])


def test_table_filters_corrects_and_finds_the_planted_genes(data):
    x, y, genes = data
    table = regress_genes(x, y, genes, min_fraction=0.3)
    assert list(table.columns) == ["gene", "slope", "intercept", "r", "p", "q", "significant", "fraction"]
    assert "g2" not in set(table["gene"])  # 20% expressing
    assert "g3" not in set(table["gene"])  # constant
    assert len(table) == 38
    assert set(table["gene"][:2]) == {"g0", "g1"}
    assert table.set_index("gene").loc["g0", "slope"] > 0 > table.set_index("gene").loc["g1", "slope"]
    assert table["significant"].sum() >= 2
    assert (table["fraction"] >= 0.3).all()
    assert table["q"].is_monotonic_increasing
    # q-values are statsmodels' two-step correction of the p-values.
    expected = multipletests(table["p"].to_numpy(), alpha=0.05, method="fdr_tsbh")[1]
    np.testing.assert_allclose(table["q"].to_numpy(), expected)
    np.testing.assert_array_equal(table["significant"], expected < 0.05)


def test_min_fraction_zero_keeps_sparse_genes_and_method_changes_q(data):
    x, y, genes = data
    table = regress_genes(x, y, genes, min_fraction=0.0, method="bonferroni")
    assert "g2" in set(table["gene"]) and len(table) == 39
    np.testing.assert_allclose(table["q"], np.minimum(table["p"] * 39, 1.0))
