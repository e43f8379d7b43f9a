"""Layout: the import graph runs core <- projections <- adapters, and functions stay short."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "projections", "adapters")
#: What each top-level package may import of ours (G1: no arrow back).
ALLOWED = {
    "core": {"core"},
    "projections": {"core", "projections"},
    "adapters": {"core", "projections", "adapters"},
}
#: Longest production function, in lines from ``def`` to its last line. Why:
#: a function a reader can hold in one screen (TigerBeetle's 70-line limit).
FUNCTION_LINES_MAX = 70


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _dotted(path: Path) -> list[str]:
    """The path's package as installed (``routeledger.core.routing`` for core/routing/x.py)."""
    return ["routeledger", *path.relative_to(ROOT).parent.parts]


def imported_packages(path: Path) -> set[str]:
    """The top-level packages of ours that ``path`` imports, anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _dotted(path)[: len(_dotted(path)) - node.level + 1]
                names = [".".join([*base, *([node.module] if node.module else [])])]
            else:
                names = [node.module or ""]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "routeledger" and len(parts) > 1:
                found.add(parts[1])
            elif parts[0] in PACKAGES:
                found.add(parts[0])
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_runs_back_up_the_graph(package: str) -> None:
    """G1: core imports only itself, projections only core, adapters anything of ours."""
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) - ALLOWED[package])
        for path in _modules(package)
        if imported_packages(path) - ALLOWED[package]
    }
    assert wrong == {}


def test_the_checker_sees_relative_and_function_local_imports(tmp_path: Path) -> None:
    """The import parser resolves relative imports and finds imports inside functions."""
    module = ROOT / "core" / "routing" / "decide.py"
    assert "core" in imported_packages(module)
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from routeledger.adapters.store import open_store\n")
    assert imported_packages(probe) == {"adapters"}


def long_functions(paths: list[Path]) -> list[str]:
    """Every function longer than :data:`FUNCTION_LINES_MAX` lines, as ``path:line name n``."""
    out = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > FUNCTION_LINES_MAX:
                    out.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} {lines}")
    return out


def test_no_production_function_is_over_the_line_cap() -> None:
    """G1: no function in core/, projections/ or adapters/ is over 70 lines."""
    assert long_functions([p for package in PACKAGES for p in _modules(package)]) == []
