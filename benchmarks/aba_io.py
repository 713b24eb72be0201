"""Reading and imputing Allen grids: time per gene and peak memory of ``read_aba`` + ``impute_voxels``.

Only two real gene volumes are in ../shared/data/aba_200um (Nrp1, Pdyn); the atlas has
4,345. Each is read ``--copies`` times (as that many genes) so that the per-gene cost can be
separated from the fixed cost (the annotation, the mask); the imputation runs on the result
(the real missing-voxel patterns, repeated). Every measurement is a fresh subprocess (its own
peak RSS). The table is printed and written to ``benchmarks/results/aba_io.md``.

Usage::

    python benchmarks/aba_io.py [--copies 1 100 400]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
GRIDS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "aba_200um" / "grids"


def _measure(copies: int) -> dict:
    import spatialfactors as sf

    files = sorted(GRIDS.glob("*_P56_coronal_*_200um.zip")) * copies
    genes = [f"{p.name.split('_')[0]}_{i}" for i, p in enumerate(files)]
    t0 = time.perf_counter()
    adata = sf.io.read_aba(files, GRIDS / "P56_Mouse_gridAnnotation.zip", genes=genes)
    read = time.perf_counter() - t0
    rss_read = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    t0 = time.perf_counter()
    sf.pp.impute_voxels(adata, n_neighbors=6)
    impute = time.perf_counter() - t0
    return {
        "genes": len(files),
        "voxels": adata.n_obs,
        "read_s": read,
        "impute_s": impute,
        "matrix_gb": adata.X.nbytes / 2**30,
        "rss_read_gb": rss_read,
        "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--measure", type=int, default=None)
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 100, 400])
    args = parser.parse_args()
    if args.measure is not None:
        print(json.dumps(_measure(args.measure)))
        return
    rows = []
    for copies in args.copies:
        out = subprocess.run(
            [sys.executable, __file__, "--measure", str(copies)], capture_output=True, text=True, check=True
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    lines = [
        "# Allen grids: read_aba + impute_voxels",
        "",
        f"Machine: {platform.machine()}, 2 cores; run {time.strftime('%Y-%m-%d')}. The two real 200 um grids "
        "(Nrp1, Pdyn) read repeatedly as distinct genes; 62,529 brain voxels; imputation with 6 neighbours.",
        "",
        "| genes | read_aba (s) | impute_voxels (s) | matrix (GB) | peak RSS after read (GB) | peak RSS (GB) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['genes']} | {r['read_s']:.2f} | {r['impute_s']:.2f} | {r['matrix_gb']:.3f} "
            f"| {r['rss_read_gb']:.2f} | {r['rss_gb']:.2f} |"
        )
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        dg = b["genes"] - a["genes"]
        per_read, per_imp = (b["read_s"] - a["read_s"]) / dg, (b["impute_s"] - a["impute_s"]) / dg
        lines += [
            "",
            f"Marginal cost per gene: read {1e3 * per_read:.1f} ms, impute {1e3 * per_imp:.1f} ms; "
            f"extrapolated to the paper's 4,345 genes: read {4345 * per_read:.0f} s, impute {4345 * per_imp:.0f} s, "
            f"matrix {4345 * b['matrix_gb'] / b['genes']:.2f} GB (float32).",
        ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "aba_io.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
