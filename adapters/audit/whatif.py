"""What-if replay: re-decide the recorded requests under another configuration.

The log separates what adapters *observed* (``RequestReceived``,
``AttemptSucceeded``, ``AttemptFailed``), what operators and the configuration
*ordered* and what the core *decided*. A what-if run keeps the observations and
the orders, and lets the deciders decide everything again under the new
configuration (its routing policy and its budget accounts), in one in-memory
state, in log order (``adapters/audit/whatif_log.py`` sorts the log):

* **Requests** are started again at their recorded log position and time, with
  their recorded parameters and their recorded hold (accounts, estimate, TTL),
  through the engine's own :class:`RequestLifecycle` and :func:`decide_item`:
  the entry places the hold (or the budget refuses it: ``budget_rejected``),
  each step is decided, each outcome recorded, the hold settled or refunded at
  exit through the engine's settlement sink (L11).
* **While a request's decisions are the recorded ones** it *follows its
  record*: each decision is taken at the log position and time the engine took
  it, each attempt gets its own recorded outcome at its recorded position, the
  hold is resolved with the recorded settlement, and a request its caller left
  (or whose process died) stops where the record stops. Under the unchanged
  configuration every request follows its record, so every decision sees the
  state the engine saw: the replay reproduces the log (0 differences).
* **Once a request's decision differs**, its attempts are answered by the
  world: an attempt routed to a pair (c, m) at engine time ``t`` gets **the next
  outcome recorded for that pair at or after t**, arriving after the latency
  that recorded attempt had; with none, the attempt is ``unobserved`` (counted;
  the request stops and its hold is refunded). Waits advance its time; its
  steps are placed among the recorded events by time. Its caller leaves when
  the recorded one did (its last recorded event) if the record never ended it.
* **Beside the requests**, at their log positions: operator commands are
  decided again from their recorded orders (lift, suspend, set a limit,
  correct spend, release a hold); the configuration is reconciled where the log
  shows an engine opening (``AccountOpened``/``LimitConfigured``): an account
  the new configuration names takes its limit, like ``Engine.open`` (so the new
  file's limits hold for the whole log); the maintenance loop's period rollovers
  and hold expiries run again at their recorded times; late usage bookings are
  decided again; the credential lifecycle is folded as recorded.

Not modelled (the log does not say, or nothing records it yet): a credential
this process could not use (a key not set: ``Engine.unusable_here``); key
failures do not change the recorded credential lifecycle; hold estimates are
the recorded ones (the caller's ``max_output_tokens`` is not recorded);
platform-mode settlement of a diverged request is booked like a local one;
retention is not replayed. Configured ``rpm``/``tpm`` limits and latency
estimates do not exist yet: when they do, they are state the deciders read, so
their events are decided again in the requests' commits and their recorded
observations join the world (``whatif_log.py`` sorts a new event kind).

Spend is the cost booked on each request's hold (settled, or booked late).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from typing import Final

import attrs

from routeledger.adapters.audit.whatif_log import Beside, ReadLog, RecordedRequest, read_log
from routeledger.adapters.engine import maintenance
from routeledger.adapters.engine.config import EngineConfig
from routeledger.adapters.engine.engine import reconcile_accounts
from routeledger.adapters.engine.lifecycle import (
    Commit,
    Decided,
    Item,
    Perform,
    RequestLifecycle,
    Sleep,
    decide_item,
    settle_through,
)
from routeledger.adapters.engine.results import BudgetRejected, Degradation, Exhausted, Served
from routeledger.core.budget import decide as budget
from routeledger.core.budget import events as bev
from routeledger.core.budget.admin import decide_roll_period
from routeledger.core.budget.group import HoldCommand, HoldGroup
from routeledger.core.budget.sinks import LocalLedgerSink, SinkMode
from routeledger.core.budget.values import HoldStatus
from routeledger.core.credentials.decide import RecordFailure
from routeledger.core.credentials.lifecycle import usability
from routeledger.core.errors import UsageError
from routeledger.core.events import Event
from routeledger.core.fold import Folded, Recorded
from routeledger.core.operator import OperatorActed, OperatorCommand, decide_operator
from routeledger.core.routing import events as rev
from routeledger.core.routing import state as routing
from routeledger.core.routing.commands import Failed, RouteNext, StartRequest, Succeeded
from routeledger.core.routing.failures import FailureClass, Phase
from routeledger.core.routing.policy import Policy
from routeledger.core.usability import CredentialUsability

from .whatif_log import order_of

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

#: Where a step is taken: (log position, 0 at a recorded event / -1 just before
#: it, sequence). Recorded and re-decided steps interleave in this order.
Key = tuple[int, int, int]
_DECISIONS: Final = (rev.AttemptRouted, rev.WaitDecided, rev.FallbackExhausted, rev.Degraded)


@attrs.frozen(kw_only=True)
class Tally:
    """Totals over the requests in scope."""

    requests: int = 0
    served: int = 0
    exhausted: int = 0
    degraded: int = 0
    #: Refused at entry by the budget (the hold was not admitted).
    budget_rejected: int = 0
    #: Left by the caller (or its process) before any end was decided.
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
    """A request whose outcome differs under the new configuration."""

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


class _Counts:
    __slots__ = ("attempts", "cost", "outcome", "tokens", "waited_us", "waits")

    def __init__(self) -> None:
        self.attempts = 0
        self.waits = 0
        self.waited_us = 0
        self.tokens = 0
        self.cost = 0
        self.outcome = "unfinished"

    def decided(self, evt: Event) -> None:
        """Count one decision or outcome of this request."""
        if isinstance(evt, rev.AttemptRouted):
            self.attempts += 1
        elif isinstance(evt, rev.WaitDecided):
            self.waits += 1
            self.waited_us = evt.waited_total_us
        elif isinstance(evt, rev.AttemptSucceeded):
            self.outcome = "served"
            self.tokens += evt.input_tokens + evt.output_tokens
        elif isinstance(evt, rev.FallbackExhausted):
            self.outcome = "exhausted"
        elif isinstance(evt, rev.Degraded):
            self.outcome = "degraded"
        elif isinstance(evt, bev.HoldRejected):
            self.outcome = "budget_rejected"
        elif isinstance(evt, bev.HoldSettled | bev.LateUsageBooked):
            self.cost += evt.usage.cost_micros


def _recorded_counts(request: RecordedRequest) -> _Counts:
    counts = _Counts()
    for _, _, evt in request.decisions:
        counts.decided(evt)
    for _, _, outcome in request.outcomes.values():
        if isinstance(outcome, Succeeded):
            counts.outcome = "served"
            counts.tokens += outcome.input_tokens + outcome.output_tokens
    if request.rejected:
        counts.outcome = "budget_rejected"
    counts.cost = request.cost_micros
    return counts


def _tally(counts: Iterable[_Counts], unobserved: int) -> Tally:
    listed = list(counts)
    outcomes = [c.outcome for c in listed]
    return Tally(
        requests=len(listed),
        served=outcomes.count("served"),
        exhausted=outcomes.count("exhausted"),
        degraded=outcomes.count("degraded"),
        budget_rejected=outcomes.count("budget_rejected"),
        unfinished=outcomes.count("unfinished") + outcomes.count("unobserved"),
        attempts=sum(c.attempts for c in listed),
        waits=sum(c.waits for c in listed),
        waited_us=sum(c.waited_us for c in listed),
        tokens=sum(c.tokens for c in listed),
        cost_micros=sum(c.cost for c in listed),
        unobserved=unobserved,
    )


def what_if(
    records: Iterable[Recorded], config: EngineConfig | Policy, *, since_us: int | None = None
) -> WhatIfReport:
    """Re-decide the recorded log under ``config`` (see the module docstring).

    ``since_us``: report only the requests received at or after it (the whole
    log is still re-decided, so their state is the new configuration's).
    ``config``: a routing policy alone keeps the recorded budget limits.
    """
    if isinstance(config, Policy):
        config = EngineConfig(policy=config)
    log = read_log(records)
    sim = _Sim(config, log)
    simulated = sim.run()
    in_scope = [
        request
        for request in sorted(log.requests.values(), key=lambda r: r.position)
        if since_us is None or request.received.at_us >= since_us
    ]
    recorded = {r.received.request_id: _recorded_counts(r) for r in in_scope}
    changed: list[Changed] = []
    for request in in_scope:
        request_id = request.received.request_id
        before, after = recorded[request_id], simulated[request_id]
        if before.outcome != after.outcome:
            changed.append(
                Changed(
                    request_id=request_id,
                    recorded=before.outcome,
                    what_if=after.outcome,
                    recorded_attempts=before.attempts,
                    what_if_attempts=after.attempts,
                )
            )
    after_counts = [simulated[r.received.request_id] for r in in_scope]
    return WhatIfReport(
        recorded=_tally(recorded.values(), 0),
        what_if=_tally(after_counts, sum(c.outcome == "unobserved" for c in after_counts)),
        changed_count=len(changed),
        changed=tuple(changed[:CHANGES_LISTED_MAX]),
    )


def _hold_command(item: Item) -> HoldCommand | None:
    """The budget command ``item`` carries: an entry's hold, a leave's resolution."""
    command = getattr(item, "hold", None) or getattr(item, "resolution", None)
    return command if isinstance(command, HoldCommand) else None


class _Sim:
    """The in-memory shell: one folded state, the recorded log's order, the deciders."""

    def __init__(self, config: EngineConfig, log: ReadLog) -> None:
        self.config = config
        self.policy = config.policy
        self.log = log
        self.state = Folded(routing=routing.initial(config.policy))
        self._configured = {command.account_id: command for command in config.accounts}
        self._sequence = itertools.count()

    def key(self, position: int) -> Key:
        """The key of a step taken at a recorded event's position."""
        return (position, 0, next(self._sequence))

    def key_at(self, at_us: int) -> Key:
        """The key of a re-decided step at engine time ``at_us``: after what was recorded by then."""
        return (self.log.position_after(at_us), -1, next(self._sequence))

    def prices(self, model: str, input_tokens: int, output_tokens: int) -> int:
        """What ``model`` charges under the new configuration (0 without a price)."""
        price = self.config.prices.get(model)
        return 0 if price is None else price.estimate_micros(input_tokens, output_tokens)

    def usable(self, now_us: int) -> Mapping[str, CredentialUsability] | None:
        """The credential lifecycle (as recorded) at ``now_us``; ``None``: not tracked."""
        return usability(self.state.credentials, now_us) if self.log.credentials else None

    def apply(self, events: Sequence[Event]) -> None:
        """Fold decided events into the replay's state."""
        for evt in events:
            self.state.apply(evt)

    def commit(self, item: Item, now_us: int, *, quiet: str | None = None) -> Decided:
        """Decide ``item`` as the engine's group committer would, and fold what it decided.

        ``quiet``: a request id whose routing decisions are dropped (an entry the
        record took no step after: only the request and its hold are kept).
        """
        if isinstance(getattr(item, "command", None), RecordFailure):
            return Decided(())  # the credential lifecycle is the recorded one
        command = _hold_command(item)
        holds = HoldGroup(self.state.budget, (command,) if command is not None else ())
        decided, _, _ = decide_item(
            self.policy, self.state.routing, holds, self.state, item, now_us, self.usable(now_us)
        )
        if quiet is None:
            self.apply(decided.events)
        else:
            self.apply([e for e in decided.events if not _routed_for(e, quiet)])
        return decided

    def roll_before_entry(self, hold: budget.PlaceHold | None, now_us: int) -> None:
        """Roll the hold's accounts' ended periods over, as the engine does at entry."""
        if hold is not None:
            for account_id in maintenance.due_periods(self.state, hold.account_ids, now_us):
                self._roll(account_id, now_us)

    def _roll(self, account_id: str, now_us: int) -> None:
        if maintenance.due_periods(self.state, (account_id,), now_us):
            decided = decide_roll_period(
                self.state.budget, account_id, now_us=now_us, zones=maintenance.zone
            )
            self.apply(decided.events)

    def beside(self, beside: Beside) -> None:
        """Fold or decide again what the log holds beside the requests (module docstring)."""
        what, now = beside.what, beside.at_us
        if beside.fold and isinstance(what, Event):
            self.apply((what,))
        elif isinstance(what, OperatorActed):
            self._operate(what, now)
        elif isinstance(what, bev.AccountOpened | bev.LimitConfigured):
            self._reconcile(what, now)
        elif isinstance(what, bev.PeriodRolledOver):
            self._roll(what.account_id, now)
        elif isinstance(what, bev.HoldExpired):
            self._expire(what.hold_id, now)
        elif isinstance(what, HoldCommand):
            try:
                self.apply(HoldGroup(self.state.budget, (what,)).peek(what, now_us=now).events)
            except UsageError:
                return  # about a hold the replay never placed: nothing to book

    def _expire(self, hold_id: str, now_us: int) -> None:
        """Expire the hold the record expired here, if it is open and overdue here too.

        The maintenance loop expires every overdue hold, a refund or a release
        meeting an overdue hold expires that one: the log does not say which, so
        each recorded expiry is replayed hold by hold (the replay's own holds are
        resolved by their requests). The core's rule decides it: a refund of an
        overdue hold is its expiry (L6).
        """
        hold = self.state.budget.holds.get(hold_id)
        if hold is None or hold.status is not HoldStatus.OPEN or now_us < hold.expires_at_us:
            return
        refund = budget.RefundHold(command_id=f"whatif:expire:{hold_id}", hold_id=hold_id)
        self.apply(budget.decide_refund_hold(self.state.budget, refund, now_us=now_us).events)

    def _operate(self, acted: OperatorActed, now_us: int) -> None:
        order = order_of(acted)
        if order is None:
            return
        command = OperatorCommand(
            command_id=acted.command_id, actor=acted.actor, reason=acted.reason, order=order
        )
        try:
            self.apply(decide_operator(self.state, None, command, now_us=now_us).events)
        except UsageError:
            return  # refused here (its target never existed in the replay)

    def _reconcile(self, evt: bev.AccountOpened | bev.LimitConfigured, now_us: int) -> None:
        """An engine opened here: the new configuration's account is reconciled like Engine.open."""
        command = self._configured.get(evt.account_id)
        if command is None:  # not configured any more: kept as the log has it
            self.apply((evt,))
            return
        one = attrs.evolve(self.config, accounts=(command,))
        self.apply(reconcile_accounts(self.state, one, now_us))

    def run(self) -> dict[str, _Counts]:
        """Take every recorded and re-decided step in order; each request's counts."""
        counts: dict[str, _Counts] = {}
        queue: list[tuple[Key, Beside | Iterator[Key]]] = []
        for beside in self.log.beside:
            queue.append((self.key(beside.position), beside))
        for request in self.log.requests.values():
            tally = counts[request.received.request_id] = _Counts()
            steps = _Replay(self, request, tally).steps()
            queue.append((next(steps), steps))
        heapq.heapify(queue)
        while queue:
            _, step = heapq.heappop(queue)
            if isinstance(step, Beside):
                self.beside(step)
                continue
            following = next(step, None)
            if following is not None:
                heapq.heappush(queue, (following, step))
        return counts


class _Replay:
    """One recorded request, re-decided: a generator of the keys it waits for."""

    def __init__(self, sim: _Sim, request: RecordedRequest, tally: _Counts) -> None:
        self.sim = sim
        self.rec = request
        self.tally = tally
        self.request_id = request.received.request_id
        self.life = RequestLifecycle(
            _start_of(request.received),
            hold=request.hold,
            prices=sim.prices,
            attempt_id=request.attempt_id,
        )
        #: Every decision so far was the recorded one.
        self.following = True
        #: Decisions taken so far (the next recorded one to compare with).
        self.taken = 0
        self.now = request.received.at_us
        #: The caller left (the replay ran past its last recorded event).
        self.gone = False

    def commit(self, item: Item) -> Decided:
        """Commit ``item`` at the replay's time; count and compare what it decided."""
        decided = self.sim.commit(item, self.now)
        for evt in decided.events:
            if getattr(evt, "request_id", None) == self.request_id or (
                getattr(evt, "hold_id", None) == self.request_id and isinstance(evt, bev.HoldEvent)
            ):
                self.tally.decided(evt)
                if isinstance(evt, _DECISIONS):
                    self._compare(evt)
        return decided

    def _compare(self, evt: rev.RoutingEvent) -> None:
        decisions = self.rec.decisions
        if self.following and (
            self.taken >= len(decisions) or _signature(decisions[self.taken][2]) != _signature(evt)
        ):
            self.following = False
        self.taken += 1

    def steps(self) -> Iterator[Key]:
        """Drive the request to its end, yielding the key of each step before taking it."""
        yield self.sim.key(self.rec.position)
        self.sim.roll_before_entry(self.rec.hold, self.now)
        if not self._enter():
            yield from self._abandon()
            return
        action = self.life.next_action()
        for _ in range(STEPS_PER_REQUEST_MAX):
            if isinstance(action, Commit):
                if isinstance(getattr(action.item, "command", None), RouteNext):
                    key = self._next_key()
                    if key is None:
                        yield from self._abandon()
                        return
                    yield key
                decided = self.commit(action.item)
                action = self.life.committed(action.item, decided) or self.life.next_action()
            elif isinstance(action, Sleep):
                if not self.following:
                    self.now = max(self.now, action.until_us)
                self.life.wait_over()
                action = self.life.next_action()
            elif isinstance(action, Perform):
                answered = yield from self._attempt(action)
                if not answered:
                    return
                action = self.life.next_action()
            else:
                yield from self._finish()
                return

    def _enter(self) -> bool:
        """The entry; ``False``: the record took no step after it, nor does the replay."""
        action = self.life.next_action()
        if not isinstance(action, Commit):  # pragma: no cover - NEW always commits
            raise UsageError(f"request {self.request_id}: entry is {action!r}")
        if not self.rec.decisions and not self.rec.terminal:
            self.sim.commit(action.item, self.now, quiet=self.request_id)
            return False
        decided = self.commit(action.item)
        if (decided.rejection is not None) != self.rec.rejected:
            self.following = False
        self.life.committed(action.item, decided)
        return True

    def _next_key(self) -> Key | None:
        """Where the next decision is taken; ``None``: the caller had left by then."""
        decisions = self.rec.decisions
        if self.gone:
            return None
        if self.following:
            if self.taken >= len(decisions):
                return None
            position, self.now, _ = decisions[self.taken]
            return self.sim.key(position)
        if not self.rec.terminal and self.now > self.rec.last_at_us:
            return None
        return self.sim.key_at(self.now)

    def _attempt(self, action: Perform) -> Generator[Key, None, bool]:
        """Give the routed attempt its outcome (recorded, or from the world); False: stopped."""
        routed = action.routed
        answer = self._answer(routed)
        if answer is None:
            yield from self._abandon()
            return False
        key, outcome = answer
        yield key
        usage = None
        if isinstance(outcome, Succeeded) and (outcome.input_tokens or outcome.output_tokens):
            usage = self.life.usage_of(
                routed.upstream_model, outcome.input_tokens, outcome.output_tokens
            )
        self.life.report(outcome, usage=usage)
        return True

    def _answer(self, routed: rev.AttemptRouted) -> tuple[Key, Succeeded | Failed] | None:
        """The outcome of ``routed`` and where it arrives; ``None``: none (see the caller)."""
        rec = self.rec
        if self.following:
            own = rec.outcomes.get(routed.attempt_no)
            if own is None:
                return None  # in flight in the record: its caller or process left
            position, self.now, outcome = own
            return self.sim.key(position), outcome
        seen = self.sim.log.world.next((routed.credential_id, routed.upstream_model), self.now)
        if seen is None:
            self.tally.outcome = "unobserved"
            return None
        arrival, outcome = self.now + seen.latency_us, seen.outcome
        if not rec.terminal and arrival > rec.last_at_us:  # the caller had left by then
            if rec.resolution is None:
                return None
            arrival = max(self.now, rec.last_at_us)
            self.gone = True
            outcome = Failed(
                failure=FailureClass.CALLER_CANCELLED,
                phase=Phase.BEFORE_RESPONSE,
                delivered_chars=routed.delivered_chars,
                detail="left without an outcome",
            )
        self.now = arrival
        return self.sim.key_at(arrival), outcome

    def _abandon(self) -> Iterator[Key]:
        """Stop where the record's caller did: leave as it left, or stay (its process died)."""
        if self.tally.outcome == "unobserved":
            self._leave(self._computed())  # the log cannot say: nothing is billed
            return
        recorded = self.rec.resolution
        if recorded is None:
            return  # the record never resolved it: its hold waits for the maintenance loop
        if self.following:
            position, self.now, command = recorded
            yield self.sim.key(position)
            self._leave(command)
        else:
            self._leave(self._computed())

    def _finish(self) -> Iterator[Key]:
        """The request ended: count how, then settle its hold."""
        result = self.life.result
        self.tally.outcome = _OUTCOMES.get(type(result), self.tally.outcome)
        if isinstance(result, BudgetRejected):
            return
        recorded = self.rec.resolution
        if self.following and recorded is not None:
            position, at_us, command = recorded
            yield self.sim.key(position)
            self.now = max(self.now, at_us)
            self._leave(command)
        elif self.following:
            self._leave(None)
        else:
            self._leave(self._computed())

    def _computed(self) -> budget.SettleHold | budget.RefundHold | None:
        """The settlement the engine's sink chooses for how the replay ended (L11)."""
        life = self.life
        if life.hold is None:
            return None
        sink = settle_through(life, SinkMode.STANDALONE, life.hold.estimate)
        commands = sink.commands if isinstance(sink, LocalLedgerSink) else []
        return commands[0] if commands else None

    def _leave(self, resolution: budget.SettleHold | budget.RefundHold | None) -> None:
        for item in self.life.leave(resolution, ()):
            self.commit(item)


#: What a finished lifecycle's result counts as.
_OUTCOMES: Final[Mapping[type, str]] = {
    Served: "served",
    Exhausted: "exhausted",
    Degradation: "degraded",
    BudgetRejected: "budget_rejected",
}


def _routed_for(evt: Event, request_id: str) -> bool:
    """Whether ``evt`` is a routing decision about ``request_id`` (not its arrival)."""
    return (
        isinstance(evt, rev.RoutingEvent)
        and not isinstance(evt, rev.RequestReceived)
        and getattr(evt, "request_id", None) == request_id
    )


def _signature(evt: rev.RoutingEvent) -> tuple[object, ...]:
    """What a decision decided (what the replay compares with the record)."""
    if isinstance(evt, rev.AttemptRouted):
        return ("routed", evt.attempt_no, evt.credential_id, evt.upstream_model, evt.probe)
    if isinstance(evt, rev.WaitDecided):
        return ("wait", evt.until_us)
    if isinstance(evt, rev.FallbackExhausted):
        return ("exhausted", evt.reason)
    if isinstance(evt, rev.Degraded):
        return ("degraded", evt.reason)
    return (type(evt).__name__,)


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
