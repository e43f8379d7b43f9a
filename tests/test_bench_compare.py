"""G8: the benchmark harnesses run (smoke mode), so they cannot rot unnoticed.

No figure is checked for speed: only that each harness runs to the end and prints
the figures it names, with values a measurement can have. LiteLLM is not needed
(``--routeledger-only``): it lives in ``.venv-compare``, never in the test venv.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


def _figures(stdout: str) -> dict[str, float]:
    figures = {}
    for line in stdout.splitlines():
        if line.startswith("BENCH "):
            _, name, value, *_ = line.split()
            figures[name] = float(value)
    return figures


def _run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
        check=False,
    )


def test_compare_routeledger_side_prints_every_section() -> None:
    """bench/compare.py --quick --routeledger-only prints RouteLedger's figure of every
    section (decisions, requests in each mode, failover, start-up), all finite and > 0."""
    done = _run(str(BENCH / "compare.py"), "--quick", "--routeledger-only")
    assert done.returncode == 0, done.stderr
    figures = _figures(done.stdout)
    expected = [
        f"compare.decide.n{n}{c}.routeledger_us"
        for n in (4, 32, 256, 1024)
        for c in ("", ".cooled")
    ]
    for mode in ("c1.plain", "c1.stream", "c16.plain", "c64.stream"):
        what = "p50_us" if mode.startswith("c1.") else "us_per_request"
        for subject in ("floor", "memory", "sqlite", "serve"):
            expected.append(f"compare.request.{mode}.{subject}.{what}")
    expected += [
        "compare.failover.routeledger.calls_per_served",
        "compare.failover.routeledger.us_per_served",
    ]
    expected += [f"compare.startup.routeledger.{key}" for key in ("import_s", "total_s", "rss_mb")]
    missing = [name for name in expected if name not in figures]
    assert not missing, done.stdout
    assert all(math.isfinite(figures[n]) and figures[n] > 0 for n in expected), done.stdout
    assert figures["compare.failover.routeledger.calls_per_served"] >= 1
    assert not any(".ratio" in name for name in figures)  # no LiteLLM, no ratio


def test_compare_refuses_an_unknown_section() -> None:
    """An unknown --sections name is a usage error naming it, before anything runs."""
    done = _run(str(BENCH / "compare.py"), "--sections", "decide,nope")
    assert done.returncode == 2
    assert "nope" in done.stderr


@pytest.mark.parametrize(
    ("host", "allowed"),
    [("127.0.0.1", True), ("localhost", True), ("10.255.255.1", False), ("example.com", False)],
)
def test_offline_guard_allows_loopback_only(host: str, allowed: bool) -> None:
    """With bench/offline on PYTHONPATH (as compare.py runs every process), a connect to
    anything but loopback raises PermissionError before a packet leaves; loopback passes."""
    code = (
        "import socket, sys\n"
        "server = socket.create_server(('127.0.0.1', 0))\n"
        "port = server.getsockname()[1]\n"
        "try:\n"
        f"    socket.create_connection(({host!r}, port), timeout=2).close()\n"
        "except PermissionError as error:\n"
        "    print('refused', error)\n"
        "else:\n"
        "    print('connected')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(BENCH / "offline"))
    done = _run("-c", code, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("connected" if allowed else "refused"), done.stdout


def test_floors_print_each_floor_and_ratio() -> None:
    """bench/_floors.Floors prints floor.<kind> for each floor it measured and
    <name>_ratio = cost / floor for each registered figure."""
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(BENCH)!r})\n"
        "from _floors import Floors\n"
        "floors = Floors('attrs_event_us', 'sqlite_commit_us')\n"
        "floors.ratio('x.us', floors.value('attrs_event_us') * 3, 'attrs_event_us')\n"
        "floors.rate_ratio('y.eps', 10.0, 'sqlite_commit_us', per=1)\n"
        "floors.finish()\n"
    )
    done = _run("-c", code)
    assert done.returncode == 0, done.stderr
    figures = _figures(done.stdout)
    assert figures["floor.attrs_event_us"] > 0
    assert figures["floor.sqlite_commit_us"] > 0
    # The ratio is taken against the pooled floor (sampled again at finish), so near 3.
    assert figures["x.us_ratio"] > 0
    expected = 100_000 / figures["floor.sqlite_commit_us"]
    assert math.isclose(figures["y.eps_ratio"], expected, rel_tol=1e-2)
