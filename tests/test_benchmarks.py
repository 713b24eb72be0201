"""The benchmark scripts are not run by the tests (they take minutes to hours), but they must compile.

Compiling with warnings as errors catches what would otherwise only fail when a benchmark is run:
a literal called like a function (a missing ``+`` between two parts of a string, which once broke
``benchmarks/spicemix_speed.py`` at its first line of output), invalid escapes, ``is`` with a literal.
"""

import warnings
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).parents[1] / "benchmarks").glob("*.py"))


def test_benchmarks_are_found():
    assert len(SCRIPTS) >= 10


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_benchmark_compiles_without_warnings(script):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compile(script.read_text(encoding="utf-8"), str(script), "exec")


def test_a_called_literal_is_caught():
    # The check above must fail on the bug it exists for.
    with warnings.catch_warnings(), pytest.raises(SyntaxError, match="not callable"):
        warnings.simplefilter("error")
        compile('x = ["a " ("b")]', "bad.py", "exec")
