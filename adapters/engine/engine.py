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
import hashlib
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from routeledger.adapters.engine import maintenance, operator
from routeledger.adapters.engine.clock import Clock, SystemClock, uuid_ids
from routeledger.adapters.engine.config import (
    CredentialEndpoint,
    EngineConfig,
    ModelPrice,
    load_config,
)
from routeledger.adapters.engine.grouping import GroupCommitter
from routeledger.adapters.engine.hooks import (
    EVENTS_BUFFERED_DEFAULT,
    EventStream,
    Hooks,
    Unsubscribe,
    check_buffered_max,
    check_types,
)
from routeledger.adapters.engine.lifecycle import (
    Decided,
    Item,
    RequestHandle,
    decide_items,
    decided_events,
)
from routeledger.adapters.engine.logs import LOGGER, log_availability
from routeledger.adapters.engine.runtime import Runtime
from routeledger.adapters.engine.snapshotter import Snapshotter
from routeledger.adapters.providers.observe import DEFAULT_CLASSIFIER, Classifier
from routeledger.adapters.providers.scrub import DEFAULT_SCRUBBER, Scrubber
from routeledger.adapters.store.eventstore import EventStore, StoreUnavailable, open_store
from routeledger.core.budget import decide as budget
from routeledger.core.budget import events as budget_events
from routeledger.core.budget.admin import ChangeLimit, CorrectSpend, decide_change_limit
from routeledger.core.budget.sinks import PlatformReport, SinkMode
from routeledger.core.budget.values import RejectionReason, Usage
from routeledger.core.credentials.decide import (
    CredentialFailure,
    ProvisionExplicitKey,
    RecordFailure,
    RecordModelsResolved,
    RecordResolutionFailed,
    decide_failure,
    decide_models_resolved,
    decide_provision_explicit,
    decide_resolution_failed,
)
from routeledger.core.credentials.events import CredentialMetadata, ResolutionFailure, RoleModel
from routeledger.core.credentials.healing import CredentialStep, PrepareUse, decide_next_step
from routeledger.core.credentials.lifecycle import usability
from routeledger.core.errors import CommandError, Retired, UsageError
from routeledger.core.events import Event, stream_id_problem
from routeledger.core.fold import Folded
from routeledger.core.operator import ReleaseHold
from routeledger.core.routing import (
    FailureClass,
    StartRequest,
)
from routeledger.core.routing import state as routing_state
from routeledger.core.routing.admin import ImposeBlock, LiftBlocks
from routeledger.core.routing.counting import CountTarget, RecordCount, count_target, decide_count
from routeledger.core.routing.events import TokensCounted
from routeledger.core.routing.failures import Evidence
from routeledger.core.streams import count_stream, hold_stream, request_stream
from routeledger.core.time import US_PER_S
from routeledger.core.usability import CredentialUsability, UnusableReason

if TYPE_CHECKING:  # pragma: no cover - imported only when telemetry is on
    from routeledger.adapters.engine.telemetry import Telemetry

__all__ = ["Engine", "reconcile_accounts"]

E = TypeVar("E", bound=Event)

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
        classifier: Classifier = DEFAULT_CLASSIFIER,
        tracer_provider: Any | None = None,
    ) -> None:
        self.store = store
        self.config = config
        #: The classifier the configuration's ``[[classification.rules]]`` extend
        #: (``DEFAULT_CLASSIFIER``, or one a gateway built with ``extended``).
        self.base_classifier = classifier
        self._classifier = config.classifier(classifier)
        self._classifier_of = (config, classifier)
        #: Where platform-mode requests report their billing (the gateway's
        #: own function: enqueue for the platform; it must not block).
        self.platform = platform
        #: Route only to what the credential lifecycle allows (I0); off = every
        #: configured credential is usable with the model names the policy lists.
        self.track_credentials = track_credentials
        #: Credentials this process cannot use, whatever the log says (a key that is
        #: not set here): routing skips them with this reason. Set by the executor.
        self.unusable_here: Mapping[str, UnusableReason] = {}
        self.clock: Clock = clock or SystemClock()
        self._ids = ids or uuid_ids()
        self.scrubber = scrubber
        #: The folded state and the append loop; inject one for seeded retry
        #: jitter and a virtual sleep (simulations).
        self.runtime = runtime or Runtime(store, self.clock.now_us)
        if runtime is None or runtime.state.events == 0:
            self.runtime.state.routing = routing_state.initial(config.policy)
        #: What the runtime calls after each append while nobody subscribed; with
        #: ``on``/``events`` subscribers (``hooks``), ``_appended`` calls them too.
        self._on_appended = self.runtime.on_appended = self.runtime.on_appended or log_availability
        self.hooks = Hooks(self._hooks_changed)
        self._streams: weakref.WeakSet[EventStream] = weakref.WeakSet()
        self._closed = False
        self._maintenance: maintenance.MaintenanceThread | None = None
        #: Requests entered on an event loop and not yet left (see ``_alone``).
        self.requests_in_flight = 0
        #: Entries and exits of concurrent requests share commits (see
        #: ``adapters/engine/lifecycle.py`` and ``adapters/engine/grouping.py``).
        self.committer: GroupCommitter[Item, Decided] = GroupCommitter(
            self.runtime,
            self._decide_items,
            decided_events,
            inline=getattr(store, "backend", None) == "memory",  # an append without I/O
            alone=self._alone,
        )
        #: Resolutions of entries whose caller was cancelled (kept referenced).
        self._background: set[asyncio.Task[None]] = set()
        #: Takes snapshots from its own replica of the fold (the maintenance loop).
        self._snapshotter = Snapshotter(store)
        #: Whether the engine owns its process (``routeledger serve``): process-wide
        #: tuning such as ``[engine] gc_freeze`` then defaults to on.
        self.owns_process = False
        #: (route, backups) -> the prices of the distinct models its chain can reach,
        #: under ``_prices_config`` (a new ``config`` empties the cache).
        self._chain_prices: dict[tuple[str, tuple[str, ...]], tuple[ModelPrice, ...]] = {}
        self._prices_config = config
        #: OpenTelemetry spans (``adapters/engine/telemetry.py``): ``None`` unless
        #: ``[telemetry] otel = true`` or a ``tracer_provider`` was given.
        self.telemetry: Telemetry | None = _telemetry(self, tracer_provider)

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
        maintenance: bool | None = None,
        create: bool = True,
        classifier: Classifier = DEFAULT_CLASSIFIER,
        tracer_provider: Any | None = None,
    ) -> Engine:
        """Open the store, fold the log, and open the configured budget accounts if missing.

        ``maintenance``: run the maintenance thread (``adapters/engine/maintenance.py``)
        every ``[engine] maintenance_every_us``; by default on when the engine runs
        on the wall clock (no ``clock`` given) and the cadence is not 0. With a
        clock of its own (tests, simulations) call :meth:`maintain` instead.

        ``create=False``: the store must exist (a mistyped SQLite path is a
        :class:`StoreNotFound` naming it, not a new, empty log). Either way a store
        that cannot take an append (a read-only file, a read-only database session)
        is a :class:`StoreUnavailable` here, not at the first request.

        ``tracer_provider``: OpenTelemetry spans per request and attempt on this
        provider (``adapters/engine/telemetry.py``); without one, ``[telemetry]
        otel = true`` uses the global provider, and otherwise no span is made.
        """
        loaded = config if isinstance(config, EngineConfig) else load_config(config)
        store = open_store(store_url, create=create)
        try:
            problem = store.write_problem()
            if problem is not None:
                raise StoreUnavailable(f"cannot write to {store.url.masked}: {problem}")
            engine = cls(
                store,
                loaded,
                clock=clock,
                ids=ids,
                scrubber=scrubber,
                track_credentials=track_credentials,
                platform=platform,
                classifier=classifier,
                tracer_provider=tracer_provider,
            )
            engine.restore()
            engine.open_accounts()
        except BaseException:
            store.close()
            raise
        every_us = loaded.engine.maintenance_every_us
        if (clock is None if maintenance is None else maintenance) and every_us > 0:
            engine.start_maintenance(every_us / US_PER_S)
        return engine

    def restore(self) -> None:
        """Start from the newest good snapshot (if any), then fold the log's tail.

        Each snapshot tried is verified against its recorded state hash and the
        invariants; a bad one is skipped with a WARNING naming its position and
        problem (``routeledger admin snapshots drop`` removes it).
        """
        from routeledger.adapters.store.snapshots import newest_good_snapshot

        began = time.perf_counter()
        snapshot, skipped = newest_good_snapshot(self.store)
        for bad in skipped:
            LOGGER.warning(
                "snapshot at position %d skipped: %s (drop it with routeledger admin "
                "snapshots drop %d)",
                bad.position,
                bad.problem,
                bad.position,
            )
        start = "no snapshot"
        if snapshot is not None:
            snapshot.routing = routing_state.reindex(snapshot.routing, self.config.policy)
            self.runtime.state = snapshot
            start = f"snapshot at position {snapshot.position}"
        tail = self.runtime.catch_up()
        if snapshot is not None or tail:
            LOGGER.info(
                "restored in %.1f ms: %s, then %d events of the log",
                (time.perf_counter() - began) * 1000,
                start,
                tail,
            )

    # -- hooks: in-process reactions to what was recorded (adapters/engine/hooks.py) --

    def on(self, event_type: type[E], fn: Callable[[E], None]) -> Unsubscribe:
        """Call ``fn(evt)`` for each event of ``event_type`` (or a subclass) this engine records.

        Called after the event is durably appended and folded, on the thread that
        committed it, before the request that caused it goes on: keep ``fn`` quick
        and never call the engine's recording methods from it. An exception it
        raises is logged and does not affect the request. Events other processes
        append to the same store are not delivered (``store.follow()`` tails
        those). Returns the handle that unsubscribes (docs/integrations.md).
        """
        (kind,) = check_types((event_type,), "Engine.on")
        if not callable(fn):
            raise UsageError(f"Engine.on: {fn!r} is not callable")
        return self.hooks.add((kind,), fn)

    def events(
        self, *event_types: type[Event], buffered_max: int = EVENTS_BUFFERED_DEFAULT
    ) -> EventStream:
        """An async iterator over the events this engine records (all, or of ``event_types``).

        Call it on the event loop that iterates it. The engine never waits for
        the consumer: past ``buffered_max`` unread events new ones are dropped and
        the stream yields a :class:`~.hooks.Gap` saying how many, where they were.
        Close it with ``async with`` or :meth:`EventStream.close`; it ends when
        the engine closes.
        """
        types = check_types(event_types, "Engine.events") or (Event,)
        limit = check_buffered_max(buffered_max)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise UsageError(
                "Engine.events() must be called on the event loop that iterates it"
            ) from None
        if self._closed:
            raise UsageError("the engine is closed")
        stream = EventStream(self.hooks, types, limit, loop)
        self._streams.add(stream)
        return stream

    def _hooks_changed(self, any_left: bool) -> None:
        """Deliver to subscribers after each append only while there is one (no cost otherwise)."""
        self.runtime.on_appended = self._appended if any_left else self._on_appended

    def _appended(self, events: Sequence[Event]) -> None:
        base = self._on_appended
        if base is not None:
            base(events)
        self.hooks.dispatch(events)

    def _alone(self) -> bool:
        """Whether at most one request is in flight on an event loop (its commits stay on it)."""
        return self.requests_in_flight <= 1

    def maybe_snapshot(self) -> int | None:
        """Save a snapshot when ``snapshot_every_events`` events were folded since the last.

        Returns the position saved, or ``None``. Run by the maintenance loop,
        never on a request's path, and never from the state requests decide on:
        from a replica of the fold (``adapters/engine/snapshotter.py`` says why).
        Then keeps the newest ``snapshots_kept``.
        """
        settings = self.config.engine
        return self._snapshotter.step(settings.snapshot_every_events, settings.snapshots_kept)

    @property
    def classifier(self) -> Classifier:
        """What classifies every failed attempt of this engine (``failed_from_exception``,
        ``observe_response``, the executor's responses and streams): the configuration's
        ``[[classification.rules]]`` first, then ``base_classifier`` (docs/errors.md)."""
        config, base = self._classifier_of
        if config is not self.config or base is not self.base_classifier:  # a new config
            self._classifier = self.config.classifier(self.base_classifier)
            self._classifier_of = (self.config, self.base_classifier)
        return self._classifier

    def open_accounts(self) -> None:
        """Reconcile the log with the configured accounts, in one atomic append.

        The TOML is the desired state: an account it names that the log lacks is
        opened; a limit the file changed is a ``LimitConfigured`` (command id
        ``config:limit:<account>:<limit>:v<version>``, so engines opening the same
        file at once record it once). An operator's ``LimitChanged`` stands until
        the file's value changes: only a change of the file is applied. What cannot be changed by configuration (an
        account's scope, unit or period) and accounts no longer configured are
        kept as the log has them, with a WARNING line each. Every change is an
        INFO line.
        """
        decided = self.runtime.append(
            lambda state, now: reconcile_accounts(state, self.config, now)
        )
        for evt in decided:
            if isinstance(evt, budget_events.LimitConfigured):
                LOGGER.info(
                    "config: account %s limit %d -> %d",
                    evt.account_id,
                    evt.previous_limit,
                    evt.limit,
                )
            elif isinstance(evt, budget_events.AccountOpened):
                LOGGER.info("config: account %s opened (limit %d)", evt.account_id, evt.limit)
        _warn_unreconciled(self.state, self.config)

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
        if request_id is None:
            request_id = self._ids()
        else:
            self._refuse_retired(request_id)
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

    def _refuse_retired(self, request_id: str) -> None:
        """Refuse a caller's request id the log has but the live state retired (X1)."""
        state = self.state
        if not state.retention.before_us or request_id in state.routing.requests:
            return
        if type(request_id) is not str or stream_id_problem(request_stream(request_id)):
            return  # malformed: refused by the decider with the field named
        # Every request the engine ever started recorded RequestReceived on its
        # stream first (a budget refusal too): one indexed read answers.
        if self.store.head(request_stream(request_id)).version:
            raise Retired(
                "StartRequest",
                "request_id",
                f"request {request_id!r} is in the log but older than the retention horizon "
                f"({self.config.engine.retention_horizon_us} µs): a request id is used once",
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

    def output_tokens_max(self, route: str, backups: Sequence[str] = ()) -> int | None:
        """The largest ``max_output_tokens`` of the models ``route`` can reach (``None``: none)."""
        prices = self._prices_reachable(route, tuple(backups))
        return max((price.max_output_tokens for price in prices), default=None)

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

    def record_resolution_failed(self, credential_id: str, reason: ResolutionFailure) -> None:
        """Record that listing a key's model names failed (the core decides the backoff)."""
        command = RecordResolutionFailed(credential_id=credential_id, reason=reason)
        self.runtime.append(
            lambda s, now: decide_resolution_failed(s.credentials, command, now_us=now)
        )

    def record_key_rejected(self, credential_id: str, http_status: int | None = None) -> None:
        """Record that the provider rejected the key (401/403) outside a request."""
        command = RecordFailure(
            credential_id=credential_id, failure=CredentialFailure.AUTH, http_status=http_status
        )
        self.runtime.append(lambda s, now: decide_failure(s.credentials, command, now_us=now))

    def prepare_credential(self, credential_id: str) -> CredentialStep | None:
        """What the lifecycle says to do before using ``credential_id`` (``None``: not
        provisioned); appends what it decided on the way (an expiry)."""
        if credential_id not in self.state.credentials.credentials:
            return None
        command = PrepareUse(
            installation_id=self.config.engine.installation_id, credential_id=credential_id
        )
        return self.runtime.run(
            lambda s, now: decide_next_step(s.credentials, command, now_us=now),
            lambda step: step.events,
        )

    def usable_credentials(self) -> Mapping[str, CredentialUsability] | None:
        """What routing may use now, or ``None`` when lifecycles are not tracked."""
        if not self.track_credentials:
            return None
        return usability(self.state.credentials, self.clock.now_us())

    def _decide_items(
        self, state: Folded, items: Sequence[Item], now_us: int
    ) -> list[Decided | Exception]:
        """The group committer's decider: the items under the current policy."""
        return decide_items(
            self.config.policy,
            self.track_credentials,
            state,
            items,
            now_us,
            self.unusable_here,
        )

    def cost_micros(self, model: str, input_tokens: int, output_tokens: int) -> int:
        """What ``model`` charges for these token counts (0 when it has no price)."""
        price = self.config.prices.get(model)
        if price is None:
            return 0
        return price.estimate_micros(input_tokens, output_tokens)

    def hold_ttl_us(self) -> int:
        """A hold outlives the longest request: the policy's deadline and waits, plus a margin."""
        limits = self.config.policy.limits
        longest = (limits.deadline_us or 0) + limits.wait_total_us_max
        longest += self.config.timeouts.total_us * limits.attempts_max
        return max(self.config.engine.hold_ttl_us, longest + HOLD_TTL_MARGIN_US)

    def book_usage(self, request_id: str, usage: Usage, *, command_id: str) -> budget.Decision:
        """Book usage a provider reported after the request's process left it (L6).

        For a usage callback that arrives late: a hold still open is settled;
        one that expired (its process died) books the usage late, because the
        provider billed it. ``command_id`` makes the callback idempotent (X1),
        within the retention horizon. Refusals come back on the decision
        (``rejection``); a request id the log has but the live state retired is
        :class:`Retired` (its hold left the state with the horizon: nothing is
        booked), one it never had a :class:`CommandError`.
        """
        command = budget.SettleHold(command_id=command_id, hold_id=request_id, usage=usage)
        decision = self.runtime.run(
            lambda s, now: budget.decide_settle_hold(s.budget, command, now_us=now), _events_of
        )
        rejection = decision.rejection
        if rejection is not None and rejection.reason is RejectionReason.UNKNOWN_HOLD:
            if self.state.retention.before_us and self.store.head(hold_stream(request_id)).version:
                raise Retired(
                    "SettleHold",
                    "hold_id",
                    f"the hold of request {request_id!r} is older than the retention horizon "
                    f"({self.config.engine.retention_horizon_us} µs): its usage is not booked",
                )
            raise CommandError("SettleHold", "hold_id", f"request {request_id!r} has no hold")
        return decision

    def count_target(self, *, route: str, caller_scope: str) -> CountTarget:
        """The pair a token count on ``route`` is for: the one a request would use now (G6).

        Reads the state only: no probe slot, no configured-limit slot, no hold.
        An unknown route is a :class:`CommandError` naming it.
        """
        with self.runtime.lock:
            target = count_target(
                self.config.policy,
                self.state.routing,
                route=route,
                caller_scope=caller_scope,
                now_us=self.runtime.now_us(),
                credentials=self.usable_credentials(),
            )
        if target is None:
            raise CommandError("CountTokens", "route", f"no route {route!r} to count for")
        return target

    def record_count(
        self,
        target: CountTarget,
        input_tokens: int,
        *,
        evidence: Evidence = Evidence.LOCAL_COUNT,
        count_id: str | None = None,
    ) -> TokensCounted:
        """Record a token count for ``target`` (``TokensCounted``): not billed, not a served
        request, and no evidence about the pair. A ``count_id`` already recorded is a
        :class:`CommandError` (the record is immutable, X1)."""
        if count_id is None:
            count_id = self._ids()
        elif self.store.head(count_stream(count_id)).version:
            raise CommandError("RecordCount", "count_id", f"count {count_id!r} is recorded already")
        command = RecordCount(
            count_id=count_id, target=target, input_tokens=input_tokens, evidence=evidence
        )
        (counted,) = self.runtime.append(lambda s, now: decide_count(command, now_us=now))
        assert isinstance(counted, TokensCounted)
        return counted

    def count_tokens(
        self,
        *,
        route: str,
        caller_scope: str,
        counter: Callable[[str], int],
        count_id: str | None = None,
    ) -> TokensCounted:
        """Count tokens locally for ``route``: ``counter(upstream_model)`` counts with the
        model the route would use now; the count is recorded (:meth:`record_count`)."""
        target = self.count_target(route=route, caller_scope=caller_scope)
        tokens = counter(target.upstream_model)
        return self.record_count(target, tokens, count_id=count_id)

    def expire_due_holds(self) -> int:
        """Expire every hold past its TTL now; returns how many (:meth:`maintain` does this)."""
        return self.maintain().expired

    def roll_due_periods(self, accounts: Sequence[str] | None = None) -> tuple[str, ...]:
        """Roll every ended budget period (of ``accounts``, or all) over; which rolled."""
        return maintenance.roll_periods(self, accounts)

    def maintain(self) -> maintenance.Maintained:
        """One maintenance step at engine time: roll periods over, expire holds, retire, snapshot."""
        return maintenance.maintain(self)

    def start_maintenance(self, every_s: float) -> None:
        """Run :meth:`maintain` every ``every_s`` seconds on a thread until :meth:`close`."""
        if self._maintenance is not None:
            raise UsageError("the maintenance thread is already running")
        self._maintenance = maintenance.MaintenanceThread(self, every_s)
        self._maintenance.start()

    # -- operator commands (each an Origin.ADMIN record with actor and reason) -------

    def lift_blocks(
        self,
        credential_id: str | None = None,
        upstream_model: str | None = None,
        *,
        actor: str,
        reason: str,
        command_id: str | None = None,
    ) -> operator.OperatorResult:
        """Clear cooldowns and suspensions: of one pair, one credential (and its pairs), or all."""
        operator.check_scope(self, credential_id, upstream_model)
        order = LiftBlocks(credential_id=credential_id, upstream_model=upstream_model)
        return operator.operate(self, order, actor=actor, reason=reason, command_id=command_id)

    def impose_block(
        self,
        credential_id: str,
        upstream_model: str | None = None,
        *,
        duration_us: int,
        actor: str,
        reason: str,
        command_id: str | None = None,
    ) -> operator.OperatorResult:
        """Suspend one pair (or a whole credential) for ``duration_us``; one probe follows."""
        operator.check_scope(self, credential_id, upstream_model)
        order = ImposeBlock(
            credential_id=credential_id, upstream_model=upstream_model, duration_us=duration_us
        )
        return operator.operate(self, order, actor=actor, reason=reason, command_id=command_id)

    def change_limit(
        self, account_id: str, limit: int, *, actor: str, reason: str, command_id: str | None = None
    ) -> operator.OperatorResult:
        """Set an account's limit (the very next decision sees it, T3)."""
        order = ChangeLimit(command_id="-", account_id=account_id, limit=limit)
        return operator.operate(self, order, actor=actor, reason=reason, command_id=command_id)

    def correct_spend(
        self, account_id: str, delta: int, *, actor: str, reason: str, command_id: str | None = None
    ) -> operator.OperatorResult:
        """Correct an account's period and lifetime spend by ``delta`` (negative credits)."""
        order = CorrectSpend(command_id="-", account_id=account_id, delta=delta, reason=reason)
        return operator.operate(self, order, actor=actor, reason=reason, command_id=command_id)

    def release_hold(
        self, hold_id: str, *, actor: str, reason: str, command_id: str | None = None
    ) -> operator.OperatorResult:
        """Release an open hold now, before its TTL (recorded as the hold's refund)."""
        order = ReleaseHold(hold_id=hold_id)
        return operator.operate(self, order, actor=actor, reason=reason, command_id=command_id)

    def close(self) -> None:
        """Stop the maintenance thread, then close the store (idempotent)."""
        if not self._closed:
            self._closed = True
            if self._maintenance is not None:
                self._maintenance.stop()
            for stream in list(self._streams):
                stream.close()
            self.store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _telemetry(engine: Engine, tracer_provider: Any | None) -> Telemetry | None:
    """The engine's span maker when configured, else ``None`` (nothing imported)."""
    if tracer_provider is None and not engine.config.telemetry.otel:
        return None
    try:
        from routeledger.adapters.engine.telemetry import Telemetry
    except ImportError as error:
        raise UsageError(
            f"OpenTelemetry spans ([telemetry] otel = true, or a tracer_provider) need "
            f"opentelemetry-api: pip install 'routeledger[otel]' ({error})"
        ) from None
    return Telemetry(lambda: engine.config, tracer_provider)


def _events_of(decision: budget.Decision) -> Sequence[Event]:
    return decision.events


def reconcile_accounts(state: Folded, config: EngineConfig, now: int) -> list[Event]:
    """The events that bring the log's accounts to the configured ones (pure; what-if too)."""
    events: list[Event] = []
    for command in config.accounts:
        acc = state.budget.accounts.get(command.account_id)
        if acc is None:
            opened = budget.decide_open_account(
                state.budget, command, now_us=now, zones=maintenance.zone
            )
            if opened.rejection is not None:
                raise UsageError(f"accounts.{command.account_id}: cannot open: {opened.rejection}")
            events.extend(opened.events)
        elif acc.configured_limit != command.limit:
            change = ChangeLimit(
                command_id=f"config:limit:{acc.account_id}:{command.limit}:v{acc.version}",
                account_id=acc.account_id,
                limit=command.limit,
            )
            changed = decide_change_limit(state.budget, change, now_us=now, configured=True)
            if changed.rejection is not None and not changed.duplicate:
                raise UsageError(f"accounts.{acc.account_id}.limit: {changed.rejection}")
            events.extend(changed.events)
    return events


def _warn_unreconciled(state: Folded, config: EngineConfig) -> None:
    """A WARNING for each difference the configuration cannot apply."""
    wanted = {command.account_id: command for command in config.accounts}
    for account_id, acc in sorted(state.budget.accounts.items()):
        command = wanted.get(account_id)
        if command is None:
            LOGGER.warning(
                "config: account %s is in the log but not configured: kept as it is",
                account_id,
            )
            continue
        for field in ("scope", "unit", "period"):
            if getattr(acc, field) != getattr(command, field):
                LOGGER.warning(
                    "config: account %s %s is %s in the log, %s in the file: not applied "
                    "(an account's %s is fixed when it opens)",
                    account_id,
                    field,
                    getattr(acc, field),
                    getattr(command, field),
                    field,
                )


def _seed_of(request_id: str) -> int:
    """A deterministic 63-bit seed from the request id (never Python's salted hash)."""
    return int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8).digest()) >> 1
