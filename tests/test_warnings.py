"""Ordinary calls warn about nothing the user did (issue 18).

Warnings are turned into errors around the calls, except the ones the package emits on purpose
(their own class, e.g. ``UndefinedScoreWarning``). torch warns about read-only numpy arrays once
per process, so that check runs in a fresh interpreter (and its joblib workers).
"""

import os
import subprocess
import sys
import textwrap
import warnings
from contextlib import contextmanager

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import squidpy as sq

import spatialfactors as sf
from spatialfactors._validation import UndefinedScoreWarning


@contextmanager
def _warnings_as_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=UndefinedScoreWarning)  # ours, on purpose
        yield


@pytest.fixture(scope="module")
def cortex():
    adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=80, n_genes=25, random_state=0)
    sq.gr.spatial_neighbors_delaunay(adata)
    return adata


def test_stanmf_and_its_follow_ups_warn_nothing(cortex):
    adata = cortex.copy()
    with _warnings_as_errors():
        sf.tl.stanmf(adata, [2, 3], n_replicates=2, max_iter=20, n_jobs=1)  # K positionally: see its renaming
        sf.tl.pattern_genes(adata)
        sf.tl.sgcn(adata, top_fraction=0.2)
    assert adata.obsm["X_stanmf"].shape[0] == adata.n_obs
    assert "sgcn" in adata.uns


def test_spicemix_and_its_normalisation_warn_nothing(cortex):
    adata = cortex.copy()
    adata.X = np.round(adata.X * 50)  # counts
    with _warnings_as_errors():
        sf.pp.normalize_spicemix(adata)
        sf.tl.spicemix(adata, 3, max_iter=2, n_jobs=1)
    assert adata.obsm["X_spicemix"].shape == (adata.n_obs, 3)


def test_link_regions_warns_nothing():
    labels = np.tile(np.array([382, 382, 463, 463, 320, 320, 2, 2]), (3, 2, 1))  # AP x DV x ML
    mask = labels > 0
    ids = labels[mask]
    adata = ad.AnnData(
        obs=pd.DataFrame({"region_id": ids}, index=[f"voxel_{i}" for i in np.flatnonzero(mask)]),
        uns={"aba": {"grid_shape": np.array(labels.shape), "spacing": 200.0, "mask": mask}},
    )
    adata.obsm["X_stanmf"] = np.stack([np.isin(ids, [320, 2]), ids == 382], axis=1).astype(float)
    with _warnings_as_errors():
        sf.tl.link_regions(adata, max_regions=2)
    assert len(adata.uns["link_regions"]["best"]) > 0


_READ_ONLY = textwrap.dedent(
    """
    import sys
    import warnings

    import numpy as np
    import scipy.sparse as sp
    import torch

    from spatialfactors.models._operator import DataOperator
    from spatialfactors.models.nmf import nmf
    from spatialfactors.models.stanmf import stability_sweep

    warnings.simplefilter("error")
    rng = np.random.default_rng(0)
    x = rng.random((30, 20))
    # What joblib hands its workers for arrays over max_nbytes: a read-only memory map.
    np.save(sys.argv[1], x)
    mapped = np.load(sys.argv[1], mmap_mode="r")
    xs = sp.random(30, 20, density=0.5, format="csr", random_state=0)
    for a in (xs.data, xs.indices, xs.indptr):
        a.flags.writeable = False
    weights = np.ones((2, 20), dtype=np.int64)
    weights.flags.writeable = False

    serial = stability_sweep(x, [2], n_replicates=2, n_jobs=1).table
    from_map = stability_sweep(mapped, [2], n_replicates=2, n_jobs=1).table
    assert from_map["mean"].tolist() == serial["mean"].tolist(), (from_map, serial)
    DataOperator(mapped, copy_unaligned=False)
    DataOperator(xs)
    # Unsorted column indices are sorted in a copy: the caller's matrix may be read-only.
    unsorted = xs.copy()
    for i in range(unsorted.shape[0]):
        row = slice(unsorted.indptr[i], unsorted.indptr[i + 1])
        unsorted.indices[row], unsorted.data[row] = unsorted.indices[row][::-1], unsorted.data[row][::-1]
    unsorted.has_sorted_indices = False
    for a in (unsorted.data, unsorted.indices, unsorted.indptr):
        a.flags.writeable = False
    ones = torch.ones((20, 1), dtype=torch.float32)
    assert torch.allclose(DataOperator(unsorted).matmul(ones), DataOperator(xs).matmul(ones))
    nmf(None, 2, operator=DataOperator(mapped), weights=weights, max_iter=5)
    stability_sweep(xs, [2], n_replicates=2, n_jobs=1, compress=10)
    print("no warning")
    """
)


def test_read_only_inputs_reach_torch_without_warning(tmp_path):
    filters = "error:The given NumPy array is not writable:UserWarning,error:Sparse invariant checks:UserWarning"
    result = subprocess.run(
        [sys.executable, "-c", _READ_ONLY, str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": filters},  # also for joblib workers, should any start
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no warning" in result.stdout
