"""staNMF's screened sweep against the full sweep on real panels, in one run.

The full sweep fits ``n_replicates`` bootstrap replicates at every K. The screened sweep
(``models.stanmf.stability_sweep(screen=S)``, the default of ``sf.tl.stanmf``) fits ``S`` replicates
at every K, then all ``n_replicates`` at the K whose screened instability lies within one standard
deviation of the lowest; those rows equal the full sweep's. Reported per data set: wall time of
both, the speed-up, K* of both, and the largest difference of the instability at the K that got
all replicates (zero by construction, checked here).

Data: STARmap visual cortex (930 cells x 1,020 genes) and DLPFC 151510 (4,634 spots x 500 genes)
from ``../shared/data``, normalised as ``sf.tl.stanmf``'s users do (1e4 per cell, log1p).

Usage: ``python benchmarks/stanmf_screen.py [--replicates 100] [--screen 20] [--ks 8-30]``; the
table is printed and written to ``benchmarks/results/stanmf_screen.md``. With ``--defaults``, each
panel instead gets one ``sf.tl.stanmf(adata)`` call with every default (the sweep, the final fit,
reconstruction and Moran's I), timed end to end (``benchmarks/results/stanmf_defaults.md``).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp

import spatialfactors as sf
from spatialfactors.models.stanmf import stability_sweep

RESULTS = Path(__file__).parent / "results"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _panels(as_adata: bool = False) -> dict:
    out = {}
    for name, load in (
        ("STARmap 930 x 1,020", lambda: sf.datasets.starmap_visual_cortex(SHARED / "starmap_visual_1020")),
        ("DLPFC 151510 4,634 x 500", lambda: sf.datasets.visium_dlpfc(SHARED / "dlpfc_visium")),
    ):
        adata = load()
        sc.pp.normalize_total(adata, target_sum=1e4)
        sc.pp.log1p(adata)
        out[name] = adata if as_adata else sp.csr_matrix(adata.X, dtype=np.float32)
    return out


def _defaults(data: str | None) -> None:
    """``sf.tl.stanmf`` with every default on each panel (with its Delaunay graph), timed end to end."""
    import squidpy as sq

    rows = []
    for name, adata in _panels(as_adata=True).items():
        if data and data not in name:
            continue
        sq.gr.spatial_neighbors_delaunay(adata)
        t0 = time.perf_counter()
        sf.tl.stanmf(adata)
        seconds = time.perf_counter() - t0
        table = sf.get.instability_df(adata)
        nmf = table[table["method"] == "nmf"].set_index("K")
        full = nmf.index[nmf["n_replicates"] == nmf["n_replicates"].max()]
        rows.append(
            {
                "data": name,
                "wall time, min": round(seconds / 60, 1),
                "K*": int(adata.uns["stanmf"]["k"]),
                "NMF fits": int(nmf["n_replicates"].sum()),
                "PCA SVDs (each serves every K)": int(table.loc[table["method"] == "pca", "n_replicates"].max()),
                "K with all replicates": ", ".join(str(k) for k in full),
                "compress": sf.get.params(adata).get("compress"),
            }
        )
        print(rows[-1], flush=True)
    text = "\n".join(
        [
            "# staNMF at its defaults on real panels, end to end",
            "",
            f"Machine: {platform.machine()}, 2 cores; run {time.strftime('%Y-%m-%d')}. One `sf.tl.stanmf(adata)` "
            "call with every default (K 8-30, 100 replicates, `screen=20`, `compress='auto'`, PCA comparator, "
            "float32; then the final fit, per-gene reconstruction and Moran's I on the Delaunay graph), timed "
            "end to end. Reproduce: `python benchmarks/stanmf_screen.py --defaults`.",
            "",
            pd.DataFrame(rows).to_markdown(index=False),
            "",
        ]
    )
    print(text)
    (RESULTS / "stanmf_defaults.md").write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replicates", type=int, default=100)
    parser.add_argument("--screen", type=int, default=20)
    parser.add_argument("--ks", default="8-30")
    parser.add_argument("--data", default=None, help="substring of the data sets to run")
    parser.add_argument("--out", default=str(RESULTS / "stanmf_screen.md"))
    parser.add_argument("--defaults", action="store_true", help="time sf.tl.stanmf at its defaults instead")
    args = parser.parse_args()
    if args.defaults:
        _defaults(args.data)
        return
    lo, hi = (int(v) for v in args.ks.split("-"))
    ks = list(range(lo, hi + 1))
    rows, curves = [], []
    for name, x in _panels().items():
        if args.data and args.data not in name:
            continue
        times, tables = {}, {}
        for label, screen in (("full", None), ("screened", args.screen)):
            t0 = time.perf_counter()
            res = stability_sweep(x, ks, n_replicates=args.replicates, pca=True, screen=screen)
            times[label] = time.perf_counter() - t0
            nmf = res.table[res.table["method"] == "nmf"].set_index("K")
            tables[label] = nmf
            print(f"{name}: {label} {times[label]:.0f} s, K* {nmf['mean'].idxmin()}", flush=True)
        full, scr = tables["full"], tables["screened"]
        again = scr.index[scr["n_replicates"] == args.replicates]
        rows.append(
            {
                "data": name,
                "full sweep, s": round(times["full"], 1),
                "screened, s": round(times["screened"], 1),
                "speed-up": f"{times['full'] / times['screened']:.1f}x",
                "K* full": int(full["mean"].idxmin()),
                "K* screened": int(scr["mean"].idxmin()),
                "K with all replicates": ", ".join(str(k) for k in again),
                "max difference there": float(np.abs(full.loc[again, "mean"] - scr.loc[again, "mean"]).max()),
            }
        )
        curves.append(
            pd.DataFrame(
                {
                    "data": name,
                    "K": full.index,
                    "full mean": full["mean"].round(4),
                    "full std": full["std"].round(4),
                    "screened mean": scr["mean"].round(4),
                    "screened replicates": scr["n_replicates"],
                }
            )
        )
    table = pd.DataFrame(rows)
    text = "\n".join(
        [
            "# staNMF: screened sweep against the full sweep (real panels)",
            "",
            f"Machine: {platform.machine()}, 2 cores shared; K {lo}-{hi}, {args.replicates} replicates, "
            f"screen {args.screen}, PCA comparator on (never screened), float32, exact products.",
            "Reproduce: `python benchmarks/stanmf_screen.py "
            f"--replicates {args.replicates} --screen {args.screen} --ks {args.ks}`.",
            "",
            table.to_markdown(index=False),
            "",
            "## Instability curves",
            "",
            pd.concat(curves).to_markdown(index=False),
            "",
        ]
    )
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
