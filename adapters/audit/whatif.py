"""What-if replay: re-decide the recorded requests under another routing policy.

The log separates what adapters *observed* (``RequestReceived``,
``AttemptSucceeded``, ``AttemptFailed``) from what the core *decided*. A
what-if run keeps the observations as the model of the world and lets the
routing deciders decide again, under the new policy:

* every recorded request (``RequestReceived`` at or after ``since_us``) is
  started again at its recorded arrival time, with its recorded parameters;
* each attempt the new policy routes to a pair (c, m) at engine time ``t``
  gets **the next outcome recorded for that pair at or after t** (success or
  failure, with its class, phase, status, hint and tokens), arriving after
  the latency that recorded attempt had (its outcome time minus its routing
  time). When the log holds no outcome for that pair at or after ``t`` the
  attempt is ``unobserved``: the request stops there and is counted apart —
  the log cannot say what would have happened;
* waits advance engine time to the decided ``until_us``; the credential
  lifecycle (if the log tracks one) is the recorded one, folded up to ``t``.

Requests are re-decided one after the other in arrival order, each to its
end (concurrency between requests is not modelled; availability decisions
made for one request are seen by the next). Spend is counted in tokens of
successful attempts and in cost: an outcome reused from a recorded request
carries the cost that request's hold was settled with (``hold_id ==
request_id``), recorded spend is the settled cost of the requests in scope.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from typing import Final

import attrs

from routeledger.core.budget import events as bev
from routeledger.core.credentials import events as cev
from routeledger.core.credentials import lifecycle
from routeledger.core.events import Event
from routeledger.core.fold import Recorded
from routeledger.core.routing import events as rev
from routeledger.core.routing import state as routing
from routeledger.core.routing.decide import (
    Failed,
    RecordOutcome,
    RouteNext,
    StartRequest,
    Succeeded,
    decide_next,
    decide_outcome,
    decide_start,
)
from routeledger.core.routing.policy import Policy
from routeledger.core.usability import CredentialUsability

__all__ = [
    "CHANGES_LISTED_MAX",
    "STEPS_PER_REQUEST_MAX",
    "Changed",
    "Tally",
    "WhatIfReport",
    "what_if",
]

#: Decisions per re-decided request. Why: at most ATTEMPTS_MAX (64) attempts,
#: each with a wait before it, plus the end; 256 stops a runaway loop.
STEPS_PER_REQUEST_MAX: Final = 256
#: Changed requests listed in the report. Why: a summary for people; counts are exact.
CHANGES_LISTED_MAX: Final = 20


@attrs.frozen(kw_only=True)
class Tally:
    """Totals over the requests in scope."""

    requests: int = 0
    served: int = 0
    exhausted: int = 0
    degraded: int = 0
    unfinished: int = 0
    attempts: int = 0
    waits: int = 0
    waited_us: int = 0
    tokens: int = 0
    cost_micros: int = 0
    #: What-if only: attempts the log holds no outcome for.
    unobserved: int = 0

    def as_json(self) -> dict[str, int]:
        """A JSON-ready dict."""
        return attrs.asdict(self)


@attrs.frozen(kw_only=True)
class Changed:
    """A request whose outcome differs under the new policy."""

    request_id: str
    recorded: str
    what_if: str
    recorded_attempts: int
    what_if_attempts: int


@attrs.frozen(kw_only=True)
class WhatIfReport:
    """Recorded vs re-decided, side by side."""

    recorded: Tally
    what_if: Tally
    changed_count: int
    changed: tuple[Changed, ...]

    def as_json(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {
            "recorded": self.recorded.as_json(),
            "what_if": self.what_if.as_json(),
            "changed_count": self.changed_count,
            "changed": [attrs.asdict(c) for c in self.changed],
        }


@attrs.frozen
class _Observation:
    at_us: int
    latency_us: int
    outcome: Succeeded | Failed
    request_id: str


class _Counts:
    __slots__ = ("attempts", "outcome", "tokens", "waited_us", "waits")

    def __init__(self) -> None:
        self.attempts = 0
        self.waits = 0
        self.waited_us = 0
        self.tokens = 0
        self.outcome = "unfinished"


def _outcome_of(evt: rev.AttemptSucceeded | rev.AttemptFailed) -> Succeeded | Failed:
    if isinstance(evt, rev.AttemptSucceeded):
        return Succeeded(
            evidence=evt.evidence, input_tokens=evt.input_tokens, output_tokens=evt.output_tokens
        )
    return Failed(
        failure=evt.failure,
        phase=evt.phase,
        delivered_chars=evt.delivered_chars,
        hint_us=evt.hint_us,
        status=evt.status,
        detail=evt.detail,
        billed=evt.billed,
    )


def _tally(counts: Mapping[str, _Counts], costs: Mapping[str, int], unobserved: int) -> Tally:
    outcomes = [c.outcome for c in counts.values()]
    return Tally(
        requests=len(counts),
        served=outcomes.count("served"),
        exhausted=outcomes.count("exhausted"),
        degraded=outcomes.count("degraded"),
        unfinished=len(outcomes)
        - outcomes.count("served")
        - outcomes.count("exhausted")
        - outcomes.count("degraded"),
        attempts=sum(c.attempts for c in counts.values()),
        waits=sum(c.waits for c in counts.values()),
        waited_us=sum(c.waited_us for c in counts.values()),
        tokens=sum(c.tokens for c in counts.values()),
        cost_micros=sum(costs.values()),
        unobserved=unobserved,
    )


class _World:
    """The recorded outcomes per pair, in time order (the model of the world)."""

    def __init__(self, by_pair: dict[tuple[str, str], list[_Observation]]) -> None:
        self._by_pair = by_pair
        self._times = {pair: [o.at_us for o in obs] for pair, obs in by_pair.items()}

    def next(self, pair: tuple[str, str], at_us: int) -> _Observation | None:
        times = self._times.get(pair)
        if times is None:
            return None
        index = bisect.bisect_left(times, at_us)
        return self._by_pair[pair][index] if index < len(times) else None


def what_if(
    records: Iterable[Recorded], policy: Policy, *, since_us: int | None = None
) -> WhatIfReport:
    """Re-decide the recorded requests under ``policy`` (see the module docstring)."""
    received: list[rev.RequestReceived] = []
    recorded: dict[str, _Counts] = {}
    routed_at: dict[tuple[str, str], int] = {}
    by_pair: dict[tuple[str, str], list[_Observation]] = {}
    settled_cost: dict[str, int] = {}
    credential_events: list[Event] = []
    for record in records:
        evt = record.event
        if isinstance(evt, rev.RequestReceived):
            if since_us is None or evt.at_us >= since_us:
                received.append(evt)
                recorded[evt.request_id] = _Counts()
            continue
        if isinstance(evt, cev.CredentialEvent):
            credential_events.append(evt)
            continue
        if isinstance(evt, bev.HoldSettled | bev.LateUsageBooked):
            settled_cost[evt.hold_id] = settled_cost.get(evt.hold_id, 0) + evt.usage.cost_micros
            continue
        request_id = getattr(evt, "request_id", None)
        if isinstance(evt, rev.AttemptRouted):
            routed_at[(evt.request_id, evt.attempt_id)] = evt.at_us
        elif isinstance(evt, rev.AttemptSucceeded | rev.AttemptFailed):
            started = routed_at.get((evt.request_id, evt.attempt_id), evt.at_us)
            by_pair.setdefault((evt.credential_id, evt.upstream_model), []).append(
                _Observation(
                    evt.at_us, max(0, evt.at_us - started), _outcome_of(evt), evt.request_id
                )
            )
        counts = recorded.get(request_id) if isinstance(request_id, str) else None
        if counts is None or not isinstance(evt, rev.RoutingEvent):
            continue
        if isinstance(evt, rev.AttemptRouted):
            counts.attempts += 1
        elif isinstance(evt, rev.WaitDecided):
            counts.waits += 1
            counts.waited_us = evt.waited_total_us
        elif isinstance(evt, rev.AttemptSucceeded):
            counts.outcome = "served"
            counts.tokens += evt.input_tokens + evt.output_tokens
        elif isinstance(evt, rev.FallbackExhausted):
            counts.outcome = "exhausted"
        elif isinstance(evt, rev.Degraded):
            counts.outcome = "degraded"
    for observations in by_pair.values():
        observations.sort(key=lambda o: o.at_us)  # stable: log order within one instant
    world = _World(by_pair)
    simulated, costs, unobserved = _simulate(
        policy, received, world, credential_events, settled_cost
    )
    recorded_costs = {rid: settled_cost.get(rid, 0) for rid in recorded}
    changed: list[Changed] = []
    for request in received:
        before, after = recorded[request.request_id], simulated[request.request_id]
        if before.outcome != after.outcome:
            changed.append(
                Changed(
                    request_id=request.request_id,
                    recorded=before.outcome,
                    what_if=after.outcome,
                    recorded_attempts=before.attempts,
                    what_if_attempts=after.attempts,
                )
            )
    return WhatIfReport(
        recorded=_tally(recorded, recorded_costs, 0),
        what_if=_tally(simulated, costs, unobserved),
        changed_count=len(changed),
        changed=tuple(changed[:CHANGES_LISTED_MAX]),
    )


def _simulate(
    policy: Policy,
    received: list[rev.RequestReceived],
    world: _World,
    credential_events: list[Event],
    settled_cost: Mapping[str, int],
) -> tuple[dict[str, _Counts], dict[str, int], int]:
    state = routing.initial(policy)
    creds = lifecycle.initial()
    folded_creds = 0
    counts: dict[str, _Counts] = {}
    costs: dict[str, int] = {}
    unobserved = 0

    def usability(now_us: int) -> Mapping[str, CredentialUsability] | None:
        nonlocal creds, folded_creds
        while (
            folded_creds < len(credential_events)
            and credential_events[folded_creds].at_us <= now_us
        ):
            creds = lifecycle.evolve(creds, credential_events[folded_creds])
            folded_creds += 1
        return lifecycle.usability(creds, now_us) if credential_events else None

    for request in sorted(received, key=lambda r: r.at_us):
        rid = request.request_id
        tally = counts[rid] = _Counts()
        now = request.at_us
        for evt in decide_start(
            policy,
            state,
            StartRequest(
                request_id=rid,
                route=request.route,
                caller_scope=request.caller_scope,
                backups=request.backups,
                model_owner=request.model_owner,
                seed=request.seed,
                stream=request.stream,
                input_tokens=request.input_tokens,
                deadline_us=request.deadline_us,
            ),
            now_us=now,
        ):
            state = routing.evolve(state, evt)
        for step in range(STEPS_PER_REQUEST_MAX):
            attempt_id = f"{rid}~whatif{step}"
            decided = decide_next(
                policy,
                state,
                RouteNext(request_id=rid, attempt_id=attempt_id),
                now_us=now,
                credentials=usability(now),
            )
            for evt in decided:
                state = routing.evolve(state, evt)
            routed = [evt for evt in decided if isinstance(evt, rev.AttemptRouted)]
            last = routed[0] if routed else (decided[-1] if decided else None)
            if isinstance(last, rev.AttemptRouted):
                tally.attempts += 1
                seen = world.next((last.credential_id, last.upstream_model), now)
                if seen is None:
                    unobserved += 1
                    tally.outcome = "unobserved"
                    break
                now += seen.latency_us
                for evt in decide_outcome(
                    policy,
                    state,
                    RecordOutcome(request_id=rid, attempt_id=attempt_id, outcome=seen.outcome),
                    now_us=now,
                ):
                    state = routing.evolve(state, evt)
                if isinstance(seen.outcome, Succeeded):
                    tally.outcome = "served"
                    tally.tokens += seen.outcome.input_tokens + seen.outcome.output_tokens
                    costs[rid] = settled_cost.get(seen.request_id, 0)
                    break
            elif isinstance(last, rev.WaitDecided):
                tally.waits += 1
                tally.waited_us = last.waited_total_us
                now = max(now, last.until_us)
            elif isinstance(last, rev.FallbackExhausted):
                tally.outcome = "exhausted"
                break
            elif isinstance(last, rev.Degraded):
                tally.outcome = "degraded"
                break
            else:
                pending = state.requests[rid]
                if pending.terminal or pending.wait_until_us <= now:
                    break  # pragma: no cover - nothing left to decide
                now = pending.wait_until_us
    return counts, costs, unobserved
