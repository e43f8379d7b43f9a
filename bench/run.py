"""Run every benchmark in bench/ and print each figure as ``BENCH <name> <value> <unit>``.

The benchmarks that need no database run first, with nothing else running.
Then a throwaway PostgreSQL cluster (durable settings: fsync on) is started for
those that do (they call ``_common.postgres_url``); its URL is passed in
``ROUTELEDGER_BENCH_POSTGRES_URL`` and it is stopped afterwards. Why that order:
a cluster that has just started keeps a core busy now and then, which moved the
CPU-bound figures of the first benchmark by 1-3% on a 2-core machine. Usage:
``python bench/run.py [NAME ...]`` (names without .py). ``compare.py`` is not run here:
it needs LiteLLM, in its own environment (``make bench-compare``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCRIPT = ROOT / ".ci" / "postgres.sh"


def _needs_postgres(script: Path) -> bool:
    return "postgres_url" in script.read_text()


def _run(script: Path, env: dict[str, str], figures: list[str], failed: list[str]) -> None:
    print(f"== {script.name}", flush=True)
    began = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
    assert proc.stdout is not None
    figures.append(f"== {script.name}")  # floors repeat per script: the summary says whose
    for line in proc.stdout:
        print(line, end="", flush=True)
        if line.startswith("BENCH "):
            figures.append(line.rstrip("\n"))
    if proc.wait() != 0:
        failed.append(script.name)
    print(f"== {script.name} took {time.perf_counter() - began:.1f} s", flush=True)


def main(argv: list[str]) -> int:
    scripts = sorted(
        p
        for p in HERE.glob("*.py")
        if p.name not in ("run.py", "ab.py", "compare.py") and not p.name.startswith("_")
    )
    if argv:
        scripts = [p for p in scripts if p.stem in argv]
    figures: list[str] = []
    failed: list[str] = []
    for script in scripts:
        if not _needs_postgres(script):
            _run(script, dict(os.environ), figures, failed)
    with_postgres = [script for script in scripts if _needs_postgres(script)]
    if with_postgres:
        pg_dir = tempfile.mkdtemp(prefix="routeledger-bench-pg-")
        started = subprocess.run(
            ["bash", str(SCRIPT), "start", pg_dir], capture_output=True, text=True, check=False
        )
        if started.returncode != 0:
            print(started.stderr, file=sys.stderr)
            print(
                "bench: PostgreSQL could not start; PostgreSQL figures will be missing",
                file=sys.stderr,
            )
            env = dict(os.environ)
        else:
            env = dict(
                os.environ, ROUTELEDGER_BENCH_POSTGRES_URL=started.stdout.strip().splitlines()[-1]
            )
        try:
            for script in with_postgres:
                _run(script, env, figures, failed)
        finally:
            subprocess.run(["bash", str(SCRIPT), "stop", pg_dir], capture_output=True, check=False)
    print("\n== summary")
    for figure in figures:
        print(figure)
    if failed:
        print(f"bench: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
