"""SpiceMix versus NMF on ``simulate_cortex`` replicates: the Fig. 2d protocol.

For each of the four ``(sigma_y, sigma_x)`` scenarios of ``sf.datasets.SCENARIOS``, draw
``--replicates`` independent tissues (``random_state`` 0, 1, ...; each draws its own
metagenes, positions and states), fit SpiceMix (``sf.tl.spicemix``, K = 10, Delaunay graph
from squidpy) and scikit-learn NMF (same K), cluster both latent representations with Ward
linkage and report the ARI against the true cell types:

- ``k = 8``: the true number of types;
- ``CH``: the number of clusters (2-20) that maximises the Calinski-Harabasz index, as the
  paper does for both methods.

SpiceMix runs twice: with its default affinity (constrained to prefer no metagene in the
mean neighbourhood, ``neutral_affinity=True``) and with the paper's unconstrained estimate.
The table gives the quartiles (min / 25% / median / 75% / max, as the paper's box plots)
and the number of replicates in which SpiceMix beats NMF.

With ``--reference-python`` and ``--reference-runner``, the authors' reference
implementation runs on the same replicates (same K, iterations and lambda_Sigma) through a
harness script of your own (not part of this repository, see spicemix_speed.py): it is
called as ``RUNNER --data synthetic --synthetic-dir DIR --K 10 --iterations N --lambda-sigma L
--quiet --out FILE`` with ``DIR/files/{expression,coordinates,neighborhood,celltypes,genes}_{r}.txt``
in the reference's input format (written here), and must write a JSON object whose
``latent_states_X`` maps each field of view ``"r"`` to its cells x K latent states; these are
clustered here exactly like ours. Usage::

    python benchmarks/spicemix_scenarios.py [--replicates 10] [--fovs 2] [--iterations 30] \\
        [--reference-python REF/.venv/bin/python --reference-runner REF/run_reference.py]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def _ari(adata, basis: str, n_clusters) -> float:
    import spatialfactors as sf

    sf.tl.cluster_latent(adata, basis, n_clusters=n_clusters, reference_key="cell_type", key_added="c")
    return float(adata.uns["c"]["ari"])


def _reference_states(adata, args) -> np.ndarray:
    """Latent states of the reference implementation on ``adata`` (cells in ``adata``'s order)."""
    fovs = adata.obs["fov"].cat.codes.to_numpy()
    graph = adata.obsp["spatial_connectivities"].tocsr()
    with tempfile.TemporaryDirectory() as tmp:
        files = Path(tmp) / "files"
        files.mkdir()
        for r in range(fovs.max() + 1):
            idx = np.flatnonzero(fovs == r)
            np.savetxt(files / f"expression_{r}.txt", np.asarray(adata.X[idx], dtype=np.float64))
            np.savetxt(files / f"coordinates_{r}.txt", adata.obsm["spatial"][idx])
            sub = graph[idx][:, idx].tocoo()
            edges = np.stack([sub.row, sub.col], 1)
            np.savetxt(files / f"neighborhood_{r}.txt", edges[edges[:, 0] < edges[:, 1]], fmt="%d", delimiter="\t")
            (files / f"celltypes_{r}.txt").write_text("\n".join(adata.obs["cell_type"].astype(str).iloc[idx]) + "\n")
            (files / f"genes_{r}.txt").write_text("\n".join(map(str, range(adata.n_vars))) + "\n")
        out = Path(tmp) / "result.json"
        cmd = [args.reference_python, "-W", "ignore", args.reference_runner, "--data", "synthetic"]
        cmd += ["--synthetic-dir", tmp, "--K", "10", "--iterations", str(args.iterations)]
        cmd += ["--lambda-sigma", str(args.lambda_sigma), "--quiet", "--out", str(out)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"reference failed:\n{proc.stderr[-3000:]}")
        states = json.loads(out.read_text())["latent_states_X"]
    return np.concatenate([np.asarray(states[str(r)]) for r in range(fovs.max() + 1)])


def run(sigma_y: float, sigma_x: float, seed: int, args) -> dict:
    """ARIs of SpiceMix and NMF on one simulated tissue."""
    import squidpy as sq
    from sklearn.decomposition import NMF

    import spatialfactors as sf

    adata = sf.datasets.simulate_cortex(
        n_fovs=args.fovs, n_cells=args.cells, sigma_y=sigma_y, sigma_x=sigma_x, random_state=seed
    )
    sq.gr.spatial_neighbors_delaunay(adata, library_key="fov")
    t0 = time.perf_counter()
    sf.tl.spicemix(adata, 10, library_key="fov", max_iter=args.iterations, tol=None, lambda_sigma=args.lambda_sigma)
    seconds = time.perf_counter() - t0
    # The paper's unconstrained affinity, for comparison.
    sf.tl.spicemix(
        adata,
        10,
        library_key="fov",
        max_iter=args.iterations,
        tol=None,
        lambda_sigma=args.lambda_sigma,
        neutral_affinity=False,
        key_added="free",
    )
    adata.obsm["X_nmf"] = NMF(10, init="nndsvda", max_iter=1000, random_state=0).fit_transform(adata.X)
    out = {"seconds": seconds}
    bases = ["spicemix", "free", "nmf"]
    if args.reference_runner:
        adata.obsm["X_reference"] = _reference_states(adata, args)
        bases.append("reference")
    for basis in bases:
        out[f"{basis}_k8"] = _ari(adata, f"X_{basis}", 8)
        out[f"{basis}_ch"] = _ari(adata, f"X_{basis}", None)
    return out


def _quartiles(values) -> str:
    q = np.percentile(values, [0, 25, 50, 75, 100])
    return " / ".join(f"{v:.2f}" for v in q)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=10)
    parser.add_argument("--fovs", type=int, default=2)
    parser.add_argument("--cells", type=int, default=500)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--lambda-sigma", type=float, default=1e-4)
    parser.add_argument("--scenarios", default="0,1,2,3", help="indices into sf.datasets.SCENARIOS")
    parser.add_argument("--reference-python", default=None)
    parser.add_argument("--reference-runner", default=None)
    parser.add_argument("--out", default=str(RESULTS / "spicemix_scenarios.md"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import scanpy as sc

    import spatialfactors as sf

    sc.settings.verbosity = 0
    lines = [
        "# SpiceMix versus NMF on simulated cortex replicates (Fig. 2d protocol)",
        "",
        f"{args.replicates} replicates per scenario (random_state 0-{args.replicates - 1}), {args.fovs} fields of "
        f"view x {args.cells} cells x 100 genes, K = 10, {args.iterations} SpiceMix iterations, "
        f"lambda_Sigma = {args.lambda_sigma:g}; NMF = scikit-learn (nndsvda). ARI of Ward clusters against the "
        "true types: quartiles min / 25% / median / 75% / max; 'wins' = replicates where SpiceMix > NMF. "
        f"Command: `python benchmarks/spicemix_scenarios.py --replicates {args.replicates} --fovs {args.fovs} "
        f"--iterations {args.iterations} --lambda-sigma {args.lambda_sigma:g} --scenarios {args.scenarios}"
        + (" --reference-python REF/python --reference-runner REF/run_reference.py" if args.reference_runner else "")
        + "`. SpiceMix = this package (defaults: affinity constrained to be neutral in the mean neighbourhood); "
        "'unconstrained S' = the same with `neutral_affinity=False` (the paper's estimate); "
        "reference = the authors' implementation (ma-compbio/SpiceMix, "
        "its own Louvain start + 10 NMF rounds) on the same replicates, when run.",
        "",
    ]
    ref = bool(args.reference_runner)
    lines += [
        "| sigma_y | sigma_x | clusters | SpiceMix ARI | NMF ARI | wins | SpiceMix, unconstrained S |"
        + (" reference ARI | ours > reference |" if ref else "")
        + " SpiceMix s / fit |",
        "|---|---|---|---|---|---|---|" + ("---|---|" if ref else "") + "---|",
    ]
    for index in map(int, args.scenarios.split(",")):
        sigma_y, sigma_x = sf.datasets.SCENARIOS[index]
        runs = [run(sigma_y, sigma_x, seed, args) for seed in range(args.replicates)]
        for tag, label in (("k8", "8 (true)"), ("ch", "CH")):
            ours = np.array([r[f"spicemix_{tag}"] for r in runs])
            nmf = np.array([r[f"nmf_{tag}"] for r in runs])
            row = (
                f"| {sigma_y:g} | {sigma_x:g} | {label} | {_quartiles(ours)} | {_quartiles(nmf)} | "
                f"{int((ours > nmf).sum())}/{len(runs)} | {_quartiles([r[f'free_{tag}'] for r in runs])} |"
            )
            if ref:
                theirs = np.array([r[f"reference_{tag}"] for r in runs])
                row += f" {_quartiles(theirs)} | {int((ours > theirs).sum())}/{len(runs)} |"
            row += f" {np.mean([r['seconds'] for r in runs]):.1f} |"
            print(row, flush=True)
            lines.append(row)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
