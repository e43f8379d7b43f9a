"""Routing state: availability per (credential, upstream model) pair, per credential, per request.

Rules (the spec ids are in ``../shared/spec/invariants.md``):

1. Availability is keyed by the concrete pair's stream id ``pair:<c>:<m>`` and
   by the credential's ``cred:<c>``; never by an alias or a pool (I1). A
   round-robin cursor is the only thing keyed by a target, and it carries no
   availability.
2. A scope (pair or credential) is in exactly one *status* at engine time
   ``now`` (:func:`status_at`), computed from three stored numbers::

       until_us > now                       -> COOLING or SUSPENDED
       needs_probe and probe_until_us > now -> PROBING   (one probe in flight)
       needs_probe                          -> HALF_OPEN (one probe allowed)
       otherwise                            -> AVAILABLE

   So every block ends by itself when engine time passes ``until_us`` (A3),
   and after it one probe is allowed before full traffic returns (A4).
   ``ready_us`` caches ``max(until_us, probe_until_us)``: the scope is not
   selectable strictly before it (the deciders' hot path reads only this).
3. Only ``CooldownCleared`` (decided from a real upstream success of that very
   scope) or an operator's ``BlockLifted`` resets a scope to AVAILABLE (A4,
   I1.2). An operator's ``BlockImposed`` suspends it like a failure would,
   without a failure class (``reason`` stays ``None``).
4. ``until_us`` only grows: the decider computes ``max(until, now + d)`` (A2).
5. A pair also carries ``predicted_us``: the provider announced it has no
   requests (or tokens) left until then (``ExhaustionPredicted``; cleared by
   ``PredictionCleared``). It is not a block: the status is unchanged, there
   is no backoff and no probe, but the pair is not selectable strictly before
   it (:func:`pair_ready_us`). One number per configured pair (bounded by the
   policy, like the rest of the scope).

Theory of operation. The state is a private mutable accumulator owned by the
fold: :func:`evolve` updates it in place and returns it, and only *assigns*
values carried by events (every business ``if`` lives in :mod:`.decide`).
Each scope and request also records its stream's head version so deciders
stamp the next one. A state built with ``initial(policy)`` also keeps a
derived readiness index per large pool (:mod:`.index`), refreshed by the fold
after every availability event; it is an acceleration only — deciders produce
the same events with or without it, and it holds no availability of its own. Events of other contexts are ignored, except that the
version of a ``cred:`` stream (shared with the credential lifecycle) is kept.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from typing import Any, Final

from ..errors import InvariantViolation
from ..events import Event
from ..streams import CREDENTIAL, is_pair_stream, pair_stream
from .capacity import LoadState, on_slot_returned, on_slot_taken
from .events import (
    AttemptFailed,
    AttemptRouted,
    AttemptSucceeded,
    BlockImposed,
    BlockLifted,
    CooldownCleared,
    CooldownExtended,
    CooldownStarted,
    CredentialSuspended,
    Degraded,
    ExhaustionPredicted,
    FailureTolerated,
    FallbackExhausted,
    PairSuspended,
    PredictionCleared,
    ProbeAllowed,
    ProbeReleased,
    RequestReceived,
    RoutingEvent,
    SlotReturned,
    SlotTaken,
    TokensCounted,
    WaitDecided,
)
from .failures import Evidence, FailureClass
from .index import ReadyTree, index_pools, refresh_leaves
from .policy import ATTEMPTS_MAX, COOLDOWN_US_MAX, Policy

__all__ = [
    "LATENCY_WEIGHT",
    "LEVEL_MAX",
    "AttemptRecord",
    "RequestState",
    "RoutingState",
    "ScopeState",
    "Status",
    "advance_cursor",
    "check_invariants",
    "evolve",
    "fold",
    "initial",
    "note_in_flight",
    "note_latency",
    "pair_ready_us",
    "reindex",
    "retire",
    "status_at",
]

#: Weight of a new sample in a pair's moving latency estimate is 1/LATENCY_WEIGHT.
#: Why 8: the estimate follows a real change within ~10 answers, and one slow
#: answer moves it by an eighth only.
LATENCY_WEIGHT: Final = 8

#: Highest backoff level. Why: ``factor**level`` with factor <= 10 stays an
#: exact small int, and every cooldown reaches its ``max_us`` well before.
LEVEL_MAX: Final = 30


class Status(enum.Enum):
    """The availability of a pair or a credential at one instant."""

    #: Full traffic.
    AVAILABLE = "available"
    #: Cooling down until ``until_us`` (exponential backoff).
    COOLING = "cooling"
    #: Suspended until ``until_us`` (fixed period).
    SUSPENDED = "suspended"
    #: The block expired; one probe may go through.
    HALF_OPEN = "half_open"
    #: The block expired and its probe is in flight until ``probe_until_us``.
    PROBING = "probing"


class ScopeState:
    """Availability of one pair (``pair:<c>:<m>``) or one credential (``cred:<c>``)."""

    __slots__ = (
        "blocked_at_us",
        "level",
        "needs_probe",
        "predicted_us",
        "probe_attempt_id",
        "probe_until_us",
        "ready_us",
        "reason",
        "strike_at_us",
        "strikes",
        "suspended",
        "until_us",
        "version",
    )

    def __init__(self) -> None:
        #: Head version of the scope's stream.
        self.version = 0
        #: Blocked strictly before this engine time (0 = never blocked).
        self.until_us = 0
        #: When the current block was last set (bounds A3).
        self.blocked_at_us = 0
        #: Consecutive failures without a healing success (backoff level).
        self.level = 0
        #: Whether the block is a suspension rather than a cooldown.
        self.suspended = False
        #: The failure class behind the block (``None`` for an operator's suspension).
        self.reason: FailureClass | None = None
        #: Blocked once and not yet healed by a real success: half-open after expiry.
        self.needs_probe = False
        #: A probe is in flight until this time.
        self.probe_until_us = 0
        #: The attempt holding the probe slot (``ProbeAllowed``), until it is answered.
        self.probe_attempt_id: str | None = None
        #: Not selectable strictly before this time: the block's or the probe's end
        #: (the later of the two; a probe is only allowed after the block ended).
        self.ready_us = 0
        #: Tolerated failures in a row (``FailureTolerated``), reset by any block or heal.
        self.strikes = 0
        #: When the latest tolerated failure was decided.
        self.strike_at_us = 0
        #: Predicted exhausted (announced limits) strictly before this time (rule 5).
        self.predicted_us = 0


def pair_ready_us(scope: ScopeState) -> int:
    """When a pair is selectable again: the later of its block's end and its predicted reset."""
    ready = scope.ready_us
    predicted = scope.predicted_us
    return predicted if predicted > ready else ready


class AttemptRecord:
    """One attempt of a request, as routed."""

    __slots__ = ("chain_position", "credential_id", "outcome", "pair_stream", "upstream_model")

    def __init__(self, event: AttemptRouted) -> None:
        self.credential_id = event.credential_id
        self.upstream_model = event.upstream_model
        self.pair_stream = pair_stream(event.credential_id, event.upstream_model)
        self.chain_position = event.chain_position
        #: The outcome observation, once recorded.
        self.outcome: AttemptSucceeded | AttemptFailed | None = None


class RequestState:
    """One request's progress along its chain."""

    __slots__ = (
        "attempts",
        "fails_by_pair",
        "failures",
        "in_flight",
        "last_at_us",
        "last_class_by_pair",
        "last_failure",
        "position",
        "received",
        "terminal",
        "terminal_decisions",
        "version",
        "wait_until_us",
        "waited_total_us",
    )

    def __init__(self, event: RequestReceived) -> None:
        self.version = event.version
        self.received = event
        #: Engine time of the request's latest event (the retention horizon's clock).
        self.last_at_us = event.at_us
        #: attempt id -> record, in routing order.
        self.attempts: dict[str, AttemptRecord] = {}
        #: The attempt routed and not yet answered, if any.
        self.in_flight: str | None = None
        #: Chain position of the latest attempt (positions only grow: each target once).
        self.position = 0
        #: Failures of this request per pair stream (retry-same budget).
        self.fails_by_pair: dict[str, int] = {}
        #: The latest failure class per pair stream (its retry-same rule applies).
        self.last_class_by_pair: dict[str, FailureClass] = {}
        #: Failure observations in order (the exhaustion report).
        self.failures: list[AttemptFailed] = []
        self.last_failure: AttemptFailed | None = None
        self.waited_total_us = 0
        #: The request waits until this time (the latest ``WaitDecided``).
        self.wait_until_us = 0
        #: Served, exhausted or degraded: nothing more is decided.
        self.terminal = False
        #: How many terminal decisions were folded (A7: at most one).
        self.terminal_decisions = 0


class RoutingState:
    """The whole routing state (see the module docstring)."""

    __slots__ = (
        "creds",
        "cursors",
        "in_flight",
        "indexed_for",
        "latency",
        "loads",
        "pairs",
        "requests",
        "tree_leaves",
        "trees",
    )
    #: Slots holding the derived pool index (rebuilt by :func:`reindex`), not state.
    DERIVED_SLOTS: Final = ("indexed_for", "tree_leaves", "trees")

    def __init__(self) -> None:
        self.pairs: dict[str, ScopeState] = {}
        self.creds: dict[str, ScopeState] = {}
        #: Credential id -> its configured limits' counts (:mod:`.capacity`).
        self.loads: dict[str, LoadState] = {}
        #: Pair stream -> attempts routed to it and not yet answered (``least_in_flight``);
        #: a pair with none has no entry.
        self.in_flight: dict[str, int] = {}
        #: Pair stream -> moving estimate of its time to first token, µs (``least_latency``).
        self.latency: dict[str, int] = {}
        self.requests: dict[str, RequestState] = {}
        #: Round-robin cursor per target path (``routes.<alias>.chain[i]``): the member index to start from.
        self.cursors: dict[str, int] = {}
        #: The policy whose pools are indexed (:mod:`.index`), or ``None``.
        self.indexed_for: Policy | None = None
        #: Pool path -> readiness tree (pools of at least TREE_MIN_MEMBERS members).
        self.trees: dict[str, ReadyTree] = {}
        #: Pair or credential stream -> the tree leaves it feeds: (tree, member, pair, cred).
        self.tree_leaves: dict[str, list[tuple[ReadyTree, int, str, str]]] = {}


def initial(policy: Policy | None = None) -> RoutingState:
    """A fresh, empty routing state; with ``policy``, its large pools are indexed (:mod:`.index`).

    Deciders produce the same events either way; the index only makes picking
    in large pools with long blocked runs O(log n) instead of O(n).
    """
    state = RoutingState()
    if policy is not None:
        index_pools(state, policy)
    return state


def reindex(state: RoutingState, policy: Policy) -> RoutingState:
    """``state`` (e.g. restored from a snapshot) with its large pools indexed for ``policy``.

    The index is derived data: it is rebuilt from the pair and credential
    states, so the decisions are the same as before, only faster.
    """
    fresh = initial(policy)
    fresh.pairs = state.pairs
    fresh.creds = state.creds
    fresh.requests = state.requests
    fresh.cursors = state.cursors
    fresh.loads = state.loads
    fresh.in_flight = state.in_flight
    fresh.latency = state.latency
    for stream in fresh.tree_leaves:
        refresh_leaves(fresh, stream)
    return fresh


def status_at(scope: ScopeState | None, now_us: int) -> Status:
    """The status of a scope at ``now_us`` (rule 2 of the module docstring)."""
    if scope is None:
        return Status.AVAILABLE
    if scope.until_us > now_us:
        return Status.SUSPENDED if scope.suspended else Status.COOLING
    if not scope.needs_probe:
        return Status.AVAILABLE
    if scope.probe_until_us > now_us:
        return Status.PROBING
    return Status.HALF_OPEN


def _scope(state: RoutingState, event: Event) -> ScopeState:
    table = state.pairs if is_pair_stream(event.stream_id) else state.creds
    scope = table.get(event.stream_id)
    if scope is None:
        scope = table[event.stream_id] = ScopeState()
    scope.version = event.version
    return scope


def _block(
    state: RoutingState,
    event: CooldownStarted | CooldownExtended | PairSuspended | CredentialSuspended,
    *,
    suspended: bool,
) -> ScopeState:
    scope = _scope(state, event)
    scope.until_us = event.until_us
    scope.ready_us = event.until_us
    scope.blocked_at_us = event.at_us
    scope.suspended = suspended
    scope.reason = event.reason
    scope.needs_probe = True
    scope.probe_until_us = 0
    scope.probe_attempt_id = None
    scope.strikes = 0
    return scope


def _on_cooldown(state: RoutingState, event: CooldownStarted | CooldownExtended) -> RoutingState:
    _block(state, event, suspended=False).level = event.level
    refresh_leaves(state, event.stream_id)
    return state


def _on_suspended(state: RoutingState, event: PairSuspended | CredentialSuspended) -> RoutingState:
    _block(state, event, suspended=True)
    refresh_leaves(state, event.stream_id)
    return state


def _on_imposed(state: RoutingState, event: BlockImposed) -> RoutingState:
    scope = _scope(state, event)
    scope.until_us = event.until_us
    scope.ready_us = event.until_us
    scope.blocked_at_us = event.at_us
    scope.suspended = True
    scope.reason = None
    scope.needs_probe = True
    scope.probe_until_us = 0
    scope.probe_attempt_id = None
    scope.strikes = 0
    refresh_leaves(state, event.stream_id)
    return state


def _on_tolerated(state: RoutingState, event: FailureTolerated) -> RoutingState:
    scope = _scope(state, event)
    scope.strikes = event.strikes
    scope.strike_at_us = event.at_us
    return state


def _on_cleared(state: RoutingState, event: CooldownCleared | BlockLifted) -> RoutingState:
    scope = _scope(state, event)
    scope.until_us = 0
    scope.ready_us = 0
    scope.blocked_at_us = 0
    scope.level = 0
    scope.suspended = False
    scope.reason = None
    scope.needs_probe = False
    scope.probe_until_us = 0
    scope.probe_attempt_id = None
    scope.strikes = 0
    refresh_leaves(state, event.stream_id)
    return state


def _on_probe(state: RoutingState, event: ProbeAllowed) -> RoutingState:
    scope = _scope(state, event)
    scope.probe_until_us = event.until_us
    scope.ready_us = event.until_us
    scope.probe_attempt_id = event.attempt_id
    refresh_leaves(state, event.stream_id)
    return state


def _on_probe_released(state: RoutingState, event: ProbeReleased) -> RoutingState:
    scope = _scope(state, event)
    scope.probe_until_us = 0
    scope.ready_us = scope.until_us
    scope.probe_attempt_id = None
    refresh_leaves(state, event.stream_id)
    return state


def _on_predicted(state: RoutingState, event: ExhaustionPredicted) -> RoutingState:
    _scope(state, event).predicted_us = event.until_us
    refresh_leaves(state, event.stream_id)
    return state


def _on_prediction_cleared(state: RoutingState, event: PredictionCleared) -> RoutingState:
    _scope(state, event).predicted_us = 0
    refresh_leaves(state, event.stream_id)
    return state


def _on_received(state: RoutingState, event: RequestReceived) -> RoutingState:
    state.requests[event.request_id] = RequestState(event)
    return state


def _request(
    state: RoutingState,
    event: AttemptRouted
    | AttemptSucceeded
    | AttemptFailed
    | WaitDecided
    | FallbackExhausted
    | Degraded,
) -> RequestState:
    request = state.requests[event.request_id]
    request.version = event.version
    request.last_at_us = event.at_us
    return request


def retire(
    state: RoutingState,
    before_us: int,
    abandoned_before_us: int,
    ended: Callable[[str, RequestState], bool],
) -> None:
    """Drop every ``ended`` request last touched before ``before_us``, and every other one
    last touched before ``abandoned_before_us`` (``core/retention.py``).

    Requests are kept in the order they were received: the scan stops at the
    first one received at or after ``before_us`` (engine time grows along the
    log; a request received out of order is retired by a later retirement).
    """
    doomed = []
    for request_id, request in state.requests.items():
        if request.received.at_us >= before_us:
            break
        if request.last_at_us < abandoned_before_us or (
            request.last_at_us < before_us and ended(request_id, request)
        ):
            doomed.append(request_id)
    for request_id in doomed:
        request = state.requests.pop(request_id)
        if request.in_flight is not None:  # abandoned mid-attempt: it counts no more
            note_in_flight(state, request.attempts[request.in_flight].pair_stream, -1)


def _on_routed(state: RoutingState, event: AttemptRouted) -> RoutingState:
    request = _request(state, event)
    record = request.attempts[event.attempt_id] = AttemptRecord(event)
    request.in_flight = event.attempt_id
    request.position = event.chain_position
    advance_cursor(state, event)
    note_in_flight(state, record.pair_stream, 1)
    return state


def advance_cursor(state: RoutingState, event: AttemptRouted) -> None:
    state.cursors[event.target_path] = event.member_index + 1


def note_in_flight(state: RoutingState, pair: str, change: int) -> None:
    """Count one more (``+1``) or one fewer (``-1``) attempt in flight on ``pair``."""
    count = state.in_flight.get(pair, 0) + change
    if count > 0:
        state.in_flight[pair] = count
    else:
        state.in_flight.pop(pair, None)


def note_latency(state: RoutingState, event: AttemptSucceeded, pair: str) -> None:
    """Fold a real upstream answer's time to first token into the pair's moving estimate.

    An integer exponential moving average with weight 1/:data:`LATENCY_WEIGHT`;
    the first sample sets it. Only ``Evidence.UPSTREAM`` answers count (a cache
    hit says nothing about the upstream's speed).
    """
    sample = event.ttft_us if event.ttft_us is not None else event.duration_us
    if sample is None or event.evidence is not Evidence.UPSTREAM:
        return
    old = state.latency.get(pair)
    state.latency[pair] = sample if old is None else old + (sample - old) // LATENCY_WEIGHT


# --------------------------------------------------------------------------- groups


def _on_succeeded(state: RoutingState, event: AttemptSucceeded) -> RoutingState:
    request = _request(state, event)
    record = request.attempts[event.attempt_id]
    record.outcome = event
    request.in_flight = None
    note_in_flight(state, record.pair_stream, -1)
    note_latency(state, event, record.pair_stream)
    request.terminal = True
    return state


def _on_failed(state: RoutingState, event: AttemptFailed) -> RoutingState:
    request = _request(state, event)
    record = request.attempts[event.attempt_id]
    record.outcome = event
    request.in_flight = None
    note_in_flight(state, record.pair_stream, -1)
    request.fails_by_pair[record.pair_stream] = request.fails_by_pair.get(record.pair_stream, 0) + 1
    request.last_class_by_pair[record.pair_stream] = event.failure
    request.failures.append(event)
    request.last_failure = event
    return state


def _on_wait(state: RoutingState, event: WaitDecided) -> RoutingState:
    request = _request(state, event)
    request.waited_total_us = event.waited_total_us
    request.wait_until_us = event.until_us
    return state


def _on_terminal(state: RoutingState, event: FallbackExhausted | Degraded) -> RoutingState:
    request = _request(state, event)
    request.terminal = True
    request.terminal_decisions += 1
    return state


def _load(state: RoutingState, credential_id: str) -> LoadState:
    load = state.loads.get(credential_id)
    if load is None:
        load = state.loads[credential_id] = LoadState()
    return load


def _on_slot_taken(state: RoutingState, event: SlotTaken) -> RoutingState:
    on_slot_taken(_load(state, event.credential_id), event)
    return state


def _on_slot_returned(state: RoutingState, event: SlotReturned) -> RoutingState:
    on_slot_returned(_load(state, event.credential_id), event)
    return state


def _on_counted(state: RoutingState, event: TokensCounted) -> RoutingState:
    """A token count's record: nothing of it is state (G6: a count proves nothing)."""
    del event
    return state


#: Event type -> how it changes the state (the transition table).
_EVOLVE: Final[dict[type[Event], Callable[[RoutingState, Any], RoutingState]]] = {
    RequestReceived: _on_received,
    AttemptRouted: _on_routed,
    AttemptSucceeded: _on_succeeded,
    AttemptFailed: _on_failed,
    WaitDecided: _on_wait,
    FallbackExhausted: _on_terminal,
    Degraded: _on_terminal,
    CooldownStarted: _on_cooldown,
    CooldownExtended: _on_cooldown,
    PairSuspended: _on_suspended,
    CredentialSuspended: _on_suspended,
    CooldownCleared: _on_cleared,
    ProbeAllowed: _on_probe,
    ProbeReleased: _on_probe_released,
    FailureTolerated: _on_tolerated,
    BlockLifted: _on_cleared,
    BlockImposed: _on_imposed,
    ExhaustionPredicted: _on_predicted,
    PredictionCleared: _on_prediction_cleared,
    SlotTaken: _on_slot_taken,
    SlotReturned: _on_slot_returned,
    TokensCounted: _on_counted,
}


def _on_foreign(state: RoutingState, event: Event) -> RoutingState:
    """Another context's event: only the head version of a shared ``cred:`` stream matters."""
    if event.stream_id.startswith(CREDENTIAL):
        _scope(state, event)
    return state


def evolve(state: RoutingState, event: Event) -> RoutingState:
    """Apply one event to ``state`` in place and return it."""
    handler = _EVOLVE.get(type(event))
    if handler is None:
        if isinstance(event, RoutingEvent):
            raise InvariantViolation(f"routing event {type(event).__qualname__} has no transition")
        return _on_foreign(state, event)
    return handler(state, event)


def fold(events: Iterable[Event], state: RoutingState | None = None) -> RoutingState:
    """Fold ``events`` into ``state`` (a fresh one by default)."""
    current = initial() if state is None else state
    for event in events:
        current = evolve(current, event)
    return current


def _check_scope(key: str, scope: ScopeState) -> None:
    if scope.until_us < 0 or scope.probe_until_us < 0 or scope.predicted_us < 0:
        raise InvariantViolation(f"{key}: negative deadline")
    if scope.ready_us != max(scope.until_us, scope.probe_until_us):
        raise InvariantViolation(f"{key}: ready_us is not the end of its block or probe")
    if scope.until_us - scope.blocked_at_us > COOLDOWN_US_MAX:
        raise InvariantViolation(f"A3: {key} blocked for more than COOLDOWN_US_MAX")
    if not 0 <= scope.level <= LEVEL_MAX:
        raise InvariantViolation(f"{key}: backoff level {scope.level} out of 0..{LEVEL_MAX}")
    if not scope.needs_probe and (scope.until_us or scope.probe_until_us or scope.level):
        raise InvariantViolation(f"A4: {key} is healed but keeps a block")
    if scope.needs_probe and scope.reason is None and not scope.suspended:
        raise InvariantViolation(f"{key}: cooling down without a failure class")
    if scope.strikes and scope.needs_probe:
        raise InvariantViolation(f"{key}: a blocked or half-open scope counts tolerated failures")


def check_invariants(state: RoutingState) -> None:
    """Raise :class:`InvariantViolation` unless the state satisfies the routing invariants."""
    for key, scope in state.pairs.items():
        _check_scope(key, scope)
    for key, scope in state.creds.items():
        _check_scope(key, scope)
    for stream, leaves in state.tree_leaves.items():
        for tree, member, pair_key, cred_key in leaves:
            pair = state.pairs.get(pair_key)
            cred = state.creds.get(cred_key)
            expected = max(pair_ready_us(pair) if pair else 0, cred.ready_us if cred else 0)
            if tree.data[tree.size + member] != expected:
                raise InvariantViolation(f"D3: index leaf {member} fed by {stream} is stale")
    for request_id, request in state.requests.items():
        if request.terminal_decisions > 1:
            raise InvariantViolation(f"A7: request {request_id} was ended more than once")
        if len(request.attempts) > ATTEMPTS_MAX:
            raise InvariantViolation(f"request {request_id} made more than {ATTEMPTS_MAX} attempts")
        if request.in_flight is not None and request.terminal:
            raise InvariantViolation(f"request {request_id} ended with an attempt in flight")
