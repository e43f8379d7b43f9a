"""The embedding engine: one API a gateway calls for every request.

::

    engine = Engine.open("sqlite:///routeledger.db", "gateway.toml")
    async with engine.request(route="chat", accounts=("key:k1", "team-a"),
                              caller_scope="user:alice", input_tokens=812) as request:
        async for attempt in request.attempts():          # waits are honoured
            try:
                response = await call_provider(attempt.credential_id, attempt.upstream_model)
            except Exception as error:
                attempt.failed_from_exception(error)       # classified by adapters/observe.py
                continue
            attempt.succeeded(input_tokens=..., output_tokens=...)
    request.result  # Served / Exhausted / Degraded / BudgetRejected

What it guarantees:

* **Appended before acted on (L10).** Every decision — the request and its
  hold, each attempt, each outcome, each wait, the settlement — is appended to
  the store before the caller sees it. A hold that could not be recorded is not
  made, and the request is not dispatched.
* **No leaked holds.** Leaving the request by success, an exception,
  ``asyncio.CancelledError`` or ``GeneratorExit`` resolves the hold through the
  settlement sink: usage when served, a refund when nothing billable was
  produced, the observed usage (or the estimate) for a partial stream (L11).
  The resolution runs without awaiting, so cancellation cannot interrupt it.
  A crashed process leaves its hold to expire at its TTL (L5).
* **Shared state.** Several processes on one store see each other's
  decisions: the runtime reads what it missed before every decision and
  re-decides after a conflict (see :mod:`.runtime`).

The clock and the id generator are injected (real by default, fake in tests).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Final, NamedTuple
from zoneinfo import ZoneInfo

import attrs

from routeledger.adapters.engine.clock import Clock, SystemClock, uuid_ids
from routeledger.adapters.engine.config import (
    CredentialEndpoint,
    EngineConfig,
    ModelPrice,
    load_config,
)
from routeledger.adapters.engine.grouping import GroupCommitter, Slot
from routeledger.adapters.engine.results import (
    BudgetRejected,
    Degradation,
    Exhausted,
    Result,
    Served,
)
from routeledger.adapters.engine.runtime import Runtime
from routeledger.adapters.providers.observe import Observation, observe_exception, observe_response
from routeledger.adapters.providers.scrub import DEFAULT_SCRUBBER, Scrubber
from routeledger.adapters.store.eventstore import EventStore, open_store
from routeledger.core.budget import decide as budget
from routeledger.core.budget.group import HoldGroup
from routeledger.core.budget.sinks import LocalLedgerSink, PlatformReport, SinkMode, open_sink
from routeledger.core.budget.values import Rejection, Usage
from routeledger.core.credentials.decide import (
    CredentialFailure,
    ProvisionExplicitKey,
    RecordFailure,
    RecordModelsResolved,
    decide_failure,
    decide_models_resolved,
    decide_provision_explicit,
)
from routeledger.core.credentials.events import CredentialMetadata, RoleModel
from routeledger.core.credentials.lifecycle import usability
from routeledger.core.errors import InvariantViolation, UsageError
from routeledger.core.events import Event
from routeledger.core.fold import Folded
from routeledger.core.routing import (
    Evidence,
    Failed,
    FailureClass,
    NextStep,
    Phase,
    RecordOutcome,
    StartRequest,
    Succeeded,
    decide_next,
    decide_outcome,
    decide_start,
    succeeded_problem,
)
from routeledger.core.routing import state as routing_state
from routeledger.core.routing.events import (
    AttemptRouted,
    Continuation,
    Degraded,
    FallbackExhausted,
    WaitDecided,
)
from routeledger.core.routing.state import group_view, note_in_view, request_local
from routeledger.core.time import US_PER_S
from routeledger.core.usability import CredentialUsability

__all__ = ["Attempt", "Engine", "RequestHandle"]

#: Steps one request may take (attempts, waits and decisions together). Why:
#: attempts are bounded by the policy (<= 64) and waits by its wait budget;
#: this is a backstop that turns a decider bug into an error, not a hang.
REQUEST_STEPS_MAX: Final = 1_000
#: Hold TTL floor above the request's own time limits, in microseconds. Why: a
#: hold must outlive the longest request it covers, or it expires under it.
HOLD_TTL_MARGIN_US: Final = 60 * US_PER_S
#: Chains whose reachable prices are remembered for estimates. Why: callers may
#: name any backups, so the cache is bounded; a gateway has a few dozen routes.
CHAIN_PRICES_CACHED_MAX: Final = 1_024


#: How an attempt's failure class reads for the credential lifecycle (I0): only
#: AUTH may trigger key recovery; the others are recorded as what they are.
_LIFECYCLE_FAILURE: Final[Mapping[FailureClass, CredentialFailure]] = {
    FailureClass.AUTH_ERROR: CredentialFailure.AUTH,
    FailureClass.QUOTA_EXHAUSTED: CredentialFailure.BUDGET,
    FailureClass.MODEL_NOT_FOUND: CredentialFailure.INVALID_MODEL,
    FailureClass.MODEL_NOT_SUPPORTED: CredentialFailure.INVALID_MODEL,
}


# --- the engine -----------------------------------------------------------------


class Engine:
    """Decision state in memory, folded from one store; the request API."""

    def __init__(
        self,
        store: EventStore,
        config: EngineConfig,
        *,
        clock: Clock | None = None,
        ids: Callable[[], str] | None = None,
        scrubber: Scrubber = DEFAULT_SCRUBBER,
        track_credentials: bool = False,
        runtime: Runtime | None = None,
        platform: Callable[[PlatformReport], None] | None = None,
    ) -> None:
        self.store = store
        self.config = config
        #: Where platform-mode requests report their billing (the gateway's
        #: own function: enqueue for the platform; it must not block).
        self.platform = platform
        #: Route only to what the credential lifecycle allows (I0); off = every
        #: configured credential is usable with the model names the policy lists.
        self.track_credentials = track_credentials
        self.clock: Clock = clock or SystemClock()
        self._ids = ids or uuid_ids()
        self.scrubber = scrubber
        #: The folded state and the append loop; inject one for seeded retry
        #: jitter and a virtual sleep (simulations).
        self.runtime = runtime or Runtime(store, self.clock.now_us)
        if runtime is None or runtime.state.events == 0:
            self.runtime.state.routing = routing_state.initial(config.policy)
        self._closed = False
        #: Entries and exits of concurrent requests share commits (see
        #: ``_decide_group`` and ``adapters/grouping.py``).
        self.committer: GroupCommitter[_Item, _Opened] = GroupCommitter(
            self.runtime, functools.partial(_decide_group, self), _opened_events
        )
        #: Resolutions of entries whose caller was cancelled (kept referenced).
        self._background: set[asyncio.Task[None]] = set()
        #: Events folded when the last snapshot was saved (or restored).
        self._snapshot_events = 0
        #: (route, backups) -> the prices of the distinct models its chain can reach,
        #: under ``_prices_config`` (a new ``config`` empties the cache).
        self._chain_prices: dict[tuple[str, tuple[str, ...]], tuple[ModelPrice, ...]] = {}
        self._prices_config = config

    @classmethod
    def open(
        cls,
        store_url: str | None = None,
        config: EngineConfig | str | Path = "routeledger.toml",
        *,
        clock: Clock | None = None,
        ids: Callable[[], str] | None = None,
        scrubber: Scrubber = DEFAULT_SCRUBBER,
        track_credentials: bool = False,
        platform: Callable[[PlatformReport], None] | None = None,
    ) -> Engine:
        """Open the store, fold the log, and open the configured budget accounts if missing."""
        loaded = config if isinstance(config, EngineConfig) else load_config(config)
        store = open_store(store_url)
        try:
            engine = cls(
                store,
                loaded,
                clock=clock,
                ids=ids,
                scrubber=scrubber,
                track_credentials=track_credentials,
                platform=platform,
            )
            engine.restore()
            engine.open_accounts()
        except BaseException:
            store.close()
            raise
        return engine

    def restore(self) -> None:
        """Start from the latest usable snapshot (if any), then fold the log's tail."""
        from routeledger.adapters.store.snapshots import load_snapshot

        snapshot = load_snapshot(self.store)
        if snapshot is not None:
            snapshot.routing = routing_state.reindex(snapshot.routing, self.config.policy)
            self.runtime.state = snapshot
            self._snapshot_events = snapshot.events
        self.runtime.catch_up()

    def maybe_snapshot(self) -> bool:
        """Save a snapshot when ``snapshot_every_events`` events were folded since the last."""
        every = self.config.engine.snapshot_every_events
        if every <= 0 or self.state.events - self._snapshot_events < every:
            return False
        from routeledger.adapters.store.snapshots import save_snapshot

        save_snapshot(self.store, self.state)
        self._snapshot_events = self.state.events
        return True

    def open_accounts(self) -> None:
        """Open every configured budget account that the log does not have yet."""

        def zones(name: str) -> tzinfo:
            return UTC if name == "UTC" else ZoneInfo(name)

        for command in self.config.accounts:
            if command.account_id in self.runtime.state.budget.accounts:
                continue
            decision = self.runtime.run(_open_account(command, zones), _events_of)
            if decision.rejection is not None:
                raise UsageError(
                    f"accounts.{command.account_id}: cannot open: {decision.rejection}"
                )

    @property
    def state(self) -> Folded:
        """The folded state (read-only for callers)."""
        return self.runtime.state

    def endpoint(self, credential_id: str) -> CredentialEndpoint:
        """The configured endpoint of a credential (base URL, where its key lives)."""
        return self.config.endpoints.get(credential_id) or CredentialEndpoint(
            credential_id=credential_id
        )

    def request(
        self,
        *,
        route: str,
        caller_scope: str,
        accounts: Sequence[str] = (),
        input_tokens: int = 0,
        max_output_tokens: int | None = None,
        stream: bool = False,
        backups: Sequence[str] = (),
        model_owner: str | None = None,
        request_id: str | None = None,
        seed: int | None = None,
        settlement: SinkMode = SinkMode.STANDALONE,
    ) -> RequestHandle:
        """Prepare a request; entering the handle records it and places its hold.

        ``settlement`` chooses, once for the request, where its usage goes: the
        local ledger (standalone: a hold on ``accounts``, settled or refunded at
        exit) or the platform (no local hold; at exit the billing is reported
        to the engine's ``platform`` function). The exit path is the same for
        both: only the sink differs (I2).
        """
        if self._closed:
            raise UsageError("the engine is closed")
        if type(settlement) is not SinkMode:
            raise UsageError(f"settlement must be a SinkMode, got {settlement!r}")
        if settlement is SinkMode.PLATFORM:
            if accounts:
                raise UsageError("a platform-mode request holds no local budget: pass no accounts")
            if self.platform is None:
                raise UsageError("platform-mode requests need Engine(platform=...) to report to")
        request_id = request_id or self._ids()
        return RequestHandle(
            self,
            StartRequest(
                request_id=request_id,
                route=route,
                caller_scope=caller_scope,
                backups=tuple(backups),
                model_owner=model_owner,
                seed=seed if seed is not None else _seed_of(request_id),
                stream=stream,
                input_tokens=input_tokens,
            ),
            accounts=tuple(accounts),
            max_output_tokens=max_output_tokens,
            settlement=settlement,
        )

    def estimate(
        self, route: str, backups: Sequence[str], input_tokens: int, output_tokens: int | None
    ) -> Usage:
        """Worst-case usage over every model the request could reach (no re-pricing needed)."""
        cost = 0
        tokens = 0
        for price in self._prices_reachable(route, tuple(backups)):
            out = output_tokens if output_tokens is not None else price.max_output_tokens
            cost = max(cost, price.estimate_micros(input_tokens, out))
            tokens = max(tokens, input_tokens + out)
        return Usage(cost_micros=cost, tokens=tokens, requests=1)

    def _prices_reachable(self, route: str, backups: tuple[str, ...]) -> tuple[ModelPrice, ...]:
        """The prices of the distinct priced models ``route`` with ``backups`` can reach (cached)."""
        if self._prices_config is not self.config:
            self._chain_prices.clear()
            self._prices_config = self.config
        key = (route, backups)
        prices = self._chain_prices.get(key)
        if prices is None:
            chain = self.config.policy.chain(route, backups)
            by_model: dict[str, ModelPrice] = {}
            for plan in chain.targets if chain is not None else ():
                for member in plan.members:
                    price = self.config.prices.get(member.model)
                    if price is not None:
                        by_model.setdefault(member.model, price)
            prices = tuple(by_model.values())
            if len(self._chain_prices) >= CHAIN_PRICES_CACHED_MAX:
                self._chain_prices.clear()
            self._chain_prices[key] = prices
        return prices

    # -- credential lifecycle (adapters perform the calls; the core decides) -------

    def provision_key(self, credential_id: str, metadata: CredentialMetadata) -> None:
        """Record an operator key (its secret already in the secret store)."""
        command = ProvisionExplicitKey(
            installation_id=self.config.engine.installation_id,
            credential_id=credential_id,
            metadata=metadata,
        )
        self.runtime.append(
            lambda s, now: decide_provision_explicit(s.credentials, command, now_us=now)
        )

    def record_models(
        self, credential_id: str, models: frozenset[str], roles: tuple[RoleModel, ...] = ()
    ) -> None:
        """Record the model names the provider listed for a key (an empty list is a failure)."""
        command = RecordModelsResolved(credential_id=credential_id, models=models, roles=roles)
        self.runtime.append(
            lambda s, now: decide_models_resolved(s.credentials, command, now_us=now)
        )

    def usable_credentials(self) -> Mapping[str, CredentialUsability] | None:
        """What routing may use now, or ``None`` when lifecycles are not tracked."""
        if not self.track_credentials:
            return None
        return usability(self.state.credentials, self.clock.now_us())

    def _credential_failed(
        self, credential_id: str, failure: FailureClass, status: int | None
    ) -> None:
        kind = _LIFECYCLE_FAILURE.get(failure)
        if not self.track_credentials or kind is None:
            return
        if credential_id not in self.state.credentials.credentials:
            return
        command = RecordFailure(credential_id=credential_id, failure=kind, http_status=status)
        self.runtime.append(lambda s, now: decide_failure(s.credentials, command, now_us=now))

    def hold_ttl_us(self) -> int:
        """A hold outlives the longest request: the policy's deadline and waits, plus a margin."""
        limits = self.config.policy.limits
        longest = (limits.deadline_us or 0) + limits.wait_total_us_max
        longest += self.config.timeouts.total_us * limits.attempts_max
        return max(self.config.engine.hold_ttl_us, longest + HOLD_TTL_MARGIN_US)

    def expire_due_holds(self) -> int:
        """Expire every hold past its TTL (a sweeper calls this); returns how many."""
        decision = self.runtime.run(
            lambda s, now: budget.decide_expire_due(s.budget, now_us=now), lambda d: d.events
        )
        return len(decision.events)

    def close(self) -> None:
        """Close the store (idempotent)."""
        if not self._closed:
            self._closed = True
            self.store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _events_of(decision: budget.Decision) -> Sequence[Event]:
    return decision.events


class _Opened(NamedTuple):
    """What entering decided: the batch, a budget rejection, and the first step's events."""

    events: Sequence[Event]
    rejection: Rejection | None
    step: Sequence[Event] | None


def _opened_events(opened: _Opened) -> Sequence[Event]:
    return opened.events


class _Enter(NamedTuple):
    """Entering a request: its start, its hold (if any) and its first step."""

    handle: RequestHandle
    hold: budget.PlaceHold | None


class _Leave(NamedTuple):
    """Leaving a request: a success kept for this commit, and the settlement command."""

    handle: RequestHandle
    deferred: RecordOutcome | None
    resolution: budget.SettleHold | budget.RefundHold | None
    #: Delivered to the platform after the commit.
    reports: tuple[PlatformReport, ...]


_Item = _Enter | _Leave


def _decide_group(
    engine: Engine, state: Folded, items: Sequence[_Item], now: int
) -> list[_Opened | Exception]:
    """Decide the entries and exits of several requests as one batch, exactly.

    Budget commands go through a :class:`HoldGroup` (each sees the ones
    before). Routing decisions go through a :func:`group_view`: exact while
    every routing event so far is request-local, so the group ends after an
    item with any other routing event, and before a second item of the same
    request (the committer queues the rest for the next group).
    """
    policy = engine.config.policy
    commands = [i.hold if isinstance(i, _Enter) else i.resolution for i in items]
    holds = HoldGroup(state.budget, [c for c in commands if c is not None])
    # A lone item is decided on the state itself (nothing follows it to mislead).
    view = group_view(state.routing) if len(items) > 1 else state.routing
    track = engine.track_credentials
    seen: set[str] = set()
    outcomes: list[_Opened | Exception] = []
    for item in items:
        request_id = item.handle.request_id
        if request_id in seen:
            break
        seen.add(request_id)
        held: budget.Decision | None = None
        try:
            if isinstance(item, _Enter):
                started = decide_start(policy, view, item.handle.start, now_us=now)
                routed: Sequence[Event] = started
                opened: _Opened
                if item.hold is not None:
                    held = holds.peek(item.hold, now_us=now)
                if held is not None and held.rejection is not None:
                    opened = _Opened((*started, *held.events), held.rejection, None)
                elif len(started) != 1:
                    opened = _Opened((*started, *(held.events if held else ())), None, None)
                else:
                    step = decide_next(
                        policy,
                        view,
                        NextStep(request_id=request_id, attempt_id=f"{request_id}/1"),
                        now_us=now,
                        credentials=usability(state.credentials, now) if track else None,
                        opening=started[0],  # type: ignore[arg-type]
                    )
                    routed = (*started, *step)
                    opened = _Opened((*started, *(held.events if held else ()), *step), None, step)
            else:
                routed = (
                    decide_outcome(policy, view, item.deferred, now_us=now)
                    if item.deferred is not None
                    else ()
                )
                if item.resolution is not None:
                    held = holds.peek(item.resolution, now_us=now)
                opened = _Opened((*routed, *(held.events if held else ())), None, None)
        except UsageError as error:
            outcomes.append(error)
            continue
        if held is not None:
            holds.keep(held)
        outcomes.append(opened)
        if len(items) == 1:
            break
        note_in_view(view, routed)
        if not request_local(routed, request_id):
            break
    return outcomes


def _open_account(
    command: budget.OpenAccount, zones: Callable[[str], tzinfo]
) -> Callable[[Folded, int], budget.Decision]:
    def decide(state: Folded, now: int) -> budget.Decision:
        return budget.decide_open_account(state.budget, command, now_us=now, zones=zones)

    return decide


def _seed_of(request_id: str) -> int:
    """A deterministic 63-bit seed from the request id (never Python's salted hash)."""
    return int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8).digest()) >> 1


# --- one request ---------------------------------------------------------------


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
    ) -> None:
        """The upstream answered completely (a truncated answer is a failure, never this).

        Leave both token counts out when the provider reported no usage: the
        request is then billed its estimate, never zero (L11).
        """
        reported = input_tokens is not None or output_tokens is not None
        tokens_in = input_tokens or 0
        tokens_out = output_tokens or 0
        self._report(Succeeded(evidence=evidence, input_tokens=tokens_in, output_tokens=tokens_out))
        self._handle._usage = (
            Usage(
                cost_micros=self._handle._cost(self.upstream_model, tokens_in, tokens_out),
                tokens=tokens_in + tokens_out,
                requests=1,
            )
            if reported
            else None
        )

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
    ) -> None:
        """The attempt failed; ``detail`` is scrubbed and capped before it is recorded."""
        outcome = (
            failure
            if isinstance(failure, Failed)
            else Failed(
                failure=failure,
                phase=phase,
                delivered_chars=self.delivered_chars,
                hint_us=hint_us,
                status=status,
                detail=self._handle.engine.scrubber(detail)[:300],
                billed=billed,
            )
        )
        self._report(outcome)
        if outcome.phase is Phase.MID_STREAM or outcome.billed:
            self._handle._partial = True
            if observed_usage is not None:
                self._handle._observed = observed_usage

    def observed(self, observation: Observation) -> None:
        """Report what an adapter observed (a response, an exception, a stream)."""
        outcome = observation.outcome
        if isinstance(outcome, Succeeded):
            reported = observation.usage_reported
            self.succeeded(
                input_tokens=outcome.input_tokens if reported else None,
                output_tokens=outcome.output_tokens if reported else None,
                evidence=outcome.evidence,
            )
        else:
            self.failed(
                attrs.evolve(
                    outcome,
                    delivered_chars=max(outcome.delivered_chars, self.delivered_chars),
                    status=observation.status,
                    detail=observation.detail[:300],
                    billed=observation.billed,
                )
            )

    def failed_from_exception(self, error: BaseException) -> None:
        """Classify an SDK/httpx exception (adapters/observe.py) and report it."""
        self.observed(
            observe_exception(
                error,
                now_us=self._handle.engine.clock.now_us(),
                scrubber=self._handle.engine.scrubber,
            )
        )

    def observe_response(self, response: object) -> None:
        """Classify an ``httpx.Response`` and report it."""
        import httpx

        if not isinstance(response, httpx.Response):
            raise UsageError(f"observe_response needs an httpx.Response, got {type(response)!r}")
        self.observed(
            observe_response(
                response,
                now_us=self._handle.engine.clock.now_us(),
                scrubber=self._handle.engine.scrubber,
            )
        )

    def _report(self, outcome: Succeeded | Failed) -> None:
        if self.outcome is not None:
            raise UsageError(f"attempt {self.attempt_id} already has an outcome")
        engine = self._handle.engine
        command = RecordOutcome(
            request_id=self._handle.request_id, attempt_id=self.attempt_id, outcome=outcome
        )
        if isinstance(outcome, Succeeded):
            # A success ends the request: nothing is decided from it before the
            # settlement, so it is recorded with the settlement in one commit
            # (checked now, so misuse is raised here and not at exit).
            problem = succeeded_problem(outcome)
            if problem is not None:
                raise UsageError(f"attempt {self.attempt_id}: {problem}")
            self._handle._deferred = command
        else:
            engine.runtime.append(
                lambda s, now: decide_outcome(engine.config.policy, s.routing, command, now_us=now)
            )
        self.outcome = outcome
        self._handle._attempts += 1
        if isinstance(outcome, Failed):
            # Only auth failures may trigger key recovery; budget and invalid-model never (I0).
            engine._credential_failed(self.credential_id, outcome.failure, outcome.status)


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
        self.result: Result | None = None
        self._entered = False
        self._held = False
        self._resolved = False
        self._attempts = 0
        self._usage: Usage | None = None
        self._observed: Usage | None = None
        self._partial = False
        self._current: Attempt | None = None
        #: The first step, decided and recorded with the request at entry.
        self._first_step: Sequence[Event] | None = None
        #: A success reported but not yet recorded: it is appended with the
        #: settlement, in one commit, when the request is left.
        self._deferred: RecordOutcome | None = None

    # -- entering: record the request and place the hold, atomically ------------

    def _enter_item(self) -> _Enter:
        if self._entered:
            raise UsageError(f"request {self.request_id} was already entered")
        self._entered = True
        hold = (
            budget.PlaceHold(
                hold_id=self.request_id,
                account_ids=self.accounts,
                estimate=self.estimate,
                ttl_us=self.engine.hold_ttl_us(),
            )
            if self.accounts
            else None
        )
        return _Enter(self, hold)

    def _entered_with(self, opened: _Opened) -> RequestHandle:
        if opened.rejection is not None:
            self.result = BudgetRejected(rejection=opened.rejection)
            self._resolved = True
        else:
            self._held = bool(self.accounts)
            self._first_step = opened.step
        return self

    def _enter(self) -> RequestHandle:
        return self._entered_with(self.engine.committer.submit(self._enter_item()))

    def __enter__(self) -> RequestHandle:
        return self._enter()

    async def __aenter__(self) -> RequestHandle:
        item = self._enter_item()
        opened = await self.engine.committer.asubmit(item, on_abandoned=self._entry_abandoned)
        return self._entered_with(opened)

    def _entry_abandoned(self, slot: Slot[_Item, _Opened]) -> None:
        """The caller was cancelled while entering; the entry was recorded anyway: close it."""
        try:
            opened = slot.result()
        except Exception:
            return  # nothing was recorded
        self._entered_with(opened)
        task = asyncio.get_running_loop().create_task(
            self._aleave(asyncio.CancelledError("cancelled while entering"))
        )
        self.engine._background.add(task)
        task.add_done_callback(self.engine._background.discard)

    # -- attempts ---------------------------------------------------------------

    def _next(self) -> Attempt | float | None:
        """The next attempt, seconds to wait, or ``None`` when the request has ended."""
        if self._current is not None and self._current.outcome is None:
            raise UsageError(
                f"attempt {self._current.attempt_id} has no outcome: report succeeded() or "
                f"failed() before asking for the next attempt"
            )
        if self.result is not None:
            return None
        engine = self.engine
        events = self._first_step
        if events is not None:
            self._first_step = None
        else:
            command = NextStep(
                request_id=self.request_id, attempt_id=f"{self.request_id}/{self._attempts + 1}"
            )
            track = engine.track_credentials
            events = engine.runtime.append(
                lambda s, now: decide_next(
                    engine.config.policy,
                    s.routing,
                    command,
                    now_us=now,
                    credentials=usability(s.credentials, now) if track else None,
                )
            )
        for evt in events:
            if isinstance(evt, AttemptRouted):
                self._current = Attempt(self, evt)
                return self._current
            if isinstance(evt, WaitDecided):
                return max(0.0, (evt.until_us - engine.clock.now_us()) / US_PER_S)
            if isinstance(evt, FallbackExhausted):
                self.result = Exhausted(
                    attempts=self._attempts,
                    retry_at_us=evt.retry_at_us,
                    failures=tuple(f.failure for f in evt.failures),
                )
                return None
            if isinstance(evt, Degraded):
                self.result = Degradation(reason=evt.reason.value)
                return None
        request = engine.state.routing.requests.get(self.request_id)
        if request is None or request.terminal:
            return None
        # Nothing decided: a decided wait has not elapsed yet; wait for it.
        return max(0.0, (request.wait_until_us - engine.clock.now_us()) / US_PER_S)

    def _served(self) -> bool:
        """Whether the current attempt succeeded (then ``result`` is its :class:`Served`)."""
        if type(self.result) is Served:
            return True  # set once: a success is the attempt's last outcome
        current = self._current
        if current is not None and isinstance(current.outcome, Succeeded):
            usage = self._usage if self._usage is not None else self.estimate  # billed (L11)
            self.result = Served(
                credential_id=current.credential_id,
                upstream_model=current.upstream_model,
                attempts=self._attempts,
                input_tokens=current.outcome.input_tokens,
                output_tokens=current.outcome.output_tokens,
                cost_micros=usage.cost_micros,
            )
            return True
        return False

    def sync_attempts(self) -> Iterator[Attempt]:
        """Iterate attempts, blocking through waits (sync gateways)."""
        for _ in range(REQUEST_STEPS_MAX):
            if self._served():
                return
            step = self._next()
            if step is None:
                return
            if isinstance(step, Attempt):
                yield step
            else:
                self.engine.clock.sleep(step)
        raise UsageError(f"request {self.request_id} took more than {REQUEST_STEPS_MAX} steps")

    async def attempts(self) -> AsyncIterator[Attempt]:
        """Iterate attempts, awaiting through waits."""
        for _ in range(REQUEST_STEPS_MAX):
            if self._served():
                return
            step = self._next()
            if step is None:
                return
            if isinstance(step, Attempt):
                yield step
            else:
                await self.engine.clock.asleep(step)
        raise UsageError(f"request {self.request_id} took more than {REQUEST_STEPS_MAX} steps")

    # -- leaving: always resolve the hold -----------------------------------------

    def _cost(self, model: str, input_tokens: int, output_tokens: int) -> int:
        price = self.engine.config.prices.get(model)
        if price is None:
            return 0
        return price.estimate_micros(input_tokens, output_tokens)

    def _leave_item(self, error: BaseException | None) -> _Leave | None:
        """Record an unfinished attempt, pick the sink and build the resolution to commit."""
        if self._first_step is not None and self.result is None:
            self._next()  # the first step was decided at entry but never taken: take it now
        current = self._current
        if current is not None and current.outcome is None:
            # The caller left mid-attempt (an exception, a cancel): record why.
            failure = (
                FailureClass.CALLER_CANCELLED
                if error is None
                or isinstance(error, (asyncio.CancelledError, GeneratorExit, KeyboardInterrupt))
                else FailureClass.UNKNOWN
            )
            current.failed(
                failure,
                phase=Phase.MID_STREAM if current.delivered_chars else Phase.BEFORE_RESPONSE,
                detail=type(error).__name__ if error is not None else "left without an outcome",
            )
        self._served()
        commands: list[budget.SettleHold | budget.RefundHold] = []
        reports: list[PlatformReport] = []
        platform = self.settlement is SinkMode.PLATFORM
        if (self._held or platform) and not self._resolved:
            # The sink is chosen once; the hooks below are the same in every mode.
            sink = open_sink(
                self.settlement,
                hold_id=self.request_id,
                command_id=f"{self.request_id}/resolve",
                estimate=self.estimate,
            )
            if isinstance(self.result, Served):
                if self._usage is not None and not self._usage.is_zero():
                    sink.on_success(self._usage)
                else:
                    sink.on_no_usage()
            elif self._partial:
                sink.on_incomplete(self._observed)
            else:
                sink.on_error_before_output()
            if isinstance(sink, LocalLedgerSink):
                commands = sink.commands
            else:
                reports = sink.reports
            self._resolved = True
        deferred, self._deferred = self._deferred, None
        if deferred is None and not commands and not reports:
            return None
        # One hook was called, so the local sink holds one command at most.
        if len(commands) > 1:
            raise InvariantViolation(f"request {self.request_id}: {len(commands)} settlements")
        return _Leave(self, deferred, commands[0] if commands else None, tuple(reports))

    def _left(self, item: _Leave | None) -> None:
        """After the resolution is recorded: platform reports, a snapshot."""
        engine = self.engine
        if item is not None and item.reports:
            deliver = engine.platform
            assert deliver is not None  # checked when the request was made
            for report in item.reports:
                deliver(report)
        engine.maybe_snapshot()

    def _exit(self, error: BaseException | None) -> None:
        item = self._leave_item(error)
        if item is not None:
            self.engine.committer.submit(item)
        self._left(item)

    async def _aleave(self, error: BaseException | None) -> None:
        item = self._leave_item(error)
        if item is not None:
            await self.engine.committer.asubmit(item, on_abandoned=lambda slot: self._left(item))
        self._left(item)

    def __exit__(self, exc_type: object, error: BaseException | None, tb: object) -> None:
        self._exit(error)

    async def __aexit__(self, exc_type: object, error: BaseException | None, tb: object) -> None:
        # The resolution is queued before the only await; a cancellation there
        # does not withdraw it (the committer records it and ``_left`` runs).
        await self._aleave(error)
