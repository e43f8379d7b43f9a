"""Packaging: the wheel holds routeledger/... and nothing else, and every source file."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_holds_only_the_routeledger_package_and_every_module(tmp_path: Path) -> None:
    """pip wheel . puts core/adapters/projections under routeledger/ and ships every .py file."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("routeledger-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    outside = [n for n in names if not n.startswith(("routeledger/", "routeledger-"))]
    assert outside == []
    assert not any(n.startswith(("routeledger/tests", "routeledger/bench")) for n in names)
    expected = {
        f"routeledger/{path.relative_to(ROOT).as_posix()}"
        for folder in ("core", "adapters", "projections")
        for path in (ROOT / folder).rglob("*")
        if path.suffix in {".py", ".typed"} and "__pycache__" not in path.parts
    }
    missing = sorted(expected - set(names))
    assert missing == [], (
        f"modules missing from the wheel (list the package in pyproject): {missing}"
    )
    assert not any(n.startswith("routeledger/__init__") for n in names)  # a namespace package
