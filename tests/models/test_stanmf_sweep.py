"""The staNMF sweep's progress accounting and its automatic compression."""

import numpy as np
import pandas as pd
import pytest

from spatialfactors.models.stanmf import (
    AUTO_COMPRESS_ENTRIES,
    AUTO_COMPRESS_ERROR,
    _auto_compression,
    bootstrap_weights,
    screen_stages,
    stability_sweep,
    sweep_bytes,
    task_work,
)


def test_task_work_weights_by_the_measured_cost():
    slots = [("nmf", 8, 4), ("nmf", 8, 2), ("nmf", 30, 4), ("pca", 8, 4), ("pca", 30, 4)]
    work = task_work(slots, k_ref=8)
    assert work[0] == pytest.approx(4.0) and work[1] == pytest.approx(2.0)  # NMF replicates at k_ref
    assert work[2] / work[0] == pytest.approx((30 / 8) ** 1.5, rel=1e-12)
    assert work[3] < 0.1 * work[0] and work[4] < 0.1 * work[2]


def test_progress_adds_up_to_the_announced_total():
    rng = np.random.default_rng(0)
    x = rng.random((40, 3)) @ rng.random((3, 30))
    seen, totals = [], []
    kw = {"n_replicates": 4, "pca": True, "n_jobs": 1, "batch_size": 2}
    stability_sweep(x, [2, 3, 4], progress=seen.append, progress_total=totals.append, **kw)
    # tasks: 3 K x 2 batches of NMF, 2 batches of PCA (one SVD per replicate serves every K)
    assert len(seen) == 3 * 2 + 2 and len(totals) == 1
    assert sum(seen) == pytest.approx(totals[0], rel=1e-12)
    # the NMF replicates of the largest K carry the most work, the PCA ones the least
    assert max(seen[:6]) == seen[5] and max(seen[6:]) < min(seen[:6])


def _planted(seed=0, k=4):
    rng = np.random.default_rng(seed)
    return rng.gamma(0.3, 1.0, (300, k)) @ rng.gamma(0.3, 1.0, (k, 80)) + 0.05 * rng.random((300, 80))


def test_screened_sweep_gives_the_full_rows_where_it_matters():
    x, ks = _planted(), [2, 3, 4, 5, 6, 7]
    kw = {"n_replicates": 8, "pca": True, "n_jobs": 1, "batch_size": 4}
    full = stability_sweep(x, ks, **kw).table
    seen, totals, done_at = [], [], []

    def total(value):
        totals.append(value)
        done_at.append(sum(seen))

    screened = stability_sweep(x, ks, screen=4, progress=seen.append, progress_total=total, **kw).table
    nmf_full = full[full["method"] == "nmf"].set_index("K")
    nmf = screened[screened["method"] == "nmf"].set_index("K")
    # the planted K is the best in both, and every K that got all replicates has the full row
    assert nmf["mean"].idxmin() == nmf_full["mean"].idxmin() == 4
    again = nmf.index[nmf["n_replicates"] == 8]
    assert 4 in again and len(again) < len(ks)
    pd.testing.assert_frame_equal(nmf.loc[again], nmf_full.loc[again])
    assert set(nmf["n_replicates"]) == {4, 8}
    # the PCA comparator is never screened
    pca = screened[screened["method"] == "pca"].set_index("K")
    pd.testing.assert_frame_equal(pca, full[full["method"] == "pca"].set_index("K"))
    # the bar's total is announced again when the second pass is planned, and the work adds up to it;
    # the first total counts on a second pass, so the first pass ends short of 100%
    assert len(totals) == 2 and sum(seen) == pytest.approx(totals[1], rel=1e-12)
    assert done_at[1] < totals[0]


def test_three_stage_screen_keeps_the_full_rows_and_the_best_k():
    x, ks = _planted(seed=1, k=5), [3, 4, 5, 6, 7, 8]
    kw = {"n_replicates": 12, "pca": False, "n_jobs": 1, "batch_size": 4}
    assert screen_stages(10, 12) == [5, 10, 12]
    full = stability_sweep(x, ks, **kw).table.set_index("K")
    seen, totals, done_at = [], [], []

    def total(value):
        totals.append(value)
        done_at.append(sum(seen))

    staged = stability_sweep(x, ks, screen=10, progress=seen.append, progress_total=total, **kw).table.set_index("K")
    assert staged["mean"].idxmin() == full["mean"].idxmin() == 5
    assert set(staged["n_replicates"]) <= {5, 10, 12} and staged.loc[5, "n_replicates"] == 12
    again = staged.index[staged["n_replicates"] == 12]
    pd.testing.assert_frame_equal(staged.loc[again], full.loc[again])
    # a K kept for a stage has a row at least as complete as the K dropped before it
    assert staged["n_replicates"].sum() < 12 * len(ks)
    # one total per planned stage; the work adds up to the last, and no stage ends the bar early
    assert len(totals) == 3 and sum(seen) == pytest.approx(totals[-1], rel=1e-12)
    assert done_at[1] < totals[0] and done_at[2] < totals[1]


def test_pca_rows_equal_exact_principal_axes_at_every_k():
    from spatialfactors.models.stability import instability

    rng = np.random.default_rng(3)
    x = rng.gamma(1.0, 1.0, (50, 6)) @ (rng.random((6, 40)) * np.linspace(3, 0.5, 6)[:, None])
    x += 0.01 * rng.random(x.shape)
    ks = [2, 3, 4]
    table = stability_sweep(x, ks, n_replicates=5, pca=True, n_jobs=1, batch_size=2, dtype="float64").table
    pca = table[table["method"] == "pca"].set_index("K")
    for k in ks:
        axes = []
        for counts in bootstrap_weights(x.shape[1], 5, 0):
            cols = x[:, np.repeat(np.arange(x.shape[1]), counts)]
            u = np.linalg.svd(cols - cols.mean(1, keepdims=True), full_matrices=False)[0][:, :k]
            u = u * np.sign(u[np.abs(u).argmax(0), np.arange(k)])
            axes.append(u)
        exact = instability(axes, "hungarian")
        assert pca.loc[k, "mean"] == pytest.approx(exact.mean, abs=1e-6)
        assert pca.loc[k, "n_replicates"] == 5


def test_screen_below_two_is_refused():
    with pytest.raises(ValueError, match="`screen` must be at least 2"):
        stability_sweep(np.ones((5, 4)), [2], n_replicates=4, screen=1)


def test_auto_keeps_small_inputs_exact():
    rng = np.random.default_rng(1)
    x = rng.random((60, 4)) @ rng.random((4, 50))
    auto = stability_sweep(x, [3, 4], n_replicates=3, compress="auto", n_jobs=1)
    exact = stability_sweep(x, [3, 4], n_replicates=3, compress=None, n_jobs=1)
    assert auto.compress is None and auto.compression_error is None
    np.testing.assert_array_equal(auto.table["mean"].to_numpy(), exact.table["mean"].to_numpy())


def test_auto_compresses_only_near_low_rank_atlas_sized_inputs():
    rng = np.random.default_rng(2)
    n, m = 20_000, AUTO_COMPRESS_ENTRIES // 20_000
    low_rank = (rng.random((n, 6), dtype=np.float32) @ rng.random((6, m), dtype=np.float32)).astype(np.float32)
    rank, exact, comp = _auto_compression(low_rank, [4, 6], "float32", "cpu", 0)
    assert rank == 6 + 20
    assert comp.truncate(24).relative_error(exact) < AUTO_COMPRESS_ERROR
    # full-rank noise of the same size: compression would lose most of X, so the sweep stays exact
    low_rank += 0.5 * rng.random((n, m), dtype=np.float32)
    assert _auto_compression(low_rank, [4, 6], "float32", "cpu", 0) == (None, None, None)
    # one entry short of the threshold: exact, without computing a compression
    assert _auto_compression(low_rank[:, : m - 1], [4, 6], "float32", "cpu", 0) == (None, None, None)


def test_memory_estimate_of_auto_bounds_both_paths():
    kw = {"itemsize": 4, "n_replicates": 10, "n_ks": 5}
    big = (40_000, 1_000)
    assert sweep_bytes(*big, 10, compress="auto", **kw) == sweep_bytes(*big, 10, compress=30, **kw)
    assert sweep_bytes(100, 50, 10, compress="auto", **kw) == sweep_bytes(100, 50, 10, compress=None, **kw)
