"""SpiceMix says how its fit stopped: converged (bar and info log) or at max_iter (a warning)."""

import io

import numpy as np
import pytest
import scanpy as sc
import squidpy as sq

import spatialfactors as sf
from spatialfactors.models._progress import report_stop
from spatialfactors.models.hmrf import fit_hmrf


@pytest.fixture(scope="module")
def tissue():
    adata = sf.datasets.simulate_cortex(n_fovs=1, n_cells=120, n_genes=30, random_state=0)
    sq.gr.spatial_neighbors_delaunay(adata)
    return adata.X, adata.obsp["spatial_connectivities"]


@pytest.fixture
def verbosity():
    def set_to(level):
        sc.settings.verbosity = level

    before = sc.settings.verbosity
    set_to("warning")  # scanpy's default
    yield set_to
    sc.settings.verbosity = before


@pytest.fixture
def log():
    """scanpy's log, as text (its handler keeps the stream it was given, which capfd does not see)."""
    before = sc.settings.logfile
    sc.settings.logfile = stream = io.StringIO()
    yield stream
    sc.settings.logfile = before


def test_converged_fit_ends_its_bar_saying_so(tissue, capfd, verbosity, log):
    # At the default verbosity (warnings) the bar is what shows the outcome; no warning.
    res = fit_hmrf(*tissue, 4, max_iter=50, tol=1e-4, progress_bar=True)
    bar = capfd.readouterr().err
    assert res.n_iter < 50
    assert f"{res.n_iter}/{res.n_iter}" in bar  # a full bar, not 11/50
    assert "converged]" in bar and "not converged" not in bar
    assert log.getvalue() == ""


def test_converged_fit_logs_the_iterations_at_info(tissue, verbosity, log):
    verbosity("info")
    res = fit_hmrf(*tissue, 4, max_iter=50, tol=1e-4, progress_bar=True)
    assert f"SpiceMix converged after {res.n_iter} iterations (relative change " in log.getvalue()
    change = abs(np.diff(res.history["objective"].to_numpy()[-2:]))[0] / abs(res.history["objective"].iloc[-1])
    assert change <= 1e-4


def test_fit_at_max_iter_warns(tissue, capfd, verbosity, log):
    res = fit_hmrf(*tissue, 4, max_iter=3, tol=1e-4, progress_bar=True)
    assert res.n_iter == 3
    assert "WARNING: SpiceMix stopped at max_iter=3 without converging (relative change " in log.getvalue()
    bar = capfd.readouterr().err
    assert "3/3" in bar and "not converged]" in bar  # on the bar as well


def test_fixed_number_of_iterations_is_no_warning(tissue, verbosity, log):
    verbosity("info")
    fit_hmrf(*tissue, 4, max_iter=2, tol=None, progress_bar=True)
    assert "SpiceMix ran 2 iterations (max_iter=2, no convergence test)" in log.getvalue()
    assert "WARNING" not in log.getvalue()


def test_progress_changes_nothing_but_the_output(tissue, capfd, verbosity, log):
    verbosity("info")
    quiet = fit_hmrf(*tissue, 4, max_iter=3, tol=1e-4)
    # Engines called directly (e.g. the stability replicates) stay silent.
    assert capfd.readouterr().err == "" and log.getvalue() == ""
    shown = fit_hmrf(*tissue, 4, max_iter=3, tol=1e-4, progress_bar=True)
    np.testing.assert_array_equal(quiet.X, shown.X)
    np.testing.assert_array_equal(quiet.M, shown.M)


def test_verbosity_zero_hides_bar_and_message(tissue, capfd, verbosity, log):
    verbosity("error")
    fit_hmrf(*tissue, 4, max_iter=2, tol=1e-4, progress_bar=True)
    assert "SpiceMix" not in capfd.readouterr().err and log.getvalue() == ""


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"n_iter": 7, "tol": 1e-6, "change": 5e-7, "converged": True}, "converged after 7 iterations"),
        ({"n_iter": 200, "tol": 1e-6, "change": 3e-5, "converged": False}, "stopped at max_iter=200 without"),
        ({"n_iter": 0, "tol": 1e-6, "change": float("nan"), "converged": False}, "ran 0 iterations"),
    ],
)
def test_report_stop_messages(kwargs, expected):
    assert expected in report_stop("SpiceMix", max_iter=200, **kwargs)


def test_converged_bar_is_full_also_as_a_notebook_widget():
    from types import SimpleNamespace

    from tqdm import tqdm

    bar = tqdm(total=200, disable=True)
    bar.update(38)
    widget_bar = SimpleNamespace(max=200)  # tqdm.notebook keeps (text, bar, text) widgets in `container`
    bar.container = SimpleNamespace(children=(None, widget_bar, None))
    report_stop("SpiceMix", n_iter=38, max_iter=200, tol=1e-6, change=5e-7, converged=True, bar=bar)
    assert bar.total == 38 and widget_bar.max == 38  # closed at its total: not a red, interrupted bar
