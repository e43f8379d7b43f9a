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

from routeledger.adapters.engine.lifecycle import (
    Commit,
    Decided,
    Item,
    Perform,
    RequestLifecycle,
    Sleep,
    decide_item,
)
from routeledger.adapters.engine.results import Degradation, Exhausted
from routeledger.core.budget import events as bev
from routeledger.core.budget import ledger
from routeledger.core.budget.group import HoldGroup
from routeledger.core.credentials import events as cev
from routeledger.core.credentials import lifecycle
from routeledger.core.events import Event
from routeledger.core.fold import Folded, Recorded
from routeledger.core.routing import events as rev
from routeledger.core.routing import state as routing
from routeledger.core.routing.commands import Failed, StartRequest, Succeeded
from routeledger.core.routing.policy import Policy
from routeledger.core.routing.steps import RouteWait
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
            evidence=evt.evidence,
            input_tokens=evt.input_tokens,
            output_tokens=evt.output_tokens,
            ttft_us=evt.ttft_us,
            duration_us=evt.duration_us,
            announced=evt.announced,
        )
    return Failed(
        failure=evt.failure,
        phase=evt.phase,
        delivered_chars=evt.delivered_chars,
        hint_us=evt.hint_us,
        status=evt.status,
        detail=evt.detail,
        billed=evt.billed,
        ttft_us=evt.ttft_us,
        duration_us=evt.duration_us,
        announced=evt.announced,
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
        if counts is not None and isinstance(evt, rev.RoutingEvent):
            _count_recorded(counts, evt)
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


def _count_recorded(counts: _Counts, evt: rev.RoutingEvent) -> None:
    """Count one recorded routing event of a request in scope."""
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


def _simulate(
    policy: Policy,
    received: list[rev.RequestReceived],
    world: _World,
    credential_events: list[Event],
    settled_cost: Mapping[str, int],
) -> tuple[dict[str, _Counts], dict[str, int], int]:
    """Re-decide each request in arrival order; its counts, its costs, the unobserved attempts."""
    shell = _Shell(policy, credential_events)
    counts: dict[str, _Counts] = {}
    costs: dict[str, int] = {}
    unobserved = 0
    for request in sorted(received, key=lambda r: r.at_us):
        tally = counts[request.request_id] = _Counts()
        seen = shell.run(request, world, tally)
        if tally.outcome == "unobserved":
            unobserved += 1
        elif seen is not None:
            costs[request.request_id] = settled_cost.get(seen.request_id, 0)
    return counts, costs, unobserved


class _Shell:
    """The request lifecycle's shell for a what-if run: commits in memory, the world answers.

    The same :class:`RequestLifecycle` and :func:`decide_item` as the engine
    decide every step; this shell folds their routing events into its own
    state instead of a store, answers each attempt from the recorded world, and
    sleeps by advancing engine time. Budgets are not modelled (no holds).
    """

    def __init__(self, policy: Policy, credential_events: list[Event]) -> None:
        self.policy = policy
        self.state = routing.initial(policy)
        self.holds = HoldGroup(ledger.initial(), [])
        self.folded = Folded()  # no credentials: a key failure decides nothing here
        self._credential_events = credential_events
        self._creds = lifecycle.initial()
        self._folded_creds = 0

    def usability(self, now_us: int) -> Mapping[str, CredentialUsability] | None:
        """The recorded credential lifecycle, folded up to ``now_us`` (``None``: not tracked)."""
        events = self._credential_events
        while self._folded_creds < len(events) and events[self._folded_creds].at_us <= now_us:
            self._creds = lifecycle.evolve(self._creds, events[self._folded_creds])
            self._folded_creds += 1
        return lifecycle.usability(self._creds, now_us) if events else None

    def commit(self, item: Item, now_us: int, tally: _Counts) -> Decided:
        """Decide ``item`` as the engine would and fold its routing events."""
        decided, routed, _ = decide_item(
            self.policy, self.state, self.holds, self.folded, item, now_us, self.usability(now_us)
        )
        for evt in routed:
            self.state = routing.evolve(self.state, evt)
        if isinstance(decided.step, RouteWait):
            tally.waits += 1
            tally.waited_us = decided.step.decided.waited_total_us
        return decided

    def run(
        self, request: rev.RequestReceived, world: _World, tally: _Counts
    ) -> _Observation | None:
        """Drive one request to its end; the observation that served it, if any."""
        life = RequestLifecycle(
            _start_of(request),
            hold=None,
            prices=lambda _model, _tokens_in, _tokens_out: 0,
            attempt_id=lambda rid, number: f"{rid}~whatif{number}",
        )
        now = request.at_us
        for _ in range(STEPS_PER_REQUEST_MAX):
            action = life.next_action()
            while isinstance(action, Commit):
                item = action.item
                action = life.committed(item, self.commit(item, now, tally)) or life.next_action()
            if isinstance(action, Sleep):
                now = max(now, action.until_us)
                life.wait_over()
            elif isinstance(action, Perform):
                tally.attempts += 1
                routed = action.routed
                seen = world.next((routed.credential_id, routed.upstream_model), now)
                if seen is None:
                    tally.outcome = "unobserved"
                    return None
                now += seen.latency_us
                life.report(seen.outcome)
                if isinstance(seen.outcome, Succeeded):
                    for item in life.leave(None, ()):
                        self.commit(item, now, tally)
                    tally.outcome = "served"
                    tally.tokens += seen.outcome.input_tokens + seen.outcome.output_tokens
                    return seen
            else:
                tally.outcome = _OUTCOMES.get(type(life.result), "unfinished")
                return None
        return None  # pragma: no cover - STEPS_PER_REQUEST_MAX bounds a runaway loop


#: What a finished lifecycle's result counts as.
_OUTCOMES: Final[Mapping[type, str]] = {Exhausted: "exhausted", Degradation: "degraded"}


def _start_of(request: rev.RequestReceived) -> StartRequest:
    """The command that starts ``request`` again, with its recorded parameters."""
    return StartRequest(
        request_id=request.request_id,
        route=request.route,
        caller_scope=request.caller_scope,
        backups=request.backups,
        model_owner=request.model_owner,
        seed=request.seed,
        stream=request.stream,
        input_tokens=request.input_tokens,
        deadline_us=request.deadline_us,
    )
