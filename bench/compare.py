"""G8: RouteLedger side by side with LiteLLM, as ratios measured in one run.

``make bench-compare`` runs this in its own virtual environment (``.venv-compare``:
LiteLLM pinned, RouteLedger installed editable), offline: ``LITELLM_LOCAL_MODEL_COST_MAP``
is set and every process of the run loads ``bench/offline/sitecustomize.py``
(connects and look-ups to anything but loopback raise). Every section alternates
its subjects round by round, so both see the same load; each ratio is LiteLLM's
cost over RouteLedger's, computed per round, printed as the median of the rounds
with their range:

* ``decide`` - one routing decision at 4/32/256/1024 deployments, all ready and half
  cooled down: LiteLLM ``Router.get_available_deployment`` (simple-shuffle and
  latency-based-routing) against RouteLedger's ``decide_next`` (weighted pick, the
  counterpart of a shuffle) on a started request, as ``bench/route_decide.py``;
* ``request`` - the time a request adds over a bare httpx call to the same loopback
  upstream (the fake provider in its own process), sequential (p50) and at 16 and 64
  in flight (time per request from throughput), streamed and not: LiteLLM
  ``Router.acompletion`` against the RouteLedger ``Executor`` on ``memory://`` and
  SQLite, and ``routeledger serve`` (its own process, SQLite, one worker);
* ``failover`` - two deployments, one answering 429 with ``Retry-After``: upstream
  calls and time per served request;
* ``startup`` - a fresh interpreter importing each and building 1,000 deployments:
  import time, import + build time, peak RSS.

Usage: ``python bench/compare.py [--quick] [--routeledger-only] [--sections a,b]``.
``--routeledger-only`` (no LiteLLM needed) runs RouteLedger's side and the floors:
``tests/test_bench_compare.py`` runs it so the harness cannot rot.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
OFFLINE = HERE / "offline"
sys.path.insert(0, str(HERE))


def _guard() -> None:
    """Re-run this script with the loopback guard and the offline cost map, unless on."""
    if os.environ.get("ROUTELEDGER_COMPARE_GUARDED") == "1":
        import sitecustomize

        if getattr(sitecustomize, "LOOPBACK_ONLY", False):
            return
        raise SystemExit("bench/compare.py: the loopback guard did not load")
    path = os.environ.get("PYTHONPATH")
    env = dict(
        os.environ,
        PYTHONPATH=str(OFFLINE) + (os.pathsep + path if path else ""),
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        ROUTELEDGER_COMPARE_GUARDED="1",
        PYTHONHASHSEED=os.environ.get("PYTHONHASHSEED", "0"),
    )
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


SECTIONS = ("decide", "request", "failover", "startup")


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1-2 small rounds")
    parser.add_argument(
        "--routeledger-only", action="store_true", help="RouteLedger and floors only"
    )
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated")
    args = parser.parse_args(argv)
    args.sections = [s for s in args.sections.split(",") if s]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; known: {', '.join(SECTIONS)}")
    return args


def main(argv: list[str]) -> int:
    args = _arguments(argv)
    _guard()
    from _compare_common import header

    header(args.routeledger_only)
    runners: dict[str, Callable[[argparse.Namespace], None]] = {}
    if "decide" in args.sections:
        from _compare_decide import run as run_decide

        runners["decide"] = run_decide
    if "request" in args.sections:
        from _compare_request import run as run_request

        runners["request"] = lambda a: asyncio.run(run_request(a))
    if "failover" in args.sections:
        from _compare_request import run_failover

        runners["failover"] = lambda a: asyncio.run(run_failover(a))
    if "startup" in args.sections:
        from _compare_startup import run as run_startup

        runners["startup"] = run_startup
    for name, runner in runners.items():
        print(f"== compare.{name}", flush=True)
        runner(args)
    print(f"# load average at the end: {os.getloadavg()}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
