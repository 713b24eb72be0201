"""Spatial domains and cell types on real and simulated tissue: SpiceMix at its defaults against scanpy.

Every method sees the same preprocessing (real data: counts per 1e4 + log1p, as the SpiceMix
paper; simulations: as simulated) and the same spatial graph (squidpy's Delaunay per field of
view for cells; the six hexagonal neighbours for Visium spots; the authors' own graph for their
synthetic cortex), and nothing is tuned per data set:

- ``SpiceMix``: ``sf.tl.spicemix(adata)`` at its defaults (K = 10);
- ``PCA``: ``sc.tl.pca`` at its defaults (50 components, fewer for small panels);
- ``NMF``: scikit-learn NMF, K = 10, on the data SpiceMix sees (each field rescaled to a mean
  total of K);
- ``PCA + Leiden (scanpy)``: ``sc.pp.neighbors`` + ``sc.tl.leiden`` at their defaults
  (resolution 1, whatever number of clusters that gives);
- ``HMRF`` (``--methods HMRF``): ``sf.tl.hmrf_domains``, the paper's discrete HMRF comparator, on
  the same PCA, over the smoothing values ``HMRF_BETAS``; it gives labels itself, so its rows
  are its own protocols instead of the four below: the number of reference classes with
  ``beta`` chosen by BIC, with the ``beta`` of the best ARI (the paper's best case, "chosen
  manually to maximize the ARI"), and ``beta = 0`` (a Gaussian mixture); and both the number
  of domains (that number - 3 to + 3) and ``beta`` chosen by BIC.

STARmap's excitatory layers: every method factorises all 930 cells; the 493 excitatory neurons
(eL2/3 ... eL6) are then clustered into the four layers (eL6-1 and eL6-2 are both layer 6), on
the graph among them.

Each representation (as proportions when non-negative) is clustered by the same four protocols
of ``sf.tl.spatial_domains`` into the number of reference classes: Ward (the SpiceMix paper's) or
Leiden (resolution searched for that number), each as is (cell types) and after one round of
neighbour averaging followed by the majority vote (domains).
ARI and NMI against the reference labels (cells without a label left out), median and range
over seeds (SpiceMix's and NMF's initialisation, Leiden's seed), time of the factorisation and
its peak memory (resident set size above the level before it, sampled every 10 ms).

Usage::

    python benchmarks/spatial_domains.py [--seeds 5] [--data starmap,dlpfc,osmfish,sim,synthetic]
        [--synthetic-dir DIR] [--trace] [--prior-from map] [--methods SpiceMix,PCA,NMF]

``--synthetic-dir`` is a folder with the authors' ``data/synthetic_cortex/files/*.txt``
(ma-compbio/SpiceMix; fetch it, never commit it); without it that row is skipped.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
K = 10
PROTOCOLS = (
    ("Ward", "ward", 0),
    ("Ward, smoothed + vote", "ward", 1),
    ("Leiden", "leiden", 0),
    ("Leiden, smoothed + vote", "leiden", 1),
)
HMRF_BETAS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
EXCITATORY = {"eL2/3": "L2/3", "eL4": "L4", "eL5": "L5", "eL6-1": "L6", "eL6-2": "L6"}


class PeakRSS:
    """Peak resident memory above the level at entry, sampled in a thread.

    The process and its child processes (joblib's workers) summed: memory they share (the data
    joblib hands them as a memory map) counts once per process, so with workers this is an upper bound.
    """

    def __enter__(self):
        import psutil

        self._proc = psutil.Process(os.getpid())
        self.base = self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _rss(self) -> int:
        import psutil

        total = self._proc.memory_info().rss
        for child in self._proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:  # a worker that has just exited
                pass
        return total

    def _sample(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        self.mb = (self.peak - self.base) / 2**20


def _normalise(adata):
    import spatialfactors as sf

    adata.X = adata.X.astype(np.float64)  # the loaders store counts as float32
    sf.pp.normalize_spicemix(adata)  # 1e4 per cell + log1p (tl.spicemix rescales to a mean total of K)
    return adata


def load(name: str, synthetic_dir: str | None):
    """(AnnData with .obs['truth'] and a graph, library_key or None) for each data set."""
    import squidpy as sq

    import spatialfactors as sf

    out = []
    if name == "starmap":
        a = _normalise(sf.datasets.starmap_visual_cortex(SHARED / "starmap_visual_1020"))
        a.obs["truth"] = a.obs["ClusterName"].astype(str)
        sq.gr.spatial_neighbors_delaunay(a)
        out.append(("STARmap, 930 cells (16 published types)", a, None))
        layers = a.obs["ClusterName"].map(EXCITATORY)
        b = a.copy()
        b.obs["truth"] = layers.astype(object).where(layers.notna(), None)
        b.uns["cluster_labelled_only"] = True  # factorise all cells, cluster the excitatory ones
        out.append(("STARmap, excitatory neurons into layers (4; 493 cells)", b, None))
    elif name == "dlpfc":
        a = _normalise(sf.datasets.visium_dlpfc(SHARED / "dlpfc_visium"))
        a.obs["truth"] = a.obs["layer"].astype(object)
        sq.gr.spatial_neighbors_grid(a, n_neighs=6)
        out.append(("DLPFC 151510, Visium, 4,634 spots (7 layers)", a, None))
    elif name == "osmfish":
        a = _normalise(sf.datasets.osmfish_cortex(SHARED / "osmfish_cortex"))
        a.obs["truth"] = a.obs["region"].astype(str)
        sq.gr.spatial_neighbors_delaunay(a)
        out.append(("osmFISH, 4,839 cells (11 regions)", a, None))
    elif name == "sim":
        for i, (sy, sx) in enumerate(sf.datasets.SCENARIOS):
            a = sf.datasets.simulate_cortex(4, 500, sigma_y=sy, sigma_x=sx, random_state=i)
            a.obs["truth"] = a.obs["cell_type"].astype(str)
            sq.gr.spatial_neighbors_delaunay(a, library_key="fov")
            out.append((f"simulate_cortex sigma_y {sy}, sigma_x {sx}, 4 x 500 (8 types)", a, "fov"))
    elif name == "synthetic" and synthetic_dir:
        out.append(("authors' synthetic cortex, FOVs 0-3, 4 x 500 (8 types)", _synthetic(Path(synthetic_dir)), "fov"))
    return out


def _synthetic(folder: Path):
    import anndata as ad
    import scipy.sparse as sp

    blocks, obs, graphs, coords = [], [], [], []
    for f in range(4):
        y = np.loadtxt(folder / f"expression_{f}.txt")
        edges = np.loadtxt(folder / f"neighborhood_{f}.txt", dtype=int)
        g = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(len(y), len(y))).tocsr()
        graphs.append(((g + g.T) > 0).astype(np.float64))
        blocks.append(y)
        coords.append(np.loadtxt(folder / f"coordinates_{f}.txt"))
        obs.append(pd.DataFrame({"truth": np.loadtxt(folder / f"celltypes_{f}.txt", dtype=str), "fov": str(f)}))
    # The authors' simulated expression has a few small negative values (Gaussian noise); clipped
    # at zero for every method, as simulate_cortex does.
    a = ad.AnnData(np.vstack(blocks).clip(0), obs=pd.concat(obs, ignore_index=True))
    a.obs_names = a.obs_names.astype(str)
    a.obs["fov"] = a.obs["fov"].astype("category")
    a.obsp["spatial_connectivities"] = sp.block_diag(graphs).tocsr()
    a.obsm["spatial"] = np.vstack(coords)
    return a


def _factorise(adata, method: str, seed: int, library_key, prior_from: str = "data", init: str = "kmeans"):
    import scanpy as sc
    from sklearn.decomposition import NMF

    import spatialfactors as sf
    from spatialfactors.models.hmrf import group_scale

    if method == "SpiceMix":
        sf.tl.spicemix(adata, library_key=library_key, random_state=seed, prior_from=prior_from, init=init)
        return "X_spicemix"
    if method in ("PCA", "HMRF"):  # HMRF: on the same PCA, its domains come in run()
        sc.tl.pca(adata, n_comps=min(50, adata.n_vars - 1))
        return "X_pca"
    x = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    x = np.asarray(x, dtype=np.float64)
    codes = adata.obs[library_key].cat.codes.to_numpy() if library_key else np.zeros(adata.n_obs, int)
    y = x * group_scale(x.sum(1), codes, K)[codes][:, None]  # the rescaled data SpiceMix sees
    adata.obsm["X_nmf"] = NMF(K, init="nndsvda", max_iter=1000, random_state=seed).fit_transform(y)
    return "X_nmf"


def _hmrf_rows(adata, n: int, seed: int, library_key) -> list[dict]:
    """The HMRF's own protocols: its domains at n (beta by BIC, by best ARI, 0) and with n and beta by BIC."""
    import spatialfactors as sf

    kw = {"beta": HMRF_BETAS, "library_key": library_key, "random_state": seed, "reference_key": "truth"}
    rows = []
    for name, ks in (("fixed", n), ("bic", range(max(2, n - 3), n + 4))):
        t0 = time.perf_counter()
        with PeakRSS() as mem:
            sf.tl.hmrf_domains(adata, "X_pca", ks, key_added="hmrf", **kw)
        table = adata.uns["hmrf"]["objective"]
        at = {"seed": seed, "seconds": time.perf_counter() - t0, "mb": mem.mb, "method": "HMRF"}
        chosen = table.loc[table["bic"].idxmin()]
        picks = [(f"domains ({max(2, n - 3)}-{n + 3}) and beta by BIC", chosen)]
        if name == "fixed":
            picks = [
                (f"{n} domains, beta by BIC", chosen),
                (f"{n} domains, beta of the best ARI", table.loc[table["ari"].idxmax()]),
                (f"{n} domains, beta 0 (Gaussian mixture)", table.loc[table["beta"] == 0].iloc[0]),
            ]
        for protocol, row in picks:
            rows.append(at | {"protocol": protocol, "ari": row["ari"], "nmi": row["nmi"]} | _picked(row))
    return rows


def _picked(row) -> dict:
    return {"beta": float(row["beta"]), "k": int(row["n_domains"])}


def _score(truth, labels):
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    known = truth.notna().to_numpy()
    t, p = truth[known].astype(str).to_numpy(), np.asarray(labels)[known]
    return adjusted_rand_score(t, p), normalized_mutual_info_score(t, p)


def run(title, adata, library_key, seeds, prior_from="data", methods=("SpiceMix", "PCA", "NMF"), init="kmeans"):
    import scanpy as sc

    import spatialfactors as sf

    n = adata.obs["truth"].dropna().nunique()
    rows = []
    for seed in seeds:
        for method in methods:
            a = adata.copy()
            t0 = time.perf_counter()
            with PeakRSS() as mem:
                basis = _factorise(a, method, seed, library_key, prior_from, init)
            seconds = time.perf_counter() - t0
            extra = {}
            if method == "SpiceMix":
                hist = a.uns["spicemix"]["history"]
                extra = {
                    "iterations": int(a.uns["spicemix"]["n_iter"]),
                    "effective": float(hist["effective_metagenes"].iloc[-1]),
                }
            c = a[a.obs["truth"].notna()].copy() if a.uns.get("cluster_labelled_only") else a
            if method == "HMRF":
                rows += _hmrf_rows(c, n, seed, library_key)
                continue
            for protocol, cluster, smooth in PROTOCOLS:
                sf.tl.spatial_domains(
                    c, basis, n, method=cluster, n_smooth=smooth, vote=bool(smooth), random_state=seed, key_added="d"
                )
                ari, nmi = _score(c.obs["truth"], c.obs["d"])
                rows.append(
                    {"method": method, "protocol": protocol, "seed": seed, "seconds": seconds, "mb": mem.mb}
                    | {"ari": ari, "nmi": nmi}
                    | extra
                )
        if "PCA" not in methods:
            continue
        a = adata.copy()
        t0 = time.perf_counter()
        with PeakRSS() as mem:
            sc.tl.pca(a, n_comps=min(50, a.n_vars - 1))
            if a.uns.get("cluster_labelled_only"):
                a = a[a.obs["truth"].notna()].copy()
            sc.pp.neighbors(a)
            sc.tl.leiden(a, random_state=seed, flavor="igraph", n_iterations=2, directed=False)
        ari, nmi = _score(a.obs["truth"], a.obs["leiden"])
        rows.append(
            {
                "method": f"PCA + Leiden (scanpy defaults, {a.obs['leiden'].nunique()} clusters)",
                "protocol": "scanpy",
                "seed": seed,
                "seconds": time.perf_counter() - t0,
                "mb": mem.mb,
                "ari": ari,
                "nmi": nmi,
            }
        )
        print(f"  {title}: seed {seed} done", flush=True)
    table = pd.DataFrame(rows)
    table["method"] = table["method"].str.replace(
        r" \(scanpy defaults, \d+ clusters\)", " (scanpy defaults)", regex=True
    )
    return table


def trace(adata, library_key, n_iter: int) -> pd.DataFrame:
    """ARI (Ward, as is) of SpiceMix's states after t iterations, seed 0: fits are deterministic, so
    a fit stopped at t is the first t iterations of the full one."""
    import spatialfactors as sf

    n = adata.obs["truth"].dropna().nunique()
    rows = []
    for t in sorted({t for t in (0, 5, 10, 20, 40, 80, 160) if t < n_iter} | {n_iter}):
        a = adata.copy()
        sf.tl.spicemix(a, library_key=library_key, max_iter=t, tol=None if t < n_iter else 1e-6)
        hist = a.uns["spicemix"]["history"].iloc[-1]
        if a.uns.get("cluster_labelled_only"):
            a = a[a.obs["truth"].notna()].copy()
        sf.tl.spatial_domains(a, "X_spicemix", n, method="ward", n_smooth=0, vote=False, key_added="d")
        rows.append(
            {
                "iteration": t,
                "ARI": _score(a.obs["truth"], a.obs["d"])[0],
                "effective metagenes": hist["effective_metagenes"],
                "mean largest proportion": hist["max_proportion"],
                "||S||": hist["affinity_norm"],
            }
        )
    return pd.DataFrame(rows)


def _summary(table: pd.DataFrame) -> pd.DataFrame:
    def fmt(v):
        return f"{np.median(v):.3f} ({np.min(v):.2f}-{np.max(v):.2f})"

    out = table.groupby(["method", "protocol"], sort=False).agg(
        ARI=("ari", fmt), NMI=("nmi", fmt), seconds=("seconds", "median"), peak_MB=("mb", "median")
    )
    if "beta" in table:  # HMRF: the chosen beta and number of domains over seeds
        picked = table.groupby(["method", "protocol"], sort=False)[["beta", "k"]].agg(
            lambda v: "" if v.isna().all() else "/".join(f"{x:g}" for x in sorted(set(v.dropna())))
        )
        out["beta"], out["domains"] = picked["beta"], picked["k"]
    if "effective" in table:
        eff = table.groupby(["method", "protocol"], sort=False)["effective"].min()
        out["min effective metagenes"] = eff.map(lambda v: "" if np.isnan(v) else f"{v:.1f}")
    return out.reset_index().round({"seconds": 1, "peak_MB": 0})


def main() -> None:
    import squidpy  # noqa: F401  (imported before torch sets its threads)

    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--data", default="starmap,dlpfc,osmfish,sim,synthetic")
    parser.add_argument("--synthetic-dir", default=None)
    parser.add_argument("--trace", action="store_true", help="ARI and usage of SpiceMix along its iterations")
    parser.add_argument("--prior-from", default="data", help="SpiceMix's prior_from ('map': the paper's scheme)")
    parser.add_argument("--methods", default="SpiceMix,PCA,NMF")
    parser.add_argument("--init", default="kmeans", help="SpiceMix's start ('leiden': sf.tl.spicemix(init='leiden'))")
    parser.add_argument("--out", default=str(RESULTS / "spatial_domains.md"))
    args = parser.parse_args()
    seeds = list(range(args.seeds))
    hmrf_only = args.methods == "HMRF"
    lines = [
        "# Spatial domains and cell types: SpiceMix at its defaults against PCA, NMF and scanpy",
        "",
        f"Run {time.strftime('%Y-%m-%d')} with `python benchmarks/spatial_domains.py --seeds {args.seeds} "
        f"--data {args.data} --prior-from {args.prior_from} --methods {args.methods} --init {args.init}` "
        f"on {os.cpu_count()} cores. "
        f"Median (range) over seeds {seeds}. Clusters: "
        "`sf.tl.spatial_domains` (Ward or Leiden) into the number of reference classes, as is or after one "
        "round of neighbour averaging + majority vote (`smoothed + vote`), on proportions for SpiceMix "
        "and NMF. Seconds and peak MB: the "
        "factorisation only (peak resident memory above the level before the call, sampled every 10 ms; 0 = no "
        "growth, the memory was already held). `min effective metagenes`: the smallest over seeds of the exponential "
        "of the entropy of the mean proportions at the end of the fit (K = 10).",
    ]
    if hmrf_only:  # its own protocols; the header above describes the others
        lines[0] = "# Spatial domains: the discrete HMRF comparator (`sf.tl.hmrf_domains`)"
        lines[2] = lines[2].split(" Clusters: ")[0] + f" HMRF on `sc.tl.pca` (defaults), beta in {list(HMRF_BETAS)}."
    for name in args.data.split(","):
        for title, adata, library_key in load(name, args.synthetic_dir):
            print(title, flush=True)
            table = run(title, adata, library_key, seeds, args.prior_from, args.methods.split(","), args.init)
            lines += ["", f"## {title}", "", _summary(table).to_markdown(index=False)]
            if args.trace:
                n_iter = int(table.loc[table["method"] == "SpiceMix", "iterations"].iloc[0])
                steps = trace(adata, library_key, n_iter)
                best = steps["ARI"].max()
                lines += [
                    "",
                    f"SpiceMix over the iterations (seed 0, Ward): final ARI {steps['ARI'].iloc[-1]:.3f}, best "
                    f"{best:.3f} (final - best = {steps['ARI'].iloc[-1] - best:+.3f}).",
                    "",
                    steps.round(3).to_markdown(index=False),
                ]
            Path(args.out).parent.mkdir(exist_ok=True)
            Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
