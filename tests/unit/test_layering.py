"""The package's layers import downwards only: the artifact schemas (and the file layout they carry) know nothing of
the I/O that writes them, the runners nothing of the command dispatcher, the back ends nothing of the verbs. Read from
the source's import statements (module level and inside functions alike)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import caprl_kit

ROOT = Path(caprl_kit.__file__).parent

#: package (or module) -> the caprl_kit packages and modules it must never import
FORBIDDEN = {
    "schemas": ["caprl_kit.io", "caprl_kit.runners", "caprl_kit.backends", "caprl_kit.commands", "caprl_kit.cli"],
    "runners": ["caprl_kit.commands", "caprl_kit.cli", "caprl_kit.annotate", "caprl_kit.curate",
                "caprl_kit.evaluate", "caprl_kit.pairs", "caprl_kit.train"],
    "backends": ["caprl_kit.commands", "caprl_kit.cli", "caprl_kit.annotate", "caprl_kit.curate",
                 "caprl_kit.evaluate", "caprl_kit.pairs", "caprl_kit.train", "caprl_kit.runners"],
    "io": ["caprl_kit.commands", "caprl_kit.cli", "caprl_kit.runners", "caprl_kit.annotate", "caprl_kit.curate",
           "caprl_kit.evaluate", "caprl_kit.pairs", "caprl_kit.train"],
}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def violations(package: str, forbidden: list[str]) -> list[str]:
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in sorted(imports_of(path)):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                out.append(f"{path.relative_to(ROOT.parent)} imports {name}")
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_layer_does_not_import_the_layers_above_it(package: str) -> None:
    assert not violations(package, FORBIDDEN[package])


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from caprl_kit.io.rundir import RunDir\n    import caprl_kit.commands\n")
    assert imports_of(module) >= {"caprl_kit.io.rundir", "caprl_kit.io.rundir.RunDir", "caprl_kit.commands"}
