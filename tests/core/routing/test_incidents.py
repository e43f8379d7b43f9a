"""Given/when/then for incidents I1 (its four review findings) and I3 (every behaviour of its seed suite).

"The primary fails" is a timeout here: a single 5xx or connect error is
tolerated once and retried on the same pair (``allowed_fails``,
``tests/core/routing/test_rules.py``), which is not what these incidents are about.

The I3 seed (``003_1c97b6803b080d98.txt``) pins an LLM class's fallback
behaviour; here each of its tests is restated on RouteLedger's API: a "backup
model" is a per-request backup alias, the "global fallback" is the route's
fallback alias, "the fallback raises" is ``FallbackExhausted`` with the
classified failures, and "llm_stream_start telemetry" is the ``AttemptRouted``
event naming the pair that actually serves.
"""

from __future__ import annotations

from routeledger.core.routing import FailureClass, Phase, RequestLimits, StartRequest, Strategy
from routeledger.core.routing.events import (
    AttemptRouted,
    Continuation,
    CooldownCleared,
    ExhaustedReason,
    FallbackExhausted,
    PairSuspended,
    ProbeAllowed,
    RequestReceived,
    SkipReason,
    WaitDecided,
)
from routeledger.core.routing.failures import Evidence
from routeledger.core.routing.state import Status, status_at

from .support import S, World, only, policy, target


def _routed(events: tuple[object, ...]) -> AttemptRouted:
    routed = [e for e in events if isinstance(e, AttemptRouted)]
    assert len(routed) == 1, events
    return routed[0]


def _exhausted(events: tuple[object, ...]) -> FallbackExhausted:
    assert len(events) == 1 and isinstance(events[0], FallbackExhausted), events
    return events[0]


# --------------------------------------------------------------------------- I1


def _alias_pool() -> World:
    # One public alias backed by two upstream models on the same credential.
    return World(policy({"chat": [target("k/qwen", "k/glm", strategy=Strategy.ROUND_ROBIN)]}))


def test_i1_model_not_supported_suspends_exactly_that_pair_and_falls_back() -> None:
    """I1: a model-support 400/422 suspends (c, m) only, never the credential, and the request falls back."""
    world = _alias_pool()
    world.start()
    assert _routed(world.next()).upstream_model == "qwen"
    events = world.fail(FailureClass.MODEL_NOT_SUPPORTED)
    suspended = only(events, PairSuspended)
    assert [e.stream_id for e in suspended] == ["pair:k:qwen"]
    assert not world.state.creds
    assert _routed(world.next()).upstream_model == "glm"


def test_i1_1_sibling_success_does_not_clear_the_suspended_member() -> None:
    """I1.1: state is per upstream member, so a sibling's success clears nothing and the bad member is not reselected."""
    world = _alias_pool()
    world.start()
    world.next()
    world.fail(FailureClass.MODEL_NOT_SUPPORTED)
    world.next()
    healed = world.succeed()
    assert not only(healed, CooldownCleared)
    assert set(world.state.pairs) == {"pair:k:qwen"}
    for n in range(2, 6):
        request = f"r{n}"
        world.start(request)
        assert _routed(world.next(request)).upstream_model == "glm"
        world.succeed(request)
    assert status_at(world.state.pairs["pair:k:qwen"], world.now) is Status.SUSPENDED


def test_i1_2_token_counting_and_cache_hits_clear_nothing() -> None:
    """I1.2: only a real upstream success of the pair clears it; local counts and cache hits do not."""
    for evidence in (Evidence.LOCAL_COUNT, Evidence.CACHE_HIT):
        world = World(policy({"chat": [target("k/m")]}))
        world.start("r0")
        world.next("r0")
        world.fail(FailureClass.RATE_LIMITED, "r0")
        world.advance(2 * S)  # the cooldown expired: half-open
        world.start()
        assert _routed(world.next()).probe
        events = world.succeed(evidence=evidence)
        assert not only(events, CooldownCleared), evidence
        assert world.state.pairs["pair:k:m"].needs_probe


def test_i1_3_wait_uses_earliest_member_recovery_not_the_alias() -> None:
    """I1.3: when every member cools, the request waits until the earliest member recovery (the wait is not skipped)."""
    world = _alias_pool()
    world.start("r0")
    world.next("r0")
    world.fail(FailureClass.RATE_LIMITED, "r0", hint_us=9 * S)
    world.start("r9")
    world.next("r9")
    world.fail(FailureClass.RATE_LIMITED, "r9", hint_us=4 * S)
    world.start()
    events = world.next()
    assert len(events) == 1 and isinstance(events[0], WaitDecided)
    wait = events[0]
    assert wait.until_us == world.now + 4 * S
    assert [(p.credential_id, p.upstream_model) for p in wait.recovering] == [("k", "glm")]
    assert wait.waited_total_us == 4 * S
    world.advance(4 * S)
    assert _routed(world.next()).upstream_model == "glm"


def test_i1_4_blocked_pool_costs_no_retry_budget_before_healthy_fallback() -> None:
    """I1.4: a credential whose whole pool is blocked is skipped without spending attempts; the healthy fallback runs."""
    world = World(
        policy(
            {"chat": [target("k1/qwen", "k1/glm")], "backup": [target("k2/qwen")]},
            fallback={"chat": ["backup"]},
            limits=RequestLimits(attempts_max=1),
        )
    )
    for request in ("x1", "x2"):
        world.start(request)
        world.next(request)
        world.fail(FailureClass.QUOTA_EXHAUSTED, request)
    world.start()
    routed = _routed(world.next())
    assert (routed.credential_id, routed.attempt_no) == ("k2", 1)
    assert [(s.upstream_model, s.reason) for s in routed.skipped] == [
        ("qwen", SkipReason.COOLING_DOWN),
        ("glm", SkipReason.COOLING_DOWN),
    ]


def test_i1_stream_bootstrap_failure_continues_rotation_then_terminal_error() -> None:
    """I1: a failure before the first byte continues the rotation; with nothing left the classified error ends it."""
    world = World(
        policy({"chat": [target("k1/m", "k2/m")]}, limits=RequestLimits(wait_total_us_max=0))
    )
    world.start(stream=True)
    world.next()
    world.fail(FailureClass.FIRST_TOKEN_TIMEOUT, phase=Phase.BEFORE_FIRST_TOKEN)
    assert _routed(world.next()).credential_id == "k2"
    world.fail(FailureClass.TIMEOUT_BEFORE_RESPONSE)
    exhausted = _exhausted(world.next())
    assert exhausted.reason is ExhaustedReason.NO_CANDIDATE
    assert [f.failure for f in exhausted.failures] == [
        FailureClass.FIRST_TOKEN_TIMEOUT,
        FailureClass.TIMEOUT_BEFORE_RESPONSE,
    ]
    assert exhausted.retry_at_us == world.now + 5 * S


# --------------------------------------------------------------------------- I3


def _agent(*, backups_global: bool = True) -> World:
    routes = {
        "primary": [target("p/qwen3-4b")],
        "agent-backup": [target("g/gpt-oss-120b")],
        "second-backup": [target("h/llama")],
        "global": [target("f/global-model")],
    }
    return World(
        policy(
            routes,
            fallback={"primary": ["global"] if backups_global else []},
            prefill=["gpt-oss-120b"],
        )
    )


def test_i3_primary_success_never_touches_fallback() -> None:
    """I3 test_primary_success_no_fallback / test_stream_primary_success: success ends the request, nothing else is routed."""
    for stream in (False, True):
        world = _agent()
        world.start(route="primary", backups=("agent-backup",), stream=stream)
        assert _routed(world.next()).upstream_model == "qwen3-4b"
        world.succeed()
        assert world.next() == ()
        assert [e.credential_id for e in world.log if isinstance(e, AttemptRouted)] == ["p"]


def test_i3_primary_failure_uses_agent_backup_before_global() -> None:
    """I3 test_primary_fails_uses_backup_model / test_agent_backup_tried_before_global_*: the backup goes first."""
    for phase in (Phase.BEFORE_RESPONSE, Phase.BEFORE_FIRST_TOKEN):
        world = _agent()
        world.start(route="primary", backups=("agent-backup",))
        world.next()
        world.fail(FailureClass.TIMEOUT_BEFORE_RESPONSE, phase=phase)
        routed = _routed(world.next())
        assert (routed.credential_id, routed.target_path) == ("g", "routes.agent-backup.chain[0]")
        assert routed.continuation is Continuation.FRESH


def test_i3_no_fallback_configured_propagates_the_classified_error() -> None:
    """I3 test_no_fallback_raises / test_stream_no_fallback_raises / nothing configured: the error ends it cleanly."""
    for phase in (Phase.BEFORE_RESPONSE, Phase.BEFORE_FIRST_TOKEN):
        world = _agent(backups_global=False)
        world.start(route="primary")
        world.next()
        world.fail(FailureClass.MODEL_NOT_FOUND, phase=phase)
        exhausted = _exhausted(world.next())
        assert exhausted.reason is ExhaustedReason.NO_CANDIDATE
        assert [(f.credential_id, f.failure) for f in exhausted.failures] == [
            ("p", FailureClass.MODEL_NOT_FOUND)
        ]
        assert world.next() == ()


def test_i3_mid_stream_failure_continues_after_partial_output() -> None:
    """I3 test_stream_mid_stream_failure_uses_backup: the backup follows the partial output, recorded with its length."""
    world = _agent()
    world.start(route="primary", backups=("agent-backup",), stream=True)
    world.next()
    world.fail(FailureClass.STREAM_INTERRUPTED, phase=Phase.MID_STREAM, delivered_chars=6)
    routed = _routed(world.next())
    assert routed.delivered_chars == 6
    assert routed.continuation is Continuation.CONTINUE
    assert world.state.requests["r1"].terminal is False


def test_i3_mid_stream_to_target_without_prefill_restarts_cleanly() -> None:
    """I3: a target that cannot continue a partial answer is told to restart cleanly."""
    world = _agent()
    world.start(route="primary", backups=("second-backup",), stream=True)
    world.next()
    world.fail(FailureClass.STREAM_STALLED, phase=Phase.MID_STREAM, delivered_chars=3)
    routed = _routed(world.next())
    assert (routed.credential_id, routed.continuation) == ("h", Continuation.RESTART)


def test_i3_fallback_is_called_with_its_own_model_id() -> None:
    """I3 TestFallbackModelIdOverride: every attempt names its target's own upstream model, never the primary's."""
    for phase, chars in ((Phase.BEFORE_RESPONSE, 0), (Phase.MID_STREAM, 9)):
        world = _agent()
        world.start(route="primary", backups=("agent-backup",), stream=True)
        assert _routed(world.next()).upstream_model == "qwen3-4b"
        world.fail(FailureClass.TIMEOUT_BEFORE_RESPONSE, phase=phase, delivered_chars=chars)
        assert _routed(world.next()).upstream_model == "gpt-oss-120b"


def test_i3_every_stream_start_names_the_pair_serving_it() -> None:
    """I3 test_fallback_emits_stream_start_with_fallback_provider: one routed event per attempt, each naming its own pair."""
    world = _agent()
    world.start(route="primary", backups=("agent-backup",), stream=True)
    world.next()
    world.fail(FailureClass.TIMEOUT_BEFORE_RESPONSE)
    world.next()
    starts = [
        (e.credential_id, e.upstream_model) for e in world.log if isinstance(e, AttemptRouted)
    ]
    assert starts == [("p", "qwen3-4b"), ("g", "gpt-oss-120b")]


def test_i3_fallback_own_fallback_is_never_consulted() -> None:
    """I3 TestFallbackNoRecursion: a backup's own fallback chain is never walked; when it fails too, no third hop."""
    world = World(
        policy(
            {
                "primary": [target("p/a")],
                "backup": [target("b/b")],
                "backup-of-backup": [target("x/x")],
            },
            fallback={"backup": ["backup-of-backup"]},
        )
    )
    world.start(route="primary", backups=("backup",))
    world.next()
    world.fail(FailureClass.TIMEOUT_BEFORE_RESPONSE)
    assert _routed(world.next()).credential_id == "b"
    world.fail(FailureClass.TIMEOUT_BEFORE_RESPONSE)
    exhausted = _exhausted(world.next())
    assert [f.credential_id for f in exhausted.failures] == ["p", "b"]
    assert "x" not in {e.credential_id for e in world.log if isinstance(e, AttemptRouted)}


def test_i3_unresolvable_backup_is_skipped_and_next_tried() -> None:
    """I3 test_skips_unresolvable_backup_model_tries_next: an unknown backup alias is skipped with a reason."""
    world = _agent()
    world.start(route="primary", backups=("bad-model", "agent-backup"))
    world.next()
    world.fail(FailureClass.TIMEOUT_BEFORE_RESPONSE)
    routed = _routed(world.next())
    assert routed.credential_id == "g"
    assert [(s.alias, s.reason) for s in routed.skipped if s.credential_id is None] == [
        ("bad-model", SkipReason.UNKNOWN_ROUTE)
    ]


def test_i3_global_fallback_used_when_every_backup_is_unusable() -> None:
    """I3 test_global_fallback_used_when_all_backup_models_fail: broken backups fall through to the global fallback."""
    world = _agent()
    world.start(route="primary", backups=("broken-backup",))
    world.next()
    world.fail(FailureClass.TIMEOUT_BEFORE_RESPONSE)
    assert _routed(world.next()).upstream_model == "global-model"


def test_i3_byom_resolves_in_the_owner_scope_and_records_it() -> None:
    """I3 TestFallbackModelUserIdScope: members resolve in the model owner's scope, recorded on the attempt."""
    pol = policy(
        {"shared-agent": [target("alice-key/alice-byom")], "global": [target("alice-key2/byom2")]},
        fallback={"shared-agent": ["global"]},
        owners={"alice-key": "alice", "alice-key2": "alice"},
    )
    world = World(pol)
    world.start(route="shared-agent", caller_scope="bob", model_owner="alice")
    routed = _routed(world.next())
    assert (routed.credential_id, routed.owner_scope) == ("alice-key", "alice")
    world.fail(FailureClass.TIMEOUT_BEFORE_RESPONSE)
    fallback = _routed(world.next())
    assert (fallback.credential_id, fallback.owner_scope) == ("alice-key2", "alice")
    received = world.log[0]
    assert isinstance(received, RequestReceived) and received.model_owner == "alice"


def test_i3_without_owner_the_caller_scope_applies() -> None:
    """I3 test_falls_back_to_caller_when_model_user_id_unset: no owner means the caller's scope; foreign keys are skipped."""
    pol = policy(
        {"chat": [target("alice-key/m", "bob-key/m")]},
        owners={"alice-key": "alice", "bob-key": "bob"},
    )
    world = World(pol)
    world.start(caller_scope="bob")
    routed = _routed(world.next())
    assert (routed.credential_id, routed.owner_scope) == ("bob-key", "bob")
    assert [(s.credential_id, s.reason) for s in routed.skipped] == [
        ("alice-key", SkipReason.OUT_OF_SCOPE)
    ]


def test_i3_start_command_records_the_model_owner() -> None:
    """I3 TestLLMCreatorPassesModelUserId: the owner given at start is stored on the request's first event."""
    world = _agent()
    world.start(route="primary", caller_scope="bob", model_owner="alice")
    received = world.log[0]
    assert isinstance(received, RequestReceived)
    assert (received.caller_scope, received.model_owner) == ("bob", "alice")
    assert StartRequest(request_id="x", route="r", caller_scope="c").model_owner is None


def test_i3_probe_marks_attempt() -> None:
    """A4 with I3 telemetry: a half-open probe is marked on the attempt and allowed on the pair stream."""
    world = World(policy({"chat": [target("k/m")]}))
    world.start("r0")
    world.next("r0")
    world.fail(FailureClass.TIMEOUT_BEFORE_RESPONSE, "r0")
    world.advance(5 * S)
    world.start()
    events = world.next()
    assert _routed(events).probe
    assert [e.stream_id for e in only(events, ProbeAllowed)] == ["pair:k:m"]
