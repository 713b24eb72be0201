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
    args += ["--stanmf-factors", "3:6", "--replicates", "3", "--n-factors", "5", "--spicemix-iter", "3"]
    assert main(args) == 0
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
    argv = ["stanmf", str(src), "-o", str(out), "--n-factors", "3,4", "--replicates", "3", "--figures", str(figs)]
    assert main(argv) == 0
    adata = ad.read_h5ad(out)
    assert sf.get.params(adata, "stanmf")["n_factors"] == [3, 4]
    assert (figs / "stanmf_instability.png").stat().st_size > 1000
    assert "K* =" in capsys.readouterr().out


def test_stanmf_command_rejects_bad_range(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["stanmf", "x.h5ad", "-o", "y.h5ad", "--n-factors", "a:b"])
    assert "expected K, START:STOP" in capsys.readouterr().err


def test_old_n_components_flag_is_an_alias_of_n_factors():
    from spatialfactors.cli import _parser

    old = _parser().parse_args(["stanmf", "x.h5ad", "-o", "y.h5ad", "--n-components", "3,4"])
    new = _parser().parse_args(["stanmf", "x.h5ad", "-o", "y.h5ad", "--n-factors", "3,4"])
    assert old.n_factors == new.n_factors == [3, 4]
    demo = _parser().parse_args(["demo", "--n-components", "3:5", "--n-factors", "6"])
    assert list(demo.stanmf_factors) == [3, 4] and demo.n_factors == 6


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


# -- user errors: one line `spatialfactors <command>: error: ...`, exit 2, no traceback -------------


def _small_input(folder: Path) -> Path:
    import spatialfactors as sf

    src = folder / "in.h5ad"
    sf.datasets.simulate_cortex(n_fovs=1, n_cells=60, n_genes=20).write_h5ad(src)
    return src


def _usage_error(argv, capsys) -> str:
    import pytest

    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"spatialfactors {argv[0]}: error: ")
    return lines[0]


def test_bad_input_files_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    (tmp_path / "folder").mkdir()
    out = str(tmp_path / "out.h5ad")
    assert "input file not found" in _usage_error(["stanmf", str(tmp_path / "none.h5ad"), "-o", out], capsys)
    assert "is a folder; pass an .h5ad file" in _usage_error(["spicemix", str(tmp_path / "folder"), "-o", out], capsys)
    line = _usage_error(["stanmf", str(tmp_path / "table.csv"), "-o", out], capsys)
    assert "cannot read" in line and "table.csv as an .h5ad file" in line and "anndata.read_csv" in line


def test_bad_output_is_refused_before_the_fit(tmp_path, capsys, monkeypatch):
    # An unwritable output used to fail only after the whole fit.
    import spatialfactors as sf

    src = _small_input(tmp_path)
    (tmp_path / "file").write_text("")
    fits = []
    monkeypatch.setattr(sf.tl, "stanmf", lambda *a, **k: fits.append(1))
    monkeypatch.setattr(sf.tl, "spicemix", lambda *a, **k: fits.append(1))
    line = _usage_error(["stanmf", str(src), "-o", str(tmp_path / "file" / "out.h5ad")], capsys)
    assert "cannot write the output out.h5ad in" in line and "choose another path" in line
    line = _usage_error(["spicemix", str(src), "-o", str(tmp_path)], capsys)
    assert "is a folder; pass a file name such as" in line
    figures = ["--figures", str(tmp_path / "file")]
    line = _usage_error(["stanmf", str(src), "-o", str(tmp_path / "o.h5ad"), *figures], capsys)
    assert "--figures" in line and "is a file; pass a folder" in line
    assert "is a file; pass a folder" in _usage_error(["demo", "-o", str(tmp_path / "file")], capsys)
    assert fits == []


def test_unknown_obs_keys_are_refused_before_the_fit(tmp_path, capsys, monkeypatch):
    import spatialfactors as sf

    src, out = _small_input(tmp_path), str(tmp_path / "out.h5ad")
    monkeypatch.setattr(sf.tl, "spicemix", lambda *a, **k: (_ for _ in ()).throw(AssertionError("fitted")))
    for flag in ("--library-key", "--reference-key"):
        line = _usage_error(["spicemix", str(src), "-o", out, flag, "nope"], capsys)
        assert f"{flag} 'nope' is not a column of .obs in" in line and "available: ['cell_type'" in line
    assert "--library-key 'nope'" in _usage_error(["stanmf", str(src), "-o", out, "--library-key", "nope"], capsys)
    line = _usage_error(["spicemix", str(src), "-o", out, "--connectivity-key", "graph"], capsys)
    assert "--connectivity-key 'graph' is not in .obsp" in line


def test_tool_validation_errors_are_one_line(tmp_path, capsys):
    src, out = _small_input(tmp_path), str(tmp_path / "out.h5ad")
    line = _usage_error(["stanmf", str(src), "-o", out, "--n-factors", "3", "--layer", "nope"], capsys)
    assert "Layer 'nope' not found" in line
    assert not (tmp_path / "out.h5ad").exists()


def test_user_error_has_no_traceback_from_the_shell(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "spatialfactors", "spicemix", str(tmp_path / "none.h5ad"), "-o", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "spatialfactors spicemix: error: input file not found" in result.stderr


def test_max_distance_is_reported(tmp_path, capsys):
    import squidpy as sq

    import spatialfactors as sf

    adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=80, n_genes=20)
    sq.gr.spatial_neighbors_delaunay(adata)
    src, out = tmp_path / "in.h5ad", tmp_path / "out.h5ad"
    adata.write_h5ad(src)
    argv = ["spicemix", str(src), "-o", str(out), "--n-factors", "3", "--max-iter", "1", "--max-distance", "1e9"]
    assert main(argv) == 0
    assert "--max-distance: edges of the input's graph `.obsp['spatial_connectivities']` longer than 1e+09" in (
        capsys.readouterr().out
    )
