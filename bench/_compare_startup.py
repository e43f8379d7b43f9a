"""bench/compare.py ``startup``: import and 1,000 deployments, each in a fresh interpreter."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from _compare_common import show, show_ratio

DEPLOYMENTS = 1_000
#: Run in a fresh interpreter: times the import and the build of 1,000 deployments
#: from its own start, then reads its peak RSS (VmHWM: getrusage's ru_maxrss would
#: carry this benchmark's own peak across fork and exec).
PROBE = """
import json, sys, time
began = time.perf_counter()
{imports}
imported = time.perf_counter()
{build}
built = time.perf_counter()
status = open('/proc/self/status').read().splitlines()
hwm = next(int(line.split()[1]) for line in status if line.startswith('VmHWM:'))
print(json.dumps({{"import_s": imported - began, "total_s": built - began, "rss_mb": hwm / 1024}}))
"""
ROUTELEDGER = (
    "from routeledger.adapters.engine.config import parse_config\n"
    "from routeledger.adapters.engine.engine import Engine",
    "engine = Engine.open('memory://', parse_config(sys.stdin.read()))",
)
LITELLM = (
    "from litellm import Router",
    "router = Router(model_list=json.loads(sys.stdin.read()))",
)


def _inputs() -> dict[str, str]:
    """The same 1,000 deployments (10 models) as RouteLedger TOML and a LiteLLM model list."""
    members = ", ".join(
        f'{{ credential = "c{i}", model = "m{i % 10}" }}' for i in range(DEPLOYMENTS)
    )
    creds = "\n".join(
        f'[credentials.c{i}]\nprovider = "openai"\nbase_url = "http://127.0.0.1:9/v1"'
        for i in range(DEPLOYMENTS)
    )
    models = "\n".join(f"[models.m{i}]" for i in range(10))
    toml = f"{creds}\n{models}\n[routes.chat]\n[[routes.chat.chain]]\nmembers = [{members}]\n"
    model_list = [
        {
            "model_name": "chat",
            "litellm_params": {
                "model": f"openai/m{i % 10}",
                "api_key": f"sk-{i}",
                "api_base": "http://127.0.0.1:9/v1",
            },
            "model_info": {"id": f"c{i}"},
        }
        for i in range(DEPLOYMENTS)
    ]
    return {"routeledger": toml, "litellm": json.dumps(model_list)}


def _probe(name: str, text: str) -> dict[str, float]:
    imports, build = ROUTELEDGER if name == "routeledger" else LITELLM
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(imports=imports, build=build)],
        input=text,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run(args: argparse.Namespace) -> None:
    inputs = _inputs()
    names = ["routeledger"] + ([] if args.routeledger_only else ["litellm"])
    samples: dict[str, dict[str, list[float]]] = {n: {} for n in names}
    for r in range(1 if args.quick else 3):
        for name in names[r % 2 :] + names[: r % 2]:
            for key, value in _probe(name, inputs[name]).items():
                samples[name].setdefault(key, []).append(value)
    units = {"import_s": "s", "total_s": "s", "rss_mb": "MB"}
    for name in names:
        for key, values in samples[name].items():
            show(f"compare.startup.{name}.{key}", values, units[key])
    if "litellm" in names:
        for key, label in (("import_s", "import"), ("total_s", "time"), ("rss_mb", "rss")):
            show_ratio(f"startup.{label}", samples["litellm"][key], samples["routeledger"][key])
