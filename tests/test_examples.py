"""Every runnable example under docs/examples/integrations/ runs to completion, as a user would run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parents[1] / "docs" / "examples" / "integrations"
#: How long one example may take. Why: each starts a loopback fake provider and
#: makes a handful of requests; a minute means it hangs.
EXAMPLE_TIMEOUT_S = 120


def _examples() -> list[Path]:
    return sorted(EXAMPLES.glob("*.py"))


def test_the_examples_folder_is_not_empty() -> None:
    """The examples this suite executes exist (an empty folder would run nothing)."""
    assert _examples(), f"no examples in {EXAMPLES}"


@pytest.mark.parametrize("example", _examples(), ids=lambda path: path.stem)
def test_an_example_runs_to_completion(example: Path, tmp_path: Path) -> None:
    """The example exits 0 from a clean working directory (its own asserts hold)."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    done = subprocess.run(
        [sys.executable, str(example)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=EXAMPLE_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, f"{example.name} failed:\n{done.stdout}\n{done.stderr}"
