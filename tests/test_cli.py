import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np

from spatialfactors.cli import main


def test_demo_writes_h5ad_and_figures(tmp_path, capsys, monkeypatch):
    # A relative --output, as in the README: every figure must land inside it.
    monkeypatch.chdir(tmp_path)
    out = Path("demo")
    args = ["demo", "-o", str(out), "--n-fovs", "2", "--n-cells", "120", "--n-genes", "40"]
    assert main([*args, "--n-components", "3:6", "--replicates", "3", "--n-factors", "5", "--spicemix-iter", "3"]) == 0
    printed = capsys.readouterr().out
    names = ["demo.h5ad", "cell_types.png", "true_metagenes.png", "true_proportions.png"]
    names += [f"stanmf_{n}.png" for n in ("patterns", "instability", "reconstruction", "patterns_per_gene", "morans_i")]
    names += [f"spicemix_{n}.png" for n in ("affinity", "convergence", "metagenes", "metagene_expression")]
    names += ["pattern_genes.png", "pattern_with_genes.png", "sgcn_PP1.png"]
    for name in names:
        path = out / name
        assert path.stat().st_size > 1000, name
        assert str(path) in printed
    adata = ad.read_h5ad(out / "demo.h5ad")
    assert adata.shape == (240, 40)
    assert adata.uns["stanmf"]["k"] in (3, 4, 5)
    assert adata.obsm["X_stanmf"].shape == (240, adata.uns["stanmf"]["k"])
    assert adata.varm["stanmf_importance"].shape == (40, adata.uns["stanmf"]["k"])
    assert (adata.uns["sgcn"]["summary"]["n_nodes"] == 4).all()  # 10% of 40 genes per pattern
    assert adata.obsm["X_spicemix"].shape == (240, 5) and "ARI" in printed
    assert adata.obs["spicemix_clusters"].nunique() == 8
    graph = adata.obsp["spatial_connectivities"]
    assert (graph != graph.T).nnz == 0
    # The graph is built per field of view: no edge joins two fields of view.
    fov = adata.obs["fov"].cat.codes.to_numpy()
    rows, cols = graph.nonzero()
    assert np.array_equal(fov[rows], fov[cols])


def test_module_entry_point_help():
    result = subprocess.run(
        [sys.executable, "-m", "spatialfactors", "demo", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "--n-fovs" in result.stdout


def test_unknown_command_fails():
    result = subprocess.run([sys.executable, "-m", "spatialfactors", "nope"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_stanmf_command(tmp_path, capsys):
    import spatialfactors as sf

    src = tmp_path / "in.h5ad"
    sf.datasets.simulate_cortex(n_fovs=1, n_cells=150, n_genes=40).write_h5ad(src)
    out = tmp_path / "out.h5ad"
    figs = tmp_path / "figs"
    argv = ["stanmf", str(src), "-o", str(out), "--n-components", "3,4", "--replicates", "3", "--figures", str(figs)]
    assert main(argv) == 0
    adata = ad.read_h5ad(out)
    assert list(adata.uns["stanmf"]["params"]["n_components"]) == [3, 4]
    assert (figs / "stanmf_instability.png").stat().st_size > 1000
    assert "K* =" in capsys.readouterr().out


def test_stanmf_command_rejects_bad_range(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["stanmf", "x.h5ad", "-o", "y.h5ad", "--n-components", "a:b"])
    assert "expected K, START:STOP" in capsys.readouterr().err


def test_spicemix_command_builds_the_graph(tmp_path, capsys):
    import spatialfactors as sf

    src = tmp_path / "in.h5ad"
    adata = sf.datasets.simulate_cortex(n_fovs=2, n_cells=100, n_genes=30)
    adata.obs["fov"] = adata.obs["fov"].astype(str)  # a plain column: the command makes it categorical
    adata.write_h5ad(src)
    out, figs = tmp_path / "out.h5ad", tmp_path / "figs"
    argv = ["spicemix", str(src), "-o", str(out), "--n-factors", "4", "--library-key", "fov", "--max-iter", "2"]
    assert main([*argv, "--reference-key", "cell_type", "--figures", str(figs)]) == 0
    result = ad.read_h5ad(out)
    assert result.obsm["X_spicemix"].shape == (200, 4)
    assert "spatial_connectivities" in result.obsp and "spicemix_clusters" in result.obs
    for name in ("affinity", "convergence", "metagenes", "metagene_expression"):
        assert (figs / f"spicemix_{name}.png").stat().st_size > 1000
    assert "ARI" in capsys.readouterr().out


def test_spicemix_command_applies_max_distance_to_an_existing_graph(tmp_path):
    # --max-distance used to be ignored when the input already had a graph.
    import squidpy as sq

    import spatialfactors as sf

    adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=120, n_genes=30)
    sq.gr.spatial_neighbors_delaunay(adata)
    cut = float(np.median(adata.obsp["spatial_distances"].data))
    src, out = tmp_path / "in.h5ad", tmp_path / "out.h5ad"
    adata.write_h5ad(src)
    assert (
        main(["spicemix", str(src), "-o", str(out), "--n-factors", "4", "--max-iter", "2", "--max-distance", str(cut)])
        == 0
    )
    result = ad.read_h5ad(out)
    assert result.uns["spicemix"]["params"]["max_distance"] == cut
    assert result.obsp["spatial_connectivities"].nnz == adata.obsp["spatial_connectivities"].nnz  # graph kept
