"""The module layering of DESIGN.md section 2: a module imports only from layers below it.

Every import of a ``cyclad`` module anywhere in a module's source (including imports inside
functions) is checked against the table below, which mirrors the design's diagram.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "python" / "cyclad"

# Top to bottom, as in DESIGN.md section 2; the C++ extension _core sits below everything.
LAYERS = [
    ["cli"],
    ["experiment", "distributed", "flower"],
    ["train"],
    ["protocol"],
    ["attacks", "torch", "bench"],
    ["aggregators", "coding", "compression"],
    ["data", "models", "_validation", "_random"],
]
RANK = {name: len(LAYERS) - i for i, layer in enumerate(LAYERS) for name in layer}
RANK["_core"] = 0


def _modules() -> list[str]:
    """Top-level module names of the package (a subpackage counts as one module)."""
    names = [p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"]
    names += [p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()]
    return sorted(names)


def _sources(module: str) -> list[Path]:
    path = PACKAGE / module
    return sorted(path.rglob("*.py")) if path.is_dir() else [PACKAGE / f"{module}.py"]


def _imported(path: Path) -> set[str]:
    """The top-level cyclad modules that ``path`` imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "cyclad" and len(parts) > 1:
                    found.add(parts[1])
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (cyclad uses absolute imports)"
            parts = (node.module or "").split(".")
            if parts[0] != "cyclad":
                continue
            if len(parts) > 1:
                found.add(parts[1])
            else:  # from cyclad import aggregators, coding
                found.update(alias.name for alias in node.names)
    return found


def test_every_module_has_a_layer() -> None:
    missing = [m for m in _modules() if m not in RANK]
    assert not missing, f"modules not in DESIGN.md's layer table: {missing}"


@pytest.mark.parametrize("module", _modules())
def test_imports_only_from_layers_below(module) -> None:
    rank = RANK[module]
    for path in _sources(module):
        for dep in sorted(_imported(path) - {module}):
            assert dep in RANK, f"{path.name} imports unknown cyclad module {dep!r}"
            assert RANK[dep] < rank, (
                f"{path.relative_to(PACKAGE)} (layer of {module!r}) imports {dep!r}, which is "
                "not in a layer below it (DESIGN.md section 2)"
            )


def test_the_check_sees_imports() -> None:
    # experiment sits on train, cli on experiment; the table would reject the reverse
    assert {"train"} <= _imported(PACKAGE / "experiment.py")
    assert {"experiment", "train", "bench"} <= _imported(PACKAGE / "cli.py")
    assert _imported(PACKAGE / "models.py") == set()
    assert RANK["experiment"] > RANK["train"] > RANK["aggregators"] > RANK["models"]
