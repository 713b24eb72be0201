import anndata as ad
import numpy as np
import pandas as pd
import pytest

import spatialfactors as sf


@pytest.fixture
def voxels():
    rng = np.random.default_rng(0)
    mask = rng.random((6, 5, 4)) > 0.5
    n = int(mask.sum())
    adata = ad.AnnData(rng.random((n, 3)), uns={"aba": {"grid_shape": (6, 5, 4), "spacing": 200.0, "mask": mask}})
    adata.var_names = ["a", "b", "c"]
    adata.obs["region"] = np.arange(n, dtype=float)
    adata.obsm["X_p"] = rng.random((n, 2))
    return adata, mask


def test_round_trip_exact(voxels):
    adata, mask = voxels
    values = np.random.default_rng(1).random(adata.n_obs)
    vol = sf.io.to_volume(adata, values)
    assert vol.shape == (6, 5, 4)
    np.testing.assert_array_equal(vol[mask], values)
    assert np.isnan(vol[~mask]).all()
    # Obs are the mask's voxels in C order.
    np.testing.assert_array_equal(vol.ravel()[np.flatnonzero(mask)], values)


def test_names_and_basis(voxels):
    adata, mask = voxels
    np.testing.assert_array_equal(sf.io.to_volume(adata, "region")[mask], adata.obs["region"])
    np.testing.assert_array_equal(sf.io.to_volume(adata, "b")[mask], adata.X[:, 1])
    np.testing.assert_array_equal(sf.io.to_volume(adata, 1, basis="X_p")[mask], adata.obsm["X_p"][:, 1])


def test_errors(voxels):
    adata, _ = voxels
    with pytest.raises(ValueError, match="one value per voxel"):
        sf.io.to_volume(adata, np.ones(3))
    with pytest.raises(KeyError, match="neither a column"):
        sf.io.to_volume(adata, "nope")
    with pytest.raises(KeyError, match=r"uns\['aba'\]"):
        sf.io.to_volume(ad.AnnData(np.ones((2, 2))), np.ones(2))


def test_series_is_placed_by_its_index(voxels):
    # A Series in another order than obs_names used to be placed by position.
    adata, mask = voxels
    values = np.arange(adata.n_obs, dtype=float)
    series = pd.Series(values, index=adata.obs_names)[::-1]
    np.testing.assert_array_equal(sf.io.to_volume(adata, series)[mask], values)
    np.testing.assert_array_equal(sf.io.to_volume(adata, series.to_numpy())[mask], values[::-1])  # arrays: by position


def test_series_with_another_index_is_refused(voxels):
    adata, _ = voxels
    with pytest.raises(ValueError, match=r"index does not match `adata.obs_names`: .*pass `values.to_numpy\(\)`"):
        sf.io.to_volume(adata, pd.Series(np.ones(adata.n_obs)))  # a RangeIndex: not voxel names
    renamed = pd.Series(np.ones(adata.n_obs), index=[*adata.obs_names[:-1], "other"])
    with pytest.raises(ValueError, match=r"1 voxels have no value .* 1 labels are not voxels \(e\.g\. \['other'\]\)"):
        sf.io.to_volume(adata, renamed)
    repeated = pd.Series(np.ones(adata.n_obs), index=[adata.obs_names[0], *adata.obs_names[:-1]])
    with pytest.raises(ValueError, match="index repeats labels"):
        sf.io.to_volume(adata, repeated)
