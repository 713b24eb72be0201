"""Command line: ``spatialfactors demo``, ``stanmf`` and ``spicemix`` (also ``python -m spatialfactors``)."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path


def _parse_components(text: str) -> int | list[int]:
    """``"11"`` -> 11, ``"8:31"`` -> 8..30, ``"8,10,12"`` -> [8, 10, 12]."""
    try:
        if ":" in text:
            start, stop = (int(v) for v in text.split(":"))
            return list(range(start, stop))
        if "," in text:
            return [int(v) for v in text.split(",")]
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K, START:STOP or K1,K2,...; got {text!r}") from None


def _compress_arg(text: str) -> int | str:
    """``"auto"``, ``"none"`` or an integer rank."""
    if text in ("auto", "none"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto', 'none' or an integer rank; got {text!r}") from None


class _UsageError(Exception):
    """A problem with the command line's arguments or files: reported in one line, without a traceback."""


def _read_input(path: str):
    """Read the input AnnData; a missing, unreadable or non-.h5ad file is a usage error saying what to pass."""
    import anndata as ad

    file = Path(path)
    if not file.exists():
        raise _UsageError(f"input file not found: {path}")
    if file.is_dir():
        raise _UsageError(f"the input {path} is a folder; pass an .h5ad file")
    try:
        return ad.read_h5ad(file)
    except Exception as err:  # noqa: BLE001 - h5py/anndata raise many types for a file that is not .h5ad
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise _UsageError(
            f"cannot read {path} as an .h5ad file ({type(err).__name__}: {reason}); pass an AnnData saved with "
            "`adata.write_h5ad(path)` (a CSV can be converted with `anndata.read_csv(path).write_h5ad(...)`)"
        ) from None


def _probe_writable(folder: Path, what: str) -> None:
    """Create ``folder`` if needed and check that a file can be written in it."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".spatialfactors-probe-"):
            pass
    except OSError as err:
        raise _UsageError(f"cannot write the {what} in {folder} ({err.strerror or err}); choose another path") from None


def _check_output(path: str) -> Path:
    """Check the output .h5ad path before any work: not a folder, in a folder that can be written."""
    out = Path(path)
    if out.is_dir():
        raise _UsageError(f"the output {path} is a folder; pass a file name such as {out / 'result.h5ad'}")
    _probe_writable(out.parent if str(out.parent) else Path("."), f"output {out.name}")
    if out.exists() and not os.access(out, os.W_OK):
        raise _UsageError(f"the output {path} exists and cannot be overwritten; choose another path")
    return out


def _check_figures(path: str | None) -> Path | None:
    if path is None:
        return None
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise _UsageError(f"--figures {path} is a file; pass a folder for the figures")
    _probe_writable(folder, "figures")
    return folder


def _check_obs_keys(adata, args: argparse.Namespace, flags: dict[str, str | None]) -> None:
    """Each ``--flag KEY`` must name a column of the input's ``.obs``; checked before any fit."""
    for flag, key in flags.items():
        if key is not None and key not in adata.obs:
            columns = list(adata.obs.columns)
            raise _UsageError(
                f"{flag} {key!r} is not a column of .obs in {args.input}; available: {columns[:20]}"
                + (" ..." if len(columns) > 20 else "")
            )


def _write_figures(figures: dict, out: Path) -> list[Path]:
    """Draw every ``{file name: draw(path)}`` into ``out``, closing each figure; return the paths."""
    import matplotlib.pyplot as plt

    written = []
    for name, draw in figures.items():
        draw(out / name)
        written.append(out / name)
        plt.close("all")
    return written


def _stanmf_figures(adata, out: Path, key: str = "stanmf", library_key: str | None = None) -> list[Path]:
    """Write the staNMF figures that the result supports; return their paths."""
    from . import pl

    figures = {"stanmf_patterns.png": lambda p: pl.patterns(adata, key, library_key=library_key, save=p, show=False)}
    uns = adata.uns[key]
    if "instability" in uns:
        figures["stanmf_instability.png"] = lambda p: pl.instability(adata, key, save=p, show=False)
    figures["stanmf_reconstruction.png"] = lambda p: pl.reconstruction(adata, key, save=p, show=False)
    figures["stanmf_patterns_per_gene.png"] = lambda p: pl.patterns_per_gene(adata, key, save=p, show=False)
    if "morans_i" in uns:
        figures["stanmf_morans_i.png"] = lambda p: pl.morans_i(adata, key, save=p, show=False)
    return _write_figures(figures, out)


def _stanmf(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from . import tl

    adata = _read_input(args.input)
    _check_obs_keys(adata, args, {"--library-key": args.library_key})
    out, fig_dir = _check_output(args.output), _check_figures(args.figures)  # before the fit, not after it
    t0 = time.perf_counter()
    tl.stanmf(
        adata,
        n_factors=args.n_factors,
        n_replicates=args.replicates,
        metric=args.metric,
        layer=args.layer,
        pca=not args.no_pca,
        screen=args.screen or None,
        compress=None if args.compress == "none" else args.compress,
        n_jobs=args.n_jobs,
        random_state=args.seed,
    )
    print(f"staNMF: K* = {adata.uns['stanmf']['k']} ({time.perf_counter() - t0:.1f} s)")
    adata.write_h5ad(out)
    written = [out]
    if fig_dir is not None:
        written += _stanmf_figures(adata, fig_dir, library_key=args.library_key)
    print("wrote:")
    for path in written:
        print(f"  {path}")
    return 0


def _spicemix_figures(adata, out: Path, key: str = "spicemix", library_key=None, groupby=None) -> list[Path]:
    """Write the SpiceMix figures that the result supports; return their paths."""
    from . import pl

    figures = {
        "spicemix_affinity.png": lambda p: pl.affinity(adata, key, save=p, show=False),
        "spicemix_convergence.png": lambda p: pl.convergence(adata, key, save=p, show=False),
    }
    if "spatial" in adata.obsm:
        figures["spicemix_metagenes.png"] = lambda p: pl.metagenes(
            adata, f"X_{key}", library_key=library_key, normalize=True, save=p, show=False
        )
    if groupby is not None:
        figures["spicemix_metagene_expression.png"] = lambda p: pl.metagene_expression(
            adata, f"X_{key}", groupby=groupby, save=p, show=False
        )
    return _write_figures(figures, out)


def _spicemix(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from . import pp, tl

    adata = _read_input(args.input)
    _check_obs_keys(adata, args, {"--library-key": args.library_key, "--reference-key": args.reference_key})
    out, fig_dir = _check_output(args.output), _check_figures(args.figures)  # before the fit, not after it
    has_graph = args.connectivity_key in adata.obsp
    if not has_graph and "spatial" not in adata.obsm:
        raise _UsageError(
            f"{args.input} has neither `.obsp[{args.connectivity_key!r}]` nor `.obsm['spatial']`; pass "
            "--connectivity-key with the name of its graph, or add the cell coordinates as `.obsm['spatial']`"
        )
    if not has_graph and not args.connectivity_key.endswith("_connectivities"):
        raise _UsageError(
            f"--connectivity-key {args.connectivity_key!r} is not in .obsp of {args.input} (it has "
            f"{list(adata.obsp)}); name one of its graphs, or a key ending in '_connectivities' for the graph "
            "to be built from `.obsm['spatial']`"
        )
    if args.library_key is not None and adata.obs[args.library_key].dtype.name != "category":
        adata.obs[args.library_key] = adata.obs[args.library_key].astype("category")
    if args.normalize:
        pp.normalize_spicemix(adata, library_key=args.library_key, layer=args.layer)
    if not has_graph:
        import squidpy as sq

        prefix = args.connectivity_key.removesuffix("_connectivities")
        sq.gr.spatial_neighbors_delaunay(adata, library_key=args.library_key, key_added=prefix)
        print(f"Delaunay graph (squidpy): {adata.obsp[args.connectivity_key].nnz // 2} edges")
    if args.max_distance is not None:
        source = "the Delaunay graph" if not has_graph else f"the input's graph `.obsp[{args.connectivity_key!r}]`"
        print(f"--max-distance: edges of {source} longer than {args.max_distance:g} are dropped")
    t0 = time.perf_counter()
    tl.spicemix(
        adata,
        n_factors=args.n_factors,
        connectivity_key=args.connectivity_key,
        library_key=args.library_key,
        max_distance=args.max_distance,
        layer=args.layer,
        lambda_sigma=args.lambda_sigma,
        max_iter=args.max_iter,
        n_replicates=args.replicates,
        random_state=args.seed,
        n_jobs=args.n_jobs,
    )
    uns = adata.uns["spicemix"]
    print(f"SpiceMix: K = {uns['k']}, {uns['n_iter']} iterations ({time.perf_counter() - t0:.1f} s)")
    tl.cluster_latent(adata, "X_spicemix", reference_key=args.reference_key)
    clusters = adata.uns["spicemix_clusters"]
    ari = f", ARI {clusters['ari']:.3f} against {args.reference_key}" if args.reference_key else ""
    print(f"latent clusters (Ward, Calinski-Harabasz): {clusters['n_clusters']}{ari}")
    adata.write_h5ad(out)
    written = [out]
    if fig_dir is not None:
        written += _spicemix_figures(
            adata, fig_dir, library_key=args.library_key, groupby=args.reference_key or "spicemix_clusters"
        )
    print("wrote:")
    for path in written:
        print(f"  {path}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")  # the demo only writes files
    import warnings

    import squidpy as sq

    # squidpy warns when it draws graph edges without a colour map; nothing to act on here.
    warnings.filterwarnings("ignore", message="No data for colormapping", category=UserWarning)

    from . import datasets, pl, tl

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise _UsageError(f"the output {args.output} is a file; pass a folder for the demo's files")
    _probe_writable(out, "demo's files")
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
            save=path.resolve(),  # squidpy puts relative paths under scanpy's figdir
        ),
        "true_metagenes.png": lambda path: pl.metagenes(
            adata, "X_true", factors=[0, 2, 4, 5, 6, 7], library_key="fov", normalize=True, save=path, show=False
        ),
        "true_proportions.png": lambda path: pl.metagene_expression(
            adata, "X_true", groupby="cell_type", save=path, show=False
        ),
    }
    written = []
    for name, draw in figures.items():
        path = out / name
        draw(path)
        written.append(path)

    # staNMF: K by bootstrap instability, patterns, reconstruction accuracy, Moran's I.
    tl.stanmf(adata, n_factors=args.stanmf_factors, n_replicates=args.replicates, random_state=args.seed)
    print(f"staNMF: K* = {adata.uns['stanmf']['k']} by bootstrap instability")
    written += _stanmf_figures(adata, out, library_key="fov")

    # Marker genes and spatial gene co-expression networks per pattern (10% of the genes as
    # nodes: the paper's 0.25% is meant for its 4,345 genes).
    tl.pattern_genes(adata)
    tl.sgcn(adata, top_fraction=0.1)
    n_edges = len(adata.uns["sgcn"]["edges"])
    print(f"marker genes per pattern and sGCNs: {n_edges} edges over {adata.uns['stanmf']['k']} networks")
    written += _write_figures(
        {
            "pattern_genes.png": lambda p: pl.pattern_genes(adata, save=p, show=False),
            "pattern_with_genes.png": lambda p: pl.pattern_with_genes(
                adata, [0, 1], library_key="fov", library="0", save=p, show=False
            ),
            "sgcn_PP1.png": lambda p: pl.sgcn(adata, 0, save=p, show=False),
        },
        out,
    )

    # SpiceMix: metagenes, latent states and their spatial affinity; Ward clusters vs the truth.
    t1 = time.perf_counter()
    # A fixed number of iterations (tol=None): the demo shows the fit, not its convergence.
    tl.spicemix(adata, args.n_factors, library_key="fov", max_iter=args.spicemix_iter, tol=None, random_state=args.seed)
    tl.cluster_latent(
        adata, "X_spicemix", n_clusters=len(adata.obs["cell_type"].cat.categories), reference_key="cell_type"
    )
    ari = adata.uns["spicemix_clusters"]["ari"]
    print(
        f"SpiceMix: K = {args.n_factors}, {adata.uns['spicemix']['n_iter']} iterations in "
        f"{time.perf_counter() - t1:.1f} s; ARI of its clusters against the true cell types {ari:.3f}"
    )
    written += _spicemix_figures(adata, out, library_key="fov", groupby="cell_type")

    h5ad = out / "demo.h5ad"
    adata.write_h5ad(h5ad)
    written.insert(0, h5ad)
    import matplotlib.pyplot as plt

    plt.close("all")
    print(f"done in {time.perf_counter() - t0:.1f} s; wrote:")
    for path in written:
        print(f"  {path}")
    return 0


#: What a bad argument or input file raises: our usage errors and the tools' validation errors.
_USER_ERRORS = (_UsageError, ValueError, KeyError, TypeError, MemoryError, OSError)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spatialfactors", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="simulate the SpiceMix cortex and run the package's steps on it")
    demo.add_argument("-o", "--output", default="demo_output", help="output folder (default: demo_output)")
    demo.add_argument("--n-fovs", type=int, default=4, help="fields of view (default: 4)")
    demo.add_argument("--n-cells", type=int, default=500, help="cells per field of view (default: 500)")
    demo.add_argument("--n-genes", type=int, default=100, help="genes (default: 100)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument(
        "--stanmf-factors",
        "--n-components",  # the old name, kept as an alias
        dest="stanmf_factors",
        type=_parse_components,
        default="3:17",
        help="staNMF K range (default: 3:17; --n-components is the old name)",
    )
    demo.add_argument("--replicates", type=int, default=20, help="staNMF bootstrap replicates (default: 20)")
    demo.add_argument("--n-factors", type=int, default=10, help="SpiceMix metagenes (default: 10)")
    demo.add_argument("--spicemix-iter", type=int, default=30, help="SpiceMix iterations (default: 30)")
    demo.set_defaults(func=_demo)

    st = sub.add_parser("stanmf", help="run sf.tl.stanmf on an .h5ad file")
    st.add_argument("input", help="input .h5ad (obs x genes, non-negative)")
    st.add_argument("-o", "--output", required=True, help="output .h5ad")
    st.add_argument(
        "--n-factors",
        "--n-components",  # the old name, kept as an alias
        dest="n_factors",
        type=_parse_components,
        default="8:31",
        help="K, START:STOP or K1,K2 (8:31; --n-components is the old name)",
    )
    st.add_argument("--replicates", type=int, default=100, help="bootstrap replicates per K (default: 100)")
    st.add_argument("--metric", choices=["hungarian", "amari"], default="hungarian")
    st.add_argument("--layer", default=None, help="layer to factorise instead of .X")
    st.add_argument(
        "--compress",
        type=_compress_arg,
        default="auto",
        help="rank of the compressed sweep, 'none' (exact) or 'auto' (default: atlas-sized, near low-rank data only)",
    )
    st.add_argument(
        "--screen",
        type=int,
        default=20,
        help="screen K in stages of max(5, S // 4), S, then all replicates (default: 20; 0: none)",
    )
    st.add_argument("--no-pca", action="store_true", help="skip the PCA comparator")
    st.add_argument("--n-jobs", type=int, default=None, help="joblib workers (default: all cores)")
    st.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    st.add_argument("--figures", default=None, help="folder for the figures (default: none)")
    st.add_argument("--library-key", default=None, help="field-of-view column for cell plots")
    st.set_defaults(func=_stanmf)

    sm = sub.add_parser("spicemix", help="run sf.tl.spicemix on an .h5ad file")
    sm.add_argument("input", help="input .h5ad (cells x genes; counts with --normalize, else normalised)")
    sm.add_argument("-o", "--output", required=True, help="output .h5ad")
    sm.add_argument("--n-factors", type=_parse_components, default="10", help="K, START:STOP or K1,K2 (10)")
    sm.add_argument("--library-key", default=None, help="field-of-view column of .obs")
    sm.add_argument("--layer", default=None, help="layer to use instead of .X")
    sm.add_argument("--normalize", action="store_true", help="counts in: scale to 1e4 per cell and log1p first")
    sm.add_argument("--connectivity-key", default="spatial_connectivities", help="graph in .obsp (built if absent)")
    sm.add_argument("--max-distance", type=float, default=None, help="drop Delaunay edges longer than this")
    sm.add_argument("--lambda-sigma", type=float, default=1e-4, help="affinity prior weight (default: 1e-4)")
    sm.add_argument("--max-iter", type=int, default=200, help="iterations (default: 200)")
    sm.add_argument("--replicates", type=int, default=10, help="bootstrap replicates per K for a range (10)")
    sm.add_argument("--reference-key", default=None, help=".obs labels to compare the clusters with (ARI)")
    sm.add_argument("--n-jobs", type=int, default=None, help="joblib workers for a range of K")
    sm.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    sm.add_argument("--figures", default=None, help="folder for the figures (default: none)")
    sm.set_defaults(func=_spicemix)
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
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except _USER_ERRORS as err:
        # A bad argument or file (the tools validate before they compute): one line, no traceback.
        text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        text = " ".join(text.split()) or type(err).__name__
        parser.exit(2, f"{parser.prog} {args.command}: error: {text}\n")
