"""Scale: SpiceMix and staNMF from ten thousand to a million cells, sparse counts, 500 genes.

A simulated tissue of N cells (five layers, each a mixture of K = 10 cell types; Poisson counts
from type-specific expression programs, about a quarter of the entries non-zero after
sampling) goes through the user's path at the defaults: ``sf.pp.normalize_spicemix`` (sparse
stays sparse), a squidpy Delaunay graph, then

- ``sf.tl.spicemix(adata, 10, max_iter=T, tol=None)``: the initialisation (k-means on at most
  20,000 cells, five NMF alternations) and T iterations; the time per iteration is measured
  over the T iterations. "100 iterations" = initialisation + 100 x that time, an
  extrapolation from T measured iterations (labelled so in the table);
- ``sf.tl.stanmf(adata, n_factors=K, n_replicates=R, pca=False)``: the K sweep of R
  bootstrap replicates per K and the final fit, end to end.

Every cell of the table is measured on this machine in one run except where it says
"extrapolated". Peak memory is the resident set above the level before the call, sampled every
10 ms.

Usage::

    python benchmarks/scale.py                       # 10k and 100k cells (about 15 min on 2 cores)
    python benchmarks/scale.py --sizes 1000000 --iterations 3 --stanmf-sizes ""
    python benchmarks/scale.py --device cuda         # on a machine with a GPU
    python benchmarks/scale.py --replot benchmarks/results/scale.md   # redraw the figure of a (merged) table

Writes ``benchmarks/results/scale.md`` (or ``--out``) and ``benchmarks/results/figures/scale.png``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from spatial_domains import PeakRSS

RESULTS = Path(__file__).parent / "results"
K = 10


def tissue(n: int, n_genes: int = 500, k: int = K, seed: int = 0):
    """A sparse counts AnnData of ``n`` cells in five layers of ``k`` mixed cell types."""
    import anndata as ad
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    xy = rng.random((n, 2)) * np.sqrt(n) * 10.0  # ~10 units between neighbouring cells
    layer = np.minimum((xy[:, 1] / xy[:, 1].max() * 5).astype(int), 4)
    composition = rng.dirichlet(np.full(k, 0.3), 5)  # each layer's mix of types
    types = (np.cumsum(composition[layer], 1) > rng.random((n, 1))).argmax(1)
    programs = rng.gamma(0.3, 1.0, (n_genes, k))
    programs /= programs.sum(0)
    rows = []
    for start in range(0, n, 100_000):  # bounded memory: the rates are dense per block
        t = types[start : start + 100_000]
        mix = 0.8 * np.eye(k)[t] + 0.2 * rng.dirichlet(np.ones(k), len(t))
        rows.append(sp.csr_matrix(rng.poisson(mix @ programs.T * 200).astype(np.float32)))
    adata = ad.AnnData(sp.vstack(rows).tocsr())
    adata.obsm["spatial"] = xy
    adata.obs["cell_type"] = pd.Categorical(types.astype(str))
    return adata


def prepare(n: int, n_genes: int):
    import squidpy as sq

    import spatialfactors as sf

    t0 = time.perf_counter()
    adata = tissue(n, n_genes)
    sf.pp.normalize_spicemix(adata)
    sq.gr.spatial_neighbors_delaunay(adata)
    return adata, time.perf_counter() - t0


def spicemix_row(adata, iterations: int, device: str) -> dict:
    import spatialfactors as sf

    t0 = time.perf_counter()
    with PeakRSS() as mem:
        sf.tl.spicemix(adata, K, max_iter=iterations, tol=None, device=device)
    total = time.perf_counter() - t0
    seconds = adata.uns["spicemix"]["history"]["seconds"].to_numpy()
    per_iter = (seconds[-1] - seconds[0]) / iterations
    init = total - per_iter * iterations
    from sklearn.metrics import adjusted_rand_score

    from spatialfactors.models.domains import proportions

    z = proportions(adata.obsm["X_spicemix"])
    ari = adjusted_rand_score(adata.obs["cell_type"], z.argmax(1))
    return {
        "method": "SpiceMix",
        "cells": adata.n_obs,
        "stored values": adata.X.nnz,
        "measured": f"init + {iterations} iterations",
        "seconds": total,
        "init s": init,
        "s / iteration": per_iter,
        "100 iterations, s": init + 100 * per_iter,
        "100 it.": "measured" if iterations >= 100 else "extrapolated",
        "peak MB": mem.mb,
        "ARI (argmax)": ari,
    }


def stanmf_row(adata, ks: list[int], replicates: int, device: str) -> dict:
    import spatialfactors as sf

    t0 = time.perf_counter()
    with PeakRSS() as mem:
        sf.tl.stanmf(adata, n_factors=ks, n_replicates=replicates, pca=False, device=device)
    total = time.perf_counter() - t0
    return {
        "method": f"staNMF, K {ks[0]}-{ks[-1]} x {replicates} replicates + final fit",
        "cells": adata.n_obs,
        "stored values": adata.X.nnz,
        "measured": "end to end",
        "seconds": total,
        "peak MB": mem.mb,
        "K*": int(adata.uns["stanmf"]["k"]),
    }


def plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=120)
    for method, rows in table.groupby("method", sort=False):
        if method == "SpiceMix":  # where a size was run end to end, that run, not its extrapolation
            measured = rows["100 it."] == "measured"
            rows = rows[measured | ~rows["cells"].isin(rows.loc[measured, "cells"])]
        col = "100 iterations, s" if method == "SpiceMix" else "seconds"
        label = "SpiceMix, init + 100 iterations" if method == "SpiceMix" else method
        if method == "SpiceMix" and (rows["100 it."] == "extrapolated").any():
            label += " (extrapolated)" if (rows["100 it."] == "extrapolated").all() else " (partly extrapolated)"
        axes[0].loglog(rows["cells"], rows[col], "o-", label=label)
        axes[1].loglog(rows["cells"], rows["peak MB"].clip(lower=1), "o-", label=label)
    axes[0].axhline(3600, color="grey", ls=":", lw=1)
    axes[0].text(axes[0].get_xlim()[0], 3600, " 1 hour", va="bottom", fontsize=8, color="grey")
    axes[0].set(xlabel="cells", ylabel="seconds", title="Time")
    axes[1].set(xlabel="cells", ylabel="peak extra memory (MB)", title="Memory")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def read_table(path: Path) -> pd.DataFrame:
    """The results table of a ``scale.md`` (also one merged by hand from several runs)."""
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip().startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    table = pd.DataFrame(cells[2:], columns=cells[0])  # cells[1] is the separator row
    for col in ("cells", "seconds", "100 iterations, s", "peak MB"):
        table[col] = pd.to_numeric(table[col], errors="coerce")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="SpiceMix: numbers of cells, comma-separated")
    parser.add_argument("--stanmf-sizes", default="10000,100000", help="staNMF: numbers of cells ('' for none)")
    parser.add_argument("--genes", type=int, default=500)
    parser.add_argument("--iterations", type=int, default=10, help="SpiceMix iterations measured per size")
    parser.add_argument("--stanmf-k", default="8,10,12", help="staNMF: values of K")
    parser.add_argument("--replicates", type=int, default=10, help="staNMF: bootstrap replicates per K")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(RESULTS / "scale.md"))
    parser.add_argument("--replot", default=None, help="redraw the figure of this table and stop")
    args = parser.parse_args()
    if args.replot:
        path = Path(args.replot)
        plot(read_table(path), path.parent / "figures" / (path.stem + ".png"))
        return

    import scanpy as sc

    sc.settings.verbosity = 0
    sizes = [int(s) for s in args.sizes.split(",") if s]
    stanmf_sizes = [int(s) for s in args.stanmf_sizes.split(",") if s]
    ks = [int(k) for k in args.stanmf_k.split(",")]
    rows = []
    for n in sorted(set(sizes) | set(stanmf_sizes)):
        adata, prep = prepare(n, args.genes)
        print(f"{n} cells: data and graph in {prep:.1f} s, {adata.X.nnz} stored values", flush=True)
        if n in sizes:
            rows.append(spicemix_row(adata, args.iterations, args.device))
            print(rows[-1], flush=True)
        if n in stanmf_sizes:
            rows.append(stanmf_row(adata, ks, args.replicates, args.device))
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    out = Path(args.out)
    with open(out, "w") as fh:
        fh.write("# Scale: SpiceMix and staNMF on simulated sparse tissue\n\n")
        fh.write(f"`python benchmarks/scale.py {' '.join(sys.argv[1:])}`".replace("``", "") + "\n\n")
        fh.write(
            f"{args.genes} genes, sparse counts normalised by `sf.pp.normalize_spicemix`, squidpy Delaunay graph; "
            f"device {args.device}, {os.cpu_count()} cores, torch on one thread per fit. "
            "Columns marked extrapolated are init + 100 x the measured time per iteration.\n\n"
        )
        fh.write(table.astype(object).where(table.notna(), "").to_markdown(index=False, floatfmt=".3g") + "\n")
    plot(table, out.parent / "figures" / (out.stem + ".png"))
    print(table.astype(object).where(table.notna(), "").to_markdown(index=False, floatfmt=".3g"))


if __name__ == "__main__":
    main()
