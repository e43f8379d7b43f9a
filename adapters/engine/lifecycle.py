"""One request's lifecycle, from entry to settlement: the module that owns it.

Read this module to follow a request from ``Engine.request`` (or
``Executor.chat``) to the log. Its rules:

1. **One state machine.** A request is in one :class:`RequestPhase` at a time
   and moves only along :data:`TRANSITIONS`; anything else raises
   :class:`LifecycleError` naming the phase and the signal (a caller's
   mistake, such as asking for the next attempt before reporting this one).
2. **One commit path.** Entering (the request, its hold and its first step),
   every next step, every recorded failure and leaving (a success and the
   settlement) are *items* handed to the engine's group committer: decided by
   :func:`decide_items` from the folded state, appended, folded (L10: nothing
   is acted on before it is recorded). Concurrent requests share commits.
3. **No I/O here.** :class:`RequestLifecycle` only says what must happen next
   (:class:`Commit` an item, :class:`Sleep` until a time, :class:`Perform` an
   attempt, or :data:`FINISHED`); the shells (:class:`RequestHandle`'s sync and
   async iterators, and the what-if replay) do it and report back. The sync
   and async paths therefore share every decision and differ only in how
   they commit and sleep.
4. **Attempts report to their request.** :class:`Attempt` is what a caller
   holds while it calls the provider; ``succeeded``/``failed`` report to the
   request's lifecycle, which records a failure at the next step and a
   success with the settlement, in one commit, when the request is left.
5. **Leaving always settles.** Whatever the phase, leaving records an
   unreported attempt as failed (caller cancelled, or the exception's type),
   then resolves the hold through the settlement sink (usage when served, a
   refund when nothing billable happened, the observed usage or the estimate
   for a partial answer: L11). A crashed process leaves its hold to expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import operator
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Final, NamedTuple

import attrs

from routeledger.adapters.engine.grouping import Slot
from routeledger.adapters.engine.maintenance import due_periods, roll_before_entry
from routeledger.adapters.engine.results import (
    BudgetRejected,
    Degradation,
    Exhausted,
    Result,
    Served,
)
from routeledger.adapters.providers.observe import Observation, observe_exception, observe_response
from routeledger.adapters.providers.problems import ExhaustionReport
from routeledger.adapters.providers.report import exhaustion_report
from routeledger.core.budget import decide as budget
from routeledger.core.budget.group import HoldCommand, HoldGroup
from routeledger.core.budget.sinks import (
    LocalLedgerSink,
    PlatformReport,
    RecordingPlatformSink,
    SinkMode,
    open_sink,
)
from routeledger.core.budget.values import Rejection, Usage
from routeledger.core.credentials.decide import CredentialFailure, RecordFailure, decide_failure
from routeledger.core.credentials.lifecycle import usability
from routeledger.core.errors import InvariantViolation, UsageError
from routeledger.core.events import DETAIL_CHARS_MAX, Event
from routeledger.core.fold import Folded
from routeledger.core.routing import (
    Evidence,
    Failed,
    FailureClass,
    Phase,
    RecordOutcome,
    RouteNext,
    StartRequest,
    Succeeded,
    decide_next,
    decide_outcome,
    decide_start,
    succeeded_problem,
)
from routeledger.core.routing.commands import measured_problem
from routeledger.core.routing.events import (
    Announced,
    AttemptRouted,
    Continuation,
    FallbackExhausted,
    RoutingEvent,
)
from routeledger.core.routing.group import group_view, note_in_view, request_local
from routeledger.core.routing.policy import Policy
from routeledger.core.routing.state import RoutingState
from routeledger.core.routing.steps import (
    RouteAttempt,
    RouteDegraded,
    RouteExhausted,
    RouteStep,
    RouteWait,
)
from routeledger.core.time import US_PER_S
from routeledger.core.usability import CredentialUsability, UnusableReason

if TYPE_CHECKING:  # pragma: no cover
    from opentelemetry.trace import Span

    from routeledger.adapters.engine.engine import Engine

__all__ = [
    "FINISHED",
    "REQUEST_STEPS_MAX",
    "TRANSITIONS",
    "Attempt",
    "Commit",
    "Decided",
    "LifecycleError",
    "Perform",
    "RequestHandle",
    "RequestLifecycle",
    "RequestPhase",
    "Signal",
    "Sleep",
    "decide_item",
    "decide_items",
    "settle_through",
]

#: Steps one request may take (attempts, waits and decisions together). Why:
#: attempts are bounded by the policy (<= 64) and waits by its wait budget;
#: this is a backstop that turns a decider bug into an error, not a hang.
REQUEST_STEPS_MAX: Final = 1_000
#: Characters assumed per token where no count is known: a request's input (the
#: hold's estimate) and a cut attempt's output without a usage report. Why: ~4
#: characters per token is the usual English average; an estimate only.
CHARS_PER_TOKEN: Final = 4

#: How an attempt's failure class reads for the credential lifecycle (I0): only
#: AUTH may trigger key recovery; the others are recorded as what they are.
_LIFECYCLE_FAILURE: Final[Mapping[FailureClass, CredentialFailure]] = {
    FailureClass.AUTH_ERROR: CredentialFailure.AUTH,
    FailureClass.QUOTA_EXHAUSTED: CredentialFailure.BUDGET,
    FailureClass.MODEL_NOT_FOUND: CredentialFailure.INVALID_MODEL,
    FailureClass.MODEL_NOT_SUPPORTED: CredentialFailure.INVALID_MODEL,
}


# --- the state machine ------------------------------------------------------------


class RequestPhase(enum.Enum):
    """Where one request is in its lifecycle."""

    #: Identity hash (members are singletons): ``Enum.__hash__`` runs in Python
    #: and :data:`TRANSITIONS` is looked up at every move of every request.
    __hash__ = object.__hash__

    #: Made by ``Engine.request``; nothing recorded yet.
    NEW = "new"
    #: Recorded; the next step is to be decided (or was decided at entry).
    ROUTING = "routing"
    #: An attempt was routed and handed to the caller; its outcome is awaited.
    ATTEMPTING = "attempting"
    #: A failure was reported; it is recorded before the next step is decided.
    RECORDING = "recording"
    #: A wait was decided; the caller sleeps until it is over.
    WAITING = "waiting"
    #: An attempt succeeded; the success is recorded with the settlement.
    SERVED = "served"
    #: Not served and nothing more will be tried (exhausted, degraded, rejected).
    ENDED = "ended"
    #: Left: the settlement (if any) is recorded.
    LEFT = "left"


class Signal(enum.Enum):
    """What moves a request from one phase to another."""

    #: Identity hash (members are singletons): ``Enum.__hash__`` runs in Python
    #: and :data:`TRANSITIONS` is looked up at every move of every request.
    __hash__ = object.__hash__

    ENTERED = "entered"
    REJECTED = "rejected"
    ROUTED = "routed"
    WAIT_DECIDED = "wait_decided"
    WAIT_OVER = "wait_over"
    ENDED = "ended"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RECORDED = "recorded"
    LEFT = "left"


_P = RequestPhase
_S = Signal
#: Every legal move: (phase, signal) -> the next phase.
TRANSITIONS: Final[Mapping[tuple[RequestPhase, Signal], RequestPhase]] = {
    (_P.NEW, _S.ENTERED): _P.ROUTING,
    (_P.NEW, _S.REJECTED): _P.ENDED,
    (_P.ROUTING, _S.ROUTED): _P.ATTEMPTING,
    (_P.ROUTING, _S.WAIT_DECIDED): _P.WAITING,
    (_P.ROUTING, _S.ENDED): _P.ENDED,
    (_P.WAITING, _S.WAIT_OVER): _P.ROUTING,
    (_P.ATTEMPTING, _S.SUCCEEDED): _P.SERVED,
    (_P.ATTEMPTING, _S.FAILED): _P.RECORDING,
    (_P.RECORDING, _S.RECORDED): _P.ROUTING,
    **{(phase, _S.LEFT): _P.LEFT for phase in _P if phase is not _P.LEFT},
}


class LifecycleError(UsageError):
    """A request was asked to do something its phase does not allow."""

    def __init__(self, request_id: str, phase: RequestPhase, signal: Signal, hint: str) -> None:
        self.request_id = request_id
        self.phase = phase
        self.signal = signal
        super().__init__(
            f"request {request_id}: cannot take {signal.value!r} while {phase.value!r}: {hint}"
        )


# --- what the lifecycle asks its shell to do ----------------------------------------


class _Enter(NamedTuple):
    """Record the request, place its hold and decide its first step, in one commit."""

    life: RequestLifecycle
    hold: budget.PlaceHold | None


class _Next(NamedTuple):
    """Decide and record the request's next step."""

    life: RequestLifecycle
    command: RouteNext


class _Report(NamedTuple):
    """Record a reported failure."""

    life: RequestLifecycle
    command: RecordOutcome


class _KeyFailure(NamedTuple):
    """Record a failure the credential lifecycle must hear of (I0), after the routing one."""

    life: RequestLifecycle
    command: RecordFailure


class _Leave(NamedTuple):
    """Record a success kept for this commit, and the settlement."""

    life: RequestLifecycle
    deferred: RecordOutcome | None
    resolution: budget.SettleHold | budget.RefundHold | None
    #: Delivered to the platform after the commit.
    reports: tuple[PlatformReport, ...]


#: One thing the group committer decides and records for a request.
Item = _Enter | _Next | _Report | _KeyFailure | _Leave


class Commit(NamedTuple):
    """Hand ``item`` to the group committer, then give its :class:`Decided` to ``committed``."""

    item: Item


class Sleep(NamedTuple):
    """Sleep until engine time ``until_us``, then call ``wait_over``."""

    until_us: int


class Perform(NamedTuple):
    """Perform the routed attempt and report its outcome."""

    routed: AttemptRouted


class _Finished(enum.Enum):
    FINISHED = "finished"


#: Nothing more to do before leaving.
FINISHED: Final = _Finished.FINISHED
LifecycleAction = Commit | Sleep | Perform | _Finished


class Decided(NamedTuple):
    """What one item came to: the events recorded, a budget rejection, the step decided."""

    events: Sequence[Event]
    rejection: Rejection | None = None
    #: Entry and next step: the routing step decided.
    step: RouteStep | None = None


#: The events an item's decision records (for the group committer).
decided_events: Final[Callable[[Decided], Sequence[Event]]] = operator.attrgetter("events")


# --- one request, without I/O -------------------------------------------------------


class RequestLifecycle:
    """One request's phase, its attempts and what its settlement needs; no I/O."""

    def __init__(
        self,
        start: StartRequest,
        *,
        hold: budget.PlaceHold | None,
        prices: Callable[[str, int, int], int],
        attempt_id: Callable[[str, int], str] = lambda rid, n: f"{rid}/{n}",
    ) -> None:
        self.start = start
        self.request_id = start.request_id
        self.hold = hold
        self.phase = RequestPhase.NEW
        self.result: Result | None = None
        #: Attempts that have an outcome.
        self.attempts = 0
        self.current: AttemptRouted | None = None
        #: The step decided and recorded at entry, not yet taken.
        self.step: RouteStep | None = None
        self.until_us = 0
        #: The reported outcome not yet recorded (a failure, or the success).
        self.pending: RecordOutcome | None = None
        self.key_failure: RecordFailure | None = None
        self.exhausted: FallbackExhausted | None = None
        #: Settlement facts: the usage reported on success, whether billable
        #: output was produced by a failed attempt, and what the failed
        #: attempts billed, summed (observed, or estimated per attempt: L11).
        self.usage: Usage | None = None
        self.partial = False
        self.observed: Usage | None = None
        #: A billed failed attempt reported no usage (its share is estimated).
        self.unobserved_cut = False
        self._cost = prices
        self._attempt_id = attempt_id

    def _move(self, signal: Signal, hint: str = "") -> None:
        target = TRANSITIONS.get((self.phase, signal))
        if target is None:
            raise LifecycleError(self.request_id, self.phase, signal, hint or "not allowed")
        self.phase = target

    # -- what to do next --

    def next_action(self) -> LifecycleAction:
        """What the shell must do now (see the module docstring)."""
        phase = self.phase
        if phase is RequestPhase.ROUTING:
            if self.step is None:
                number = self.attempts + 1
                command = RouteNext(
                    request_id=self.request_id, attempt_id=self._attempt_id(self.request_id, number)
                )
                return Commit(_Next(self, command))
            step, self.step = self.step, None
            return self._take(step)
        if phase is RequestPhase.RECORDING:
            if self.pending is not None:
                return Commit(_Report(self, self.pending))
            if self.key_failure is not None:
                return Commit(_KeyFailure(self, self.key_failure))
            self._move(Signal.RECORDED)
            return self.next_action()
        if phase is RequestPhase.WAITING:
            return Sleep(self.until_us)
        if phase is RequestPhase.NEW:
            return Commit(_Enter(self, self.hold))
        if phase is RequestPhase.ATTEMPTING:
            current = self.current
            attempt_id = current.attempt_id if current is not None else "?"
            raise LifecycleError(
                self.request_id,
                phase,
                Signal.ROUTED,
                f"attempt {attempt_id} has no outcome: report succeeded() or failed() "
                f"before asking for the next attempt",
            )
        return FINISHED

    def left(self) -> None:
        """The request was left (its settlement, if any, is being recorded)."""
        self._move(Signal.LEFT)

    def wait_over(self) -> None:
        """The shell slept until the decided wait was over."""
        self._move(Signal.WAIT_OVER)

    def committed(self, item: Item, decided: Decided) -> LifecycleAction | None:
        """Take what ``item`` came to; an entry or a next step may have an action at once."""
        if isinstance(item, _Enter):
            if decided.rejection is not None:
                self.result = BudgetRejected(rejection=decided.rejection)
                self._move(Signal.REJECTED)
                return None
            self._move(Signal.ENTERED)
            self.step = decided.step  # None: nothing decided at entry, decide again
        elif isinstance(item, _Next):
            if decided.step is None:  # pragma: no cover - decide_next always returns a step
                raise InvariantViolation(f"request {self.request_id}: a next step decided nothing")
            return self._take(decided.step)
        elif isinstance(item, _Report):
            self.pending = None
        elif isinstance(item, _KeyFailure):
            self.key_failure = None
        else:
            self.pending = None
        return None

    def _take(self, step: RouteStep) -> LifecycleAction:
        """Act on a decided step: an attempt to perform, a wait, or the end."""
        if isinstance(step, RouteAttempt):
            self.current = step.routed
            self._move(Signal.ROUTED)
            return Perform(step.routed)
        if isinstance(step, RouteWait):
            return self._wait(step.decided.until_us)
        if isinstance(step, RouteExhausted):
            self.exhausted = step.exhausted
            self.result = Exhausted(
                attempts=self.attempts,
                retry_at_us=step.exhausted.retry_at_us,
                failures=tuple(f.failure for f in step.exhausted.failures),
            )
        elif isinstance(step, RouteDegraded):
            self.result = Degradation(reason=step.degraded.reason.value)
        elif not step.ended:
            return self._wait(step.wait_until_us)  # a decided wait has not elapsed yet
        # else ended elsewhere (a repeated entry of a finished request)
        self._move(Signal.ENDED)
        return FINISHED

    def _wait(self, until_us: int) -> LifecycleAction:
        self.until_us = until_us
        self._move(Signal.WAIT_DECIDED)
        return Sleep(until_us)

    # -- attempts report here --

    def report(self, outcome: Succeeded | Failed, *, usage: Usage | None = None) -> None:
        """The current attempt's outcome (``usage``: what a success reported, if anything)."""
        current = self.current
        if current is None or self.phase is not RequestPhase.ATTEMPTING:
            signal = Signal.SUCCEEDED if isinstance(outcome, Succeeded) else Signal.FAILED
            raise LifecycleError(self.request_id, self.phase, signal, "no attempt is in flight")
        command = RecordOutcome(
            request_id=self.request_id, attempt_id=current.attempt_id, outcome=outcome
        )
        self.attempts += 1
        self.pending = command
        if isinstance(outcome, Succeeded):
            billed = usage if usage is not None else self.estimate_usage()
            if self.observed is not None:  # a billed cut attempt stays on the bill (L11)
                billed = _with_attempt(billed, self.observed)
                usage = billed
            self.usage = usage
            self.result = Served(
                credential_id=current.credential_id,
                upstream_model=current.upstream_model,
                attempts=self.attempts,
                input_tokens=outcome.input_tokens,
                output_tokens=outcome.output_tokens,
                cost_micros=billed.cost_micros,  # billed its estimate without usage (L11)
            )
            self._move(Signal.SUCCEEDED)
            return
        if outcome.phase is Phase.MID_STREAM or outcome.billed:
            self.partial = True
            spent = usage if usage is not None and not usage.is_zero() else None
            if spent is None:  # no usage report: estimate what this attempt delivered
                self.unobserved_cut = True
                chars = max(1, outcome.delivered_chars - current.delivered_chars)
                spent = self.usage_of(
                    current.upstream_model, self.start.input_tokens, -(-chars // CHARS_PER_TOKEN)
                )
            self.observed = spent if self.observed is None else _with_attempt(self.observed, spent)
        kind = _LIFECYCLE_FAILURE.get(outcome.failure)
        if kind is not None:
            self.key_failure = RecordFailure(
                credential_id=current.credential_id, failure=kind, http_status=outcome.status
            )
        self._move(Signal.FAILED)

    def leave(
        self,
        resolution: budget.SettleHold | budget.RefundHold | None,
        reports: tuple[PlatformReport, ...],
    ) -> list[Item]:
        """Leave the request: the items that record its pending outcome, settlement, key failure."""
        deferred, self.pending = self.pending, None
        key_failure, self.key_failure = self.key_failure, None
        self.left()
        items: list[Item] = []
        if deferred is not None or resolution is not None or reports:
            items.append(_Leave(self, deferred, resolution, reports))
        if key_failure is not None:
            items.append(_KeyFailure(self, key_failure))
        return items

    def usage_of(self, model: str, input_tokens: int, output_tokens: int) -> Usage:
        """The usage a success with these token counts bills."""
        return Usage(
            cost_micros=self._cost(model, input_tokens, output_tokens),
            tokens=input_tokens + output_tokens,
            requests=1,
        )

    def estimate_usage(self) -> Usage:
        """The hold's estimate (what an unreported usage bills), or zero without a hold."""
        return self.hold.estimate if self.hold is not None else Usage()

    def exhaustion_report(self, failures: Sequence[Event]) -> ExhaustionReport | None:
        """The failure report of an exhausted request, from its recorded ``failures`` (I4)."""
        if self.exhausted is None:
            return None
        return exhaustion_report(self.request_id, (*failures, self.exhausted))


def settle_through(
    life: RequestLifecycle, mode: SinkMode, estimate: Usage
) -> LocalLedgerSink | RecordingPlatformSink:
    """The sink of ``mode`` for ``life``'s hold, told how the request ended (L11).

    The one place that chooses the hook: the engine's shell and the what-if
    replay (``adapters/audit/whatif.py``) settle alike.
    """
    # The sink is chosen once; the hooks below are the same in every mode.
    sink = open_sink(
        mode, hold_id=life.request_id, command_id=f"{life.request_id}/resolve", estimate=estimate
    )
    if isinstance(life.result, Served):
        if life.usage is not None and not life.usage.is_zero():
            sink.on_success(life.usage)
        else:
            sink.on_no_usage()
    elif life.partial:
        # Not served: an unobserved cut bills the whole estimate, never less (L11).
        sink.on_incomplete(None if life.unobserved_cut else life.observed)
    else:
        sink.on_error_before_output()
    return sink


def _with_attempt(usage: Usage, attempt: Usage) -> Usage:
    """``usage`` plus another billed attempt's: its cost and tokens; still one request."""
    return Usage(
        cost_micros=usage.cost_micros + attempt.cost_micros,
        tokens=usage.tokens + attempt.tokens,
        requests=max(usage.requests, attempt.requests),
    )


# --- deciding items (pure; called by the group committer under the runtime's lock) ---


def _decide_enter(
    policy: Policy,
    view: RoutingState,
    holds: HoldGroup,
    item: _Enter,
    now: int,
    credentials: Mapping[str, CredentialUsability] | None,
) -> tuple[Decided, Sequence[Event], budget.Decision | None]:
    """The entry: the request, its hold and (when new) its first step, in one batch."""
    life = item.life
    started = decide_start(policy, view, life.start, now_us=now)
    held = holds.peek(item.hold, now_us=now) if item.hold is not None else None
    hold_events = held.events if held is not None else ()
    if held is not None and held.rejection is not None:
        return Decided((*started, *held.events), held.rejection), started, held
    if len(started) != 1:
        return Decided((*started, *hold_events)), started, held
    step = decide_next(
        policy,
        view,
        RouteNext(request_id=life.request_id, attempt_id=life._attempt_id(life.request_id, 1)),
        now_us=now,
        credentials=credentials,
        opening=started[0],  # type: ignore[arg-type]
    )
    routed = step.events
    return Decided((*started, *hold_events, *routed), None, step), (*started, *routed), held


def _overlay(
    policy: Policy,
    credentials: Mapping[str, CredentialUsability] | None,
    unusable: Mapping[str, UnusableReason],
) -> Mapping[str, CredentialUsability]:
    """``credentials`` (or, untracked, every configured one) with local reasons on top."""
    if credentials is None:
        credentials = {
            spec.id: CredentialUsability(
                credential_id=spec.id,
                unusable=None,
                resolved_models=None,
                validates_model_names=False,
            )
            for spec in policy.credentials
        }
    merged = dict(credentials)
    for credential_id, reason in unusable.items():
        view = merged.get(credential_id)
        if view is not None:
            merged[credential_id] = attrs.evolve(view, unusable=reason)
    return merged


def decide_items(
    policy: Policy,
    track_credentials: bool,
    state: Folded,
    items: Sequence[Item],
    now: int,
    unusable: Mapping[str, UnusableReason] | None = None,
) -> list[Decided | Exception]:
    """Decide several requests' items as one batch, exactly as if appended one by one.

    Budget commands go through a :class:`HoldGroup` (each sees the ones
    before). Routing decisions go through a :func:`group_view`: exact while
    every routing event so far is request-local, so the group ends after an
    item with any other event, and before a second item of the same request
    (the committer queues the rest for the next group).
    """
    credentials = usability(state.credentials, now) if track_credentials else None
    if unusable:
        credentials = _overlay(policy, credentials, unusable)
    if len(items) == 1:  # the common case (no concurrency): decided on the state itself
        lone = items[0]
        command = _hold_command(lone)
        holds = HoldGroup(state.budget, (command,) if command is not None else ())
        try:
            return [decide_item(policy, state.routing, holds, state, lone, now, credentials)[0]]
        except UsageError as error:
            return [error]
    commands = [_hold_command(i) for i in items]
    holds = HoldGroup(state.budget, [c for c in commands if c is not None])
    view = group_view(state.routing)
    seen: set[str] = set()
    outcomes: list[Decided | Exception] = []
    for item in items:
        request_id = item.life.request_id
        if request_id in seen:
            break
        seen.add(request_id)
        try:
            decided, routed, held = decide_item(policy, view, holds, state, item, now, credentials)
        except UsageError as error:
            outcomes.append(error)
            continue
        if held is not None:
            holds.keep(held)
        outcomes.append(decided)
        if isinstance(item, _KeyFailure):
            break  # a credential event is not in the view: nothing may follow it
        note_in_view(view, routed)
        if not request_local(routed, request_id):
            break
    return outcomes


def _hold_command(item: Item) -> HoldCommand | None:
    """The budget command ``item`` carries: an entry's hold, a leave's resolution."""
    if isinstance(item, _Enter):
        return item.hold
    return item.resolution if isinstance(item, _Leave) else None


def decide_item(
    policy: Policy,
    view: RoutingState,
    holds: HoldGroup,
    state: Folded,
    item: Item,
    now: int,
    credentials: Mapping[str, CredentialUsability] | None,
) -> tuple[Decided, Sequence[Event], budget.Decision | None]:
    """One item's decision, its routing events (for the view) and its hold decision."""
    if isinstance(item, _Enter):
        return _decide_enter(policy, view, holds, item, now, credentials)
    if isinstance(item, _Next):
        step = decide_next(policy, view, item.command, now_us=now, credentials=credentials)
        events = step.events
        return Decided(events, None, step), events, None
    if isinstance(item, _Report):
        reported = decide_outcome(policy, view, item.command, now_us=now)
        return Decided(reported), reported, None
    if isinstance(item, _KeyFailure):
        if item.command.credential_id not in state.credentials.credentials:
            return Decided(()), (), None
        failed = decide_failure(state.credentials, item.command, now_us=now)
        return Decided(failed), (), None
    routed: Sequence[RoutingEvent] = (
        decide_outcome(policy, view, item.deferred, now_us=now) if item.deferred is not None else ()
    )
    held = holds.peek(item.resolution, now_us=now) if item.resolution is not None else None
    return Decided((*routed, *(held.events if held else ()))), routed, held


# --- the caller's side: attempts and the request handle -------------------------------


class Attempt:
    """One routed attempt: call ``upstream_model`` with ``credential_id``, then report."""

    def __init__(self, handle: RequestHandle, routed: AttemptRouted) -> None:
        self._handle = handle
        self.attempt_id = routed.attempt_id
        self.number = routed.attempt_no
        self.credential_id = routed.credential_id
        self.upstream_model = routed.upstream_model
        self.owner_scope = routed.owner_scope
        self.continuation = routed.continuation
        #: Output already delivered to the caller by earlier attempts.
        self.delivered_chars = routed.delivered_chars
        self.probe = routed.probe
        self.endpoint = handle.engine.endpoint(routed.credential_id)
        self.outcome: Succeeded | Failed | None = None
        #: This attempt's span (``None`` without telemetry).
        self.span: Span | None = None

    @property
    def continues(self) -> bool:
        """Whether this attempt continues a partial answer (prefill) instead of restarting."""
        return self.continuation is Continuation.CONTINUE

    def succeeded(
        self,
        *,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        evidence: Evidence = Evidence.UPSTREAM,
        ttft_us: int | None = None,
        duration_us: int | None = None,
        announced: Announced | None = None,
    ) -> None:
        """The upstream answered completely (a truncated answer is a failure, never this).

        Leave both token counts out when the provider reported no usage: the
        request is then billed its estimate, never zero (L11). ``ttft_us`` and
        ``duration_us`` are what the caller measured (µs from sending the
        request to its first token, to its end); ``announced`` the rate limits
        the response's headers announced (``observe_announced``). All three
        are recorded on ``AttemptSucceeded`` for the audit; an announced
        exhausted window keeps the pair out of routing until its reset.
        """
        reported = input_tokens is not None or output_tokens is not None
        outcome = Succeeded(
            evidence=evidence,
            input_tokens=input_tokens or 0,
            output_tokens=output_tokens or 0,
            ttft_us=ttft_us,
            duration_us=duration_us,
            announced=announced,
        )
        # Checked now, so misuse is raised here and not when the request is left.
        problem = succeeded_problem(outcome)
        if problem is not None:
            raise UsageError(f"attempt {self.attempt_id}: {problem}")
        life = self._handle.lifecycle
        usage = (
            life.usage_of(self.upstream_model, outcome.input_tokens, outcome.output_tokens)
            if reported
            else None
        )
        self._report(outcome, usage)

    def failed(
        self,
        failure: FailureClass | Failed,
        *,
        phase: Phase = Phase.BEFORE_RESPONSE,
        status: int | None = None,
        detail: str = "",
        hint_us: int | None = None,
        billed: bool = False,
        observed_usage: Usage | None = None,
        ttft_us: int | None = None,
        duration_us: int | None = None,
        announced: Announced | None = None,
    ) -> None:
        """The attempt failed; ``detail`` is scrubbed and capped before it is recorded.

        ``ttft_us``, ``duration_us`` and ``announced`` as for :meth:`succeeded`
        (a ``Failed`` given whole carries its own).
        """
        outcome = (
            failure
            if isinstance(failure, Failed)
            else Failed(
                failure=failure,
                phase=phase,
                delivered_chars=self.delivered_chars,
                hint_us=hint_us,
                status=status,
                detail=self._handle.engine.scrubber(detail)[:DETAIL_CHARS_MAX],
                billed=billed,
                ttft_us=ttft_us,
                duration_us=duration_us,
                announced=announced,
            )
        )
        problem = measured_problem(outcome)
        if problem is not None:
            raise UsageError(f"attempt {self.attempt_id}: {problem}")
        self._report(outcome, observed_usage)

    def observed(
        self,
        observation: Observation,
        *,
        ttft_us: int | None = None,
        duration_us: int | None = None,
    ) -> None:
        """Report what an adapter observed (a response, an exception, a stream).

        ``ttft_us`` and ``duration_us``: what the caller measured (see
        :meth:`succeeded`); the announced limits come with the observation.
        """
        outcome = observation.outcome
        if isinstance(outcome, Succeeded):
            reported = observation.usage_reported
            self.succeeded(
                input_tokens=outcome.input_tokens if reported else None,
                output_tokens=outcome.output_tokens if reported else None,
                evidence=outcome.evidence,
                ttft_us=ttft_us,
                duration_us=duration_us,
                announced=observation.announced,
            )
        else:
            tokens = observation.failed_usage
            self.failed(
                attrs.evolve(
                    outcome,
                    delivered_chars=max(outcome.delivered_chars, self.delivered_chars),
                    status=observation.status,
                    detail=observation.detail[:DETAIL_CHARS_MAX],
                    billed=observation.billed,
                    ttft_us=ttft_us,
                    duration_us=duration_us,
                    announced=observation.announced,
                ),
                observed_usage=None
                if tokens is None
                else self._handle.lifecycle.usage_of(self.upstream_model, *tokens),
            )

    def failed_from_exception(self, error: BaseException) -> None:
        """Classify an SDK/httpx exception (adapters/providers/observe.py) and report it.

        Read by behaviour: any exception carrying an HTTP answer (openai, anthropic,
        google-genai, mistralai, pydantic-ai, litellm, httpx/httpx2) is classified from
        its status, headers and body, with the engine's classifier (``[classification]``
        rules first).
        """
        engine = self._handle.engine
        self.observed(
            observe_exception(
                error,
                now_us=engine.clock.now_us(),
                scrubber=engine.scrubber,
                classifier=engine.classifier,
            )
        )

    def observe_response(self, response: object) -> None:
        """Classify a complete response (httpx, httpx2, requests-like) and report it;
        :class:`UsageError` for an object without an HTTP status."""
        engine = self._handle.engine
        self.observed(
            observe_response(
                response,
                now_us=engine.clock.now_us(),
                scrubber=engine.scrubber,
                classifier=engine.classifier,
            )
        )

    def _report(self, outcome: Succeeded | Failed, usage: Usage | None) -> None:
        if self.outcome is not None:
            raise UsageError(f"attempt {self.attempt_id} already has an outcome")
        life = self._handle.lifecycle
        if life.current is None or life.current.attempt_id != self.attempt_id:
            raise UsageError(f"attempt {self.attempt_id} is not the request's current attempt")
        life.report(outcome, usage=usage)
        self.outcome = outcome
        span = self.span
        if span is not None:
            self.span = None
            telemetry = self._handle.engine.telemetry
            if telemetry is not None:
                telemetry.attempt_ended(span, self.upstream_model, outcome)


class RequestHandle:
    """A request in flight: a sync and async context manager that never leaks its hold."""

    def __init__(
        self,
        engine: Engine,
        start: StartRequest,
        *,
        accounts: tuple[str, ...],
        max_output_tokens: int | None,
        settlement: SinkMode = SinkMode.STANDALONE,
    ) -> None:
        self.engine = engine
        self.settlement = settlement
        self.start = start
        self.request_id = start.request_id
        self.accounts = accounts
        self.estimate = engine.estimate(
            start.route, start.backups, start.input_tokens, max_output_tokens
        )
        hold = (
            budget.PlaceHold(
                hold_id=self.request_id,
                account_ids=accounts,
                estimate=self.estimate,
                ttl_us=engine.hold_ttl_us(),
            )
            if accounts
            else None
        )
        self.lifecycle = RequestLifecycle(start, hold=hold, prices=engine.cost_micros)
        self._attempt: Attempt | None = None
        self._entering = False
        self._settled = False
        #: Counted in the engine's ``requests_in_flight`` (async entry to exit).
        self._in_flight = False
        #: The request's span, entry to exit (``None`` without telemetry).
        self.span: Span | None = None

    @property
    def result(self) -> Result | None:
        """Served, Exhausted, Degradation or BudgetRejected once known; ``None`` before."""
        return self.lifecycle.result

    @property
    def phase(self) -> RequestPhase:
        """The request's phase (see :class:`RequestPhase`)."""
        return self.lifecycle.phase

    def exhaustion_report(self) -> ExhaustionReport | None:
        """The ordered failed attempts and Retry-After of an exhausted request (I4)."""
        request = self.engine.state.routing.requests.get(self.request_id)
        return self.lifecycle.exhaustion_report(request.failures if request is not None else ())

    # -- the shells: each action of the lifecycle, done the sync or the async way --

    def _enter_action(self) -> Commit:
        if self._entering:
            raise UsageError(f"request {self.request_id} was already entered")
        self._entering = True
        telemetry = self.engine.telemetry
        if telemetry is not None:
            self.span = telemetry.request_started(self)
        action = self.lifecycle.next_action()
        if not isinstance(action, Commit):  # pragma: no cover - NEW always commits
            raise InvariantViolation(f"request {self.request_id}: entry is {action!r}")
        return action

    def __enter__(self) -> RequestHandle:
        action = self._enter_action()
        try:
            roll_before_entry(self.engine, self.accounts)
            decided = self.engine.committer.submit(action.item)
        except BaseException as error:
            self._end_span(error)  # nothing was recorded: nothing to leave
            raise
        self.lifecycle.committed(action.item, decided)
        return self

    async def __aenter__(self) -> RequestHandle:
        action = self._enter_action()
        self._in_flight = True
        self.engine.requests_in_flight += 1
        try:
            if self.accounts and due_periods(
                self.engine.state, self.accounts, self.engine.clock.now_us()
            ):  # once per period: the roll's commit off the event loop
                await asyncio.to_thread(roll_before_entry, self.engine, self.accounts)
            decided = await self.engine.committer.asubmit(action.item, on_abandoned=self._abandoned)
        except asyncio.CancelledError:
            raise  # ``_abandoned`` leaves the request once its entry is known
        except BaseException as error:
            self._out_of_flight()  # nothing was recorded: nothing to leave
            self._end_span(error)
            raise
        self.lifecycle.committed(action.item, decided)
        return self

    def _end_span(self, error: BaseException | None) -> None:
        """End the request's span (once) with how the request ended."""
        span = self.span
        if span is not None:
            self.span = None
            telemetry = self.engine.telemetry
            if telemetry is not None:
                telemetry.request_ended(span, self, error)

    def _out_of_flight(self) -> None:
        if self._in_flight:
            self._in_flight = False
            self.engine.requests_in_flight -= 1

    def _abandoned(self, slot: Slot[Item, Decided]) -> None:
        """The caller was cancelled while entering; the entry was recorded anyway: close it."""
        try:
            decided = slot.result()
        except Exception as error:
            self._out_of_flight()
            self._end_span(error)
            return  # nothing was recorded
        self.lifecycle.committed(slot.command, decided)
        task = asyncio.get_running_loop().create_task(
            self._aleave(asyncio.CancelledError("cancelled while entering"))
        )
        self.engine._background.add(task)
        task.add_done_callback(self.engine._background.discard)

    async def _acommit(self, item: Item) -> LifecycleAction | None:
        """Commit ``item``; if the caller is cancelled meanwhile, still learn what was recorded.

        The item is recorded whatever happens to the caller, so the lifecycle
        must know it before the request is left (an attempt routed by it must
        be recorded as failed, not left in flight).
        """
        task = asyncio.ensure_future(self.engine.committer.asubmit(item))
        try:
            decided = await asyncio.shield(task)
        except asyncio.CancelledError:
            while not task.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(task)
            if not task.cancelled() and task.exception() is None:
                self.lifecycle.committed(item, task.result())
            raise
        return self.lifecycle.committed(item, decided)

    def _perform(self, action: Perform) -> Attempt:
        attempt = self._attempt = Attempt(self, action.routed)
        if self.span is not None:
            telemetry = self.engine.telemetry
            if telemetry is not None:
                attempt.span = telemetry.attempt_started(
                    self.span, action.routed, attempt.endpoint.base_url
                )
        return attempt

    def _seconds_until(self, until_us: int) -> float:
        return max(0.0, (until_us - self.engine.clock.now_us()) / US_PER_S)

    def sync_attempts(self) -> Iterator[Attempt]:
        """Iterate attempts, blocking through waits (sync gateways)."""
        life, committer = self.lifecycle, self.engine.committer
        for _ in range(REQUEST_STEPS_MAX):
            action = life.next_action()
            while isinstance(action, Commit):
                action = (
                    life.committed(action.item, committer.submit(action.item)) or life.next_action()
                )
            if isinstance(action, Sleep):
                self.engine.clock.sleep(self._seconds_until(action.until_us))
                life.wait_over()
            elif isinstance(action, Perform):
                yield self._perform(action)
            else:
                return
        raise UsageError(f"request {self.request_id} took more than {REQUEST_STEPS_MAX} steps")

    async def attempts(self) -> AsyncIterator[Attempt]:
        """Iterate attempts, awaiting through waits."""
        life = self.lifecycle
        for _ in range(REQUEST_STEPS_MAX):
            action = life.next_action()
            while isinstance(action, Commit):
                action = await self._acommit(action.item) or life.next_action()
            if isinstance(action, Sleep):
                await self.engine.clock.asleep(self._seconds_until(action.until_us))
                life.wait_over()
            elif isinstance(action, Perform):
                yield self._perform(action)
            else:
                return
        raise UsageError(f"request {self.request_id} took more than {REQUEST_STEPS_MAX} steps")

    # -- leaving: always resolve the hold --

    def _record_unfinished(self, error: BaseException | None) -> None:
        """Record why an attempt the caller was given (or never took) has no outcome."""
        life = self.lifecycle
        if life.phase is RequestPhase.ROUTING and life.step is not None:
            # The first step was decided at entry but never taken: take it now.
            action = life.next_action()
            if isinstance(action, Perform):
                self._perform(action)
        current = life.current
        if life.phase is RequestPhase.ATTEMPTING and current is not None:
            attempt = self._attempt
            if attempt is None or attempt.attempt_id != current.attempt_id:
                attempt = Attempt(self, current)  # routed while the caller was cancelled
            # The caller's own misuse of this API (a UsageError) ends the request
            # like a cancellation: it says nothing about the upstream (no cooldown).
            failure = (
                FailureClass.CALLER_CANCELLED
                if error is None
                or isinstance(
                    error, (asyncio.CancelledError, GeneratorExit, KeyboardInterrupt, UsageError)
                )
                else FailureClass.UNKNOWN
            )
            attempt.failed(
                failure,
                phase=Phase.MID_STREAM if attempt.delivered_chars else Phase.BEFORE_RESPONSE,
                detail=type(error).__name__ if error is not None else "left without an outcome",
            )

    def _settlement(
        self,
    ) -> tuple[list[budget.SettleHold | budget.RefundHold], list[PlatformReport]]:
        """The sink's commands (local ledger) or reports (platform) for how the request ended."""
        life = self.lifecycle
        platform = self.settlement is SinkMode.PLATFORM
        entered = life.phase is not RequestPhase.NEW and not isinstance(life.result, BudgetRejected)
        if self._settled or not entered or not (self.accounts or platform):
            return [], []
        self._settled = True
        sink = settle_through(life, self.settlement, self.estimate)
        if isinstance(sink, LocalLedgerSink):
            return sink.commands, []
        return [], sink.reports

    def _leave_items(self, error: BaseException | None) -> list[Item]:
        """What leaving records: the pending outcome and the settlement, then a key failure."""
        life = self.lifecycle
        if life.phase is RequestPhase.LEFT:
            return []
        self._record_unfinished(error)
        commands, reports = self._settlement()
        if len(commands) > 1:  # one hook was called: one command at most
            raise InvariantViolation(f"request {self.request_id}: {len(commands)} settlements")
        return life.leave(commands[0] if commands else None, tuple(reports))

    def _left(self, items: Sequence[Item]) -> None:
        """After the resolution is recorded: platform reports (snapshots: the maintenance loop)."""
        # The attempt refers back to the handle: a cycle only the cyclic GC would free
        # (and never, once ``gc_freeze`` froze it). The handle needs it no more.
        self._attempt = None
        engine = self.engine
        for item in items:
            if isinstance(item, _Leave) and item.reports:
                deliver = engine.platform
                if deliver is None:  # pragma: no cover - checked when the request was made
                    raise InvariantViolation("a platform-mode request without a platform")
                for report in item.reports:
                    deliver(report)

    def __exit__(self, exc_type: object, error: BaseException | None, tb: object) -> None:
        try:
            items = self._leave_items(error)
            for item in items:
                self.engine.committer.submit(item)
            self._left(items)
        finally:
            self._end_span(error)

    async def _aleave(self, error: BaseException | None) -> None:
        items = self._leave_items(error)
        committer = self.engine.committer
        # Queued together before the only await: a cancellation there does not
        # withdraw them, and ``_left`` still runs once they are recorded.
        try:
            if len(items) == 1:  # the common case: no gather to build
                await committer.asubmit(items[0], on_abandoned=lambda _: self._left(items))
            elif items:
                await committer.asubmit_all(items, on_abandoned=lambda: self._left(items))
        finally:
            self._out_of_flight()
            self._end_span(error)
        self._left(items)

    async def __aexit__(self, exc_type: object, error: BaseException | None, tb: object) -> None:
        await self._aleave(error)
