"""Plots and chained tools read results through ``sf.get``, not through private helpers of other layers (issue 18)."""

import ast
from pathlib import Path

import pytest

import spatialfactors

PACKAGE = Path(spatialfactors.__file__).parent


def _private_imports(
    path: Path,
    layers: tuple[str, ...],
    allowed: tuple[str, ...] = (),
    package: str | None = None,
    modules: bool = True,
) -> list[str]:
    """Every private name (or, with ``modules``, name from a private module) ``path`` imports from ``layers``."""
    if package is None:
        package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    imports = []  # (line, module, imported name)
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolve against the file's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            imports += [(node.lineno, module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            imports += [(node.lineno, alias.name, "") for alias in node.names]
    found = []
    for line, module, name in sorted(imports):
        parts = module.split(".")
        if len(parts) < 2 or parts[0] != "spatialfactors" or parts[1] not in layers or module in allowed:
            continue
        if (modules and any(p.startswith("_") for p in parts[2:])) or name.startswith("_"):
            found.append(f"{path.name}:{line}: from {module} import {name}")
    return found


@pytest.mark.parametrize("path", sorted((PACKAGE / "pl").glob("*.py")), ids=lambda p: p.name)
def test_plots_import_nothing_private_from_tl_io_or_models(path):
    assert _private_imports(path, ("tl", "io", "models")) == []


@pytest.mark.parametrize("path", sorted((PACKAGE / "tl").glob("*.py")), ids=lambda p: p.name)
def test_tools_import_no_private_helper_of_a_sibling_tool_or_io(path):
    # `tl._record` is the tools' own record helper; everything else they share lives in `sf.get`.
    assert _private_imports(path, ("tl",), allowed=("spatialfactors.tl._record",), modules=False) == []
    assert _private_imports(path, ("io",)) == []


def test_the_check_finds_private_imports(tmp_path):
    fake = tmp_path / "_fake.py"
    fake.write_text(
        "from spatialfactors.tl._pattern_genes import pattern_genes\n"
        "from spatialfactors.io import _volume\n"
        "from ..models.genes import _helper\n"
        "from spatialfactors.get import _select_factors\n"
        "from spatialfactors.io import to_volume\n"
        "import spatialfactors.models._operator\n"
        "def f():\n    from spatialfactors.tl import _x\n"
    )
    found = _private_imports(fake, ("tl", "io", "models"), package="spatialfactors.pl")
    assert [line.split(": ", 1)[1] for line in found] == [
        "from spatialfactors.tl._pattern_genes import pattern_genes",
        "from spatialfactors.io import _volume",
        "from spatialfactors.models.genes import _helper",
        "from spatialfactors.models._operator import ",
        "from spatialfactors.tl import _x",
    ]
