"""Shared builders for the routing tests: small policies and a driver that folds what it decides."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

from routeledger.core.routing import (
    CredentialSpec,
    Failed,
    FailureClass,
    Member,
    ModelSpec,
    Phase,
    Policy,
    RecordOutcome,
    RequestLimits,
    Route,
    RouteNext,
    StartRequest,
    Strategy,
    Succeeded,
    Target,
    check_invariants,
    decide_next,
    decide_outcome,
    decide_start,
    fold,
    initial,
)
from routeledger.core.routing.events import RoutingEvent
from routeledger.core.routing.failures import Evidence
from routeledger.core.routing.state import RequestState, RoutingState, ScopeState
from routeledger.core.usability import CredentialUsability

T0 = 1_800_000_000_000_000
S = 1_000_000


def member(pair: str, weight: int = 1) -> Member:
    """``"cred/model"`` -> a member."""
    credential, model = pair.split("/")
    return Member(credential=credential, model=model, weight=weight)


def target(*pairs: str, strategy: Strategy = Strategy.PRIORITY) -> Target:
    return Target(members=tuple(member(p) for p in pairs), strategy=strategy)


def policy(
    routes: Mapping[str, Sequence[Target]],
    *,
    fallback: Mapping[str, Sequence[str]] | None = None,
    owners: Mapping[str, str] | None = None,
    account_wide: Sequence[str] = (),
    prefill: Sequence[str] = (),
    no_streaming: Sequence[str] = (),
    windows: Mapping[str, int] | None = None,
    limits: RequestLimits | None = None,
    **extra: object,
) -> Policy:
    """A policy naming every credential and model its routes use."""
    creds: dict[str, None] = {}
    models: dict[str, None] = {}
    for chain in routes.values():
        for tgt in chain:
            for m in tgt.members:
                creds[m.credential] = None
                models[m.model] = None
    owners = owners or {}
    windows = windows or {}
    kwargs: dict[str, object] = dict(extra)
    if limits is not None:
        kwargs["limits"] = limits
    return Policy(
        credentials=tuple(
            CredentialSpec(
                id=c, provider="openai", owner=owners.get(c), account_wide_quota=c in account_wide
            )
            for c in creds
        ),
        models=tuple(
            ModelSpec(
                id=m,
                prefill=m in prefill,
                streaming=m not in no_streaming,
                context_window_tokens=windows.get(m, 8_192),
            )
            for m in models
        ),
        routes=tuple(
            Route(alias=alias, chain=tuple(chain), fallback=tuple((fallback or {}).get(alias, ())))
            for alias, chain in routes.items()
        ),
        **kwargs,  # type: ignore[arg-type]
    )


def snapshot(state: RoutingState) -> tuple[object, ...]:
    """A comparable, canonical picture of a routing state (D1, and purity checks)."""

    def scope(value: ScopeState) -> tuple[object, ...]:
        return tuple(getattr(value, name) for name in ScopeState.__slots__)

    def request(value: RequestState) -> tuple[object, ...]:
        attempts = tuple(
            (key, rec.pair_stream, rec.chain_position, rec.outcome)
            for key, rec in value.attempts.items()
        )
        simple = tuple(
            getattr(value, name) for name in RequestState.__slots__ if name != "attempts"
        )
        return (attempts, tuple(map(repr, simple)))

    return (
        sorted((k, scope(v)) for k, v in state.pairs.items()),
        sorted((k, scope(v)) for k, v in state.creds.items()),
        sorted((k, request(v)) for k, v in state.requests.items()),
        sorted(state.cursors.items()),
    )


class World:
    """Drives the deciders like an engine would: decide, fold, check invariants, re-run (X1)."""

    def __init__(self, pol: Policy, now_us: int = T0) -> None:
        self.policy = pol
        self.state: RoutingState = initial()
        self.log: list[RoutingEvent] = []
        self.now = now_us
        self.credentials: Mapping[str, CredentialUsability] | None = None
        self._attempts = 0

    def apply(self, events: Sequence[RoutingEvent]) -> tuple[RoutingEvent, ...]:
        fold(events, self.state)
        self.log.extend(events)
        check_invariants(self.state)
        return tuple(events)

    def start(self, request_id: str = "r1", route: str = "chat", **kw: object) -> None:
        command = StartRequest(
            request_id=request_id,
            route=route,
            caller_scope=str(kw.pop("caller_scope", "caller")),
            **kw,  # type: ignore[arg-type]
        )
        self.apply(decide_start(self.policy, self.state, command, now_us=self.now))
        assert decide_start(self.policy, self.state, command, now_us=self.now) == ()

    def next(self, request_id: str = "r1") -> tuple[RoutingEvent, ...]:
        self._attempts += 1
        command = RouteNext(request_id=request_id, attempt_id=f"{request_id}-a{self._attempts}")
        before = snapshot(self.state)
        events = decide_next(
            self.policy, self.state, command, now_us=self.now, credentials=self.credentials
        ).events
        assert snapshot(self.state) == before, "decide never mutates the state"
        self.apply(events)
        rerun = decide_next(
            self.policy, self.state, command, now_us=self.now, credentials=self.credentials
        )
        assert rerun.events == (), "a decided step is not decided again (idempotent re-run)"
        return events

    def last_attempt(self, request_id: str = "r1") -> str:
        request = self.state.requests[request_id]
        return list(request.attempts)[-1]

    def outcome(
        self, outcome: Succeeded | Failed, request_id: str = "r1"
    ) -> tuple[RoutingEvent, ...]:
        command = RecordOutcome(
            request_id=request_id, attempt_id=self.last_attempt(request_id), outcome=outcome
        )
        before = snapshot(self.state)
        decided = decide_outcome(self.policy, self.state, command, now_us=self.now)
        assert snapshot(self.state) == before, "decide never mutates the state"
        events = self.apply(decided)
        assert decide_outcome(self.policy, self.state, command, now_us=self.now) == ()
        return events

    def fail(
        self,
        failure: FailureClass,
        request_id: str = "r1",
        *,
        phase: Phase = Phase.BEFORE_RESPONSE,
        delivered_chars: int = 0,
        hint_us: int | None = None,
    ) -> tuple[RoutingEvent, ...]:
        return self.outcome(
            Failed(failure=failure, phase=phase, delivered_chars=delivered_chars, hint_us=hint_us),
            request_id,
        )

    def succeed(
        self, request_id: str = "r1", evidence: Evidence = Evidence.UPSTREAM
    ) -> tuple[RoutingEvent, ...]:
        return self.outcome(Succeeded(evidence=evidence, output_tokens=5), request_id)

    def advance(self, us: int) -> None:
        self.now += us


E = TypeVar("E", bound=RoutingEvent)


def only(events: Sequence[RoutingEvent], cls: type[E]) -> list[E]:
    """The events of type ``cls``, in order."""
    return [e for e in events if isinstance(e, cls)]


def single(events: Sequence[RoutingEvent], cls: type[E]) -> E:
    """The one event of ``events``, which must be a ``cls``."""
    assert len(events) == 1 and isinstance(events[0], cls), events
    return events[0]
