"""Interleaved A/B of benchmark scripts: a base commit against this working tree.

Usage: ``.venv/bin/python bench/ab.py BASE_REF [--head REF] [--rounds N] [SCRIPT ...]``
(scripts by name without ``.py``; default ``route_decide engine``). With
``--head`` the head side is that commit, checked out like the base, so the
working tree may change while a long run goes on.

``BASE_REF`` is checked out in a temporary git worktree and made importable as
``routeledger`` through a tree of symlinks named as installed (``PYTHONPATH``
puts it ahead of this checkout's editable install). Each script of each tree
runs in its own process, in turn (base, head, base, head, ...), so both see
the same machine load; this machine's figures swing 2-10x between runs, so
only a ratio measured this way means anything. Prints, per figure::

    AB <name> base <median> [<min>-<max>] head <median> [<min>-<max>] ratio <head/base>

Scripts that need PostgreSQL are not supported here (run ``make bench`` for them).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "adapters", "projections")


def _figures(script: Path, cwd: Path, env: dict[str, str]) -> dict[str, float]:
    """Run one bench script; its ``BENCH <name> <value> <unit>`` lines as a dict."""
    out = subprocess.run(
        [sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True, check=True
    ).stdout
    figures = {}
    for line in out.splitlines():
        if line.startswith("BENCH "):
            _, name, value, *_ = line.split()
            figures[name] = float(value)
    return figures


def _base_tree(ref: str, into: Path) -> tuple[Path, dict[str, str]]:
    """Check ``ref`` out under ``into``; its root and the environment that imports it."""
    into.mkdir(parents=True, exist_ok=True)
    tree = into / "tree"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), ref],
        check=True,
        capture_output=True,
    )
    package = into / "path" / "routeledger"
    package.mkdir(parents=True)
    (package / "__init__.py").touch()
    for name in PACKAGES:
        (package / name).symlink_to(tree / name)
    return tree, {**os.environ, "PYTHONPATH": str(into / "path")}


def _report(samples: dict[tuple[str, str], list[float]]) -> None:
    for name in sorted({name for name, _ in samples}):
        base, head = samples.get((name, "base"), []), samples.get((name, "head"), [])
        if not base or not head:
            print(f"AB {name} missing on one side (base {len(base)}, head {len(head)} runs)")
            continue
        mb, mh = statistics.median(base), statistics.median(head)
        ratio = mh / mb if mb else float("nan")
        print(
            f"AB {name} base {mb:.2f} [{min(base):.2f}-{max(base):.2f}] "
            f"head {mh:.2f} [{min(head):.2f}-{max(head):.2f}] ratio {ratio:.2f}"
        )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base")
    parser.add_argument("--head", default=None, help="a commit instead of the working tree")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("scripts", nargs="*", default=["route_decide", "engine"])
    args = parser.parse_intermixed_args(argv)
    for name in args.scripts:
        if "postgres_url" in (ROOT / "bench" / f"{name}.py").read_text():
            parser.error(f"{name} needs PostgreSQL: run make bench for it")
    samples: dict[tuple[str, str], list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="routeledger-ab-") as tmp:
        tree, base_env = _base_tree(args.base, Path(tmp) / "base")
        head, head_env = ROOT, dict(os.environ)
        if args.head is not None:
            head, head_env = _base_tree(args.head, Path(tmp) / "head")
        try:
            for round_no in range(args.rounds):
                for name in args.scripts:
                    runs = (
                        ("base", tree / "bench" / f"{name}.py", tree, base_env),
                        ("head", head / "bench" / f"{name}.py", head, head_env),
                    )
                    for side, script, cwd, env in runs:
                        for figure, value in _figures(script, cwd, env).items():
                            samples[(figure, side)].append(value)
                print(f"round {round_no + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        finally:
            for made in {tree, head} - {ROOT}:
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(made)],
                    check=False,
                )
    _report(samples)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
