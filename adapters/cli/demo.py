"""The demo: a realistic mixed workload through the engine, against the fake provider.

``make demo`` / ``routeledger demo`` starts the fault-injecting fake provider on
loopback, opens the engine on the embedded SQLite store (``./routeledger.db``
unless ``--store`` says otherwise), and runs requests over several routes:
a round-robin pool whose primary flaps, a stream that is cut mid-way and
continued on a prefill-capable fallback, a rate-limited route that falls back,
and budgets small enough that some requests are refused. It prints what
happened and the command to audit any request from the log.
"""

from __future__ import annotations

import asyncio
import collections
import secrets as _secrets
from collections.abc import Callable
from typing import Final

from routeledger.adapters.engine.clock import SystemClock
from routeledger.adapters.engine.config import parse_config
from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.engine.results import BudgetRejected, Degradation, Exhausted, Served
from routeledger.adapters.http.executor import Completion, Executor
from routeledger.adapters.testing.fake_provider import FakeProvider
from routeledger.core.credentials.secrets import InMemorySecretStore
from routeledger.core.routing.events import AttemptRouted, Continuation

__all__ = ["run_demo"]

#: Requests the demo sends. Why: enough for every fault to show, about 5 s.
DEMO_REQUESTS: Final = 36
#: Requests in flight at once.
DEMO_CONCURRENCY: Final = 6
#: Delay between request starts, in seconds, so the flapping primary recovers mid-run.
DEMO_SPACING_S: Final = 0.04

SCRIPTS: Final = {
    "gpt-main": {"steps": ["ok"], "down": [0.0, 0.4]},
    "gpt-mini": "ok",
    "cut-model": "cut:3",
    "oss-120b": "ok",
    "limited": "rate_limited:1",
}

CONFIG: Final = """
[engine]
installation_id = "demo"

[credentials.openai-main]
provider = "openai"
base_url = "{base_url}"
[credentials.openai-backup]
provider = "openai"
base_url = "{base_url}"
[credentials.groq]
provider = "groq"
base_url = "{base_url}"

[models.gpt-main]
input_micros_per_mtok = 2_000_000
output_micros_per_mtok = 8_000_000
max_output_tokens = 256
[models.gpt-mini]
input_micros_per_mtok = 400_000
output_micros_per_mtok = 1_600_000
max_output_tokens = 256
[models.cut-model]
input_micros_per_mtok = 2_000_000
output_micros_per_mtok = 8_000_000
max_output_tokens = 256
[models.oss-120b]
prefill = true
input_micros_per_mtok = 150_000
output_micros_per_mtok = 600_000
max_output_tokens = 256
[models.limited]
input_micros_per_mtok = 2_000_000
output_micros_per_mtok = 8_000_000
max_output_tokens = 256

[routes.chat]
fallback = ["cheap"]
[[routes.chat.chain]]
strategy = "round_robin"
members = [
  {{ credential = "openai-main", model = "gpt-main" }},
  {{ credential = "openai-backup", model = "gpt-main" }},
]
[[routes.chat.chain]]
members = [{{ credential = "openai-main", model = "gpt-mini" }}]

[routes.stream]
[[routes.stream.chain]]
members = [{{ credential = "openai-main", model = "cut-model" }}]
[[routes.stream.chain]]
members = [{{ credential = "groq", model = "oss-120b" }}]

[routes.limited]
fallback = ["cheap"]
[[routes.limited.chain]]
members = [{{ credential = "openai-backup", model = "limited" }}]

[routes.cheap]
[[routes.cheap.chain]]
members = [{{ credential = "groq", model = "oss-120b" }}]

[failures.provider_unavailable]
scope = "pair"
action = "cooldown"
base_us = 500_000
factor = 2
max_us = 2_000_000

[hints]
min_us = 200_000
max_us = 5_000_000

[limits]
attempts_max = 5
wait_total_us_max = 2_000_000

[timeouts]
connect_us = 1_000_000
first_token_us = 2_000_000
idle_us = 1_000_000
total_us = 10_000_000

[accounts.team-a]
scope = "team"
limit = 100_000_000
[accounts.team-b]
scope = "team"
limit = 1_100
"""

#: (route, team account) per request, cycled.
MIX: Final = (
    ("chat", "team-a"),
    ("stream", "team-a"),
    ("chat", "team-b"),
    ("limited", "team-a"),
    ("chat", "team-a"),
    ("cheap", "team-b"),
)


def _describe(done: Completion) -> str:
    result = done.result
    if isinstance(result, Served):
        return f"served by {result.upstream_model} on {result.credential_id}"
    if isinstance(result, Exhausted):
        return "exhausted"
    if isinstance(result, Degradation):
        return f"degraded ({result.reason})"
    if isinstance(result, BudgetRejected):
        return f"budget rejected ({result.rejection.account_id})"
    return "unknown"  # pragma: no cover


async def _workload(engine: Engine, keys: InMemorySecretStore, run: str) -> list[Completion]:
    executor = Executor(engine, secrets=keys)
    gate = asyncio.Semaphore(DEMO_CONCURRENCY)

    async def one(n: int) -> Completion:
        route, team = MIX[n % len(MIX)]
        await asyncio.sleep(n * DEMO_SPACING_S)
        async with gate:
            return await executor.chat(
                {
                    "messages": [{"role": "user", "content": f"Question {n}: say hello."}],
                    "max_tokens": 128,
                },
                route=route,
                caller_scope=f"user:{n % 4}",
                accounts=(team,),
                request_id=f"demo-{run}-{n:03d}",
            )

    try:
        return list(await asyncio.gather(*(one(n) for n in range(DEMO_REQUESTS))))
    finally:
        await executor.aclose()


def run_demo(store_url: str | None, *, echo: Callable[[str], None] = print) -> None:
    """Run the demo workload against ``store_url`` and print a summary."""
    run = _secrets.token_hex(3)
    keys = InMemorySecretStore(
        {
            "openai-main": "sk-demo-main-" + _secrets.token_hex(12),
            "openai-backup": "sk-demo-backup-" + _secrets.token_hex(12),
            "groq": "gsk-demo-" + _secrets.token_hex(12),
        }
    )
    with FakeProvider(SCRIPTS) as fake:
        config = parse_config(CONFIG.format(base_url=fake.base_url), source="demo")
        with Engine.open(store_url, config, clock=SystemClock()) as engine:
            done = asyncio.run(_workload(engine, keys, run))
            holds = engine.state.budget.holds
            statuses = collections.Counter(
                holds[d.request_id].status.value for d in done if d.request_id in holds
            )
            outcomes = collections.Counter(_describe(d) for d in done)
            attempts = collections.Counter(d.attempts for d in done)
            echo(f"RouteLedger demo (run {run}) on {engine.store.url.masked}")
            echo(f"  requests: {len(done)}, provider saw {len(fake.attempts())} attempts")
            for what, count in sorted(outcomes.items()):
                echo(f"  {count:4d}  {what}")
            echo(
                "  attempts per request: "
                + ", ".join(f"{k}: {v}" for k, v in sorted(attempts.items()))
            )
            echo("  holds: " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
            routed = [
                r.event for r in engine.store.read_all() if isinstance(r.event, AttemptRouted)
            ]
            continued = sum(1 for e in routed if e.continuation is Continuation.CONTINUE)
            echo(
                f"  after a cut stream: {continued} continued on a prefill model, "
                f"{sum(d.restarts for d in done)} restarted cleanly"
            )
            echo(
                f"  log: {engine.store.max_position()} events; conflicts retried: {engine.runtime.conflicts}"
            )
            sample = next((d for d in done if d.attempts > 1), done[0])
            echo(
                f"audit a request:  routeledger audit {sample.request_id} --store {engine.store.url.masked}"
            )
