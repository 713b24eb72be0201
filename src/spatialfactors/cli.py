"""Command line: ``spatialfactors demo`` (also ``python -m spatialfactors demo``)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")  # the demo only writes files
    import squidpy as sq

    from . import datasets, pl

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    adata = datasets.simulate_cortex(
        n_fovs=args.n_fovs, n_cells=args.n_cells, n_genes=args.n_genes, random_state=args.seed
    )
    print(f"simulated cortex: {adata.n_obs} cells x {adata.n_vars} genes in {args.n_fovs} fields of view")
    sq.gr.spatial_neighbors_delaunay(adata, library_key="fov")
    n_edges = adata.obsp["spatial_connectivities"].nnz // 2
    print(f"Delaunay graph per field of view (squidpy): {n_edges} edges, {2 * n_edges / adata.n_obs:.1f} per cell")

    figures = {
        "cell_types.png": lambda path: sq.pl.spatial_scatter(
            adata,
            shape=None,
            color="cell_type",
            library_key="fov",
            library_id=list(adata.obs["fov"].cat.categories),
            connectivity_key="spatial_connectivities",
            edges_width=0.3,
            size=15,
            save=path,
        ),
        "true_metagenes.png": lambda path: pl.metagenes(
            adata, "X_true", components=[0, 2, 4, 5, 6, 7], library_key="fov", normalize=True, save=path, show=False
        ),
        "true_proportions.png": lambda path: pl.metagene_expression(adata, "X_true", save=path, show=False),
    }
    written = []
    for name, draw in figures.items():
        path = out / name
        draw(path)
        written.append(path)
    h5ad = out / "demo.h5ad"
    adata.write_h5ad(h5ad)
    written.insert(0, h5ad)
    import matplotlib.pyplot as plt

    plt.close("all")
    print(f"done in {time.perf_counter() - t0:.1f} s; wrote:")
    for path in written:
        print(f"  {path}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spatialfactors", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="simulate the SpiceMix cortex and run the package's steps on it")
    demo.add_argument("-o", "--output", default="demo_output", help="output folder (default: demo_output)")
    demo.add_argument("--n-fovs", type=int, default=4, help="fields of view (default: 4)")
    demo.add_argument("--n-cells", type=int, default=500, help="cells per field of view (default: 500)")
    demo.add_argument("--n-genes", type=int, default=100, help="genes (default: 100)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``spatialfactors`` command line.

    Parameters
    ----------
    argv
        Arguments without the program name; ``sys.argv[1:]`` by default.

    Returns
    -------
    The exit status.

    Examples
    --------
    >>> from spatialfactors.cli import main
    >>> main(["demo", "--output", "demo_output", "--n-fovs", "1", "--n-cells", "100"])  # doctest: +SKIP
    0
    """
    args = _parser().parse_args(argv)
    return args.func(args)
