"""Small helpers shared by the benchmark scripts."""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

_COUNTER = itertools.count(1)

#: The chat body every loopback benchmark sends (the upstream answers 9 words).
CHAT_BODY = {"messages": [{"role": "user", "content": "Say something."}], "max_tokens": 64}

#: One route ``chat`` on one credential ``a`` (model ``m``) at ``{base}``, one roomy account.
ONE_ROUTE_CONFIG = """
[credentials.a]
provider = "openai"
base_url = "{base}"
[models.m]
input_micros_per_mtok = 1_000_000
output_micros_per_mtok = 2_000_000
[routes.chat]
[[routes.chat.chain]]
members = [{{ credential = "a", model = "m" }}]
[accounts.team]
scope = "team"
limit = 1_000_000_000_000
"""


def fake_upstream(
    key_scripts: dict[str, object] | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """The fake provider in a child process (stopped when its stdin closes); its base URL.

    Model ``m`` answers ``ok``; ``key_scripts`` (JSON forms, docs/fake-provider.md)
    script the answers per API key.
    """
    code = (
        "import json, sys\n"
        "from routeledger.adapters.testing.fake_provider import FakeProvider\n"
        "fake = FakeProvider({'m': 'ok'}, key_scripts=json.loads(sys.argv[1])).start()\n"
        "print(fake.base_url, flush=True)\n"
        "sys.stdin.read()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(key_scripts or {})],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None
    return child, child.stdout.readline().decode().strip()


def figure(name: str, value: float, unit: str) -> None:
    """Print one figure in the form ``make bench`` collects."""
    print(f"BENCH {name} {value:.3f} {unit}", flush=True)


def per_call_us(fn: Callable[[], object], *, calls: int, repeats: int = 5) -> float:
    """Median over ``repeats`` runs of the mean time per call, in microseconds."""
    samples = []
    for _ in range(repeats):
        began = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter_ns() - began) / calls / 1_000)
    return statistics.median(samples)


def postgres_url() -> str | None:
    """A fresh database on the throwaway PostgreSQL that bench/run.py started, if any.

    Each call creates a new database, so benchmarks never read each other's logs.
    """
    admin = os.environ.get("ROUTELEDGER_BENCH_POSTGRES_URL")
    if admin is None:
        return None
    import psycopg

    name = f"bench_{os.getpid()}_{next(_COUNTER)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(urlsplit(admin)._replace(path=f"/{name}"))
