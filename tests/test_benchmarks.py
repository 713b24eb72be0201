"""The benchmark scripts are not run by the tests (they take minutes to hours), but they must compile.

Compiling with warnings as errors catches what would otherwise only fail when a benchmark is run:
a literal called like a function (a missing ``+`` between two parts of a string, which once broke
``benchmarks/spicemix_speed.py`` at its first line of output), invalid escapes, ``is`` with a literal.
"""

import types
import warnings
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).parents[1] / "benchmarks").glob("*.py"))


def _compile_strict(source: str, name: str) -> types.CodeType:
    """Compile ``source`` with every compiler warning raised as an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return compile(source, name, "exec")


def test_benchmarks_are_found():
    assert len(SCRIPTS) >= 10


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_benchmark_compiles_without_warnings(script):
    code = _compile_strict(script.read_text(encoding="utf-8"), str(script))
    assert isinstance(code, types.CodeType)
    assert "main" in code.co_names  # every benchmark defines and calls main()


def test_a_called_literal_is_caught():
    # The check above must fail on the bug it exists for.
    with pytest.raises(SyntaxError, match="not callable"):
        _compile_strict('x = ["a " ("b")]', "bad.py")
