"""A real workload of core decisions recorded in a store, shared by the projection and CLI tests.

Requests are routed by the routing deciders under :data:`POLICY`, fail and
succeed as a seeded script says, wait, exhaust; each request's budget hold
(``hold_id == request_id``) is placed first, then settled on success or
refunded on exhaustion; a few holds are left open. Everything goes through
:class:`~routeledger.adapters.engine.runtime.Runtime`, so the log is exactly what an
embedding gateway would record.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from typing import Final

from routeledger.adapters.engine.runtime import Runtime
from routeledger.adapters.store.eventstore import EventStore
from routeledger.core.budget import decide as budget
from routeledger.core.budget.values import AccountScope, Unit, Usage
from routeledger.core.fold import Folded
from routeledger.core.routing.commands import (
    Failed,
    RecordOutcome,
    RouteNext,
    StartRequest,
    Succeeded,
)
from routeledger.core.routing.decide import decide_next, decide_outcome, decide_start
from routeledger.core.routing.events import AttemptRouted, Degraded, FallbackExhausted, WaitDecided
from routeledger.core.routing.failures import FailureClass, Phase
from routeledger.core.routing.policy import (
    CredentialSpec,
    Member,
    ModelSpec,
    Policy,
    Route,
    Strategy,
    Target,
)

#: 2026-11-22T14:00:00Z in engine µs.
T0: Final = 1_795_356_000_000_000
ACCOUNT: Final = "acct-team"
SECRET: Final = "sk-live-abcdefghijklmnopqrstuvwxyz012345"

POLICY: Final = Policy(
    credentials=(
        CredentialSpec(id="openai-main", provider="openai"),
        CredentialSpec(id="openai-spare", provider="openai"),
        CredentialSpec(id="groq", provider="groq"),
    ),
    models=(
        ModelSpec(id="gpt-4.1"),
        ModelSpec(id="gpt-4.1-mini"),
        ModelSpec(id="gpt-oss-120b"),
    ),
    routes=(
        Route(
            alias="chat",
            chain=(
                Target(
                    strategy=Strategy.ROUND_ROBIN,
                    members=(
                        Member(credential="openai-main", model="gpt-4.1"),
                        Member(credential="openai-spare", model="gpt-4.1"),
                    ),
                ),
                Target(members=(Member(credential="openai-main", model="gpt-4.1-mini"),)),
            ),
            fallback=("cheap",),
        ),
        Route(
            alias="cheap",
            chain=(Target(members=(Member(credential="groq", model="gpt-oss-120b"),)),),
        ),
    ),
)

#: The same policy as TOML (what the policy loader reads).
POLICY_TOML: Final = """
[credentials.openai-main]
provider = "openai"

[credentials.openai-spare]
provider = "openai"

[credentials.groq]
provider = "groq"

[models."gpt-4.1"]
[models."gpt-4.1-mini"]
[models.gpt-oss-120b]

[routes.chat]
fallback = ["cheap"]

[[routes.chat.chain]]
strategy = "round_robin"
members = [
  { credential = "openai-main", model = "gpt-4.1" },
  { credential = "openai-spare", model = "gpt-4.1" },
]

[[routes.chat.chain]]
members = [{ credential = "openai-main", model = "gpt-4.1-mini" }]

[routes.cheap]
[[routes.cheap.chain]]
members = [{ credential = "groq", model = "gpt-oss-120b" }]
"""

#: A stricter policy for what-if: the chat route without its cheap fallback.
NO_FALLBACK_TOML: Final = POLICY_TOML.replace('fallback = ["cheap"]\n', "")

_FAILURES: Final = (
    FailureClass.RATE_LIMITED,
    FailureClass.PROVIDER_UNAVAILABLE,
    FailureClass.TIMEOUT_BEFORE_RESPONSE,
    FailureClass.QUOTA_EXHAUSTED,
)


class Clock:
    """A manual engine clock."""

    def __init__(self, now_us: int = T0) -> None:
        self.now_us = now_us

    def __call__(self) -> int:
        return self.now_us


def _zones(name: str) -> dt.tzinfo:
    return dt.UTC


def build(store: EventStore, *, requests: int = 30, seed: int = 7) -> dict[str, str]:
    """Record ``requests`` requests in ``store``; return request id -> how it ended.

    Endings: ``served``, ``exhausted``, ``open`` (the last ones: hold left
    open, attempt in flight).
    """
    rng = random.Random(seed)
    clock = Clock()
    runtime = Runtime(store, clock, Folded())
    runtime.run(
        lambda s, now: budget.decide_open_account(
            s.budget,
            budget.OpenAccount(
                command_id="open-1",
                account_id=ACCOUNT,
                scope=AccountScope.TEAM,
                unit=Unit.MICROS,
                limit=10_000_000,
            ),
            now_us=now,
            zones=_zones,
        ),
        lambda d: d.events,
    )
    endings: dict[str, str] = {}
    for index in range(requests):
        rid = f"req-{index:03d}"
        clock.now_us += rng.randrange(200_000, 3_000_000)
        runtime.run(
            lambda s, now, rid=rid: budget.decide_place_hold(
                s.budget,
                budget.PlaceHold(
                    hold_id=rid,
                    account_ids=(ACCOUNT,),
                    estimate=Usage(cost_micros=50_000),
                    ttl_us=600_000_000,
                ),
                now_us=now,
            ),
            lambda d: d.events,
        )
        command = StartRequest(
            request_id=rid, route="chat", caller_scope="team-a", seed=index, input_tokens=100
        )
        runtime.append(lambda s, now, c=command: decide_start(POLICY, s.routing, c, now_us=now))
        ending = "open" if index >= requests - 2 else _drive(runtime, clock, rng, rid)
        endings[rid] = ending
        if ending == "served":
            cost = rng.randrange(1_000, 80_000)
            runtime.run(
                lambda s, now, rid=rid, cost=cost: budget.decide_settle_hold(
                    s.budget,
                    budget.SettleHold(
                        command_id=f"settle-{rid}", hold_id=rid, usage=Usage(cost_micros=cost)
                    ),
                    now_us=now,
                ),
                lambda d: d.events,
            )
        elif ending == "exhausted":
            runtime.run(
                lambda s, now, rid=rid: budget.decide_refund_hold(
                    s.budget, budget.RefundHold(command_id=f"refund-{rid}", hold_id=rid), now_us=now
                ),
                lambda d: d.events,
            )
    return endings


def _drive(runtime: Runtime, clock: Clock, rng: random.Random, rid: str) -> str:
    for step in range(40):
        attempt_id = f"{rid}-a{step}"
        events = runtime.append(
            lambda s, now, a=attempt_id: (
                decide_next(
                    POLICY, s.routing, RouteNext(request_id=rid, attempt_id=a), now_us=now
                ).events
            )
        )
        routed = [e for e in events if isinstance(e, AttemptRouted)]
        last = routed[0] if routed else (events[-1] if events else None)
        if isinstance(last, FallbackExhausted):
            return "exhausted"
        if isinstance(last, WaitDecided):
            clock.now_us = max(clock.now_us, last.until_us)
            continue
        if not isinstance(last, AttemptRouted):
            return "degraded" if isinstance(last, Degraded) else "open"
        clock.now_us += rng.randrange(50_000, 900_000)
        roll = rng.random()
        outcome: Succeeded | Failed
        if roll < 0.55:
            outcome = Succeeded(input_tokens=100, output_tokens=rng.randrange(1, 500))
        else:
            failure = _FAILURES[rng.randrange(len(_FAILURES))]
            outcome = Failed(
                failure=failure,
                status=429 if failure is FailureClass.RATE_LIMITED else 503,
                detail=f"upstream said no; key {SECRET} was sent",
                hint_us=rng.choice((None, 2_000_000, 20_000_000, 9_000_000_000)),
                phase=Phase.BEFORE_RESPONSE,
            )
        runtime.append(
            lambda s, now, a=attempt_id, o=outcome: decide_outcome(
                POLICY,
                s.routing,
                RecordOutcome(request_id=rid, attempt_id=a, outcome=o),
                now_us=now,
            )
        )
        if isinstance(outcome, Succeeded):
            return "served"
    return "open"  # pragma: no cover - the attempt limit ends every request first


def records(store: EventStore) -> Iterator[object]:
    """Every recorded event (a convenience for assertions)."""
    return iter(store.read_all(0))
