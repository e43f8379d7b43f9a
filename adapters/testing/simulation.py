"""Deterministic fleet simulation: the real engine, N gateways, one log, seeded faults.

::

    report = simulate(7, gateways=3, providers=3, requests=200)
    report.ok, report.failure      # True, None -- or False and the first violated invariant
    print(report.line())           # seed=7 commit=1a2b3c4 ok ... (replays exactly)

Theory of operation (TigerBeetle's VOPR and FoundationDB's simulator, scaled down):

* **One seed drives everything.** ``random.Random(seed)`` derives sub-streams
  (workload, fault schedule, provider latencies, conflict jitter per gateway);
  nothing reads the wall clock or an unseeded generator, so a seed replays
  exactly. The fault schedule is an explicit list of :class:`Fault` drawn from
  the seed ("swarm testing": each seed enables a random subset of fault kinds);
  a run can be given any schedule, which is how failures are saved, replayed
  and shrunk (:func:`shrink`).
* **Virtual time.** A heap of steps ordered by (time in microseconds, sequence).
  Each gateway's clock reads the virtual time plus its skew fault; a wait the
  engine decides (``clock.sleep``) moves that gateway's clock forward (a sync
  worker blocked on the wait) and the request's next step is scheduled after it.
* **The real engine.** Every gateway is an :class:`~.engine.Engine` on one
  shared :class:`~.store.EventStore` (in memory), driven through its sync API
  (``with engine.request(...)``, ``sync_attempts()``, ``attempt.succeeded/failed``);
  a request is a suspended generator, so requests of several gateways
  interleave step by step and race on the shared account streams (conflicts
  and re-decisions are the engine's own). Propagation delay: a gateway reads
  what others appended only when it next decides (``runtime.catch_up()``), and
  a ``lag`` fault skips even that, so it decides from a stale view.
* **Faults.** Providers (in-process functions, no HTTP): 429 with Retry-After
  absent / tiny / days long, 401 (the error text carries the key: E1), 404,
  model not supported, 5xx, timeouts, streams cut after k tokens, stalls,
  missing usage, usage above the estimate, duplicate usage callbacks.
  Gateways: crash between hold and settle (in-flight requests are abandoned;
  the provider's usage arrives late, after the hold expired; the restart is a
  new Engine folding the log), pause, clock skew. Store: append rejected
  before writing, stale views racing on one stream (``lag``).
* **Checks after every append** (a batch is one decision, so L1/L2 hold at
  batch boundaries): the ledger and routing invariants of the folded shared
  log, D4 across the fleet, L4/L6 on hold terminals, A3/A5/A6/A7 on routing
  events, E1 on every event. After every request leaves: its hold is resolved
  (no leak, L5) and a partial stream was billed (L11). At the end, after a
  healed liveness phase (faults stop, time passes every TTL and cooldown, a
  sweeper expires due holds): no open hold, every block explained and over,
  a fresh replay of the log equal to every gateway's state (D1/D2), and a
  healthy request served by every gateway.
"""

from __future__ import annotations

import argparse
import functools
import heapq
import json
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, cast

import attrs

from routeledger.adapters.engine.config import EngineConfig, parse_config
from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.engine.lifecycle import Attempt, RequestHandle
from routeledger.adapters.engine.results import BudgetRejected, Served
from routeledger.adapters.engine.runtime import Runtime
from routeledger.adapters.store.eventstore import (
    EventStore,
    StoredSnapshot,
    StoreError,
    StoreUnavailable,
    StreamHead,
    open_store,
)
from routeledger.adapters.store.snapshots import load_snapshot, save_snapshot
from routeledger.core.budget import decide as budget
from routeledger.core.budget import events as bev
from routeledger.core.budget.values import HoldStatus, Usage
from routeledger.core.errors import RouteLedgerError
from routeledger.core.events import Event
from routeledger.core.fold import Folded, Recorded, fold_log
from routeledger.core.routing import Failed, FailureClass, Phase
from routeledger.core.routing import events as rev
from routeledger.core.routing import state as routing_state
from routeledger.core.streams import credential_stream, pair_stream
from routeledger.core.time import US_PER_S

__all__ = [
    "FAULT_KINDS",
    "CampaignReport",
    "Fault",
    "SimulationReport",
    "main",
    "replay_saved",
    "run_campaign",
    "save_failure",
    "shrink",
    "simulate",
]

#: Engine time at which every simulation starts (2026-01-01T00:00:00Z).
EPOCH_US: Final = 1_767_225_600_000_000
#: Largest fleet simulated. Why: the store is shared in one thread; 64 already
#: makes every account stream a hot spot, more only slows a seed down.
GATEWAYS_MAX: Final = 64
PROVIDERS_MAX: Final = 32
#: Largest workload per seed. Why: a seed must stay well under a second.
REQUESTS_MAX: Final = 100_000
#: Most worker processes a campaign may use. Why: seeds are CPU-bound and
#: independent; more processes than cores only add scheduling noise.
JOBS_MAX: Final = 64
#: Length of the key pieces searched for in every event (E1). Why: 12 hex
#: characters never match by chance (16^-12 per place) yet any leak of 15+
#: characters of a key contains one of the windows taken every 4 characters.
KEY_WINDOW_CHARS: Final = 12
#: Attempts a request may make (the simulated policy's ``attempts_max``).
ATTEMPTS_MAX: Final = 4
#: Mean gap between request arrivals, microseconds (~20 requests/s fleet-wide).
ARRIVAL_GAP_US_MEAN: Final = 50_000
#: A healthy provider answers in 20-900 ms.
LATENCY_US_MIN: Final = 20_000
LATENCY_US_MAX: Final = 900_000
#: A timeout fault answers after the attempt's whole timeout (the policy's 30 s).
TIMEOUT_US: Final = 30 * US_PER_S
#: Provider fault probability per attempt, in percent, drawn per seed in this range.
FAULT_PERCENT_MIN: Final = 5
FAULT_PERCENT_MAX: Final = 45
#: Retry-After of a "days long" 429 (clamped by the policy's hint max).
DAYS_US: Final = 3 * 24 * 3600 * US_PER_S
#: Longest a crashed gateway stays down / a paused one stays paused, microseconds.
DOWNTIME_US_MAX: Final = 20 * US_PER_S
#: Largest clock skew of a gateway, microseconds (either direction).
SKEW_US_MAX: Final = 120 * US_PER_S
#: Provider fault kinds (keyed to one attempt of one request).
PROVIDER_FAULTS: Final = (
    "rate_limited_no_hint",
    "rate_limited_tiny",
    "rate_limited_days",
    "auth",
    "not_found",
    "model_not_supported",
    "server_error",
    "timeout",
    "stream_cut",
    "stall",
    "missing_usage",
    "usage_above_estimate",
    "duplicate_usage",
)
#: Gateway and store fault kinds (keyed to one request, or to a gateway for skew).
FLEET_FAULTS: Final = ("crash", "pause", "lag", "append_rejected", "skew")
FAULT_KINDS: Final = PROVIDER_FAULTS + FLEET_FAULTS
#: The "sometimes" counters a campaign must see at least once.
SOMETIMES: Final = (
    "hold_at_limit",
    "late_settlement",
    "cooldown_extended",
    "exhaustion_with_retry",
    "midstream_fallback",
)

#: How a simulated request can end, in report order.
_RESULT_KINDS: Final = ("served", "exhausted", "rejected", "degraded", "abandoned", "aborted")

_POLICY: Final = """
[limits]
attempts_max = {attempts}
wait_total_us_max = 10_000_000

[timeouts]
total_us = 30_000_000

[engine]
hold_ttl_us = 300_000_000
# Just past the TTL (the shortest allowed), so runs of a few simulated minutes
# retire records (G5): the healing jump past every TTL retires what ended early.
retention_horizon_us = 301_000_000

[accounts.team]
scope = "team"
limit = {team_limit}

[accounts.quota]
scope = "key"
unit = "requests"
limit = {quota_limit}

[models.m0]
input_micros_per_mtok = 1_000_000
output_micros_per_mtok = 2_000_000
max_output_tokens = 200

[models.m1]
prefill = true
input_micros_per_mtok = 2_000_000
output_micros_per_mtok = 4_000_000
max_output_tokens = 200

[routes.chat]
[[routes.chat.chain]]
members = [{m0}]
[[routes.chat.chain]]
members = [{m1}]
"""


class SimulationFailure(RouteLedgerError):
    """An invariant did not hold; the message names it (and the step)."""


# --- the fault schedule --------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Fault:
    """One injected fault: ``kind`` at request ``request`` (attempt ``attempt``) or gateway ``gateway``."""

    kind: str
    request: int = -1
    attempt: int = 0
    gateway: int = -1
    #: Kind-specific: tokens before a cut, microseconds of downtime / pause / skew.
    param: int = 0

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        if data.get("kind") not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {data.get('kind')!r}")
        return cls(**data)


def _draw_schedule(rng: random.Random, gateways: int, requests: int) -> tuple[Fault, ...]:
    """Swarm testing: enable a random subset of fault kinds, then place them."""
    enabled_provider = [k for k in PROVIDER_FAULTS if rng.random() < 0.5]
    enabled_fleet = [k for k in FLEET_FAULTS if rng.random() < 0.5]
    percent = rng.randint(FAULT_PERCENT_MIN, FAULT_PERCENT_MAX)
    faults: list[Fault] = []
    if "skew" in enabled_fleet:
        for gateway in range(gateways):
            if rng.random() < 0.5:
                skew = rng.randint(-SKEW_US_MAX, SKEW_US_MAX)
                faults.append(Fault(kind="skew", gateway=gateway, param=skew))
    fleet = [k for k in enabled_fleet if k != "skew"]
    for request in range(requests):
        for attempt in range(1, ATTEMPTS_MAX + 1):
            if enabled_provider and rng.randrange(100) < percent:
                kind = rng.choice(enabled_provider)
                faults.append(
                    Fault(kind=kind, request=request, attempt=attempt, param=rng.randint(1, 150))
                )
        if fleet and rng.randrange(100) < max(1, percent // 8):
            kind = rng.choice(fleet)
            faults.append(
                Fault(kind=kind, request=request, param=rng.randint(US_PER_S, DOWNTIME_US_MAX))
            )
    return tuple(faults)


# --- reports -------------------------------------------------------------------------


@attrs.define(kw_only=True)
class SimulationReport:
    """What one seed did, and the first invariant it broke (if any)."""

    seed: int
    commit: str
    gateways: int
    providers: int
    requests: int
    profile: str
    schedule: tuple[Fault, ...]
    ok: bool = True
    failure: str | None = None
    events: int = 0
    served: int = 0
    exhausted: int = 0
    rejected: int = 0
    degraded: int = 0
    abandoned: int = 0
    aborted: int = 0
    conflicts: int = 0
    restarts: int = 0
    snapshot_boots: int = 0
    #: Attempts a lagging gateway routed to a pair the shared log already blocked.
    stale_routings: int = 0
    store_rejections: int = 0
    #: Virtual time of the faulty phase (traffic), microseconds.
    simulated_us: int = 0
    #: Virtual time including the healing jump past every TTL and block.
    healed_us: int = 0
    #: Canonical hash of the final folded state (equal across replays of the seed).
    state_hash: str = ""
    wall_s: float = 0.0
    counters: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(SOMETIMES, 0))

    @property
    def gateway_hours(self) -> float:
        """Simulated gateway time: the traffic phase's virtual span times the fleet size."""
        return self.simulated_us * self.gateways / US_PER_S / 3600

    def line(self) -> str:
        """One line to reproduce and summarise the run."""
        status = "ok" if self.ok else f"FAILED: {self.failure}"
        return (
            f"seed={self.seed} commit={self.commit} {status} | gateways={self.gateways} "
            f"providers={self.providers} requests={self.requests} faults={len(self.schedule)} "
            f"events={self.events} served={self.served} exhausted={self.exhausted} "
            f"rejected={self.rejected} abandoned={self.abandoned} aborted={self.aborted} "
            f"conflicts={self.conflicts} restarts={self.restarts} "
            f"snapshot_boots={self.snapshot_boots} store_rejections={self.store_rejections} "
            f"stale_routings={self.stale_routings}"
        )


@attrs.define(kw_only=True)
class CampaignReport:
    """A campaign over many seeds: failures, counters, throughput."""

    seeds: int = 0
    failures: list[SimulationReport] = attrs.field(factory=list)
    counters: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(SOMETIMES, 0))
    simulated_us: int = 0
    gateway_hours: float = 0.0
    wall_s: float = 0.0
    commit: str = "unknown"

    @property
    def never_seen(self) -> tuple[str, ...]:
        """The "sometimes" states no seed reached (a campaign fails if any)."""
        return tuple(name for name in SOMETIMES if self.counters[name] == 0)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.never_seen

    @property
    def seeds_per_s(self) -> float:
        return self.seeds / self.wall_s if self.wall_s else 0.0

    @property
    def speedup_x(self) -> float:
        """Simulated gateway time over real time."""
        return self.gateway_hours * 3600 / self.wall_s if self.wall_s else 0.0

    def summary(self) -> str:
        lines = [
            f"campaign commit={self.commit} seeds={self.seeds} failures={len(self.failures)} "
            f"seeds/s={self.seeds_per_s:.2f} gateway-hours={self.gateway_hours:.2f} "
            f"speedup={self.speedup_x:.0f}x wall={self.wall_s:.1f}s",
            "sometimes: " + " ".join(f"{k}={v}" for k, v in self.counters.items()),
        ]
        if self.never_seen:
            lines.append("NEVER SEEN (campaign fails): " + ", ".join(self.never_seen))
        lines.extend(report.line() for report in self.failures)
        return "\n".join(lines)


def commit_id() -> str:
    """The short git commit of the working tree, or ``unknown``."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


# --- the simulated world -----------------------------------------------------------


class _Clock:
    """A gateway's clock: the virtual time plus its skew; a wait moves it forward."""

    def __init__(self, sim: _Simulation, skew_us: int) -> None:
        self._sim = sim
        self.skew_us = skew_us
        self.floor_us = 0

    def now_us(self) -> int:
        return max(self._sim.now_us + self.skew_us, self.floor_us)

    def sleep(self, seconds: float) -> None:
        self.floor_us = self.now_us() + round(seconds * US_PER_S)

    async def asleep(self, seconds: float) -> None:  # pragma: no cover - sync API only
        self.sleep(seconds)


class _GatewayStore:
    """The shared store seen by one gateway: checks every batch, injects store faults."""

    def __init__(self, sim: _Simulation, gateway: _Gateway) -> None:
        self._sim = sim
        self._gateway = gateway
        #: Reject the append after letting this many through (-1: none pending).
        self.reject_after = -1

    def append(self, events: Sequence[Event]) -> tuple[int, ...]:
        if self._sim.faults_on and self.reject_after >= 0:
            self.reject_after -= 1
            if self.reject_after < 0:
                self._sim.store_rejections += 1
                raise StoreUnavailable("simulated: the store rejected the append (nothing written)")
        self._sim.before_batch(self._gateway, events)
        positions = self._sim.store.append(events)
        self._sim.after_batch(self._gateway, events, positions)
        return positions

    def read_all(self, after: int = 0, **kwargs: Any) -> Iterator[Recorded]:
        return self._sim.store.read_all(after, **kwargs)

    def known_read_up_to(self, position: int) -> bool:
        return self._sim.store.known_read_up_to(position)

    def head(self, stream_id: str) -> StreamHead:
        return self._sim.store.head(stream_id)

    # Snapshots: the engine's maintenance step saves and prunes them in the shared store.
    def save_snapshot(self, snapshot: StoredSnapshot) -> None:
        self._sim.store.save_snapshot(snapshot)

    def snapshots(self, stream_id: str, **kwargs: Any) -> list[StoredSnapshot]:
        return self._sim.store.snapshots(stream_id, **kwargs)

    def delete_snapshot(self, stream_id: str, version: int) -> bool:
        return self._sim.store.delete_snapshot(stream_id, version)

    def checkpoint(self) -> None:
        self._sim.store.checkpoint()

    def close(self) -> None:
        """The shared store outlives every gateway."""


@attrs.define
class _Request:
    index: int
    gateway: int
    request_id: str
    input_tokens: int
    stream: bool
    handle: RequestHandle | None = None
    steps: Iterator[Attempt] | None = None
    attempt: Attempt | None = None
    partial: bool = False
    done: bool = False
    lagging: bool = False


class _Gateway:
    def __init__(self, sim: _Simulation, index: int, skew_us: int) -> None:
        self.index = index
        self.clock = _Clock(sim, skew_us)
        self.store = _GatewayStore(sim, self)
        self.down_until_us = 0
        self.paused_until_us = 0
        self.generation = 0
        self.engine = self._boot(sim)
        self.in_flight: dict[int, _Request] = {}

    def _boot(self, sim: _Simulation, folded: Folded | None = None) -> Engine:
        # Conflict pauses go through the virtual clock, jitter from the seed; the
        # simulation decides when each gateway catches up (its lag fault).
        runtime = Runtime(
            cast(EventStore, self.store),
            self.clock.now_us,
            sleep=self.clock.sleep,
            rng=random.Random(sim.rng.getrandbits(64)),
            folded=folded,
            catch_up_first=False,
        )
        engine = Engine(
            cast(EventStore, self.store),
            sim.config,
            clock=self.clock,
            ids=lambda: "unused",
            runtime=runtime,
        )
        engine.runtime.catch_up()
        return engine

    def restart(self, sim: _Simulation) -> None:
        """A new process: every other restart from a snapshot of the log plus its tail (D2)."""
        sim.conflicts += self.engine.runtime.conflicts
        self.generation += 1
        folded = None
        if self.generation % 2:
            position = sim.checked.position
            if position > sim.snapshot_at:
                try:
                    save_snapshot(sim.store, sim.checked)
                    sim.snapshot_at = position
                except StoreError:
                    pass  # another state at this position: the older snapshot stays
            folded = load_snapshot(sim.store)
            if folded is not None:
                sim.snapshot_boots += 1
        self.engine = self._boot(sim, folded)


def _credential_ids(config: EngineConfig | None, providers: int) -> list[str]:
    """The credential ids of ``config``, or ``c0``.. of the simulated policy without one."""
    if config is None:
        return [f"c{p}" for p in range(providers)]
    return [credential.id for credential in config.policy.credentials]


def _draw_keys(rng: random.Random, credential_ids: Sequence[str]) -> dict[str, str]:
    """A random fake API key (``sk-sim-`` and 32 hex digits) per credential id."""
    return {c: f"sk-sim-{rng.getrandbits(128):032x}" for c in credential_ids}


def _key_windows(keys: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """E1: any 15+ characters of a key's random part contain one of these windows."""
    return tuple(
        (credential_id, key[7 + start : 7 + start + KEY_WINDOW_CHARS])
        for credential_id, key in keys.items()
        for start in range(0, 32 - KEY_WINDOW_CHARS + 1, 4)
    )


def _draw_config(rng: random.Random, providers: int, requests: int) -> EngineConfig:
    """The simulated policy over ``providers`` credentials, budget limits drawn for ``requests``."""
    team_limit = rng.randint(requests * 400, requests * 1_500)
    quota_limit = rng.randint(max(1, requests // 3), requests)
    return parse_config(
        _POLICY.format(
            attempts=ATTEMPTS_MAX,
            team_limit=team_limit,
            quota_limit=quota_limit,
            m0=", ".join(f'{{ credential = "c{p}", model = "m0" }}' for p in range(providers)),
            m1=", ".join(f'{{ credential = "c{p}", model = "m1" }}' for p in range(providers)),
        )
        + "".join(f'\n[credentials.c{p}]\nprovider = "openai"\n' for p in range(providers))
    )


def _draw_arrivals(rng: random.Random, gateways: int, requests: int) -> list[tuple[int, _Request]]:
    """The workload: each request with its arrival time (exponential gaps after EPOCH_US)."""
    arrival = EPOCH_US
    arrivals: list[tuple[int, _Request]] = []
    for index in range(requests):
        arrival += int(rng.expovariate(1 / ARRIVAL_GAP_US_MEAN)) + 1
        request = _Request(
            index=index,
            gateway=rng.randrange(gateways),
            request_id=f"r{index}",
            input_tokens=rng.choice((100, 100, 200, 300)),
            stream=rng.random() < 0.5,
        )
        arrivals.append((arrival, request))
    return arrivals


class _Simulation:
    def __init__(
        self,
        seed: int,
        *,
        gateways: int,
        providers: int,
        requests: int,
        schedule: tuple[Fault, ...] | None,
        config: EngineConfig | None,
    ) -> None:
        root = random.Random(seed)
        self.rng = random.Random(root.getrandbits(64))  # engine jitter
        workload = random.Random(root.getrandbits(64))
        fault_rng = random.Random(root.getrandbits(64))
        self.latency = random.Random(root.getrandbits(64))
        key_rng = random.Random(root.getrandbits(64))
        self.seed = seed
        self.keys = _draw_keys(key_rng, _credential_ids(config, providers))
        self.key_windows = _key_windows(self.keys)
        if config is None:
            config = _draw_config(workload, providers, requests)
        self.config = config
        self.model_ids = frozenset(model.id for model in config.policy.models)
        self.accounts = tuple(command.account_id for command in config.accounts)
        self.route = (
            "chat" if config.policy.route("chat") is not None else config.policy.routes[0].alias
        )
        self.schedule = (
            schedule if schedule is not None else _draw_schedule(fault_rng, gateways, requests)
        )
        self.provider_faults = {
            (f.request, f.attempt): f for f in self.schedule if f.kind in PROVIDER_FAULTS
        }
        self.fleet_faults = {
            f.request: f for f in self.schedule if f.kind in FLEET_FAULTS and f.kind != "skew"
        }
        skews = {f.gateway: f.param for f in self.schedule if f.kind == "skew"}
        self.now_us = EPOCH_US
        self.faults_on = True
        self.store = open_store("memory://")
        self.checked = Folded(routing=routing_state.initial(config.policy))
        self.heap: list[tuple[int, int, Callable[[], None]]] = []
        self.sequence = 0
        self.counters = dict.fromkeys(SOMETIMES, 0)
        self.conflicts = 0
        self.restarts = 0
        self.store_rejections = 0
        self.results: dict[str, int] = dict.fromkeys(_RESULT_KINDS, 0)
        self.terminals: dict[str, int] = {}
        self.snapshot_at = 0
        self.stale_routings = 0
        self.exhaustions: dict[str, int] = {}
        self.settlements: dict[str, bev.HoldSettled] = {}
        self.final_hash = ""
        self.snapshot_boots = 0
        self.late_extra: dict[str, int] = {}
        self.step = "start"
        self.gateways = [_Gateway(self, g, skews.get(g, 0)) for g in range(gateways)]
        self._open_accounts()
        arrivals = _draw_arrivals(workload, gateways, requests)
        self.requests: list[_Request] = [request for _, request in arrivals]
        for arrival, request in arrivals:
            self.at(arrival, functools.partial(self.arrive, request))

    # -- the loop ---------------------------------------------------------------------

    def at(self, when_us: int, action: Callable[[], None]) -> None:
        self.sequence += 1
        heapq.heappush(self.heap, (when_us, self.sequence, action))

    def run(self) -> None:
        while self.heap:
            when, _, action = heapq.heappop(self.heap)
            self.now_us = max(self.now_us, when)
            action()

    def fail(self, message: str) -> None:
        raise SimulationFailure(f"{message} [step: {self.step}]")

    def _open_accounts(self) -> None:
        engine = self.gateways[0].engine
        engine.open_accounts()
        for gateway in self.gateways:
            gateway.engine.runtime.catch_up()

    # -- checks on every batch --------------------------------------------------------

    def before_batch(self, gateway: _Gateway, events: Sequence[Event]) -> None:
        """A6: no attempt targets a pair or credential blocked in the decider's view; A5: nor
        in the fleet's shared log when the decider had read all of it."""
        view = gateway.engine.runtime.state
        views = [("A6 (the deciding gateway's view)", view.routing)]
        fresh = view.position == self.checked.position
        if fresh:
            views.append(("A5 (the shared log)", self.checked.routing))
        blocked = (routing_state.Status.COOLING, routing_state.Status.SUSPENDED)
        for evt in events:
            if not isinstance(evt, rev.AttemptRouted):
                continue
            if not fresh:
                pair = self.checked.routing.pairs.get(
                    pair_stream(evt.credential_id, evt.upstream_model)
                )
                if routing_state.status_at(pair, evt.at_us) in blocked:
                    self.stale_routings += 1  # propagation delay, not a violation
            for rule, routing in views:
                for table, key in (
                    (routing.pairs, pair_stream(evt.credential_id, evt.upstream_model)),
                    (routing.creds, credential_stream(evt.credential_id)),
                ):
                    status = routing_state.status_at(table.get(key), evt.at_us)
                    if status in blocked:
                        self.fail(
                            f"{rule}: attempt {evt.attempt_id} routed to {key} while it is "
                            f"{status.value} until {table[key].until_us} (at {evt.at_us})"
                        )

    def after_batch(
        self, gateway: _Gateway, events: Sequence[Event], positions: Sequence[int]
    ) -> None:
        state = self.checked
        for evt in events:
            text = repr(evt)
            for credential_id, window in self.key_windows:
                if window in text:
                    self.fail(
                        f"E1: a piece of credential {credential_id}'s key leaked into "
                        f"{type(evt).__name__} {getattr(evt, 'stream_id', '')}"
                    )
            self._check_event(evt)
            state.apply(evt)
        if positions:
            state.position = positions[-1]
        try:
            state.check_invariants()
        except RouteLedgerError as error:
            self.fail(str(error))
        self._check_balances(events)

    def _check_event(self, evt: Event) -> None:
        """Every per-event property of the fleet's history (L4, L6, L8, A1-A3, A7)."""
        self._check_hold_event(evt)
        self._check_availability_event(evt)

    def _check_hold_event(self, evt: Event) -> None:
        """L4, L6, L8 for one event, and the counters of what the run exercised."""
        state = self.checked
        if isinstance(evt, bev.HoldPlaced) and not evt.hold_id.startswith("healthy"):
            legs = sorted(leg.account_id for leg in evt.legs)
            if legs != sorted(self.accounts):
                self.fail(f"L8: hold {evt.hold_id} was admitted on {legs}, not on every scope")
        if isinstance(evt, (bev.HoldSettled, bev.HoldRefunded, bev.HoldExpired)):
            count = self.terminals.get(evt.hold_id, 0) + 1
            self.terminals[evt.hold_id] = count
            if count > 1:
                self.fail(f"L4: hold {evt.hold_id} resolved {count} times")
            if isinstance(evt, bev.HoldExpired):
                hold = state.budget.holds[evt.hold_id]
                if evt.at_us < hold.placed_at_us + hold.ttl_us:
                    self.fail(f"L6: hold {evt.hold_id} expired at {evt.at_us}, before its TTL")
        elif isinstance(evt, bev.LateUsageBooked):
            self.counters["late_settlement"] += 1
        elif isinstance(evt, bev.AmountPosted) and evt.late:
            self.late_extra[evt.account_id] = self.late_extra.get(evt.account_id, 0) + evt.posted
        elif isinstance(evt, rev.CooldownExtended):
            self.counters["cooldown_extended"] += 1
        elif isinstance(evt, rev.FallbackExhausted) and evt.retry_at_us is not None:
            self.counters["exhaustion_with_retry"] += 1
        elif isinstance(evt, rev.AttemptRouted) and evt.delivered_chars > 0:
            self.counters["midstream_fallback"] += 1

    def _check_availability_event(self, evt: Event) -> None:
        """A1-A3 and A7 for one event (bounded, well-keyed, never shortened, one exhaustion)."""
        state = self.checked
        if isinstance(
            evt,
            (rev.CooldownStarted, rev.CooldownExtended, rev.PairSuspended, rev.CredentialSuspended),
        ):
            policy = self.config.policy
            rule = policy.rule(evt.reason)
            bound = max(rule.max_us, rule.base_us, policy.hints.max_us)
            if not evt.at_us < evt.until_us <= evt.at_us + bound:
                self.fail(
                    f"A3: {type(evt).__name__} of {evt.stream_id} until {evt.until_us} is not "
                    f"within (at, at + {bound}] (at {evt.at_us})"
                )
        if isinstance(evt, rev.BlockEvent):
            self._check_block_key(evt)
        if isinstance(evt, rev.FallbackExhausted):
            count = self.exhaustions.get(evt.request_id, 0) + 1
            self.exhaustions[evt.request_id] = count
            if count > 1:
                self.fail(f"A7: request {evt.request_id} was exhausted {count} times")
        if isinstance(evt, bev.HoldSettled):
            self.settlements[evt.hold_id] = evt
        if isinstance(evt, rev.CooldownExtended):
            scope = state.routing.pairs.get(evt.stream_id) or state.routing.creds.get(evt.stream_id)
            if scope is not None and evt.until_us < scope.until_us:
                self.fail(f"A2: cooldown of {evt.stream_id} shortened by an extension")

    def _check_block_key(self, evt: rev.BlockEvent) -> None:
        """A1/I1: availability is keyed by (credential, concrete upstream model), never an alias."""
        if evt.upstream_model is None:
            expected = credential_stream(evt.credential_id)
        else:
            expected = pair_stream(evt.credential_id, evt.upstream_model)
            if evt.upstream_model not in self.model_ids:
                self.fail(
                    f"A1/I1: {type(evt).__name__} names {evt.upstream_model!r}, "
                    f"which is not a concrete upstream model"
                )
        if evt.stream_id != expected:
            self.fail(
                f"A1/I1: {type(evt).__name__} for ({evt.credential_id}, {evt.upstream_model}) "
                f"was recorded on {evt.stream_id!r}, not {expected!r}: the selector never sees it"
            )

    def _check_balances(self, events: Sequence[Event]) -> None:
        """D4 / L2 across the fleet: spent + reserved <= limit, beyond booked overage."""
        for name, account in self.checked.budget.accounts.items():
            allowed = account.limit + account.overage + self.late_extra.get(name, 0)
            if account.spent + account.reserved > allowed:
                self.fail(
                    f"D4: account {name!r} spent {account.spent} + reserved "
                    f"{account.reserved} > limit {account.limit} (+ overage {account.overage})"
                )
        for evt in events:
            if isinstance(evt, bev.HoldPlaced):
                for leg in evt.legs:
                    account = self.checked.budget.accounts[leg.account_id]
                    if account.spent + account.reserved == account.limit:
                        self.counters["hold_at_limit"] += 1

    # -- requests ------------------------------------------------------------------------

    def _gateway_ready(self, gateway: _Gateway, retry: Callable[[], None]) -> bool:
        """Defer the step while the gateway is down or paused."""
        blocked = max(gateway.down_until_us, gateway.paused_until_us)
        if self.now_us < blocked:
            self.at(blocked, retry)
            return False
        return True

    def arrive(self, request: _Request) -> None:
        gateway = self.gateways[request.gateway]
        if not self._gateway_ready(gateway, lambda: self.arrive(request)):
            return
        self.step = f"arrive {request.request_id} at g{gateway.index}"
        fault = self.fleet_faults.get(request.index) if self.faults_on else None
        if fault is not None and fault.kind == "pause":
            gateway.paused_until_us = self.now_us + fault.param
            self.at(gateway.paused_until_us, lambda: self.arrive(request))
            self.fleet_faults.pop(request.index)
            return
        request.lagging = fault is not None and fault.kind == "lag"
        if fault is not None and fault.kind == "append_rejected":
            # The request + hold batch, an attempt, an outcome or the resolution.
            gateway.store.reject_after = fault.param % 4
        if not request.lagging:
            gateway.engine.runtime.catch_up()
        engine = gateway.engine
        handle = engine.request(
            route=self.route,
            caller_scope=f"user:{request.index % 7}",
            accounts=self.accounts,
            input_tokens=request.input_tokens,
            stream=request.stream,
            request_id=request.request_id,
        )
        request.handle = handle
        try:
            handle.__enter__()
        except StoreError:
            # L10: the hold could not be recorded, so nothing is dispatched.
            if self.checked.routing.requests.get(request.request_id) is not None:
                self.fail(f"L10: {request.request_id} was recorded although its append failed")
            self.results["aborted"] += 1
            request.done = True
            return
        request.steps = handle.sync_attempts()
        gateway.in_flight[request.index] = request
        self._advance(request, gateway)

    def _advance(self, request: _Request, gateway: _Gateway) -> None:
        """Ask the engine for the next attempt; dispatch it or finish the request."""
        assert request.steps is not None and request.handle is not None
        try:
            attempt = next(request.steps, None)
        except StoreError as error:
            self._leave(request, gateway, error)
            return
        if attempt is None:
            self._leave(request, gateway, None)
            return
        request.attempt = attempt
        fault = (
            self.provider_faults.get((request.index, attempt.number)) if self.faults_on else None
        )
        if fault is not None and fault.kind == "timeout":
            latency = TIMEOUT_US
        else:
            latency = self.latency.randint(LATENCY_US_MIN, LATENCY_US_MAX)
        start = max(self.now_us, gateway.clock.now_us() - gateway.clock.skew_us)
        generation = gateway.generation
        self.at(start + latency, lambda: self.respond(request, gateway, generation, fault))

    def respond(
        self, request: _Request, gateway: _Gateway, generation: int, fault: Fault | None
    ) -> None:
        """The provider answered: report the outcome (or crash first)."""
        if gateway.generation != generation:
            return  # the gateway crashed since: this request was abandoned
        if not self._gateway_ready(
            gateway, lambda: self.respond(request, gateway, generation, fault)
        ):
            return
        self.step = f"respond {request.request_id} at g{gateway.index}"
        attempt = request.attempt
        assert attempt is not None
        fleet = self.fleet_faults.get(request.index) if self.faults_on else None
        if fleet is not None and fleet.kind == "crash":
            self.fleet_faults.pop(request.index)
            self._crash(gateway, fleet.param, billed=request)
            return
        if not request.lagging:
            gateway.engine.runtime.catch_up()
        key = self.keys[attempt.credential_id]
        out_tokens = 20 + request.index % 150
        kind = fault.kind if fault is not None else "ok"
        try:
            self._report(attempt, request, kind, key, out_tokens, fault)
        except StoreError as error:
            self._leave(request, gateway, error)
            return
        self._advance(request, gateway)

    def _report(
        self,
        attempt: Attempt,
        request: _Request,
        kind: str,
        key: str,
        out_tokens: int,
        fault: Fault | None,
    ) -> None:
        tokens_in = request.input_tokens
        cut = fault.param if fault is not None else 0
        simple: dict[str, tuple[FailureClass, int, int | None, str]] = {
            "rate_limited_no_hint": (FailureClass.RATE_LIMITED, 429, None, "rate limited"),
            "rate_limited_tiny": (FailureClass.RATE_LIMITED, 429, 1_000, "rate limited"),
            "rate_limited_days": (FailureClass.RATE_LIMITED, 429, DAYS_US, "retry in 3 days"),
            "auth": (FailureClass.AUTH_ERROR, 401, None, f"Incorrect API key provided: {key}"),
            "not_found": (FailureClass.MODEL_NOT_FOUND, 404, None, "no such model"),
            "model_not_supported": (
                FailureClass.MODEL_NOT_SUPPORTED,
                400,
                None,
                f"model {attempt.upstream_model} is not supported",
            ),
            "server_error": (FailureClass.PROVIDER_UNAVAILABLE, 503, None, "overloaded"),
            "timeout": (FailureClass.TIMEOUT_BEFORE_RESPONSE, 0, None, "no headers in time"),
        }
        if kind in simple:
            failure, status, hint, detail = simple[kind]
            attempt.failed(
                failure, status=status or None, hint_us=hint, detail=f"{detail} (key {key})"
            )
        elif kind in ("stream_cut", "stall"):
            observed = (
                Usage(
                    cost_micros=self._price(attempt.upstream_model, tokens_in, cut),
                    tokens=tokens_in + cut,
                    requests=1,
                )
                if kind == "stream_cut"
                else None
            )
            request.partial = True
            attempt.failed(
                Failed(
                    failure=FailureClass.STREAM_INTERRUPTED
                    if kind == "stream_cut"
                    else FailureClass.STREAM_STALLED,
                    phase=Phase.MID_STREAM,
                    delivered_chars=attempt.delivered_chars + 4 * cut,
                    detail="stream ended early",
                    billed=True,
                ),
                observed_usage=observed,
            )
        elif kind == "missing_usage":
            attempt.succeeded()
        elif kind == "usage_above_estimate":
            attempt.succeeded(input_tokens=tokens_in, output_tokens=1_000)
        else:  # ok, duplicate_usage
            attempt.succeeded(input_tokens=tokens_in, output_tokens=out_tokens)

    def _price(self, model: str, input_tokens: int, output_tokens: int) -> int:
        price = self.config.prices.get(model)
        return price.estimate_micros(input_tokens, output_tokens) if price is not None else 0

    def _leave(self, request: _Request, gateway: _Gateway, error: BaseException | None) -> None:
        """The request leaves its ``with`` block: the hold must be resolved now (L5, L11)."""
        handle = request.handle
        assert handle is not None
        self.step = f"leave {request.request_id} at g{gateway.index}"
        gateway.in_flight.pop(request.index, None)
        request.done = True
        try:
            handle.__exit__(type(error) if error else None, error, None)
        except StoreError:
            self.results["aborted"] += 1
            return  # the resolution itself was rejected: the hold expires at its TTL
        if error is not None:
            self.results["aborted"] += 1
        result = handle.result
        if error is None:
            name = type(result).__name__
            bucket = {
                "Served": "served",
                "Exhausted": "exhausted",
                "BudgetRejected": "rejected",
                "Degradation": "degraded",
            }[name]
            self.results[bucket] += 1
        hold = self.checked.budget.holds.get(request.request_id)
        if hold is not None and hold.status is HoldStatus.OPEN:
            self.fail(
                f"L5/I2: request {request.request_id} left ({type(result).__name__}) but its "
                f"hold is still open: reserved {hold.estimate.cost_micros} micros leak until "
                f"the TTL"
            )
        if hold is not None and error is None:
            self._check_resolution(request, hold.status)
        fault = (
            self.provider_faults.get((request.index, result.attempts))
            if isinstance(result, Served)
            else None
        )
        if (
            isinstance(result, Served)
            and fault is not None
            and fault.kind == "duplicate_usage"
            and self.faults_on
        ):
            self._duplicate_usage(gateway, request, result)

    def _check_resolution(self, request: _Request, status: HoldStatus) -> None:
        """L11: partial output is billed, no output is refunded; L3: overage is flagged."""
        handle = request.handle
        assert handle is not None
        result = handle.result
        if isinstance(result, Served) or request.partial:
            expected = HoldStatus.SETTLED
        elif result is None or isinstance(result, BudgetRejected):
            return
        else:
            expected = HoldStatus.REFUNDED
        if status is not expected:
            self.fail(
                f"L11: {request.request_id} ended {type(result).__name__} "
                f"{'after partial output' if request.partial else ''} but its hold is "
                f"{status.value}, not {expected.value}"
            )
        settled = self.settlements.get(request.request_id)
        if isinstance(result, Served) and settled is not None:
            above = result.cost_micros > handle.estimate.cost_micros
            if above != settled.overage:
                self.fail(
                    f"L3: {request.request_id} cost {result.cost_micros} against an estimate "
                    f"of {handle.estimate.cost_micros} but overage={settled.overage}"
                )
        if request.partial and settled is not None and settled.usage.is_zero():
            self.fail(f"L11: {request.request_id} streamed partial output but settled at zero")

    def _duplicate_usage(self, gateway: _Gateway, request: _Request, result: Served) -> None:
        """X1/L7: the same usage callback again changes nothing."""
        handle = request.handle
        assert handle is not None
        before = {name: (a.spent, a.reserved) for name, a in self.checked.budget.accounts.items()}
        usage = Usage(
            cost_micros=result.cost_micros,
            tokens=result.input_tokens + result.output_tokens,
            requests=1,
        )
        if usage.tokens == 0:
            return  # no usage was reported: there is nothing to deliver twice
        command = budget.SettleHold(
            command_id=f"{request.request_id}/resolve", hold_id=request.request_id, usage=usage
        )
        try:
            gateway.engine.runtime.run(
                lambda s, now: budget.decide_settle_hold(s.budget, command, now_us=now),
                lambda d: d.events,
            )
        except StoreError:
            return  # the duplicate was lost with the rejected append: nothing to compare
        after = {name: (a.spent, a.reserved) for name, a in self.checked.budget.accounts.items()}
        if before != after:
            self.fail(f"X1/L7: a duplicate usage callback of {request.request_id} moved balances")

    def _crash(self, gateway: _Gateway, downtime_us: int, *, billed: _Request) -> None:
        """Crash between hold and settle: in-flight requests are abandoned, holds left open."""
        self.restarts += 1
        for request in gateway.in_flight.values():
            self.results["abandoned"] += 1
            request.done = True
        gateway.in_flight.clear()
        gateway.down_until_us = self.now_us + downtime_us
        gateway.restart(self)
        # The provider did bill the crashed attempt: its usage callback arrives late.
        hold = self.checked.budget.holds.get(billed.request_id)
        if hold is not None and hold.status is HoldStatus.OPEN:
            late_at = hold.expires_at_us - gateway.clock.skew_us + US_PER_S
            self.at(late_at, lambda: self._late_usage(gateway, billed))

    def _late_usage(self, gateway: _Gateway, request: _Request) -> None:
        if not self._gateway_ready(gateway, lambda: self._late_usage(gateway, request)):
            return
        self.step = f"late usage of {request.request_id} at g{gateway.index}"
        gateway.engine.runtime.catch_up()
        usage = Usage(cost_micros=request.input_tokens, tokens=request.input_tokens, requests=1)
        command = budget.SettleHold(
            command_id=f"{request.request_id}/late", hold_id=request.request_id, usage=usage
        )
        try:
            gateway.engine.expire_due_holds()
            gateway.engine.runtime.run(
                lambda s, now: budget.decide_settle_hold(s.budget, command, now_us=now),
                lambda d: d.events,
            )
        except StoreError:
            # The provider retries its callback a second later (same command id).
            self.at(self.now_us + US_PER_S, lambda: self._late_usage(gateway, request))

    # -- healing and the final checks -----------------------------------------------------

    def heal(self) -> None:
        """Liveness: faults stop, time passes every TTL and block, a sweeper runs."""
        self.faults_on = False
        self.step = "heal"
        self.run()
        for gateway in self.gateways:
            gateway.down_until_us = gateway.paused_until_us = 0
        state = self.checked
        horizon = self.now_us
        for hold in state.budget.open_holds.values():
            horizon = max(horizon, hold.expires_at_us + US_PER_S)
        for scope in (*state.routing.pairs.values(), *state.routing.creds.values()):
            horizon = max(horizon, scope.ready_us + US_PER_S)
        skew_max = max(abs(g.clock.skew_us) for g in self.gateways)
        self.now_us = horizon + skew_max
        sweeper = self.gateways[0]
        sweeper.engine.runtime.catch_up()
        sweeper.engine.expire_due_holds()
        for gateway in self.gateways:
            gateway.engine.runtime.catch_up()
        self.step = "converged"
        if state.budget.open_holds:
            hold_id = next(iter(state.budget.open_holds))
            self.fail(f"L5: hold {hold_id} is still open after every TTL and a sweep")
        for table in (state.routing.pairs, state.routing.creds):
            for key, scope in table.items():
                if scope.until_us and scope.reason is None:
                    self.fail(f"A3: {key} is blocked without a recorded reason")
                if scope.until_us > self.now_us:
                    self.fail(f"A3: {key} is still blocked after healing")
        for name, account in state.budget.accounts.items():
            if account.reserved:
                self.fail(f"L5: account {name} still reserves {account.reserved} after healing")
        for request in self.requests:
            if not request.done:
                self.fail(f"liveness: request {request.request_id} never finished")

    def check_replay(self) -> None:
        """D1/D2: a fresh fold of the whole log equals every gateway's live state."""
        from routeledger.adapters.store.canonical import state_hash

        self.step = "replay"
        fresh = fold_log(
            self.store.read_all(0),
            Folded(routing=routing_state.initial(self.config.policy)),
        )
        expected = self.final_hash = state_hash(fresh)
        if state_hash(self.checked) != expected:
            self.fail("D2: the state folded batch by batch differs from a replay of the log")
        for gateway in self.gateways:
            if state_hash(gateway.engine.runtime.state) != expected:
                self.fail(f"D1: gateway g{gateway.index} differs from a replay of the log")

    def check_served_after_healing(self) -> None:
        """Liveness of routing: with faults gone, every gateway serves a request."""
        for gateway in self.gateways:
            self.step = f"healthy request at g{gateway.index}"
            gateway.engine.runtime.catch_up()
            with gateway.engine.request(
                route=self.route,
                caller_scope="user:healthy",
                request_id=f"healthy-g{gateway.index}",
            ) as req:
                for attempt in req.sync_attempts():
                    attempt.succeeded(input_tokens=10, output_tokens=10)
            if not isinstance(req.result, Served):
                self.fail(f"liveness: g{gateway.index} could not serve after healing: {req.result}")


# --- public API ------------------------------------------------------------------------


def simulate(
    seed: int,
    *,
    gateways: int = 3,
    providers: int = 3,
    requests: int = 200,
    profile: str = "swarm",
    config: EngineConfig | None = None,
    schedule: Sequence[Fault] | None = None,
    commit: str | None = None,
) -> SimulationReport:
    """Run one seed; never raises for an invariant violation (see ``report.failure``)."""
    if not (1 <= gateways <= GATEWAYS_MAX and 1 <= providers <= PROVIDERS_MAX):
        raise ValueError(f"need 1..{GATEWAYS_MAX} gateways and 1..{PROVIDERS_MAX} providers")
    if not 0 <= requests <= REQUESTS_MAX:
        raise ValueError(f"need 0..{REQUESTS_MAX} requests")
    if profile not in ("swarm", "calm"):
        raise ValueError(f"unknown profile {profile!r} (swarm | calm)")
    if profile == "calm" and schedule is None:
        schedule = ()
    began = time.perf_counter()
    sim = _Simulation(
        seed,
        gateways=gateways,
        providers=providers,
        requests=requests,
        schedule=tuple(schedule) if schedule is not None else None,
        config=config,
    )
    report = SimulationReport(
        seed=seed,
        commit=commit or commit_id(),
        gateways=gateways,
        providers=providers,
        requests=requests,
        profile=profile,
        schedule=sim.schedule,
    )
    try:
        sim.run()
        report.simulated_us = sim.now_us - EPOCH_US
        sim.heal()
        sim.check_replay()
        sim.check_served_after_healing()
    except SimulationFailure as failure:
        report.ok = False
        report.failure = str(failure)
    except Exception as error:  # an engine error is a finding too: report, never hide
        report.ok = False
        report.failure = f"{type(error).__name__}: {error} [step: {sim.step}]"
    report.events = sim.checked.events
    for name, count in sim.results.items():
        setattr(report, name, count)
    report.conflicts = sim.conflicts + sum(g.engine.runtime.conflicts for g in sim.gateways)
    report.restarts = sim.restarts
    report.healed_us = sim.now_us - EPOCH_US
    report.state_hash = sim.final_hash
    report.snapshot_boots = sim.snapshot_boots
    report.stale_routings = sim.stale_routings
    report.store_rejections = sim.store_rejections
    report.counters = dict(sim.counters)
    report.wall_s = time.perf_counter() - began
    return report


def save_failure(report: SimulationReport, path: str | Path) -> Path:
    """Save a run (seed, options, fault schedule) so it replays exactly."""
    path = Path(path)
    data = {
        "seed": report.seed,
        "commit": report.commit,
        "gateways": report.gateways,
        "providers": report.providers,
        "requests": report.requests,
        "profile": report.profile,
        "failure": report.failure,
        "schedule": [fault.to_json() for fault in report.schedule],
    }
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return path


def replay_saved(path: str | Path) -> SimulationReport:
    """Replay a saved run with its exact fault schedule."""
    data = json.loads(Path(path).read_text())
    return simulate(
        int(data["seed"]),
        gateways=int(data["gateways"]),
        providers=int(data["providers"]),
        requests=int(data["requests"]),
        profile=str(data["profile"]),
        schedule=[Fault.from_json(f) for f in data["schedule"]],
    )


def _invariant_of(failure: str | None) -> str:
    return (failure or "").split(":", 1)[0]


def shrink(report: SimulationReport, *, runs_max: int = 500) -> SimulationReport:
    """Delta debugging: drop faults (halves, then one at a time) while the same invariant fails."""
    if report.ok:
        return report
    target = _invariant_of(report.failure)
    best = report
    runs = 0

    def attempt(schedule: tuple[Fault, ...]) -> SimulationReport | None:
        nonlocal runs
        runs += 1
        candidate = simulate(
            report.seed,
            gateways=report.gateways,
            providers=report.providers,
            requests=report.requests,
            profile=report.profile,
            schedule=schedule,
            commit=report.commit,
        )
        return (
            candidate if not candidate.ok and _invariant_of(candidate.failure) == target else None
        )

    chunk = max(1, len(best.schedule) // 2)
    while chunk >= 1 and runs < runs_max:
        index = 0
        while index < len(best.schedule) and runs < runs_max:
            trial = best.schedule[:index] + best.schedule[index + chunk :]
            found = attempt(trial)
            if found is not None:
                best = found
            else:
                index += chunk
        if chunk == 1:
            break
        chunk //= 2
    return best


def _simulate_one(args: tuple[int, dict[str, Any]]) -> SimulationReport:
    seed, options = args
    return simulate(seed, **options)


def run_campaign(
    seeds: Sequence[int] | range,
    *,
    out: Callable[[str], None] | None = None,
    save_dir: str | Path | None = None,
    jobs: int = 1,
    **options: Any,
) -> CampaignReport:
    """Run every seed (in ``jobs`` processes); collect failures and the "sometimes" counters.

    Each seed is independent and deterministic, so the outcome does not depend
    on ``jobs``; only the wall time does.
    """
    if not 1 <= jobs <= JOBS_MAX:
        raise ValueError(f"need 1..{JOBS_MAX} jobs")
    campaign = CampaignReport(commit=commit_id())
    options = {**options, "commit": campaign.commit}
    began = time.perf_counter()
    work = [(seed, options) for seed in seeds]
    if jobs == 1:
        reports: Iterator[SimulationReport] = map(_simulate_one, work)
        pool = None
    else:
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(max_workers=jobs)
        reports = pool.map(_simulate_one, work, chunksize=16)
    try:
        for report in reports:
            campaign.seeds += 1
            campaign.simulated_us += report.simulated_us
            campaign.gateway_hours += report.gateway_hours
            for name, count in report.counters.items():
                campaign.counters[name] += count
            if not report.ok:
                campaign.failures.append(report)
                if out is not None:
                    out(report.line())
                if save_dir is not None:
                    save_failure(report, Path(save_dir) / f"seed-{report.seed}.json")
    finally:
        if pool is not None:
            pool.shutdown()
    campaign.wall_s = time.perf_counter() - began
    return campaign


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m routeledger.adapters.testing.simulation --seeds 10000`` (or ``--seed S``)."""
    parser = argparse.ArgumentParser(prog="routeledger simulate", description=main.__doc__)
    parser.add_argument("--seed", type=int, help="run one seed and print its report")
    parser.add_argument("--seeds", type=int, default=100, help="campaign size (seeds 0..N-1)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--gateways", type=int, default=3)
    parser.add_argument("--providers", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--profile", default="swarm", choices=("swarm", "calm"))
    parser.add_argument("--policy", help="a gateway TOML whose policy replaces the simulated one")
    parser.add_argument("--replay", help="replay a saved failure (JSON)")
    parser.add_argument("--shrink", action="store_true", help="shrink a failing --seed/--replay")
    parser.add_argument("--save-dir", help="save failing seeds here (JSON)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes for a campaign")
    args = parser.parse_args(argv)
    config = parse_config(Path(args.policy).read_text()) if args.policy else None
    options: dict[str, Any] = {
        "gateways": args.gateways,
        "providers": args.providers,
        "requests": args.requests,
        "profile": args.profile,
        "config": config,
    }
    if args.replay or args.seed is not None:
        report = replay_saved(args.replay) if args.replay else simulate(args.seed, **options)
        print(report.line())
        if not report.ok and args.shrink:
            small = shrink(report)
            print(f"shrunk to {len(small.schedule)} faults: {small.line()}")
            for fault in small.schedule:
                print("  ", fault)
        if not report.ok and args.save_dir:
            print("saved", save_failure(report, Path(args.save_dir) / f"seed-{report.seed}.json"))
        return 0 if report.ok else 1
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    campaign = run_campaign(seeds, out=print, save_dir=args.save_dir, jobs=args.jobs, **options)
    print(campaign.summary())
    return 0 if campaign.ok else 1


if __name__ == "__main__":
    sys.exit(main())
