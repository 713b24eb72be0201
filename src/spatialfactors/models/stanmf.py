"""The staNMF stability sweep: bootstrap replicates per K, dispatched through joblib.

Replicates resample the columns (genes) of ``X`` with replacement (Cahill et al. 2024,
Methods "The staNMF Framework"); the dictionaries over obs are compared. Every task is one
K and one batch of replicates, so ``joblib.parallel_config(backend="dask")`` runs the same
sweep on a dask.distributed cluster. Replicate ``r`` uses the same resample for every K, and
its resample depends only on ``(random_state, r)``, not on batching or workers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from joblib import Parallel, delayed

from ._operator import CompressedOperator, DataOperator, aligned_tensor, resolve_dtype
from ._threads import one_thread
from .nmf import default_batch_size, nmf, replicate_bytes
from .pca import pca_dictionaries
from .stability import instability, instability_bytes, nested_instability

#: Rank of the compression used for K components: K + this, at most ``compress``.
COMPRESS_OVERSAMPLE = 20
#: ``compress="auto"`` compresses inputs with at least this many entries (atlas-sized: 10k x 2k)...
AUTO_COMPRESS_ENTRIES = 20_000_000
#: ... when the rank used for the smallest K loses at most this fraction of ``||X||_F``. Real
#: panels are far from low rank (STARmap 930 x 1,020: 0.63 at rank 26; its instability curve
#: and K* change when compressed), a smooth atlas-like matrix is close to it (0.005).
AUTO_COMPRESS_ERROR = 0.05


def sweep_bytes(
    n_obs: int,
    n_vars: int,
    n_components: int,
    *,
    itemsize: int,
    nnz: int | None = None,
    n_replicates: int = 0,
    pca: bool = False,
    batch_size: int | None = None,
    compress: int | str | None = None,
    n_ks: int = 1,
) -> int:
    """Peak memory (bytes) of a staNMF fit or sweep up to ``n_components`` factors.

    The working copies of X (dense: the copy and its aligned copy; sparse, ``nnz`` given: CSR and
    its transpose as torch tensors on a GPU, an upper bound on the CPU's one CSR copy), with
    ``compress`` the compression ``Q B`` and its truncations for the ``n_ks`` values of K; one
    batch of replicates with their dictionaries, every replicate's dictionary kept for the
    instability (twice with the PCA comparator), the bootstrap resamples (:func:`bootstrap_bytes`)
    and the instability's pairwise work (:func:`~spatialfactors.models.stability.instability_bytes`),
    which grows with the square of ``n_replicates``.

    Examples
    --------
    >>> from spatialfactors.models.stanmf import sweep_bytes
    >>> sweep_bytes(100, 50, 5, itemsize=4, n_replicates=10**6) > 10**14
    True
    """
    if nnz is not None:
        data = 2 * nnz * (itemsize + 8) + 2 * (n_obs + n_vars + 2) * 8
    else:
        data = 2 * n_obs * n_vars * itemsize
    if compress == "auto":  # counted as compressed whenever the size allows it (an upper bound)
        rank = n_components + COMPRESS_OVERSAMPLE
        compress = rank if n_obs * n_vars >= AUTO_COMPRESS_ENTRIES and min(n_obs, n_vars) >= 4 * rank else None
    if compress:
        rank = min(compress, n_components + COMPRESS_OVERSAMPLE)
        data += (n_obs + n_vars) * (3 * compress + n_ks * rank) * itemsize
    per_replicate = replicate_bytes(n_obs, n_vars, n_components, itemsize) + n_components * n_obs * itemsize
    if not n_replicates:
        return int(data + per_replicate)
    batch = min(batch_size or default_batch_size(n_obs, n_vars, n_components, n_replicates, itemsize), n_replicates)
    kept = n_replicates * n_obs * n_components * itemsize * (2 if pca else 1)
    work = bootstrap_bytes(n_vars, n_replicates) + instability_bytes(n_replicates, n_obs, n_components)
    return int(data + batch * per_replicate + kept + work)


#: Bytes per bootstrap replicate besides its column weights: its seed sequence and its share of the tasks.
REPLICATE_OVERHEAD = 1024


def bootstrap_bytes(n_vars: int, n_replicates: int) -> int:
    """Memory (bytes) of :func:`bootstrap_weights` and the bookkeeping of ``n_replicates`` replicates.

    Examples
    --------
    >>> from spatialfactors.models.stanmf import bootstrap_bytes
    >>> bootstrap_bytes(1000, 10) == 10 * (1000 * 4 + 1024)
    True
    """
    return int(n_replicates) * (int(n_vars) * 4 + REPLICATE_OVERHEAD)


#: Replicates of the first screening stage: ``max(SCREEN_FIRST, screen // 4)`` when below ``screen``.
SCREEN_FIRST = 5


def screen_stages(screen: int | None, n_replicates: int) -> list[int]:
    """Replicates per stage of a screened sweep (:func:`stability_sweep`'s ``screen``).

    Examples
    --------
    >>> from spatialfactors.models.stanmf import screen_stages
    >>> screen_stages(20, 100), screen_stages(8, 30), screen_stages(None, 100)
    ([5, 20, 100], [5, 8, 30], [100])
    """
    if not screen or screen >= n_replicates:
        return [n_replicates]
    first = max(SCREEN_FIRST, screen // 4)
    return ([first] if first < screen else []) + [screen, n_replicates]


def bootstrap_weights(n_vars: int, n_replicates: int, random_state: int = 0) -> np.ndarray:
    """Column multiplicities of ``n_replicates`` bootstrap resamples of ``n_vars`` columns.

    Parameters
    ----------
    n_vars
        Number of columns (genes).
    n_replicates
        Number of resamples.
    random_state
        Seed; replicate ``r`` draws from the r-th child of ``SeedSequence(random_state)``.

    Returns
    -------
    (n_replicates, n_vars) integer counts, each row summing to ``n_vars``.

    Examples
    --------
    >>> from spatialfactors.models.stanmf import bootstrap_weights
    >>> w = bootstrap_weights(10, 3, random_state=0)
    >>> w.shape, w.sum(axis=1).tolist()
    ((3, 10), [10, 10, 10])
    """
    children = np.random.SeedSequence(random_state).spawn(n_replicates)
    out = np.empty((n_replicates, n_vars), dtype=np.int32)
    for r, child in enumerate(children):
        idx = np.random.default_rng(child).integers(0, n_vars, size=n_vars)
        out[r] = np.bincount(idx, minlength=n_vars)
    return out


@dataclass
class _Data:
    """What a task needs to rebuild its operator (small when compressed)."""

    x: object = None
    q: np.ndarray | None = None
    b: np.ndarray | None = None
    col_sq_norms: np.ndarray | None = None
    col_sums: np.ndarray | None = None
    shape: tuple = ()
    dtype: str = "float32"
    device: str = "cpu"
    kwargs: dict = field(default_factory=dict)

    def operator(self):
        if self.q is None:
            return DataOperator(self.x, dtype=self.dtype, device=self.device)
        # Aligned buffers: arrays unpickled in a worker would otherwise change MKL's results.
        dtype = resolve_dtype(self.dtype)
        q, b = (aligned_tensor(a, dtype, self.device) for a in (self.q, self.b))
        norms, sums = (aligned_tensor(a, torch.float64, self.device) for a in (self.col_sq_norms, self.col_sums))
        return CompressedOperator(q, b, norms, sums, self.shape)


def _compressed_data(part: CompressedOperator, kwargs: dict, dtype: str, device: str) -> _Data:
    """Task data (numpy arrays, cheap to ship to workers) of a compressed operator."""
    return _Data(
        q=part.q.cpu().numpy(),
        b=part.b.cpu().numpy(),
        col_sq_norms=part.col_sq_norms.cpu().numpy(),
        col_sums=part.col_sums.cpu().numpy(),
        shape=part.shape,
        dtype=dtype,
        device=device,
        kwargs=kwargs,
    )


def _nmf_task(data: _Data, k: int, weights: np.ndarray) -> np.ndarray:
    with one_thread():
        res = nmf(None, k, weights=weights, operator=data.operator(), **data.kwargs)
    return res.W.astype(np.float32, copy=False)


def _pca_task(data: _Data, k: int, weights: np.ndarray) -> np.ndarray:
    with one_thread():
        axes = pca_dictionaries(data.operator(), weights, k, seed=data.kwargs.get("seed", 0))[0]
    return axes.astype(np.float32)


#: Measured cost of one NMF replicate grows about as K**1.5 (per-iteration products K-wide, more
#: iterations for larger K: 0.6 -> 3.6 s from K 8 to 30 on STARmap, 1.3 -> 17 s on 5,000 x 500);
#: a PCA replicate costs 1-12% of the NMF one at the same K (a few randomised products).
NMF_WORK_EXPONENT = 1.5
PCA_WORK = 0.05


def task_work(slots: list[tuple[str, int, int]], k_ref: float) -> list[float]:
    """Work of each task ``(method, K, n_replicates)`` in NMF replicates at ``k_ref`` components.

    From the measured cost model above; a progress bar over the summed work of a sweep advances
    at the pace of the work, not of the task count.

    Examples
    --------
    >>> from spatialfactors.models.stanmf import task_work
    >>> w = task_work([("nmf", 8, 10), ("nmf", 32, 10), ("pca", 8, 10)], k_ref=8)
    >>> [round(v, 6) for v in w]
    [10.0, 80.0, 0.5]
    """
    return [n * (k / k_ref) ** NMF_WORK_EXPONENT * (PCA_WORK if method == "pca" else 1.0) for method, k, n in slots]


@dataclass
class SweepResult:
    """Result of :func:`stability_sweep`.

    Attributes
    ----------
    table
        Instability per method and K (columns ``method, K, metric, mean, std, n_replicates``).
    compression_error
        ``||X - Q B||_F / ||X||_F`` of the compressed sweep, or None for an exact sweep.
    compress
        Rank of the compression used (``compress="auto"`` resolved), or None for an exact sweep.
    """

    table: pd.DataFrame
    compression_error: float | None
    compress: int | None = None


def stability_sweep(
    X,
    n_components: Sequence[int],
    *,
    n_replicates: int = 100,
    metric: str = "hungarian",
    pca: bool = False,
    random_state: int = 0,
    init: str = "nndsvd",
    tol: float = 1e-4,
    max_iter: int = 200,
    compress: int | str | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    batch_size: int | None = None,
    n_jobs: int | None = None,
    screen: int | None = None,
    progress: Callable[[float], None] | None = None,
    progress_total: Callable[[float], None] | None = None,
) -> SweepResult:
    """Bootstrap instability of NMF (and optionally PCA) dictionaries for every K.

    Parameters
    ----------
    X
        Non-negative data (n_obs x n_vars), dense or scipy sparse.
    n_components
        Values of K.
    n_replicates
        Bootstrap replicates per K (N >= 2).
    metric
        ``"hungarian"`` or ``"amari"``.
    pca
        Also compute the PCA comparator's instability on the same resamples.
    random_state
        Seed of the resamples.
    init, tol, max_iter, dtype, device, batch_size
        Passed to :func:`~spatialfactors.models.nmf.nmf`; ``device`` is checked to exist first.
    compress
        Rank of one randomised compression ``X ~ Q B`` shared by the sweep; K components use
        its leading ``min(compress, K + 20)`` singular directions. ``None``: exact products.
        ``"auto"``: compressed at rank ``max(K) + 20`` when ``X`` has at least
        ``AUTO_COMPRESS_ENTRIES`` entries, its smaller dimension is at least four times that
        rank, and the rank used for the smallest K loses at most ``AUTO_COMPRESS_ERROR`` of
        ``||X||_F``; exact otherwise (the result's ``compress`` says which).
    n_jobs
        joblib workers; every task runs on one thread, so use as many workers as cores
        (``None`` or ``-1``: all cores; under ``joblib.parallel_config(backend="dask")`` the
        cluster's workers).
    screen
        Screen in the stages of :func:`screen_stages` (e.g. 5, 20, then ``n_replicates``): every
        K with the first stage's replicates; the next stage for the K whose instability is within
        two standard deviations (of the pairwise dissimilarities at the best K of the stage) of
        the lowest, one before the last stage. The same resamples in every stage, so a K of the
        last stage has exactly an unscreened sweep's row; the others keep the replicates of the
        stage they stopped at (the table's ``n_replicates`` says which). ``None``: every K gets
        ``n_replicates``. The PCA comparator always gets ``n_replicates``; its axes at every K
        are the leading ones of one SVD per replicate at the largest K.
    progress, progress_total
        ``progress`` is called after every task with its work (:func:`task_work`, in NMF
        replicates at the mean K); ``progress_total`` with the total work of the sweep when it is
        known: before the first task (counting on two K for each later screening stage), and
        again when each stage is planned.

    Returns
    -------
    The instability table (columns ``method, K, metric, mean, std, n_replicates``, and
    ``compression_error`` of the rank used for each K when compressed).

    Examples
    --------
    >>> import numpy as np
    >>> from spatialfactors.models.stanmf import stability_sweep
    >>> rng = np.random.default_rng(0)
    >>> X = rng.random((60, 3)) @ rng.random((3, 40))
    >>> stability_sweep(X, [2, 3], n_replicates=4).table[["K", "mean"]].shape
    (2, 2)
    """
    from spatialfactors._validation import _assert_device

    device = _assert_device(device)
    if screen is not None and screen < 2:
        raise ValueError(f"`screen` must be at least 2 replicates (an instability needs two), got {screen}.")
    ks = [int(k) for k in n_components]
    weights = bootstrap_weights(X.shape[1], n_replicates, random_state)
    seed = 0
    kwargs = {"init": init, "tol": tol, "max_iter": max_iter, "dtype": dtype, "device": device, "seed": seed}
    data = {k: _Data(x=X, shape=tuple(X.shape), dtype=dtype, device=device, kwargs=kwargs) for k in ks}
    compression_error, errors, exact, comp = None, {}, None, None
    if compress == "auto":
        compress, exact, comp = _auto_compression(X, ks, dtype, device, seed)
    if compress:
        # One compression for the whole sweep, in the singular basis of B, so that K components
        # use its leading K + 20 directions (products cost in proportion to that rank).
        # X is streamed through an aligned buffer, not copied: the compression needs few products.
        if comp is None:
            exact = DataOperator(X, dtype=dtype, device=device, copy_unaligned=False)
            comp = exact.compress(compress, seed=seed).ordered()
        compression_error = comp.relative_error(exact)
        for k in ks:
            part = comp.truncate(min(compress, k + COMPRESS_OVERSAMPLE))
            errors[k] = part.relative_error(exact)
            data[k] = _compressed_data(part, kwargs, dtype, device)
        del exact, comp
    if batch_size is None:
        batch_size = default_batch_size(*X.shape, max(ks), n_replicates, 4 if dtype == "float32" else 8)
    kwargs["batch_size"] = batch_size

    # Screening in stages (screen_stages: 5, 20, then all n_replicates at the defaults): every K
    # with the first stage's replicates, then the next stage's for the K whose instability is
    # within two standard deviations (of the pairwise dissimilarities at the best K) of the lowest,
    # one for the last stage. Replicate r has the same resample in every stage, so a K that
    # reaches the last stage gets exactly the table row of an unscreened sweep. The PCA comparator
    # is never screened, and all its K come from one SVD per replicate at the largest K.
    stages = screen_stages(screen, n_replicates)
    plan = [("nmf", k, stages[0]) for k in ks] + ([("pca", max(ks), n_replicates)] if pca else [])
    k_ref = float(np.mean(ks))
    run = {"data": data, "weights": weights, "batch_size": batch_size, "n_jobs": n_jobs, "metric": metric}
    run |= {"pca_ks": ks, "k_ref": k_ref, "progress": progress}
    done = list(plan)

    def announce(planned: int) -> None:
        # The stages after the planned ones count as two K at the mean K each (the K kept are
        # usually one to three), so the bar does not reach 100% and fall back.
        if progress_total is not None:
            guess = [("nmf", k_ref, m) for m in stages[planned:] for _ in range(2)]
            progress_total(sum(task_work(done + guess, k_ref)))

    announce(1)
    rows = {(r["method"], r["K"]): r for r in _run_plan(plan, **run)}
    for stage, n in enumerate(stages[1:], start=1):
        current = pd.DataFrame(
            [r for r in rows.values() if r["method"] == "nmf" and r["n_replicates"] == stages[stage - 1]]
        )
        current = current.set_index("K")
        best = current["mean"].idxmin()
        margin = 1.0 if stage == len(stages) - 1 else 2.0
        close = current.index[current["mean"] <= current.loc[best, "mean"] + margin * current.loc[best, "std"]]
        again = [("nmf", int(k), n) for k in close]
        done += again
        announce(stage + 1)
        rows |= {(r["method"], r["K"]): r for r in _run_plan(again, **run)}
    rows = sorted(rows.values(), key=lambda r: (r["method"] != "nmf", r["K"]))
    if compress:
        for row in rows:
            row["compression_error"] = errors[row["K"]]
    return SweepResult(pd.DataFrame(rows), compression_error, compress or None)


def _run_plan(plan, *, data, weights, batch_size, n_jobs, metric, k_ref, progress, pca_ks=()) -> list[dict]:
    """Instability rows of the planned ``(method, K, n_replicates)``: replicates 0 ... n - 1 of each.

    A ``"pca"`` slot at the largest K gives the rows of every K in ``pca_ks``: the principal axes
    at K are the first K at the largest K, so one SVD per replicate serves them all.
    """
    fns = {"nmf": _nmf_task, "pca": _pca_task}
    tasks, slots = [], []
    for method, k, n in plan:
        for start in range(0, n, batch_size):
            tasks.append(delayed(fns[method])(data[k], k, weights[start : min(start + batch_size, n)]))
            slots.append((method, k, min(batch_size, n - start)))
    rows, pending, wanted = [], {}, {(m, k): n for m, k, n in plan}
    results = Parallel(n_jobs=-1 if n_jobs is None else n_jobs, return_as="generator")(tasks)
    for (method, k, _), dicts, units in zip(slots, results, task_work(slots, k_ref), strict=True):
        pending.setdefault((method, k), []).append(dicts)
        if progress is not None:
            progress(units)
        if sum(len(d) for d in pending[(method, k)]) < wanted[(method, k)]:
            continue
        # The replicates' dictionaries as views of the task results (no stacked copy).
        dicts = [d for batch in pending.pop((method, k)) for d in batch]
        if method == "pca":  # nested axes: one Gram matrix at the largest K serves every K
            found = nested_instability(dicts, sorted(pca_ks), metric)
        else:
            found = {k: instability(dicts, metric)}
        for kk, inst in found.items():
            rows.append(
                {
                    "method": method,
                    "K": kk,
                    "metric": metric,
                    "mean": inst.mean,
                    "std": inst.std,
                    "n_replicates": wanted[(method, k)],
                }
            )
    return rows


def _auto_compression(X, ks: list[int], dtype: str, device: str, seed: int):
    """``(rank, exact operator, compression)`` for ``compress="auto"``, or ``(None, None, None)``."""
    rank = max(ks) + COMPRESS_OVERSAMPLE
    if X.shape[0] * X.shape[1] < AUTO_COMPRESS_ENTRIES or min(X.shape) < 4 * rank:
        return None, None, None
    exact = DataOperator(X, dtype=dtype, device=device, copy_unaligned=False)
    comp = exact.compress(rank, seed=seed).ordered()
    if comp.truncate(min(ks) + COMPRESS_OVERSAMPLE).relative_error(exact) > AUTO_COMPRESS_ERROR:
        return None, None, None
    return rank, exact, comp
