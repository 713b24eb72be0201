import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import spatialfactors as sf


def _counts(sparse=False):
    rng = np.random.default_rng(0)
    x = rng.poisson(3.0, (60, 20)).astype(float) + 1
    adata = ad.AnnData(sp.csr_matrix(x) if sparse else x)
    adata.obs["fov"] = pd.Categorical(["a"] * 20 + ["b"] * 40)
    return adata, x


@pytest.mark.parametrize("sparse", [False, True])
def test_paper_normalisation(sparse):
    adata, x = _counts(sparse)
    sf.pp.normalize_spicemix(adata, 7, library_key="fov")
    got = adata.X.toarray() if sparse else adata.X
    expected = np.log1p(1e4 * x / x.sum(1, keepdims=True))
    for fov in ("a", "b"):
        mask = (adata.obs["fov"] == fov).to_numpy()
        assert got[mask].sum(1).mean() == pytest.approx(7.0)
        # Within a field of view the normalised values are proportional to log1p(1e4 x / total).
        ratio = got[mask] / expected[mask]
        np.testing.assert_allclose(ratio, ratio[0, 0])


def test_without_k_is_normalize_total_and_log1p():
    adata, x = _counts()
    out = sf.pp.normalize_spicemix(adata, copy=True)
    np.testing.assert_allclose(out.X, np.log1p(1e4 * x / x.sum(1, keepdims=True)))
    np.testing.assert_array_equal(adata.X, x)  # copy=True leaves the input


@pytest.mark.parametrize(
    ("mutate", "kwargs", "error", "match"),
    [
        (lambda x: x.__setitem__((0, 0), -1), {}, ValueError, "negative values"),
        (lambda x: x.__setitem__(0, 0), {}, ValueError, "1 cells have no counts"),
        (None, {"target_sum": 0}, ValueError, "`target_sum` must be > 0"),
        (None, {"library_key": "nope"}, KeyError, "not a column"),
        (None, {"n_factors": 0}, ValueError, "`n_factors` must be at least 1"),
    ],
)
def test_bad_input_leaves_adata_unchanged(mutate, kwargs, error, match):
    adata, _ = _counts()
    if mutate is not None:
        mutate(adata.X)
    before = adata.X.copy()
    with pytest.raises(error, match=match):
        sf.pp.normalize_spicemix(adata, **kwargs)
    np.testing.assert_array_equal(adata.X, before)


@pytest.mark.parametrize("sparse", [False, True])
def test_backed_counts_are_refused_with_the_fix(tmp_path, sparse):
    """Backed X gave an AttributeError (dense) or "got Python objects" (sparse); the message names `to_memory`."""
    x = np.arange(1.0, 13.0).reshape(4, 3)
    ad.AnnData(sp.csr_matrix(x) if sparse else x).write_h5ad(tmp_path / "a.h5ad")
    backed = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")
    with pytest.raises(TypeError, match=r"`adata.X` is read from the file .*`adata = adata.to_memory\(\)`"):
        sf.pp.normalize_spicemix(backed)
    backed.file.close()
    memory = ad.read_h5ad(tmp_path / "a.h5ad")
    sf.pp.normalize_spicemix(memory)  # loaded into memory, the same data work
    assert np.isfinite(memory.X.toarray() if sparse else memory.X).all()
