import anndata as ad
import matplotlib
import numpy as np
import pandas as pd

import spatialfactors as sf

matplotlib.use("Agg")


def test_numbered_domains_are_listed_in_numeric_order_in_columns():
    rng = np.random.default_rng(0)
    labels = np.arange(120) % 14
    adata = ad.AnnData(np.ones((120, 2)), obs=pd.DataFrame({"d": pd.Categorical(labels.astype(str))}))
    adata.obs_names = adata.obs_names.astype(str)
    adata.obsm["spatial"] = rng.random((120, 2))
    fig = sf.pl.domains(adata, "d", return_fig=True)
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == [str(i) for i in range(14)]  # not 0, 1, 10, 11, ...
    assert legend._ncols == 2  # 14 entries: two columns of at most 12
    # Every cell is drawn in its domain's legend colour.
    colours = {
        t.get_text(): tuple(h.get_color()) for t, h in zip(legend.get_texts(), legend.legend_handles, strict=True)
    }
    drawn = fig.axes[0].collections[0].get_facecolors()[:, :3]
    expected = np.array([colours[str(v)][:3] for v in labels])
    np.testing.assert_allclose(drawn, expected)
