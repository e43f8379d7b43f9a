"""Routing deciders: start a request, decide its next step, record an attempt's outcome.

All three are pure: they read the policy, the folded state, a command and
``now_us`` (plus the credential lifecycle's usability view), never mutate the
state, and return the events to append (stamped with stream id, next version
and ``at_us=now_us``).

Next step (:func:`decide_next`) returns one typed step (:mod:`.steps`):
route an attempt (``AttemptRouted``, with ``ProbeAllowed`` for a half-open
pair or credential), wait (``WaitDecided``), end exhausted
(``FallbackExhausted``) or degraded (``Degraded``), or nothing to decide (no
events): an attempt is in flight, the request has ended, or a decided wait
has not elapsed and nothing became selectable meanwhile.

The request's chain is its route's chain, then the targets of its own backup
aliases (I3: ahead of the global fallback), then those of the route's
fallback aliases; a backup or fallback alias contributes its chain only,
never its own fallbacks, and every target appears once. Candidates are
examined from the current position in chain order and, within a target, in
strategy order. Availability is re-checked at every decision (A6); skipped
candidates cost nothing (I1.4); a failure before the first token continues
the rotation within the target, a mid-stream failure moves to the next target.

Complexity of one next-step decision: O(T + k log n) where T is the number
of targets in the request's chain (<= 16 + backups + fallbacks), n the pool
size and k the members actually examined. Each pool is first scanned in
strategy order for ``TREE_SCAN_FIRST`` members (O(1) each: two dict lookups
and one comparison with ``ready_us``); in a state built with
``initial(policy)`` a pool of ``TREE_MIN_MEMBERS`` or more then jumps over
blocked runs with its readiness tree (:mod:`.index`, O(log n) per jump). At
most ``SKIPS_RECORDED_MAX`` skips are materialised; the rest are counted. The
wait and exhaustion paths (nothing selectable) examine every member: O(n).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final

import attrs

from ..errors import CommandError, UsageError
from ..events import STREAM_ID_LENGTH_MAX
from ..streams import credential_stream, load_stream
from ..usability import CredentialUsability
from .commands import (
    RecordOutcome,
    RouteNext,
    StartRequest,
    Succeeded,
    check_start,
    failed_problem,
    refuse_attempt_id,
    succeeded_problem,
)
from .events import (
    AttemptFailed,
    AttemptRouted,
    AttemptSucceeded,
    Clamp,
    Continuation,
    CooldownCleared,
    CooldownExtended,
    CooldownStarted,
    CredentialSuspended,
    Degraded,
    DegradedReason,
    ExhaustedReason,
    ExhaustionPredicted,
    FailureSummary,
    FailureTolerated,
    FallbackExhausted,
    PairRef,
    PairSuspended,
    PredictionCleared,
    ProbeAllowed,
    ProbeReleased,
    RequestReceived,
    RoutingEvent,
    SkipReason,
    SlotReturned,
    SlotTaken,
    WaitDecided,
)
from .failures import (
    STRIKE_WINDOW_US,
    Evidence,
    FailureAction,
    FailureClass,
    FailureRule,
    FailureScope,
    Phase,
)
from .index import TREE_SCAN_FIRST, ReadyTree, pick_indexed
from .policy import ChainPlan, Policy, PoolMember, PoolPlan
from .selection import RANKED_SORT_MAX, Scan, member_order, member_verdict
from .state import LEVEL_MAX, AttemptRecord, RequestState, RoutingState, ScopeState
from .steps import RouteAttempt, RouteDegraded, RouteExhausted, RouteIdle, RouteStep, RouteWait

__all__ = [
    "OutcomeConflict",
    "RequestConflict",
    "decide_next",
    "decide_outcome",
    "decide_start",
    "pick_for",
]

#: No pool index (an unindexed state, a survey, or a retry pinned to one pair).
_NO_TREES: Final[Mapping[str, ReadyTree]] = MappingProxyType({})


class RequestConflict(UsageError):
    """``StartRequest`` reused a request id with different parameters (X1)."""


class OutcomeConflict(UsageError):
    """An outcome for an attempt that already has a different outcome (X1)."""


# --------------------------------------------------------------------------- start


def decide_start(
    policy: Policy, state: RoutingState, command: StartRequest, *, now_us: int
) -> tuple[RoutingEvent, ...]:
    """Record a request's arrival; the same command again is a no-op, a different one a conflict."""
    del policy  # the route is resolved at each decision (an unknown alias degrades there)
    stream_id = check_start(command)
    received = RequestReceived(
        stream_id=stream_id,
        version=1,
        at_us=now_us,
        request_id=command.request_id,
        route=command.route,
        backups=command.backups,
        caller_scope=command.caller_scope,
        model_owner=command.model_owner,
        seed=command.seed,
        stream=command.stream,
        input_tokens=command.input_tokens,
        deadline_us=command.deadline_us,
    )
    existing = state.requests.get(command.request_id)
    if existing is None:
        return (received,)
    if attrs.evolve(existing.received, version=1, at_us=now_us) == received:
        return ()
    raise RequestConflict(f"request {command.request_id} was started with other parameters")


# --------------------------------------------------------------------------- next step


def decide_next(
    policy: Policy,
    state: RoutingState,
    command: RouteNext,
    *,
    now_us: int,
    credentials: Mapping[str, CredentialUsability] | None = None,
    opening: RequestReceived | None = None,
) -> RouteStep:
    """Decide the request's next step (see the module docstring and :mod:`.steps`).

    ``opening`` is the :class:`RequestReceived` that :func:`decide_start` just
    decided for this request, when the first step is to be appended in the same
    batch (one commit per request opened): the step is decided exactly as if
    that event had been folded first (it only creates the request's own entry).
    """
    # The common paths inline, the refusals in functions: this runs per decision (hot path).
    request = state.requests.get(command.request_id) if opening is None else None
    if request is None:
        request = _opened(state, command, opening)
    if request.terminal or request.in_flight is not None:
        return RouteIdle(ended=request.terminal, wait_until_us=request.wait_until_us)
    attempt_id = command.attempt_id
    if (
        type(attempt_id) is not str
        or not 0 < len(attempt_id) <= STREAM_ID_LENGTH_MAX
        or attempt_id in request.attempts
    ):
        refuse_attempt_id(command)
    received = request.received
    scan = Scan()
    chain = policy.chain(received.route, received.backups)
    if chain is None:
        return RouteDegraded(_degraded(request, DegradedReason.UNKNOWN_ROUTE, None, now_us))
    for alias, position, why in chain.left_out:
        scan.skip(alias, position, None, None, SkipReason(why))
    plans = chain.targets
    last = request.last_failure
    start, only_pair = (0, None) if last is None else _resume_point(policy, request, last)
    deadline = received.deadline_us
    if policy.limits.deadline_us is not None:
        deadline = _deadline(policy, received)
    exhausted: ExhaustedReason | None = None
    if len(request.attempts) >= policy.limits.attempts_max:
        exhausted = ExhaustedReason.ATTEMPTS_LIMIT
    elif deadline is not None and now_us >= deadline:
        exhausted = ExhaustedReason.DEADLINE
    if exhausted is None:
        pick = _pick(policy, state, request, plans, start, only_pair, now_us, credentials, scan)
        if pick is not None and chain.prefer_wait_us_max and pick[0]:
            at = (now_us, deadline)
            return _route_or_wait(policy, state, chain, request, command, pick, scan, at)
        if pick is not None:  # the common case: route it (no earlier target to wait for)
            return _routed(policy, state, request, command, pick, now_us, scan)
        if request.wait_until_us > now_us:  # the decided wait stands: nothing became selectable
            return RouteIdle(ended=False, wait_until_us=request.wait_until_us)
        exhausted = _after_scan(policy, request, scan, only_pair, now_us, deadline)
        if exhausted is None and scan.wait_us is not None:
            return RouteWait(_wait_decided(request, scan, scan.wait_us, now_us))
        if exhausted is None:
            return RouteDegraded(_degraded(request, DegradedReason.NOTHING_USABLE, scan, now_us))
    return RouteExhausted(_exhausted(policy, state, request, plans, exhausted, now_us, credentials))


def _route_or_wait(
    policy: Policy,
    state: RoutingState,
    chain: ChainPlan,
    request: RequestState,
    command: RouteNext,
    pick: tuple[int, PoolPlan, int, ScopeState | None, ScopeState | None],
    scan: Scan,
    at: tuple[int, int | None],
) -> RouteStep:
    """Route the pick, unless the route prefers to wait for an earlier target's recovery.

    ``at`` is (now, the request's deadline or ``None``).
    """
    now_us, deadline = at
    prefer = _preferred_recovery(policy, chain, request, scan, pick[0], now_us, deadline)
    if prefer is None:
        return _routed(policy, state, request, command, pick, now_us, scan)
    if request.wait_until_us > now_us:  # the decided wait stands
        return RouteIdle(ended=False, wait_until_us=request.wait_until_us)
    return RouteWait(prefer)


def _preferred_recovery(
    policy: Policy,
    chain: ChainPlan,
    request: RequestState,
    scan: Scan,
    picked_position: int,
    now_us: int,
    deadline: int | None,
) -> WaitDecided | None:
    """A wait for an earlier target's recovery within the route's ``prefer_wait_us_max``.

    Asked only when the route has a preference and the pick is not at the
    first chain position (:func:`decide_next`). The earliest time-bound
    recovery the scan recorded at a chain position before the picked one, if
    it is within the route's preference, the request's wait budget and its
    deadline; else ``None`` (route the pick).
    """
    prefer_us = chain.prefer_wait_us_max
    # Only blocked members have a recovery time, and they always name their pair.
    ready = [
        (skip.recovers_at_us, (str(skip.credential_id), str(skip.upstream_model)))
        for skip in scan.skipped
        if skip.chain_position < picked_position and skip.recovers_at_us is not None
    ]
    if not ready:
        return None
    until_us = min(at for at, _ in ready)
    waited = request.waited_total_us + until_us - now_us
    if until_us - now_us > prefer_us or waited > policy.limits.wait_total_us_max:
        return None
    if deadline is not None and until_us >= deadline:
        return None
    earlier = Scan()
    earlier.recovering = [pair for at, pair in ready if at == until_us]
    return _wait_decided(request, earlier, until_us, now_us)


def _opened(
    state: RoutingState, command: RouteNext, opening: RequestReceived | None
) -> RequestState:
    """The request ``opening`` just opened (raises :class:`CommandError` on any misuse)."""
    if opening is None:
        raise CommandError(
            command, "request_id", f"unknown request {command.request_id!r}: start it first"
        )
    if type(opening) is RequestReceived and opening.request_id == command.request_id:
        if command.request_id in state.requests:
            raise CommandError(
                command, "request_id", f"request {command.request_id!r} was already started"
            )
        return RequestState(opening)
    raise CommandError(
        command, "", f"opening must be this request's RequestReceived, got {opening!r}"
    )


def _resume_point(
    policy: Policy, request: RequestState, last: AttemptFailed
) -> tuple[int, str | None]:
    """Where the scan resumes after ``last`` failed, and the one pair a no-fallback failure pins."""
    record = request.attempts[last.attempt_id]
    start = record.chain_position + (1 if last.phase is Phase.MID_STREAM else 0)
    only_pair = None if policy.rule(last.failure).fallback else record.pair_stream
    return start, only_pair


def _deadline(policy: Policy, received: RequestReceived) -> int:
    """The request's deadline under a policy deadline: its own, or the policy's if earlier."""
    relative = received.at_us + (policy.limits.deadline_us or 0)
    return relative if received.deadline_us is None else min(received.deadline_us, relative)


def _wait_decided(request: RequestState, scan: Scan, until_us: int, now_us: int) -> WaitDecided:
    """``WaitDecided`` until the earliest recovery the scan found (I1.3)."""
    received = request.received
    return WaitDecided(
        stream_id=received.stream_id,
        version=request.version + 1,
        at_us=now_us,
        request_id=received.request_id,
        until_us=until_us,
        recovering=tuple(
            PairRef(credential_id=credential, upstream_model=model)
            for credential, model in scan.recovering
        ),
        waited_total_us=request.waited_total_us + until_us - now_us,
    )


def _degraded(
    request: RequestState, reason: DegradedReason, scan: Scan | None, now_us: int
) -> Degraded:
    """``Degraded`` for ``reason``, with the scan's skips (none for an unknown route)."""
    received = request.received
    return Degraded(
        stream_id=received.stream_id,
        version=request.version + 1,
        at_us=now_us,
        request_id=received.request_id,
        reason=reason,
        skipped=tuple(scan.skipped) if scan is not None else (),
        skipped_more=scan.skipped_more if scan is not None else 0,
    )


def _exhausted(
    policy: Policy,
    state: RoutingState,
    request: RequestState,
    plans: tuple[PoolPlan, ...],
    reason: ExhaustedReason,
    now_us: int,
    credentials: Mapping[str, CredentialUsability] | None,
) -> FallbackExhausted:
    """The request ends (A7): its classified failures in order and when the chain could serve again."""
    retry_at = None
    if reason is not ExhaustedReason.TERMINAL_FAILURE:
        survey = Scan()
        _pick(policy, state, request, plans, 0, None, now_us, credentials, survey, survey=True)
        retry_at = survey.retry_at_us
    return FallbackExhausted(
        stream_id=request.received.stream_id,
        version=request.version + 1,
        at_us=now_us,
        request_id=request.received.request_id,
        reason=reason,
        failures=tuple(
            FailureSummary(
                attempt_id=failed.attempt_id,
                credential_id=failed.credential_id,
                upstream_model=failed.upstream_model,
                failure=failed.failure,
                phase=failed.phase,
            )
            for failed in request.failures
        ),
        retry_at_us=retry_at,
    )


def _after_scan(
    policy: Policy,
    request: RequestState,
    scan: Scan,
    only_pair: str | None,
    now_us: int,
    deadline: int | None,
) -> ExhaustedReason | None:
    """Nothing is selectable now: ``None`` to wait or degrade, else why the request ends (A7)."""
    if only_pair is not None and scan.wait_us is None:
        return ExhaustedReason.TERMINAL_FAILURE
    if scan.wait_us is not None:
        within_wait = request.waited_total_us + scan.wait_us - now_us <= (
            policy.limits.wait_total_us_max
        )
        if within_wait and (deadline is None or scan.wait_us < deadline):
            return None
        return ExhaustedReason.NO_CANDIDATE
    if request.attempts or scan.any_attemptable:
        return ExhaustedReason.NO_CANDIDATE
    return None


def _pick(
    policy: Policy,
    state: RoutingState,
    request: RequestState,
    plans: tuple[PoolPlan, ...],
    start: int,
    only_pair: str | None,
    now_us: int,
    credentials: Mapping[str, CredentialUsability] | None,
    scan: Scan,
    *,
    survey: bool = False,
) -> tuple[int, PoolPlan, int, ScopeState | None, ScopeState | None] | None:
    """The first selectable member from ``start`` on, recording skips in ``scan``.

    With ``survey=True`` nothing is picked: every member is examined only to
    compute the earliest time anything could serve (``scan.retry_at_us``).
    """
    received = request.received
    pairs = state.pairs
    creds = state.creds
    loads = state.loads if policy.capacities else None  # no configured limits: rule 5 is moot
    attempt_no = len(request.attempts) + 1
    trees = state.trees if state.indexed_for is policy and not (survey or only_pair) else _NO_TREES
    for position in range(start, len(plans)):
        plan = plans[position]
        entries = plan.entries
        tree = trees.get(plan.path)
        if tree is not None and plan.ranked and len(entries) <= RANKED_SORT_MAX:
            tree = None  # examined best first, not in a rotation the tree can jump along
        salt = attempt_no + (position << 8)
        examined = 0
        for index in member_order(plan, state, received, salt):
            if tree is not None and examined == TREE_SCAN_FIRST:
                at = (position, tree, salt, examined)
                pick = pick_indexed(policy, state, request, plan, at, now_us, credentials, scan)
                if pick is not None:
                    return pick
                tree = None  # nothing in the pool is ready: scan the rest for the wait decision
            examined += 1
            member = entries[index]
            if only_pair is not None and member.pair_stream != only_pair:
                continue
            why, ready = member_verdict(
                policy, member, request, creds, pairs, now_us, credentials, loads
            )
            if why is None:
                if survey:
                    scan.could_serve_at(now_us)
                    continue
                return (
                    position,
                    plan,
                    index,
                    pairs.get(member.pair_stream),
                    creds.get(member.cred_stream),
                )
            credential, model = member.credential, member.model
            if why is SkipReason.ALREADY_FAILED or (survey and ready):
                scan.could_serve_at(max(ready, now_us))
                if not survey:
                    scan.skip(plan.alias, position, credential, model, why)
                continue
            if not ready:  # a permanent reason (rules 1-2 of .selection)
                scan.skip(plan.alias, position, credential, model, why)
                continue
            scan.blocked(plan.alias, position, credential, model, why, ready)
    if scan.wait_us is not None:
        scan.could_serve_at(scan.wait_us)
    return None


def pick_for(
    policy: Policy,
    state: RoutingState,
    request: RequestState,
    plans: tuple[PoolPlan, ...],
    now_us: int,
    credentials: Mapping[str, CredentialUsability] | None,
) -> PoolMember | None:
    """The member ``request`` would be routed to now, or ``None``; decides nothing (counts)."""
    pick = _pick(policy, state, request, plans, 0, None, now_us, credentials, Scan())
    if pick is None:
        return None
    _, plan, index, _, _ = pick
    return plan.entries[index]


def _routed(
    policy: Policy,
    state: RoutingState,
    request: RequestState,
    command: RouteNext,
    pick: tuple[int, PoolPlan, int, ScopeState | None, ScopeState | None],
    now_us: int,
    scan: Scan,
) -> RouteAttempt:
    """``AttemptRouted`` for the picked member, plus ``ProbeAllowed`` where it is half-open (A4)
    and ``SlotTaken`` where its credential has configured limits (G6)."""
    position, plan, index, pair, cred = pick
    received = request.received
    credential, model, pair_stream, cred_stream, _, _, _, prefill = plan.entries[index]
    delivered = 0
    if request.failures:
        delivered = max(failed.delivered_chars for failed in request.failures)
    if delivered == 0:
        continuation = Continuation.FRESH
    else:
        continuation = Continuation.CONTINUE if prefill else Continuation.RESTART
    probes: tuple[ProbeAllowed, ...] = ()
    if pair is not None and pair.needs_probe:
        probes = (_probe(policy, pair, pair_stream, credential, model, command, now_us),)
    if cred is not None and cred.needs_probe:
        probes = (*probes, _probe(policy, cred, cred_stream, credential, None, command, now_us))
    routed = AttemptRouted(
        stream_id=received.stream_id,
        version=request.version + 1,
        at_us=now_us,
        request_id=received.request_id,
        attempt_id=command.attempt_id,
        attempt_no=len(request.attempts) + 1,
        credential_id=credential,
        upstream_model=model,
        owner_scope=received.model_owner
        if received.model_owner is not None
        else received.caller_scope,
        chain_position=position,
        target_path=plan.path,
        member_index=index,
        probe=bool(probes),
        continuation=continuation,
        delivered_chars=delivered,
        skipped=tuple(scan.skipped),
        skipped_more=scan.skipped_more,
    )
    if credential not in policy.capacities:
        return RouteAttempt(routed, probes)
    load = state.loads.get(credential)
    version = 0 if load is None else load.version
    return RouteAttempt(routed, probes, _slot_taken(policy, request, routed, now_us, version))


def _slot_taken(
    policy: Policy, request: RequestState, routed: AttemptRouted, now_us: int, load_version: int
) -> tuple[SlotTaken, ...]:
    """``SlotTaken`` for an attempt routed to a credential with configured limits (:mod:`.capacity`)."""
    return (
        SlotTaken(
            stream_id=load_stream(routed.credential_id),
            version=load_version + 1,
            at_us=now_us,
            credential_id=routed.credential_id,
            upstream_model=routed.upstream_model,
            request_id=routed.request_id,
            attempt_id=routed.attempt_id,
            until_us=now_us + policy.limits.slot_lease_us,
            tokens=request.received.input_tokens,
        ),
    )


def _probe(
    policy: Policy,
    scope: ScopeState,
    stream: str,
    credential: str,
    upstream: str | None,
    command: RouteNext,
    now_us: int,
) -> ProbeAllowed:
    """Let one half-open probe through ``scope`` (A4), bounded by the probe timeout (A3)."""
    return ProbeAllowed(
        stream_id=stream,
        version=scope.version + 1,
        at_us=now_us,
        credential_id=credential,
        upstream_model=upstream,
        request_id=command.request_id,
        attempt_id=command.attempt_id,
        until_us=now_us + policy.limits.probe_timeout_us,
    )


# --------------------------------------------------------------------------- outcome


def decide_outcome(
    policy: Policy, state: RoutingState, command: RecordOutcome, *, now_us: int
) -> tuple[RoutingEvent, ...]:
    """Record an attempt's outcome and decide what it implies for availability.

    The same outcome again is a no-op; a different outcome for the same attempt
    raises :class:`OutcomeConflict` and changes nothing (X1).
    """
    request = state.requests.get(command.request_id)
    if request is None:
        raise CommandError(command, "request_id", f"unknown request {command.request_id!r}")
    record = request.attempts.get(command.attempt_id)
    if record is None:
        raise CommandError(
            command,
            "attempt_id",
            f"unknown attempt {command.attempt_id!r} of request {command.request_id!r}",
        )
    outcome = command.outcome
    problem = (
        succeeded_problem(outcome) if isinstance(outcome, Succeeded) else failed_problem(outcome)
    )
    if problem is not None:
        raise CommandError(command, "outcome", problem)
    observed = _observed(command, record, request, now_us)
    if record.outcome is not None:
        if attrs.evolve(record.outcome, version=observed.version, at_us=now_us) == observed:
            return ()
        raise OutcomeConflict(
            f"attempt {command.attempt_id!r} already has another outcome recorded"
        )
    if isinstance(observed, AttemptSucceeded):
        decided = _healed(state, observed, record.pair_stream, now_us)
    else:
        decided = (observed, *_blocks(policy, state, observed, record.pair_stream, now_us))
    predicted = _predicted(policy, state, observed, record.pair_stream, decided, now_us)
    return (*decided, *predicted, *_slot_returned(state, observed, now_us))


def _slot_returned(
    state: RoutingState, observed: AttemptSucceeded | AttemptFailed, now_us: int
) -> tuple[SlotReturned, ...]:
    """``SlotReturned`` when the attempt holds a slot of its credential's configured limits."""
    load = state.loads.get(observed.credential_id)
    if load is None or observed.attempt_id not in load.slots:
        return ()
    tokens = 0
    if isinstance(observed, AttemptSucceeded):
        tokens = observed.input_tokens + observed.output_tokens
    return (
        SlotReturned(
            stream_id=load_stream(observed.credential_id),
            version=load.version + 1,
            at_us=now_us,
            credential_id=observed.credential_id,
            upstream_model=observed.upstream_model,
            request_id=observed.request_id,
            attempt_id=observed.attempt_id,
            tokens=tokens,
        ),
    )


def _observed(
    command: RecordOutcome, record: AttemptRecord, request: RequestState, now_us: int
) -> AttemptSucceeded | AttemptFailed:
    """The observation event of a validated outcome."""
    outcome = command.outcome
    stream, version = request.received.stream_id, request.version + 1
    if isinstance(outcome, Succeeded):
        return AttemptSucceeded(
            stream_id=stream,
            version=version,
            at_us=now_us,
            request_id=command.request_id,
            attempt_id=command.attempt_id,
            credential_id=record.credential_id,
            upstream_model=record.upstream_model,
            evidence=outcome.evidence,
            input_tokens=outcome.input_tokens,
            output_tokens=outcome.output_tokens,
            ttft_us=outcome.ttft_us,
            duration_us=outcome.duration_us,
            announced=outcome.announced,
        )
    return AttemptFailed(
        stream_id=stream,
        version=version,
        at_us=now_us,
        request_id=command.request_id,
        attempt_id=command.attempt_id,
        credential_id=record.credential_id,
        upstream_model=record.upstream_model,
        failure=outcome.failure,
        phase=outcome.phase,
        delivered_chars=outcome.delivered_chars,
        hint_us=outcome.hint_us,
        status=outcome.status,
        detail=outcome.detail,
        billed=outcome.billed,
        ttft_us=outcome.ttft_us,
        duration_us=outcome.duration_us,
        announced=outcome.announced,
    )


def _healed(
    state: RoutingState, observed: AttemptSucceeded, pair_stream: str, now_us: int
) -> tuple[RoutingEvent, ...]:
    """A success, and ``CooldownCleared`` for each half-open scope an upstream answer heals (A4)."""
    if observed.evidence is not Evidence.UPSTREAM:
        return (observed, *_released(state, observed, pair_stream, now_us))
    healing = _scope_events(state, observed, pair_stream, now_us, CooldownCleared, _half_open)
    return (observed, *healing)


def _half_open(scope: ScopeState, attempt_id: str) -> bool:
    del attempt_id
    return scope.needs_probe


def _holds_probe(scope: ScopeState, attempt_id: str) -> bool:
    return scope.probe_attempt_id == attempt_id


def _scope_events(
    state: RoutingState,
    observed: AttemptSucceeded | AttemptFailed,
    pair_stream: str,
    now_us: int,
    kind: type[CooldownCleared] | type[ProbeReleased],
    applies: Callable[[ScopeState, str], bool],
) -> tuple[RoutingEvent, ...]:
    """``kind`` on the attempt's pair and credential streams, where ``applies`` says so."""
    decided: list[RoutingEvent] = []
    cred_stream = credential_stream(observed.credential_id)
    for stream, upstream, scope in (
        (pair_stream, observed.upstream_model, state.pairs.get(pair_stream)),
        (cred_stream, None, state.creds.get(cred_stream)),
    ):
        if scope is not None and applies(scope, observed.attempt_id):
            decided.append(
                kind(
                    stream_id=stream,
                    version=scope.version + 1,
                    at_us=now_us,
                    credential_id=observed.credential_id,
                    upstream_model=upstream,
                    request_id=observed.request_id,
                    attempt_id=observed.attempt_id,
                )
            )
    return tuple(decided)


def _released(
    state: RoutingState,
    observed: AttemptSucceeded | AttemptFailed,
    pair_stream: str,
    now_us: int,
) -> tuple[RoutingEvent, ...]:
    """``ProbeReleased`` for each scope whose probe slot this attempt holds.

    Called for outcomes that are no evidence about the scope (a local count, a
    cache hit, a failure that blames no upstream): the scope stays half-open and
    the next real request may probe it at once (G6).
    """
    return _scope_events(state, observed, pair_stream, now_us, ProbeReleased, _holds_probe)


def _blocks(
    policy: Policy,
    state: RoutingState,
    failed: AttemptFailed,
    pair_stream: str,
    now_us: int,
) -> tuple[RoutingEvent, ...]:
    """The availability decisions a failure implies (A1 scope table, A2, A3)."""
    rule = policy.rule(failed.failure)
    scope_kind = _failure_scope(policy, failed, rule.scope)
    if (
        rule.action is FailureAction.NOTHING
        or scope_kind is FailureScope.REQUEST
        or scope_kind is FailureScope.NONE
    ):
        return _released(state, failed, pair_stream, now_us)
    upstream: str | None
    if scope_kind is FailureScope.CREDENTIAL:
        stream = credential_stream(failed.credential_id)
        upstream = None
        scope = state.creds.get(stream)
    else:
        stream, upstream, scope = pair_stream, failed.upstream_model, state.pairs.get(pair_stream)
    strikes = _strikes_if_tolerated(rule, failed, scope, now_us)
    if strikes is not None:
        return (_tolerated(failed, stream, upstream, scope, strikes, now_us),)
    if scope is None:
        version, old_until, level, suspended = 1, 0, 0, False
    else:
        version, old_until, suspended = scope.version + 1, scope.until_us, scope.suspended
        level = min(scope.level + 1, LEVEL_MAX) if scope.needs_probe else 0
    if rule.action is FailureAction.SUSPEND:
        cls = CredentialSuspended if scope_kind is FailureScope.CREDENTIAL else PairSuspended
        return (
            cls(
                stream_id=stream,
                version=version,
                at_us=now_us,
                credential_id=failed.credential_id,
                upstream_model=upstream,
                request_id=failed.request_id,
                attempt_id=failed.attempt_id,
                until_us=max(old_until, now_us + rule.base_us),
                reason=failed.failure,
            ),
        )
    duration, clamp = _cooldown_us(policy, rule, failed.hint_us, level)
    until = max(old_until, now_us + duration)
    if suspended and old_until >= until:
        return ()  # a longer suspension already covers this cooldown (A2: nothing to extend)
    started = CooldownExtended if old_until > now_us else CooldownStarted
    return (
        started(
            stream_id=stream,
            version=version,
            at_us=now_us,
            credential_id=failed.credential_id,
            upstream_model=upstream,
            request_id=failed.request_id,
            attempt_id=failed.attempt_id,
            until_us=until,
            reason=failed.failure,
            level=level,
            hint_us=failed.hint_us,
            clamp=clamp,
        ),
    )


def _strikes_if_tolerated(
    rule: FailureRule, failed: AttemptFailed, scope: ScopeState | None, now_us: int
) -> int | None:
    """The failure's strike count if ``rule.allowed_fails`` tolerates it, else ``None``.

    Never tolerated: a failure with a provider hint (the provider said when to
    come back), or one of a scope already blocked or half-open (a failed probe).
    Strikes add up while each follows the previous within ``STRIKE_WINDOW_US``.
    """
    if rule.allowed_fails == 0 or failed.hint_us is not None:
        return None
    prior = 0
    if scope is not None:
        if scope.needs_probe:
            return None
        if scope.strikes and now_us - scope.strike_at_us < STRIKE_WINDOW_US:
            prior = scope.strikes
    return prior + 1 if prior < rule.allowed_fails else None


def _tolerated(
    failed: AttemptFailed,
    stream: str,
    upstream: str | None,
    scope: ScopeState | None,
    strikes: int,
    now_us: int,
) -> FailureTolerated:
    """``FailureTolerated``: the scope stays available, one strike closer to its block."""
    return FailureTolerated(
        stream_id=stream,
        version=1 if scope is None else scope.version + 1,
        at_us=now_us,
        credential_id=failed.credential_id,
        upstream_model=upstream,
        request_id=failed.request_id,
        attempt_id=failed.attempt_id,
        reason=failed.failure,
        strikes=strikes,
    )


def _failure_scope(policy: Policy, failed: AttemptFailed, scope: FailureScope) -> FailureScope:
    """The rule's scope, widened to the credential for an account-wide quota (A1)."""
    if (
        failed.failure is FailureClass.QUOTA_EXHAUSTED
        and policy.credential(failed.credential_id).account_wide_quota
    ):
        return FailureScope.CREDENTIAL
    return scope


def _cooldown_us(
    policy: Policy, rule: FailureRule, hint_us: int | None, level: int
) -> tuple[int, Clamp]:
    """How long a cooldown lasts: the provider's hint, clamped (A3), else the backoff (A2)."""
    if hint_us is None:
        return min(rule.base_us * rule.factor**level, rule.max_us), Clamp.NO_HINT
    low, high = policy.hints.min_us, policy.hints.max_us
    clamp = Clamp.RAISED if hint_us < low else Clamp.LOWERED if hint_us > high else Clamp.KEPT
    return min(max(hint_us, low), high), clamp


# --------------------------------------------------------------------------- announced limits


def _predicted(
    policy: Policy,
    state: RoutingState,
    observed: AttemptSucceeded | AttemptFailed,
    pair_stream: str,
    decided: tuple[RoutingEvent, ...],
    now_us: int,
) -> tuple[RoutingEvent, ...]:
    """What the provider's announced limits predict for the pair (``docs/routing.md``).

    A window announced with nothing remaining and a reset makes the pair not
    selectable until the latest such reset, bounded by the policy's hint
    maximum (A3): ``ExhaustionPredicted``, which only moves the bound later.
    An announcement with something left in every window it names ends a
    standing prediction: ``PredictionCleared``. Evidence that is not a real
    upstream answer of the pair predicts nothing.
    """
    announced = observed.announced
    if announced is None or (
        isinstance(observed, AttemptSucceeded) and observed.evidence is not Evidence.UPSTREAM
    ):
        return ()
    scope = state.pairs.get(pair_stream)
    standing = scope.predicted_us if scope is not None else 0
    version = scope.version if scope is not None else 0
    for earlier in decided:  # a cooldown or a clearing decided just before, on the same stream
        if earlier.stream_id == pair_stream:
            version = earlier.version
    windows = (
        (announced.remaining_requests, announced.requests_reset_us),
        (announced.remaining_tokens, announced.tokens_reset_us),
    )
    resets = [reset for left, reset in windows if left == 0 and reset is not None]
    if resets:
        until_us = now_us + min(max(resets), policy.hints.max_us)
        if until_us <= max(standing, now_us):
            return ()
        return (
            ExhaustionPredicted(
                stream_id=pair_stream,
                version=version + 1,
                at_us=now_us,
                credential_id=observed.credential_id,
                upstream_model=observed.upstream_model,
                request_id=observed.request_id,
                attempt_id=observed.attempt_id,
                until_us=until_us,
                remaining_requests=announced.remaining_requests,
                remaining_tokens=announced.remaining_tokens,
            ),
        )
    some_left = any(left is not None for left, _ in windows)
    if not (some_left and all(left != 0 for left, _ in windows) and standing > now_us):
        return ()
    return (
        PredictionCleared(
            stream_id=pair_stream,
            version=version + 1,
            at_us=now_us,
            credential_id=observed.credential_id,
            upstream_model=observed.upstream_model,
            request_id=observed.request_id,
            attempt_id=observed.attempt_id,
        ),
    )
