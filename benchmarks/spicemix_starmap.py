"""SpiceMix on real STARmap (mouse visual cortex, 930 cells x 1,020 genes): clusters, layers, figures.

The paper's preprocessing (cells with 200 < total counts <= 3000, counts per 1e4 + log1p,
Delaunay graph with edges up to 600 px via squidpy), K = 20 metagenes, then Ward clustering
of the proportions into the 16 published types. Reported for SpiceMix (two values of
lambda_Sigma) and for plain NMF (scikit-learn, same K, same data, same clustering):

- ARI against the published labels;
- spatial layering of the excitatory clusters: for every cluster whose majority published
  label is excitatory (eL2/3 ... eL6), its median cortical depth and depth spread (IQR of
  the centroid coordinate along the cortical axis; the published types' IQRs for
  comparison), and the Spearman correlation between the cluster's median depth and the
  layer of its majority label (-1: perfectly ordered from the surface down).

Figures (SpiceMix, lambda_Sigma = 1e-3) go to ``benchmarks/results/figures/starmap_*.png``;
the table to ``benchmarks/results/spicemix_starmap.md``. Usage::

    python benchmarks/spicemix_starmap.py [--iterations 100]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "starmap_visual_1020"
LAYER = {"eL2/3": 0, "eL4": 1, "eL5": 2, "eL6-1": 3, "eL6-2": 3}


def load():
    """The 930 cells of the paper's filter, normalised, with the 600 px Delaunay graph."""
    import scanpy as sc
    import squidpy as sq

    import spatialfactors as sf

    adata = sf.datasets.starmap_visual_cortex(SHARED)
    adata.obs["published"] = adata.obs["ClusterName"]
    adata.X = adata.X.astype(np.float64)  # counts are stored as float32
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sq.gr.spatial_neighbors_delaunay(adata)
    conn = adata.obsp["spatial_connectivities"].multiply(adata.obsp["spatial_distances"] <= 600).tocsr()
    conn.eliminate_zeros()
    adata.obsp["spatial_connectivities"] = conn
    return adata


def layering(adata, cluster_key: str) -> tuple[pd.DataFrame, float]:
    """Depth (cortical axis = coordinate 1) of the clusters whose majority label is excitatory."""
    from scipy.stats import spearmanr

    depth = adata.obsm["spatial"][:, 1]
    rows = []
    for c, idx in adata.obs.groupby(cluster_key, observed=True).indices.items():
        major = adata.obs["published"].iloc[idx].value_counts().idxmax()
        if major in LAYER:
            q1, med, q3 = np.percentile(depth[idx], [25, 50, 75])
            rows.append({"cluster": c, "majority": major, "n": len(idx), "median_depth": med, "iqr": q3 - q1})
    table = pd.DataFrame(rows).sort_values("median_depth", ascending=False)
    rho = spearmanr(table["median_depth"], table["majority"].map(LAYER)).statistic if len(table) > 2 else np.nan
    return table, float(rho)


def main() -> None:
    import squidpy  # noqa: F401  (imported before torch threads are set)
    import torch
    from sklearn.decomposition import NMF

    import spatialfactors as sf

    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    adata = load()
    k, n_types = 20, adata.obs["published"].nunique()
    runs = {}
    for lam in (1e-4, 1e-3):
        t0 = time.perf_counter()
        sf.tl.spicemix(adata, k, lambda_sigma=lam, max_iter=args.iterations, key_added=f"spicemix_{lam:g}")
        seconds = time.perf_counter() - t0
        sf.tl.cluster_latent(adata, f"X_spicemix_{lam:g}", n_clusters=n_types, reference_key="published")
        runs[f"SpiceMix, lambda_Sigma = {lam:g}"] = (f"X_spicemix_{lam:g}", seconds)
    x = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    y = x * (k / x.sum(1).mean())  # the same rescaled data SpiceMix sees
    t0 = time.perf_counter()
    adata.obsm["X_nmf"] = NMF(k, init="nndsvda", max_iter=1000, random_state=0).fit_transform(np.asarray(y))
    runs["NMF (scikit-learn)"] = ("X_nmf", time.perf_counter() - t0)
    sf.tl.cluster_latent(adata, "X_nmf", n_clusters=n_types, reference_key="published")
    depth = adata.obsm["spatial"][:, 1]
    published = []
    for name in LAYER:
        d = depth[adata.obs["published"].to_numpy() == name]
        published.append(f"{name} {np.median(d):.0f} (IQR {np.subtract(*np.percentile(d, [75, 25])):.0f})")
    lines = [
        "# SpiceMix on STARmap (visual cortex, 930 cells x 1,020 genes, K = 20)",
        "",
        f"Run {time.strftime('%Y-%m-%d')}, one thread, {args.iterations} iterations at most (tol 1e-6). "
        f"Ward clustering of the proportions into the {n_types} published types. Depth = centroid "
        "coordinate along the cortical axis (px; larger = nearer the surface).",
        "",
        "| method | seconds | ARI vs published | excitatory clusters | Spearman(depth, layer) | "
        "mean depth IQR of excitatory clusters |",
        "|---|---|---|---|---|---|",
    ]
    details = []
    for name, (basis, seconds) in runs.items():
        key = f"{basis[2:]}_clusters"
        ari = adata.uns[key]["ari"]
        table, rho = layering(adata, key)
        lines.append(f"| {name} | {seconds:.1f} | {ari:.3f} | {len(table)} | {rho:.2f} | {table['iqr'].mean():.0f} |")
        details += ["", f"{name}:", "", table.round(0).to_markdown(index=False)]
    lines += ["", "Published excitatory types, median depth (IQR): " + "; ".join(published) + "."]
    lines += details
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "spicemix_starmap.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import scanpy as sc

    figures = RESULTS / "figures"
    figures.mkdir(exist_ok=True)
    key = "spicemix_0.001"
    sf.pl.affinity(adata, key, save=figures / "starmap_affinity.png", show=False)
    sf.pl.metagenes(adata, f"X_{key}", normalize=True, save=figures / "starmap_metagenes.png", show=False)
    adata.obs["SpiceMix clusters"] = adata.obs[f"{key}_clusters"].astype("category")
    ax = sc.pl.embedding(adata, "spatial", color=["SpiceMix clusters", "published"], wspace=0.45, show=False)
    ax[0].figure.savefig(figures / "starmap_clusters.png", dpi=100, bbox_inches="tight")


if __name__ == "__main__":
    main()
