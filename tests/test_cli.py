import subprocess
import sys

import anndata as ad
import numpy as np

from spatialfactors.cli import main


def test_demo_writes_h5ad_and_figures(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--n-fovs", "2", "--n-cells", "120", "--n-genes", "40"]) == 0
    printed = capsys.readouterr().out
    for name in ("demo.h5ad", "cell_types.png", "true_metagenes.png", "true_proportions.png"):
        path = out / name
        assert path.stat().st_size > 1000, name
        assert str(path) in printed
    adata = ad.read_h5ad(out / "demo.h5ad")
    assert adata.shape == (240, 40)
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
