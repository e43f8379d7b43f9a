"""Shared by the sections of bench/compare.py: versions, and medians/ranges of rounds."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import subprocess
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def header(routeledger_only: bool) -> None:
    """Print what is compared: versions, commit, interpreter, load."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    print(f"# routeledger {_version('routeledger')} at {commit or '?'}", flush=True)
    if not routeledger_only:
        print(f"# litellm {_version('litellm')}", flush=True)
    print(f"# httpx {_version('httpx')}, Python {platform.python_version()}", flush=True)
    print(f"# cores {os.cpu_count()}, load average at the start {os.getloadavg()}", flush=True)


def spread(values: Sequence[float]) -> str:
    """``[min-max, n rounds]`` of a figure's rounds."""
    return f"[{min(values):.3g}-{max(values):.3g}, {len(values)} rounds]"


def show(name: str, values: Sequence[float], unit: str) -> float:
    """Print the median of ``values`` (one per round) with its range; the median."""
    value = statistics.median(values)
    print(f"BENCH {name} {value:.3f} {unit} {spread(values)}", flush=True)
    return value


def show_ratio(name: str, litellm: Sequence[float], ours: Sequence[float]) -> float:
    """``BENCH compare.<name>.ratio``: LiteLLM's cost over RouteLedger's, per round."""
    per_round = [a / b if b > 0 else float("inf") for a, b in zip(litellm, ours, strict=True)]
    return show(f"compare.{name}.ratio", per_round, "x")
