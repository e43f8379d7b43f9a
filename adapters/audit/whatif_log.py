"""What a what-if replay reads from the log: each request as recorded, and everything else.

:func:`read_log` sorts every recorded event into one of three piles:

* **a request's own record** (:class:`RecordedRequest`): its ``RequestReceived``,
  its hold as placed or refused (the ``PlaceHold`` to re-decide), each decision
  the engine took for it (attempt routed, wait, exhaustion, degradation) and
  each attempt's outcome, with their log positions and times, and its hold's
  resolution (the ``SettleHold``/``RefundHold`` to re-decide). Everything the
  core *decided* for a request (cooldowns, reservations, postings) is dropped:
  the replay decides it again;
* **what happened beside the requests** (:data:`Beside`), re-decided or folded
  at its log position: an operator command (``OperatorActed``, whose effects are
  dropped and decided again from the order its digest names), a configuration
  reconciliation (``AccountOpened``, ``LimitConfigured``), a period rollover and
  a hold expiry of the maintenance loop, a late usage booking, a credential
  lifecycle event (folded as recorded), and any event this module does not
  know (folded as recorded: a new kind of event must be sorted here);
* **the world** (:class:`World`): every recorded outcome per (credential,
  upstream model), for attempts the replay routes where the record did not.

Records retirements (``RecordsRetired``) and refusals of admin commands are
dropped: they decide nothing a request sees.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Final

import attrs

from routeledger.core.budget import decide as budget
from routeledger.core.budget import events as bev
from routeledger.core.credentials.events import CredentialEvent
from routeledger.core.events import Event
from routeledger.core.fold import Recorded
from routeledger.core.operator import (
    ChangeLimit,
    CorrectSpend,
    ImposeBlock,
    LiftBlocks,
    OperatorActed,
    Order,
    ReleaseHold,
)
from routeledger.core.retention import RecordsRetired
from routeledger.core.routing import events as rev
from routeledger.core.routing.commands import Failed, Succeeded
from routeledger.core.routing.failures import FailureClass
from routeledger.core.streams import ACCOUNT, CREDENTIAL, HOLD, PAIR

__all__ = [
    "Beside",
    "Observation",
    "ReadLog",
    "RecordedRequest",
    "World",
    "read_log",
]

#: Outcomes that say what the caller did, not what the upstream answered: never
#: lent to another request's attempt.
CALLER_FAILURES: Final = frozenset({FailureClass.CALLER_CANCELLED})


@attrs.frozen
class Observation:
    """One recorded outcome of a pair: when, after how long, what."""

    at_us: int
    latency_us: int
    outcome: Succeeded | Failed
    request_id: str


@attrs.frozen
class Beside:
    """Something recorded beside the requests, at its log position and time.

    ``what`` is an event to fold as recorded, or a command to decide again:
    an operator's :class:`OperatorActed`, ``AccountOpened``/``LimitConfigured``
    (reconcile that account), ``PeriodRolledOver`` (roll that account if due),
    ``HoldExpired`` (expire that hold if overdue), a hold command (``PlaceHold``,
    ``SettleHold``, ``RefundHold``, ``AdjustHold``).
    """

    position: int
    at_us: int
    what: object
    #: Fold ``what`` (an event) as recorded instead of deciding anything.
    fold: bool = False


@attrs.define
class RecordedRequest:
    """One request as the log holds it."""

    received: rev.RequestReceived
    position: int
    #: The hold the engine placed or refused at entry (``None``: no accounts).
    hold: budget.PlaceHold | None = None
    rejected: bool = False
    #: (position, at_us, event) of each routing decision, in order.
    decisions: list[tuple[int, int, rev.RoutingEvent]] = attrs.Factory(list)
    #: attempt number -> (position, at_us, outcome).
    outcomes: dict[int, tuple[int, int, Succeeded | Failed]] = attrs.Factory(dict)
    attempt_ids: dict[int, str] = attrs.Factory(dict)
    #: (position, at_us, command) of the hold's first resolution.
    resolution: tuple[int, int, budget.SettleHold | budget.RefundHold] | None = None
    #: Ended by a decision (served, exhausted, degraded, refused by the budget).
    terminal: bool = False
    #: Time of the request's last recorded event (its caller left by then).
    last_at_us: int = 0
    #: Cost booked on its hold (settled or booked late).
    cost_micros: int = 0

    def attempt_id(self, request_id: str, number: int) -> str:
        """The recorded id of attempt ``number``, or a fresh one."""
        return self.attempt_ids.get(number) or f"{request_id}~whatif{number}"


class World:
    """The recorded outcomes per pair, in time order (the model of the world)."""

    def __init__(self, by_pair: dict[tuple[str, str], list[Observation]]) -> None:
        for observations in by_pair.values():
            observations.sort(key=lambda o: o.at_us)  # stable: log order within one instant
        self._by_pair = by_pair
        self._times = {pair: [o.at_us for o in obs] for pair, obs in by_pair.items()}

    def next(self, pair: tuple[str, str], at_us: int) -> Observation | None:
        """The first outcome recorded for ``pair`` at or after ``at_us``."""
        times = self._times.get(pair)
        if times is None:
            return None
        index = bisect.bisect_left(times, at_us)
        return self._by_pair[pair][index] if index < len(times) else None


@attrs.define
class ReadLog:
    """The log, sorted (see the module docstring)."""

    requests: dict[str, RecordedRequest] = attrs.Factory(dict)
    beside: list[Beside] = attrs.Factory(list)
    world: World = attrs.Factory(lambda: World({}))
    #: Whether the log tracks credential lifecycles (any credential event).
    credentials: bool = False
    #: Running maximum of ``at_us`` at each position, and those positions.
    times: list[int] = attrs.Factory(list)
    positions: list[int] = attrs.Factory(list)

    def position_after(self, at_us: int) -> int:
        """The first log position whose time (running maximum) is after ``at_us``."""
        index = bisect.bisect_right(self.times, at_us)
        return self.positions[index] if index < len(self.positions) else self.end

    @property
    def end(self) -> int:
        """A position after every recorded one."""
        return (self.positions[-1] + 1) if self.positions else 1


def outcome_of(evt: rev.AttemptSucceeded | rev.AttemptFailed) -> Succeeded | Failed:
    """The observation a recorded outcome event carries."""
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


def order_of(acted: OperatorActed) -> Order | None:
    """The order an operator record names (its digest), or ``None`` if unreadable."""
    kind, _, rest = acted.command_digest.partition("|")
    target, _, value = (
        rest.rpartition("|") if kind != "lift" and kind != "release" else (rest, "", "")
    )
    try:
        if kind in ("lift", "impose"):
            credential, model = _scope_of(target)
            if kind == "lift":
                return LiftBlocks(credential_id=credential, upstream_model=model)
            if credential is None:
                return None
            return ImposeBlock(
                credential_id=credential, upstream_model=model, duration_us=int(value)
            )
        if kind == "limit" and target.startswith(ACCOUNT):
            account = target.removeprefix(ACCOUNT)
            return ChangeLimit(command_id="-", account_id=account, limit=int(value))
        if kind == "correct" and target.startswith(ACCOUNT):
            account = target.removeprefix(ACCOUNT)
            return CorrectSpend(
                command_id="-", account_id=account, delta=int(value), reason=acted.reason
            )
    except ValueError:
        return None
    if kind == "release" and target.startswith(HOLD):
        return ReleaseHold(hold_id=target.removeprefix(HOLD))
    return None


def _scope_of(target: str) -> tuple[str | None, str | None]:
    """(credential, model) of a lift/impose target (a credential id never holds ':')."""
    if target == "*":
        return None, None
    if target.startswith(PAIR):
        credential, _, model = target.removeprefix(PAIR).partition(":")
        return credential, model
    if target.startswith(CREDENTIAL):
        return target.removeprefix(CREDENTIAL), None
    raise ValueError(target)


class _Reader:
    """Reads records in log order into a :class:`ReadLog`."""

    def __init__(self) -> None:
        self.log = ReadLog()
        self.by_pair: dict[tuple[str, str], list[Observation]] = {}
        self.routed_at: dict[tuple[str, str], tuple[int, int]] = {}
        self.holds: dict[str, tuple[budget.PlaceHold, bool, int, int]] = {}
        self.resolutions: dict[
            str, list[tuple[int, int, budget.SettleHold | budget.RefundHold]]
        ] = {}
        self.costs: dict[str, int] = {}
        #: Effects of the last operator command still to skip (decided again).
        self.effects = 0

    def read(self, record: Recorded) -> None:
        evt = record.event
        log = self.log
        log.times.append(max(evt.at_us, log.times[-1] if log.times else evt.at_us))
        log.positions.append(record.position)
        if self.effects:
            self.effects -= 1
            return
        if isinstance(evt, rev.RoutingEvent):
            self._routing(record.position, evt)
        elif isinstance(evt, bev.BudgetEvent):
            self._budget(record.position, evt)
        elif isinstance(evt, OperatorActed):
            self.effects = evt.effects
            log.beside.append(Beside(record.position, evt.at_us, evt))
        elif isinstance(evt, CredentialEvent):
            log.credentials = True
            log.beside.append(Beside(record.position, evt.at_us, evt, fold=True))
        elif not isinstance(evt, RecordsRetired):
            log.beside.append(Beside(record.position, evt.at_us, evt, fold=True))

    def _request(self, evt: Event) -> RecordedRequest | None:
        request = self.log.requests.get(getattr(evt, "request_id", ""))
        if request is not None:
            request.last_at_us = max(request.last_at_us, evt.at_us)
        return request

    def _routing(self, position: int, evt: rev.RoutingEvent) -> None:
        if isinstance(evt, rev.RequestReceived):
            self.log.requests[evt.request_id] = RecordedRequest(
                received=evt, position=position, last_at_us=evt.at_us
            )
            return
        request = self._request(evt)
        if request is None:
            return  # a scope's decision (re-decided) or an unknown request's
        if isinstance(evt, rev.AttemptRouted):
            request.attempt_ids[evt.attempt_no] = evt.attempt_id
            self.routed_at[(evt.request_id, evt.attempt_id)] = (evt.attempt_no, evt.at_us)
        if isinstance(
            evt, rev.AttemptRouted | rev.WaitDecided | rev.FallbackExhausted | rev.Degraded
        ):
            request.decisions.append((position, evt.at_us, evt))
            request.terminal |= not isinstance(evt, rev.AttemptRouted | rev.WaitDecided)
        elif isinstance(evt, rev.AttemptSucceeded | rev.AttemptFailed):
            self._outcome(position, request, evt)

    def _outcome(
        self,
        position: int,
        request: RecordedRequest,
        evt: rev.AttemptSucceeded | rev.AttemptFailed,
    ) -> None:
        outcome = outcome_of(evt)
        number, started = self.routed_at.get((evt.request_id, evt.attempt_id), (0, evt.at_us))
        if number:
            request.outcomes[number] = (position, evt.at_us, outcome)
        request.terminal |= isinstance(evt, rev.AttemptSucceeded)
        if isinstance(outcome, Failed) and outcome.failure in CALLER_FAILURES:
            return
        self.by_pair.setdefault((evt.credential_id, evt.upstream_model), []).append(
            Observation(evt.at_us, max(0, evt.at_us - started), outcome, evt.request_id)
        )

    def _budget(self, position: int, evt: bev.BudgetEvent) -> None:
        beside = self.log.beside
        if isinstance(evt, bev.AccountOpened | bev.LimitConfigured | bev.PeriodRolledOver):
            beside.append(Beside(position, evt.at_us, evt))
        elif isinstance(evt, bev.LimitChanged | bev.SpendCorrected):
            beside.append(Beside(position, evt.at_us, evt, fold=True))  # not an operator's
        elif isinstance(evt, bev.HoldEvent):
            self._hold(position, evt)

    def _hold(self, position: int, evt: bev.HoldEvent) -> None:
        at, hold_id = evt.at_us, evt.hold_id
        if isinstance(evt, bev.HoldPlaced | bev.HoldRejected):
            accounts = (
                tuple(leg.account_id for leg in evt.legs)
                if isinstance(evt, bev.HoldPlaced)
                else evt.account_ids
            )
            place = budget.PlaceHold(
                hold_id=hold_id, account_ids=accounts, estimate=evt.estimate, ttl_us=evt.ttl_us
            )
            self.holds[hold_id] = (place, isinstance(evt, bev.HoldRejected), position, at)
        elif isinstance(evt, bev.HoldSettled | bev.LateUsageBooked):
            self.costs[hold_id] = self.costs.get(hold_id, 0) + evt.usage.cost_micros
            settle = budget.SettleHold(command_id=evt.command_id, hold_id=hold_id, usage=evt.usage)
            # A settlement meeting an overdue hold recorded its expiry first: replayed
            # before it, hold by hold, the settlement then books late, as recorded.
            self.resolutions.setdefault(hold_id, []).append((position, at, settle))
        elif isinstance(evt, bev.HoldRefunded):
            refund = budget.RefundHold(command_id=evt.command_id, hold_id=hold_id)
            self.resolutions.setdefault(hold_id, []).append((position, at, refund))
        elif isinstance(evt, bev.HoldExpired):
            self.log.beside.append(Beside(position, at, evt))
        elif isinstance(evt, bev.HoldAdjusted):
            adjust = budget.AdjustHold(
                command_id=evt.command_id, hold_id=hold_id, estimate=evt.estimate
            )
            self.log.beside.append(Beside(position, at, adjust))

    def finish(self) -> ReadLog:
        """Attach holds and resolutions to their requests; the rest is beside them."""
        log = self.log
        for hold_id, (place, rejected, position, at) in self.holds.items():
            request = log.requests.get(hold_id)
            if request is None:
                log.beside.append(Beside(position, at, place))
                continue
            request.hold, request.rejected = place, rejected
            request.terminal |= rejected
            request.cost_micros = self.costs.get(hold_id, 0)
        for hold_id, resolutions in self.resolutions.items():
            request = log.requests.get(hold_id)
            if request is not None and request.hold is not None:
                request.resolution, *resolutions = resolutions
                request.last_at_us = max(request.last_at_us, request.resolution[1])
            log.beside.extend(Beside(p, at, command) for p, at, command in resolutions)
        log.beside.sort(key=lambda b: b.position)
        log.world = World(self.by_pair)
        return log


def read_log(records: Iterable[Recorded]) -> ReadLog:
    """Sort the log's records (see the module docstring)."""
    reader = _Reader()
    for record in records:
        reader.read(record)
    return reader.finish()
