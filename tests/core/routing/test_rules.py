"""Given/when/then for each routing rule of issue F2 item 5 and the A/X/D invariants."""

from __future__ import annotations

import subprocess
import sys

import attrs
import pytest

from routeledger.core.errors import CommandError, InvariantViolation
from routeledger.core.events import Event, EventRegistry, Origin, event
from routeledger.core.routing import (
    Failed,
    FailureAction,
    FailureClass,
    FailureRule,
    FailureScope,
    HintClamp,
    OutcomeConflict,
    Phase,
    RecordOutcome,
    RequestConflict,
    RequestLimits,
    RouteNext,
    StartRequest,
    Strategy,
    Succeeded,
    Target,
    check_invariants,
    decide_next,
    decide_outcome,
    decide_start,
    evolve,
    fold,
    initial,
)
from routeledger.core.routing.events import (
    AttemptFailed,
    AttemptRouted,
    Clamp,
    CooldownCleared,
    CooldownExtended,
    CooldownStarted,
    CredentialSuspended,
    Degraded,
    DegradedReason,
    ExhaustedReason,
    FallbackExhausted,
    PairSuspended,
    ProbeAllowed,
    RoutingEvent,
    SkipReason,
    WaitDecided,
)
from routeledger.core.routing.selection import mix64
from routeledger.core.routing.state import LEVEL_MAX, ScopeState, Status, status_at
from routeledger.core.usability import CredentialUsability, UnusableReason

from .support import T0, S, World, member, only, policy, single, target


def _routed(events: tuple[RoutingEvent, ...]) -> AttemptRouted:
    routed = only(events, AttemptRouted)
    assert len(routed) == 1, events
    result = routed[0]
    assert isinstance(result, AttemptRouted)
    return result


def _cool(
    world: World, pair_request: str, failure: FailureClass = FailureClass.RATE_LIMITED, **kw: object
) -> None:
    world.start(pair_request)
    world.next(pair_request)
    world.fail(failure, pair_request, **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- state keys


def test_state_is_keyed_by_concrete_pair_and_credential_only() -> None:
    """I1: availability keys are pair:<c>:<m> and cred:<c> stream ids, never an alias or pool."""
    world = World(policy({"chat": [target("k/m1", "k/m2")]}))
    _cool(world, "x")
    _cool(world, "y", FailureClass.AUTH_ERROR)
    assert set(world.state.pairs) == {"pair:k:m1"}
    assert set(world.state.creds) == {"cred:k"}


# --------------------------------------------------------------------------- A1 scope table


@pytest.mark.parametrize(
    "failure",
    [
        FailureClass.INVALID_REQUEST,
        FailureClass.CONTEXT_LENGTH_EXCEEDED,
        FailureClass.CONTENT_FILTERED,
        FailureClass.CALLER_CANCELLED,
        FailureClass.RESPONSE_REJECTED,
        FailureClass.GATEWAY_POOL_EXHAUSTED,
    ],
)
def test_caller_caused_failures_change_no_availability(failure: FailureClass) -> None:
    """A1: caller-caused failures record the observation and nothing else."""
    world = World(policy({"chat": [target("k/m")]}))
    world.start()
    world.next()
    events = world.fail(failure)
    assert len(events) == 1
    assert not world.state.pairs and not world.state.creds


def test_auth_error_suspends_the_whole_credential() -> None:
    """A1: auth_error blocks the credential with all its models; other credentials still serve."""
    world = World(policy({"chat": [target("k/m1", "k/m2", "j/m1")]}))
    world.start("x")
    world.next("x")
    events = world.fail(FailureClass.AUTH_ERROR, "x")
    assert [e.stream_id for e in only(events, CredentialSuspended)] == ["cred:k"]
    world.start()
    routed = _routed(world.next())
    assert routed.credential_id == "j"
    assert [s.reason for s in routed.skipped] == [SkipReason.CREDENTIAL_BLOCKED] * 2


def test_quota_scope_follows_account_wide_flag() -> None:
    """A1: quota_exhausted cools (c, m), or (c, *) when the provider declares an account-wide quota."""
    pair_world = World(policy({"chat": [target("k/m")]}))
    _cool(pair_world, "x", FailureClass.QUOTA_EXHAUSTED)
    assert set(pair_world.state.pairs) == {"pair:k:m"} and not pair_world.state.creds
    cred_world = World(policy({"chat": [target("k/m")]}, account_wide=["k"]))
    _cool(cred_world, "x", FailureClass.QUOTA_EXHAUSTED)
    assert set(cred_world.state.creds) == {"cred:k"} and not cred_world.state.pairs
    started = only(cred_world.log, CooldownStarted)
    assert len(started) == 1 and started[0].upstream_model is None


def test_request_scoped_override_with_an_action_changes_nothing() -> None:
    """A1: a rule whose scope is the request never touches availability, whatever its action."""
    rule = FailureRule(
        failure=FailureClass.UNKNOWN,
        scope=FailureScope.REQUEST,
        action=FailureAction.COOLDOWN,
        base_us=1,
        max_us=1,
    )
    world = World(policy({"chat": [target("k/m")]}, failures=(rule,)))
    _cool(world, "x", FailureClass.UNKNOWN)
    assert not world.state.pairs


# --------------------------------------------------------------------------- A2, A3, A5


def test_deadlines_only_extend() -> None:
    """A2: a later, shorter cooldown never shortens a pair's deadline."""
    world = World(policy({"chat": [target("k/m")]}))
    world.start("a")
    world.next("a")
    world.start("b")
    world.next("b")  # both requests are in flight: the second failure meets a cooling pair
    world.fail(FailureClass.RATE_LIMITED, "a", hint_us=60 * S)
    until = world.state.pairs["pair:k:m"].until_us
    events = world.fail(FailureClass.RATE_LIMITED, "b", hint_us=2 * S)
    extended = only(events, CooldownExtended)
    assert len(extended) == 1 and extended[0].until_us == until
    assert extended[0].level == 1


@pytest.mark.parametrize(
    ("hint_us", "clamp", "duration_us"),
    [
        (None, Clamp.NO_HINT, 1 * S),
        (0, Clamp.RAISED, 2 * S),
        (5 * S, Clamp.KEPT, 5 * S),
        (10**12, Clamp.LOWERED, 30 * S),
    ],
)
def test_hints_are_clamped_and_recorded(
    hint_us: int | None, clamp: Clamp, duration_us: int
) -> None:
    """A3: provider hints are clamped to the policy's [min, max] and the clamp is recorded."""
    world = World(policy({"chat": [target("k/m")]}, hints=HintClamp(min_us=2 * S, max_us=30 * S)))
    world.start()
    world.next()
    started = only(world.fail(FailureClass.RATE_LIMITED, hint_us=hint_us), CooldownStarted)[0]
    assert isinstance(started, CooldownStarted)
    assert (started.clamp, started.until_us - world.now, started.hint_us) == (
        clamp,
        duration_us,
        hint_us,
    )


def test_cooldown_self_expires_without_any_event() -> None:
    """A3: at t >= until the pair is selectable again (half-open) with no event and no restart."""
    world = World(policy({"chat": [target("k/m")]}))
    _cool(world, "x")
    scope = world.state.pairs["pair:k:m"]
    assert status_at(scope, scope.until_us - 1) is Status.COOLING
    assert status_at(scope, scope.until_us) is Status.HALF_OPEN
    world.now = scope.until_us
    world.start()
    assert _routed(world.next()).probe


def test_pair_never_selected_right_after_cooldown() -> None:
    """A5: the decision right after a cooldown event never selects that pair."""
    world = World(policy({"chat": [target("k/a", "k/b", strategy=Strategy.ROUND_ROBIN)]}))
    for n in range(6):
        request = f"r{n}"
        world.start(request)
        routed = _routed(world.next(request))
        world.fail(FailureClass.PROVIDER_UNAVAILABLE, request)
        world.start(f"q{n}")
        after = world.next(f"q{n}")
        chosen = [e for e in after if isinstance(e, AttemptRouted)]
        assert all(e.upstream_model != routed.upstream_model for e in chosen)
        if chosen:
            world.succeed(f"q{n}")
        world.advance(70 * S)


def test_availability_is_rechecked_before_every_attempt() -> None:
    """A6: a pair cooled by another request between two attempts is not targeted by the retry."""
    world = World(policy({"chat": [target("k/a", "k/b", "k/c")]}))
    world.start()
    assert _routed(world.next()).upstream_model == "a"
    _cool(world, "other")  # "other" is routed to b (a is in flight, still available) -> cools b
    assert world.state.pairs.keys() == {"pair:k:a"}
    world.fail(FailureClass.PROVIDER_UNAVAILABLE)
    routed = _routed(world.next())
    assert routed.upstream_model == "b"
    _cool(world, "third")
    world.fail(FailureClass.PROVIDER_UNAVAILABLE)
    final = world.next()
    for e in final:
        if isinstance(e, AttemptRouted):
            assert status_at(world.state.pairs.get(f"pair:k:{e.upstream_model}"), e.at_us - 1) in (
                Status.AVAILABLE,
                Status.HALF_OPEN,
            )


# --------------------------------------------------------------------------- A4 half-open


def test_half_open_allows_one_probe_then_success_heals() -> None:
    """A4: after expiry one probe goes through; other requests wait for it; its upstream success heals fully."""
    world = World(policy({"chat": [target("k/m")]}))
    _cool(world, "x")
    world.advance(1 * S)
    world.start("probe")
    events = world.next("probe")
    assert _routed(events).probe and only(events, ProbeAllowed)
    world.start("other")
    wait = single(world.next("other"), WaitDecided)
    assert isinstance(wait, WaitDecided) and wait.until_us == world.now + 30 * S
    healed = world.succeed("probe")
    assert [e.stream_id for e in only(healed, CooldownCleared)] == ["pair:k:m"]
    assert status_at(world.state.pairs["pair:k:m"], world.now) is Status.AVAILABLE
    world.start("full")
    assert not _routed(world.next("full")).probe


def test_failed_probe_cools_again_with_a_higher_level() -> None:
    """A4/A2: a failed probe starts a new cooldown one backoff level higher (longer, still bounded)."""
    world = World(policy({"chat": [target("k/m")]}))
    _cool(world, "x")
    world.advance(1 * S)
    _cool(world, "probe")
    started = only(world.log, CooldownStarted)
    assert [e.level for e in started] == [0, 1]
    assert started[1].until_us - started[1].at_us == 2 * S


def test_backoff_level_is_capped() -> None:
    """A3: the backoff level never exceeds LEVEL_MAX and the duration never exceeds max_us."""
    world = World(policy({"chat": [target("k/m")]}))
    scope = ScopeState()
    scope.needs_probe, scope.level, scope.reason = True, LEVEL_MAX, FailureClass.RATE_LIMITED
    world.state.pairs["pair:k:m"] = scope
    world.start()
    world.next()
    started = only(world.fail(FailureClass.RATE_LIMITED), CooldownStarted)[0]
    assert started.level == LEVEL_MAX
    assert started.until_us - world.now == 5 * 60 * S


@pytest.mark.parametrize(
    "failure",
    [
        FailureClass.PROVIDER_UNAVAILABLE,
        FailureClass.CONNECT_ERROR,
        FailureClass.TIMEOUT_BEFORE_RESPONSE,
        FailureClass.STREAM_INTERRUPTED,
        FailureClass.UNKNOWN,
    ],
)
def test_an_outage_is_probed_at_least_every_outage_probe_us_max(failure: FailureClass) -> None:
    """G6/A4: however many half-open probes of an outage class fail in a row, the next probe
    is at most OUTAGE_PROBE_US_MAX away, so a healed pair is back within that bound."""
    from routeledger.core.routing.failures import OUTAGE_PROBE_US_MAX

    world = World(policy({"chat": [target("k/m")]}))
    if failure in (FailureClass.PROVIDER_UNAVAILABLE, FailureClass.CONNECT_ERROR):
        _cool(world, "first", failure)  # a transient class tolerates its first failure (G6)
    blocks = []
    for n in range(12):
        _cool(world, f"r{n}", failure)
        started = [e for e in world.log if isinstance(e, CooldownStarted)][-1]
        blocks.append(started.until_us - started.at_us)
        world.advance(started.until_us - world.now)  # the block ends: the next is a probe
    assert max(blocks) == OUTAGE_PROBE_US_MAX
    assert blocks == sorted(blocks)  # backoff grows, then stays at the cap


def test_credential_probe_heals_the_credential() -> None:
    """A4: after a credential block expires, one probe goes through and its success clears the credential."""
    world = World(policy({"chat": [target("k/m")]}))
    _cool(world, "x", FailureClass.AUTH_ERROR)
    world.advance(3600 * S)
    world.start()
    events = world.next()
    assert {e.stream_id for e in only(events, ProbeAllowed)} == {"cred:k"}
    healed = world.succeed()
    assert [e.stream_id for e in only(healed, CooldownCleared)] == ["cred:k"]


def test_suspension_blocks_as_suspended() -> None:
    """A1: a suspended pair is skipped with reason suspended until its period ends."""
    world = World(policy({"chat": [target("k/a", "k/b")]}))
    _cool(world, "x", FailureClass.MODEL_NOT_FOUND)
    world.start()
    routed = _routed(world.next())
    assert [(s.upstream_model, s.reason) for s in routed.skipped] == [("a", SkipReason.SUSPENDED)]
    assert only(world.log, PairSuspended)


# --------------------------------------------------------------------------- I1.4, I3 chain rules


def test_skips_cost_no_attempt_budget() -> None:
    """I1.4: blocked candidates are skipped without spending the attempt budget."""
    world = World(
        policy({"chat": [target("k/a", "k/b", "k/c")]}, limits=RequestLimits(attempts_max=1))
    )
    _cool(world, "x")
    _cool(world, "y")
    world.start()
    routed = _routed(world.next())
    assert (routed.upstream_model, routed.attempt_no, len(routed.skipped)) == ("c", 1, 2)


def test_each_target_visited_at_most_once() -> None:
    """I3: chain positions never go back, and duplicate aliases are left out of the chain."""
    world = World(
        policy(
            {"chat": [target("k/a"), target("k/b")], "bk": [target("k/c")]},
            fallback={"chat": ["bk"]},
        )
    )
    world.start(backups=("chat", "bk"))
    positions = []
    for _ in range(3):
        routed = _routed(world.next())
        positions.append(routed.chain_position)
        world.fail(FailureClass.STREAM_INTERRUPTED, phase=Phase.MID_STREAM, delivered_chars=1)
    assert positions == [0, 1, 2]
    assert single(world.next(), FallbackExhausted)


def test_mid_stream_failure_moves_to_next_target_even_with_healthy_siblings() -> None:
    """F2: a mid-stream failure leaves the target; a truncated answer is never a success."""
    world = World(policy({"chat": [target("k/a", "k/b"), target("j/c")]}))
    world.start(stream=True)
    world.next()
    world.fail(FailureClass.STREAM_INTERRUPTED, phase=Phase.MID_STREAM, delivered_chars=42)
    assert world.state.requests["r1"].terminal is False
    routed = _routed(world.next())
    assert (routed.credential_id, routed.chain_position, routed.delivered_chars) == ("j", 1, 42)


def test_retry_same_member_waits_for_its_cooldown() -> None:
    """A6/F2: a class allowing a retry of the same member retries it after its cooldown, re-checked."""
    world = World(policy({"chat": [target("k/m")]}))
    _cool(world, "r0", FailureClass.PROVIDER_UNAVAILABLE)  # tolerated: the next one cools (G6)
    world.start()
    world.next()
    world.fail(FailureClass.PROVIDER_UNAVAILABLE)
    wait = single(world.next(), WaitDecided)
    assert isinstance(wait, WaitDecided)
    assert world.next() == ()  # the wait stands
    world.now = wait.until_us
    assert _routed(world.next()).upstream_model == "m"
    world.fail(FailureClass.PROVIDER_UNAVAILABLE)
    exhausted = single(world.next(), FallbackExhausted)
    assert exhausted.reason is ExhaustedReason.NO_CANDIDATE


def test_terminal_failure_ends_request_without_retry_time() -> None:
    """A7: a failure that allows no fallback ends the request once, with no Retry-After."""
    world = World(policy({"chat": [target("k/a", "k/b")]}))
    world.start()
    world.next()
    world.fail(FailureClass.INVALID_REQUEST)
    exhausted = single(world.next(), FallbackExhausted)
    assert exhausted.reason is ExhaustedReason.TERMINAL_FAILURE
    assert exhausted.retry_at_us is None
    assert world.next() == ()


def test_terminal_class_with_retry_retries_only_that_member() -> None:
    """F2: a non-fallback class with retries left retries the same member and no other."""
    rule = FailureRule(
        failure=FailureClass.INVALID_REQUEST,
        scope=FailureScope.REQUEST,
        action=FailureAction.NOTHING,
        retry_same=1,
        fallback=False,
    )
    world = World(policy({"chat": [target("k/a", "k/b")]}, failures=(rule,)))
    world.start()
    world.next()
    world.fail(FailureClass.INVALID_REQUEST)
    assert _routed(world.next()).upstream_model == "a"
    world.fail(FailureClass.INVALID_REQUEST)
    assert single(world.next(), FallbackExhausted).reason is ExhaustedReason.TERMINAL_FAILURE


def test_terminal_class_waits_for_its_own_member() -> None:
    """F2: a non-fallback retry of a cooling member waits for that member only."""
    rule = FailureRule(
        failure=FailureClass.UNKNOWN,
        scope=FailureScope.PAIR,
        action=FailureAction.COOLDOWN,
        base_us=S,
        max_us=S,
        retry_same=1,
        fallback=False,
    )
    world = World(policy({"chat": [target("k/a", "k/b")]}, failures=(rule,)))
    world.start()
    world.next()
    world.fail(FailureClass.UNKNOWN)
    wait = single(world.next(), WaitDecided)
    assert [p.upstream_model for p in wait.recovering] == ["a"]


# --------------------------------------------------------------------------- A7 exhaustion


def test_exhaustion_only_beyond_the_wait_bound_and_exactly_once() -> None:
    """A7: recovery within the wait bound waits; beyond it the request is exhausted once with Retry-After."""
    limits = RequestLimits(wait_total_us_max=10 * S)
    inside = World(policy({"chat": [target("k/m")]}, limits=limits))
    _cool(inside, "x", hint_us=10 * S)
    inside.start()
    assert single(inside.next(), WaitDecided)
    outside = World(policy({"chat": [target("k/m")]}, limits=limits))
    _cool(outside, "x", hint_us=10 * S + 1)
    outside.start()
    exhausted = single(outside.next(), FallbackExhausted)
    assert exhausted.reason is ExhaustedReason.NO_CANDIDATE
    assert exhausted.retry_at_us == outside.now + 10 * S + 1
    assert outside.next() == ()
    ended = [e for e in outside.log if isinstance(e, FallbackExhausted)]
    assert len(ended) == 1


def test_wait_total_accumulates_across_waits() -> None:
    """A7/I1.3: waits add up per request and stop at the policy's total wait bound."""
    world = World(policy({"chat": [target("k/m")]}, limits=RequestLimits(wait_total_us_max=3 * S)))
    _cool(world, "x", hint_us=2 * S)
    world.start()
    first = single(world.next(), WaitDecided)
    assert first.waited_total_us == 2 * S
    world.advance(2 * S)
    world.state.pairs["pair:k:m"].until_us = world.now + 2 * S  # blocked again by another outcome
    world.state.pairs["pair:k:m"].ready_us = world.now + 2 * S
    world.state.pairs["pair:k:m"].blocked_at_us = world.now
    exhausted = single(world.next(), FallbackExhausted)
    assert exhausted.retry_at_us == world.now + 2 * S


def test_attempt_limit_exhausts_with_retry_time() -> None:
    """A7: the attempt budget ends the request, reporting when the chain could serve again."""
    world = World(policy({"chat": [target("k/a", "k/b")]}, limits=RequestLimits(attempts_max=1)))
    world.start()
    world.next()
    world.fail(FailureClass.RATE_LIMITED)
    exhausted = single(world.next(), FallbackExhausted)
    assert exhausted.reason is ExhaustedReason.ATTEMPTS_LIMIT
    assert exhausted.retry_at_us == world.now


def test_deadline_exhausts_and_bounds_waits() -> None:
    """A7: a wait that would end past the deadline exhausts; past the deadline nothing is routed."""
    world = World(policy({"chat": [target("k/m")]}, limits=RequestLimits(deadline_us=5 * S)))
    _cool(world, "x", hint_us=6 * S)
    world.start(deadline_us=T0 + 100 * S)
    assert single(world.next(), FallbackExhausted).reason is ExhaustedReason.NO_CANDIDATE
    world.start("late", deadline_us=T0 + 1)
    world.advance(1)
    assert single(world.next("late"), FallbackExhausted).reason is ExhaustedReason.DEADLINE
    world.start("own", deadline_us=T0 + 3 * S)
    world.now = T0 + 3 * S
    assert single(world.next("own"), FallbackExhausted).reason is ExhaustedReason.DEADLINE


def test_request_without_any_deadline_waits() -> None:
    """A7: with no deadline at all, only the wait bound limits a wait."""
    world = World(policy({"chat": [target("k/m")]}))
    _cool(world, "x")
    world.start()
    assert single(world.next(), WaitDecided)


# --------------------------------------------------------------------------- Degraded (I0)


def test_unknown_route_degrades() -> None:
    """I0: an alias that names no route degrades with a typed reason."""
    world = World(policy({"chat": [target("k/m")]}))
    world.start(route="nope")
    degraded = single(world.next(), Degraded)
    assert degraded.reason is DegradedReason.UNKNOWN_ROUTE
    assert world.next() == ()


def test_unresolved_models_are_never_routed_and_degrade() -> None:
    """I0: a (c, m) that model_problem rejects is skipped with its reason; nothing usable degrades."""
    world = World(policy({"chat": [target("k/a", "k/b", "j/a")]}))
    world.credentials = {
        "k": CredentialUsability(
            credential_id="k",
            unusable=None,
            resolved_models=frozenset({"b"}),
            validates_model_names=True,
        )
    }
    world.start()
    routed = _routed(world.next())
    assert routed.upstream_model == "b"
    assert [s.reason for s in routed.skipped] == [SkipReason.MODEL_NOT_RESOLVED]
    world.credentials = {
        "k": CredentialUsability(
            credential_id="k",
            unusable=UnusableReason.MODELS_UNRESOLVED,
            resolved_models=None,
            validates_model_names=True,
        )
    }
    world.start("r2")
    degraded = single(world.next("r2"), Degraded)
    assert degraded.reason is DegradedReason.NOTHING_USABLE
    assert [s.reason for s in degraded.skipped] == [
        SkipReason.MODELS_UNRESOLVED,
        SkipReason.MODELS_UNRESOLVED,
        SkipReason.NOT_PROVISIONED,
    ]


def test_every_unusable_reason_maps_to_a_skip_reason() -> None:
    """I0: every lifecycle reason has a skip reason of the same value (the seam is total)."""
    for reason in UnusableReason:
        assert SkipReason(reason.value).value == reason.value


def test_lifecycle_skips_after_attempts_exhaust() -> None:
    """I0/A7: when attempts were made and the rest became unusable, the request is exhausted, not degraded."""
    world = World(policy({"chat": [target("k/a", "j/a")]}))
    world.start()
    world.next()
    world.fail(FailureClass.UNKNOWN)
    world.credentials = {}
    exhausted = single(world.next(), FallbackExhausted)
    assert exhausted.retry_at_us is None


def test_capabilities_filter_members() -> None:
    """F2: streaming requests skip non-streaming models; inputs beyond a model's window skip it."""
    world = World(
        policy(
            {"chat": [target("k/small", "k/batch", "k/big")]},
            no_streaming=["batch"],
            windows={"small": 100, "big": 10_000},
        )
    )
    world.start(stream=True, input_tokens=500)
    routed = _routed(world.next())
    assert routed.upstream_model == "big"
    assert [s.reason for s in routed.skipped] == [
        SkipReason.CONTEXT_TOO_SMALL,
        SkipReason.NO_STREAMING,
    ]


def test_many_skips_are_bounded_and_counted() -> None:
    """F2: at most SKIPS_RECORDED_MAX skips are recorded, the rest are counted."""
    members = [f"c{i}/m" for i in range(20)]
    world = World(policy({"chat": [target(*members)]}))
    world.credentials = {
        "c19": CredentialUsability(
            credential_id="c19", unusable=None, resolved_models=None, validates_model_names=False
        )
    }
    world.start()
    routed = _routed(world.next())
    assert (routed.credential_id, len(routed.skipped), routed.skipped_more) == ("c19", 16, 3)


def test_many_recovering_members_are_bounded() -> None:
    """I1.3: the recovering list of a wait is bounded like skips."""
    members = [f"c{i}/m" for i in range(20)]
    world = World(policy({"chat": [target(*members)]}))
    for i in range(20):
        scope = ScopeState()
        scope.until_us, scope.blocked_at_us, scope.needs_probe = world.now + S, world.now, True
        scope.ready_us = scope.until_us
        scope.reason = FailureClass.RATE_LIMITED
        world.state.pairs[f"pair:c{i}:m"] = scope
    world.state.pairs["pair:c0:m"].until_us = world.now + 2 * S
    world.state.pairs["pair:c0:m"].ready_us = world.now + 2 * S
    world.start()
    wait = single(world.next(), WaitDecided)
    assert len(wait.recovering) == 16
    assert wait.recovering[0].credential_id == "c1"


# --------------------------------------------------------------------------- strategies, D1


def test_round_robin_rotates_through_members() -> None:
    """F2: round-robin starts after the member last routed to (the cursor is state)."""
    world = World(policy({"chat": [target("k/a", "k/b", "k/c", strategy=Strategy.ROUND_ROBIN)]}))
    chosen = []
    for n in range(4):
        world.start(f"r{n}")
        chosen.append(_routed(world.next(f"r{n}")).upstream_model)
        world.succeed(f"r{n}")
    assert chosen == ["a", "b", "c", "a"]


def test_weighted_pick_is_deterministic_and_follows_weights() -> None:
    """D1: weighted picks depend only on the seed; heavier members are picked more often."""
    weighted = Target(members=(member("k/a", 1), member("k/b", 9)), strategy=Strategy.WEIGHTED)
    pol = policy({"chat": [weighted]})
    picks = []
    for seed in range(200):
        world = World(pol)
        world.start(seed=seed)
        first = _routed(world.next()).upstream_model
        again = World(pol)
        again.start(seed=seed)
        assert _routed(again.next()).upstream_model == first
        picks.append(first)
    assert 140 < picks.count("b") < 200


def test_mix64_is_independent_of_hash_seed() -> None:
    """D1: the seeded mix gives the same value in processes with different PYTHONHASHSEED."""
    code = "from routeledger.core.routing.selection import mix64; print(mix64(-3, 2**70))"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("0", "1", "12345")
    }
    assert outputs == {f"{mix64(-3, 2**70)}\n"}


# --------------------------------------------------------------------------- X1, X3, usage errors


def test_start_is_idempotent_and_conflicts_are_rejected() -> None:
    """X1: the same start is a no-op; the same id with other parameters is a typed rejection."""
    world = World(policy({"chat": [target("k/m")]}))
    world.start()
    command = StartRequest(request_id="r1", route="chat", caller_scope="someone-else")
    with pytest.raises(RequestConflict):
        decide_start(world.policy, world.state, command, now_us=world.now)


def test_outcome_redelivery_is_a_noop_and_conflict_is_rejected() -> None:
    """X1: re-applying the same outcome changes nothing; a different payload for the attempt is rejected."""
    world = World(policy({"chat": [target("k/m")]}))
    world.start()
    world.next()
    world.fail(FailureClass.RATE_LIMITED)
    before = len(world.log)
    command = RecordOutcome(request_id="r1", attempt_id=world.last_attempt(), outcome=Succeeded())
    with pytest.raises(OutcomeConflict):
        decide_outcome(world.policy, world.state, command, now_us=world.now + 5)
    same = RecordOutcome(
        request_id="r1",
        attempt_id=world.last_attempt(),
        outcome=Failed(failure=FailureClass.RATE_LIMITED),
    )
    assert decide_outcome(world.policy, world.state, same, now_us=world.now + 5) == ()
    assert len(world.log) == before


@pytest.mark.parametrize(
    "command",
    [
        StartRequest(request_id="", route="chat", caller_scope="c"),
        StartRequest(request_id="r", route="has space", caller_scope="c"),
        StartRequest(request_id="r", route="chat", caller_scope="c", model_owner=""),
        StartRequest(request_id="r", route="chat", caller_scope="c", backups=("x",) * 9),
        StartRequest(request_id="r", route="chat", caller_scope="c", backups=("",)),
        StartRequest(request_id="r", route="chat", caller_scope="c", seed=2**63),
        StartRequest(request_id="r", route="chat", caller_scope="c", input_tokens=-1),
        StartRequest(request_id="r", route="chat", caller_scope="c", deadline_us=-1),
        StartRequest(request_id="r" * 195, route="chat", caller_scope="c"),
    ],
)
def test_malformed_start_is_a_usage_error(command: StartRequest) -> None:
    """X3: ids come from the caller and are validated; malformed commands raise CommandError."""
    with pytest.raises(CommandError):
        decide_start(policy({"chat": [target("k/m")]}), initial(), command, now_us=T0)


def test_next_and_outcome_usage_errors() -> None:
    """X3: unknown requests/attempts, reused or malformed attempt ids and bad outcomes raise CommandError."""
    world = World(policy({"chat": [target("k/m")]}))
    with pytest.raises(CommandError):
        decide_next(
            world.policy, world.state, RouteNext(request_id="zz", attempt_id="a"), now_us=T0
        )
    world.start()
    with pytest.raises(CommandError):
        decide_next(world.policy, world.state, RouteNext(request_id="r1", attempt_id=""), now_us=T0)
    world.next()
    attempt = world.last_attempt()
    world.fail(FailureClass.PROVIDER_UNAVAILABLE)
    with pytest.raises(CommandError):
        decide_next(
            world.policy, world.state, RouteNext(request_id="r1", attempt_id=attempt), now_us=T0
        )
    bad_outcomes: list[object] = [
        Succeeded(evidence="upstream"),  # type: ignore[arg-type]
        Succeeded(input_tokens=-1),
        Failed(failure="boom"),  # type: ignore[arg-type]
        Failed(failure=FailureClass.UNKNOWN, delivered_chars=-1),
        Failed(failure=FailureClass.UNKNOWN, hint_us=-5),
        Failed(failure=FailureClass.UNKNOWN, status=42),
        Failed(failure=FailureClass.UNKNOWN, status=True),  # type: ignore[arg-type]
        Failed(failure=FailureClass.UNKNOWN, detail="x" * 301),
        Failed(failure=FailureClass.UNKNOWN, detail=None),  # type: ignore[arg-type]
        Failed(failure=FailureClass.UNKNOWN, billed=1),  # type: ignore[arg-type]
    ]
    for outcome in bad_outcomes:
        with pytest.raises(CommandError):
            decide_outcome(
                world.policy,
                world.state,
                RecordOutcome(request_id="r1", attempt_id=attempt, outcome=outcome),
                now_us=T0,
            )  # type: ignore[arg-type]
    for request_id, attempt_id in (("zz", attempt), ("r1", "nope")):
        with pytest.raises(CommandError):
            decide_outcome(
                world.policy,
                world.state,
                RecordOutcome(request_id=request_id, attempt_id=attempt_id, outcome=Succeeded()),
                now_us=T0,
            )


# --------------------------------------------------------------------------- fold, invariants


def test_fold_ignores_other_contexts_but_tracks_shared_cred_versions() -> None:
    """D3: other contexts' events change nothing but the head version of a shared cred: stream."""

    @event(
        "routeledger.TestForeignHappened",
        1,
        Origin.ADMIN,
        registry=EventRegistry(),
    )
    @attrs.frozen(kw_only=True)
    class Foreign(Event):
        pass

    state = fold(
        [
            Foreign(stream_id="cred:k", version=4, at_us=T0),
            Foreign(stream_id="account:x", version=1, at_us=T0),
        ]
    )
    assert state.creds["cred:k"].version == 4 and not state.pairs and not state.requests
    check_invariants(state)


def test_unknown_routing_event_type_is_an_invariant_violation() -> None:
    """D3: a routing event without a transition is a RouteLedger bug, reported loudly."""

    @attrs.frozen(kw_only=True)
    class Orphan(RoutingEvent):
        pass

    with pytest.raises(InvariantViolation):
        evolve(initial(), Orphan(stream_id="request:x", version=1, at_us=T0))


@pytest.mark.parametrize(
    ("mutate", "spec"),
    [
        (lambda s: setattr(s, "until_us", -1), "negative"),
        (
            lambda s: (
                setattr(s, "until_us", s.blocked_at_us + 8 * 86_400 * S),
                setattr(s, "ready_us", s.until_us),
            ),
            "A3",
        ),
        (lambda s: setattr(s, "ready_us", s.until_us + 1), "ready_us"),
        (lambda s: setattr(s, "level", LEVEL_MAX + 1), "level"),
        (lambda s: setattr(s, "needs_probe", False), "A4"),
        (
            lambda s: (setattr(s, "reason", None), setattr(s, "suspended", False)),
            "failure class",
        ),
        (lambda s: setattr(s, "probe_until_us", -1), "negative"),
    ],
)
def test_invariant_checks_catch_corrupt_scopes(mutate: object, spec: str) -> None:
    """A3/A4: check_invariants rejects corrupt availability state, pair or credential."""
    for table in ("pairs", "creds"):
        world = World(policy({"chat": [target("k/m")]}))
        _cool(
            world, "x", FailureClass.AUTH_ERROR if table == "creds" else FailureClass.RATE_LIMITED
        )
        scope = next(iter(getattr(world.state, table).values()))
        mutate(scope)  # type: ignore[operator]
        with pytest.raises(InvariantViolation, match=spec):
            check_invariants(world.state)


def test_invariant_checks_catch_corrupt_requests() -> None:
    """A7: check_invariants rejects double exhaustion, too many attempts and ended-in-flight requests."""
    world = World(policy({"chat": [target("k/m")]}))
    world.start()
    world.next()
    request = world.state.requests["r1"]
    request.terminal = True
    with pytest.raises(InvariantViolation, match="in flight"):
        check_invariants(world.state)
    request.in_flight = None
    request.terminal_decisions = 2
    with pytest.raises(InvariantViolation, match="A7"):
        check_invariants(world.state)
    request.terminal_decisions = 1
    request.attempts.update({f"x{i}": request.attempts[world.last_attempt()] for i in range(70)})
    with pytest.raises(InvariantViolation, match="attempts"):
        check_invariants(world.state)


def test_status_of_untracked_scope_is_available() -> None:
    """A4: a pair with no history is available."""
    assert status_at(None, T0) is Status.AVAILABLE


def test_success_of_a_healthy_pair_emits_only_the_observation() -> None:
    """A4: a success on a pair that was never blocked decides nothing."""
    world = World(policy({"chat": [target("k/m")]}))
    world.start()
    world.next()
    assert len(world.succeed()) == 1


_HISTORY = """
from tests.core.routing.support import World, policy, target, snapshot, S
from routeledger.core.routing import FailureClass, Strategy, Phase, fold
import hashlib
world = World(policy({"chat": [target("k1/a", "k2/a", "k3/b", strategy=Strategy.WEIGHTED)],
                      "spare": [target("k4/c")]}, fallback={"chat": ["spare"]}))
for n in range(12):
    world.start(f"r{n}", seed=n * 7919, backups=("spare",))
    if world.next(f"r{n}") and world.state.requests[f"r{n}"].in_flight:
        world.fail([FailureClass.RATE_LIMITED, FailureClass.AUTH_ERROR, FailureClass.UNKNOWN][n % 3],
                   f"r{n}", phase=Phase.MID_STREAM if n % 4 == 0 else Phase.BEFORE_RESPONSE,
                   delivered_chars=3 if n % 4 == 0 else 0)
        world.next(f"r{n}")
    world.advance(S * (n % 5))
assert len(world.log) > 40
print(hashlib.sha256(repr(snapshot(fold(world.log))).encode()).hexdigest())
"""


def test_replay_is_identical_across_hash_seeds() -> None:
    """D1: folding the same history in processes with different PYTHONHASHSEED gives the same state."""
    digests = {
        subprocess.run(
            [sys.executable, "-c", _HISTORY],
            env={"PYTHONHASHSEED": seed, "PYTHONPATH": "."},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("0", "1", "4242")
    }
    assert len(digests) == 1 and len(next(iter(digests)).strip()) == 64


def test_failed_outcome_records_status_detail_and_billing_for_the_report() -> None:
    """I4: a failed attempt's HTTP status, scrubbed detail and billed flag are kept on AttemptFailed."""
    world = World(policy({"chat": [target("k/m")]}))
    world.start()
    world.next()
    outcome = Failed(
        failure=FailureClass.PROVIDER_UNAVAILABLE, status=503, detail="overloaded", billed=True
    )
    failed = [e for e in world.outcome(outcome) if isinstance(e, AttemptFailed)]
    assert [(e.status, e.detail, e.billed) for e in failed] == [(503, "overloaded", True)]


def test_opening_must_be_this_new_requests_received_event() -> None:
    """decide_next refuses an opening of another request, or one for a request already started."""
    world = World(policy({"chat": [target("k1/a")]}))
    command = StartRequest(request_id="r1", route="chat", caller_scope="caller")
    (received,) = decide_start(world.policy, world.state, command, now_us=T0)
    with pytest.raises(CommandError, match="opening must be"):
        decide_next(
            world.policy,
            world.state,
            RouteNext(request_id="r2", attempt_id="a"),
            now_us=T0,
            opening=received,
        )
    world.start("r1")
    with pytest.raises(CommandError, match="already started"):
        decide_next(
            world.policy,
            world.state,
            RouteNext(request_id="r1", attempt_id="a"),
            now_us=T0,
            opening=received,
        )


def _prefer_world(prefer_us: int, limits: RequestLimits | None = None) -> World:
    """Route chat: primary p/m, then s/m, preferring to wait ``prefer_us`` for the primary."""
    pol = policy({"chat": [target("p/m"), target("s/m")]}, limits=limits)
    route = attrs.evolve(pol.routes[0], prefer_wait_us_max=prefer_us)
    return World(attrs.evolve(pol, routes=(route,)))


@pytest.mark.parametrize(
    ("prefer_s", "hint_s", "waits"),
    [(2, 1, True), (0, 1, False), (2, 5, False)],
    ids=["short-429-waited-for", "off-by-default", "longer-than-preferred"],
)
def test_a_short_recovery_of_the_preferred_target_is_waited_for(
    prefer_s: int, hint_s: int, waits: bool
) -> None:
    """G6: a primary blocked for at most prefer_wait_us_max is waited for (WaitDecided naming
    it, then routed to it); beyond it, or with 0, the request moves to the later target."""
    world = _prefer_world(prefer_s * S)
    _cool(world, "x", FailureClass.RATE_LIMITED, hint_us=hint_s * S)
    world.start()
    events = world.next()
    if not waits:
        assert _routed(events).credential_id == "s"
        return
    wait = single(events, WaitDecided)
    assert wait.until_us - world.now == hint_s * S
    assert [(p.credential_id, p.upstream_model) for p in wait.recovering] == [("p", "m")]
    world.advance(hint_s * S)
    assert _routed(world.next()).credential_id == "p"


def test_the_preference_never_exceeds_the_requests_wait_budget() -> None:
    """G6/A6: a preferred wait is taken only within wait_total_us_max (else route the later one)."""
    world = _prefer_world(3 * S, RequestLimits(wait_total_us_max=1 * S))
    _cool(world, "x", FailureClass.RATE_LIMITED, hint_us=2 * S)
    world.start()
    assert _routed(world.next()).credential_id == "s"


def test_no_preferred_wait_past_the_deadline_or_for_a_target_without_a_recovery_time() -> None:
    """G6/A6: the preference never waits past the request's deadline, nor for an earlier target
    skipped for a reason with no recovery time (an unusable key): the later target serves."""
    world = _prefer_world(3 * S, RequestLimits(deadline_us=1 * S))
    _cool(world, "x", FailureClass.RATE_LIMITED, hint_us=2 * S)
    world.start()
    assert _routed(world.next()).credential_id == "s"
    keyless = _prefer_world(3 * S)
    keyless.credentials = {
        "p": CredentialUsability(
            credential_id="p",
            unusable=UnusableReason.MODELS_UNRESOLVED,
            resolved_models=None,
            validates_model_names=True,
        ),
        "s": CredentialUsability(
            credential_id="s", unusable=None, resolved_models=None, validates_model_names=False
        ),
    }
    keyless.start()
    assert _routed(keyless.next()).credential_id == "s"
