"""Engine configuration from TOML: the routing policy plus what the adapters need.

One file configures a gateway's engine::

    [engine]                      # optional
    installation_id = "gw-eu-1"
    hold_ttl_us = 300_000_000
    snapshot_every_events = 10_000   # taken by the maintenance loop
    snapshots_kept = 3               # older snapshots are deleted
    retention_horizon_us = 900_000_000  # finished records leave the state (0: never)
    gc_freeze = true                 # keep long-lived state out of GC passes (default:
                                     # on under routeledger serve, off when embedded)
    maintenance_every_us = 1_000_000  # expire due holds, roll periods (0: no thread)
    sink = "standalone"           # standalone | platform

    [credentials.openai-main]     # routing fields (docs/routing.md) plus:
    provider = "openai"
    base_url = "https://api.openai.com/v1"
    secret_env = "OPENAI_API_KEY" # where the key is read from; never the key itself
    validates_model_names = false

    [models."gpt-4.1"]            # routing fields plus prices for the worst-case estimate:
    input_micros_per_mtok = 2_000_000
    output_micros_per_mtok = 8_000_000
    max_output_tokens = 4_096

    [routes.chat] ...             # exactly as in docs/routing.md
    [failures.rate_limited] ...
    [hints] ...
    [limits] ...

    [timeouts]                    # per attempt, for the httpx executor
    connect_us = 5_000_000
    first_token_us = 30_000_000
    idle_us = 30_000_000
    total_us = 300_000_000

    [http]                        # the executor's connection pool (httpx.Limits)
    max_connections = 100
    max_keepalive_connections = 100
    pool_timeout_us = 5_000_000   # waiting for a free connection: a local failure

    [routes.chat]                 # optional, per route: continue a cut live stream on a
    continue_instruction = "..."  # model without prefill by asking it to go on (off when "")

    [clients.web]                 # who may call ``routeledger serve`` (docs/server.md)
    key_env = "WEB_CLIENT_KEY"    # or key_sha256 = "<hex digest of the key>"
    caller_scope = "team:web"     # default "client:<name>"
    accounts = ["team-a"]         # budget accounts its requests hold on
    routes = ["chat"]             # routes it may use (default: every route)
    backups = []                  # fallback routes appended to every request

    [server]                      # routeledger serve
    body_bytes_max = 4_194_304    # a larger request body is a 413
    admin_key_env = ""            # the /admin/* key's variable; "" = admin API off

    [[classification.rules]]      # error answers -> failure class, tried before the
    failure = "model_not_supported"  # built-in table (docs/errors.md); every condition given
    status = [400, 422]           # must hold: a status or a list of them (400-599),
    body = "pipeline .* retired"  # a regex searched in the raw error body,
    header = "x-upstream-error"   # a response header that must be present,
    header_value = "^model"       # and a regex its value must match

    [accounts.team-a]             # budget accounts opened at start-up (if missing)
    scope = "team"                # key | user | team | org | provider | model
    unit = "micros"               # micros | tokens | requests
    limit = 50_000_000
    period = { kind = "day", zone = "UTC" }

Errors are :class:`ConfigError` (a :class:`UsageError`) naming the key path
(``routes.chat.chain[1].members[0].credential``) and, where the file shows it,
the line. The Python equivalent is :class:`EngineConfig` built directly.
"""

from __future__ import annotations

import enum
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from cattrs import Converter, transform_error
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError
from cattrs.v import format_exception

from routeledger.adapters.providers.observe import (
    DEFAULT_CLASSIFIER,
    Classifier,
    MessageRule,
)
from routeledger.core.budget.decide import OpenAccount
from routeledger.core.budget.values import AccountScope, PeriodKind, PeriodSpec, Unit
from routeledger.core.errors import UsageError
from routeledger.core.routing import (
    DEFAULT_FAILURE_TABLE,
    CredentialSpec,
    FailureAction,
    FailureClass,
    FailureRule,
    FailureScope,
    HintClamp,
    Member,
    ModelSpec,
    Policy,
    PolicyError,
    RequestLimits,
    Route,
    Strategy,
    Target,
)
from routeledger.core.time import US_PER_MIN, US_PER_S

__all__ = [
    "ClientSpec",
    "ConfigError",
    "CredentialEndpoint",
    "EngineConfig",
    "EngineSettings",
    "ModelPrice",
    "ServerSettings",
    "TelemetrySettings",
    "Timeouts",
    "load_config",
    "load_policy",
    "parse_config",
]

#: Largest configuration file read, in bytes. Why: a policy with the maximum
#: routes is well under 4 MiB; anything bigger is a mistake, not a config.
CONFIG_BYTES_MAX: Final = 4 * 1024 * 1024


class ConfigError(UsageError):
    """A configuration file is wrong; names the key path and the line when known."""

    def __init__(self, source: str, key: str, problem: str, line: int | None) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        self.line = line
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")


def _positive(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    """Timeouts and pool sizes are positive integers (a zero would fail every attempt)."""
    if value <= 0:
        section = (
            "timeouts"
            if isinstance(instance, Timeouts)
            else "server"
            if isinstance(instance, ServerSettings)
            else "engine"
            if isinstance(instance, EngineSettings)
            else "http"
        )
        raise PolicyError(f"{section}.{attribute.name}", f"must be > 0, got {value}")


_POSITIVE: Final = _positive


def _non_negative(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    """A cadence of 0 turns its thread off; a negative one is a mistake."""
    if value < 0:
        raise PolicyError(f"engine.{attribute.name}", f"must be >= 0, got {value}")


_NON_NEGATIVE: Final = _non_negative
#: Default cadence of the maintenance thread, in µs. Why: a hold's TTL is minutes
#: and a period a day or more, so once a second expires and rolls well within
#: their bounds, and costs one state scan (no I/O) when nothing is due.
MAINTENANCE_EVERY_US_DEFAULT: Final = 1_000_000
#: Snapshots kept by default. Why 3: restore needs one good one; two older
#: ones cover a bad newest one (skipped at restore) without keeping history.
SNAPSHOTS_KEPT_DEFAULT: Final = 3
#: Default retention horizon, in µs of engine time. Why 15 minutes: three hold
#: TTLs (a late usage report is still booked, L6), far beyond any client's
#: retry of one request id, and at 100 requests/s about 90k requests of state.
RETENTION_HORIZON_US_DEFAULT: Final = 15 * US_PER_MIN


def _horizon(instance: EngineSettings, attribute: attrs.Attribute[int], value: int) -> None:
    """0 keeps every record; otherwise the horizon must outlast a hold's TTL (L6)."""
    if value != 0 and value <= instance.hold_ttl_us:
        raise PolicyError(
            "engine.retention_horizon_us",
            f"must be 0 (keep every record) or more than hold_ttl_us "
            f"({instance.hold_ttl_us}), got {value}",
        )


@attrs.frozen(kw_only=True)
class CredentialEndpoint:
    """Where and how to call one credential's provider (non-secret)."""

    credential_id: str
    base_url: str = ""
    #: Environment variable (or secret-store id) holding the key; never the key.
    secret_env: str = ""
    validates_model_names: bool = False
    #: The API it speaks: ``openai`` (chat completions) or ``anthropic`` (messages).
    dialect: str = "openai"


#: The request dialects the executor knows, and the one a provider speaks by default.
DIALECTS: Final = ("openai", "anthropic")


@attrs.frozen(kw_only=True)
class ModelPrice:
    """Prices used for the worst-case hold estimate of a request."""

    input_micros_per_mtok: int = 0
    output_micros_per_mtok: int = 0
    #: Output tokens assumed when the caller gives no ``max_tokens``.
    max_output_tokens: int = 4_096

    def estimate_micros(self, input_tokens: int, output_tokens: int) -> int:
        """Worst-case cost of a call in micro-units (rounded up)."""
        total = (
            input_tokens * self.input_micros_per_mtok + output_tokens * self.output_micros_per_mtok
        )
        return -(-total // 1_000_000)


@attrs.frozen(kw_only=True)
class Timeouts:
    """Per-attempt timeouts of the httpx executor, in microseconds (each > 0)."""

    connect_us: int = attrs.field(default=5 * US_PER_S, validator=_POSITIVE)
    #: Connect + response headers + the first token.
    first_token_us: int = attrs.field(default=30 * US_PER_S, validator=_POSITIVE)
    #: Between two chunks once the first token arrived.
    idle_us: int = attrs.field(default=30 * US_PER_S, validator=_POSITIVE)
    total_us: int = attrs.field(default=5 * US_PER_MIN, validator=_POSITIVE)


@attrs.frozen(kw_only=True)
class HttpSettings:
    """The httpx executor's connection pool.

    Why these defaults: httpx's 100 connections, but every one of them kept alive
    (httpx keeps 20): a gateway talks to a handful of upstreams all day, and with
    more than 20 requests in flight each extra connection was closed after its
    response and opened again for the next (a TCP and often a TLS handshake per
    request; at 64 in flight on loopback that cost ~20% of throughput, bench/README.md).
    Idle connections still close after httpx's 5 s keep-alive expiry.
    """

    max_connections: int = attrs.field(default=100, validator=_POSITIVE)
    max_keepalive_connections: int = attrs.field(default=100, validator=_POSITIVE)
    #: Waiting longer for a free connection is ``gateway_pool_exhausted`` (a local failure).
    pool_timeout_us: int = attrs.field(default=5 * US_PER_S, validator=_POSITIVE)


@attrs.frozen(kw_only=True)
class ClientSpec:
    """One client of ``routeledger serve``: how it proves who it is, what it may do."""

    name: str
    #: Environment variable holding the client's key (read at start-up).
    key_env: str = ""
    #: Or the SHA-256 hex digest of the key (the key itself never in the file).
    key_sha256: str = ""
    caller_scope: str = ""
    accounts: tuple[str, ...] = ()
    #: Routes it may use; empty: every route.
    routes: tuple[str, ...] = ()
    backups: tuple[str, ...] = ()

    def may_use(self, route: str) -> bool:
        """Whether this client may call ``route``."""
        return not self.routes or route in self.routes


#: Largest request body ``routeledger serve`` reads by default, in bytes. Why:
#: a 1M-token prompt is ~4 MB of text; larger bodies are a mistake or an attack.
BODY_BYTES_DEFAULT: Final = 4 * 1024 * 1024


@attrs.frozen(kw_only=True)
class ServerSettings:
    """``routeledger serve``'s own settings (the ``[server]`` table)."""

    body_bytes_max: int = attrs.field(default=BODY_BYTES_DEFAULT, validator=_POSITIVE)
    #: Environment variable holding the admin key; empty: the admin API is off.
    admin_key_env: str = ""


@attrs.frozen(kw_only=True)
class TelemetrySettings:
    """The ``[telemetry]`` table: what the engine reports besides its log."""

    #: OpenTelemetry spans per request and per attempt (``adapters/engine/telemetry.py``),
    #: on the global tracer provider unless ``Engine(tracer_provider=...)`` names
    #: one; needs the ``otel`` extra. Off: no span is made, nothing is imported.
    otel: bool = False


@attrs.frozen(kw_only=True)
class EngineSettings:
    """Engine-wide settings."""

    installation_id: str = "default"
    hold_ttl_us: int = 5 * US_PER_MIN
    snapshot_every_events: int = 10_000
    #: Snapshots kept after each one saved (older ones are deleted); >= 1.
    snapshots_kept: int = attrs.field(default=SNAPSHOTS_KEPT_DEFAULT, validator=_POSITIVE)
    #: Finished requests and resolved holds leave the live state once their last
    #: event is older than this, in µs of engine time (``core/retention.py``); 0: never.
    retention_horizon_us: int = attrs.field(
        default=RETENTION_HORIZON_US_DEFAULT, validator=[_NON_NEGATIVE, _horizon]
    )
    #: Freeze the process's objects out of the cyclic GC at each maintenance step
    #: (``adapters/engine/maintenance.py``); unset: on where the engine owns the
    #: process (``routeledger serve``), off when embedded (the process is the host's).
    gc_freeze: bool | None = None
    sink: str = "standalone"
    #: How often the engine's maintenance thread runs (expires due holds, rolls
    #: periods over), in µs of real time; 0: no thread (call ``Engine.maintain()``).
    maintenance_every_us: int = attrs.field(
        default=MAINTENANCE_EVERY_US_DEFAULT, validator=_NON_NEGATIVE
    )


@attrs.frozen(kw_only=True)
class EngineConfig:
    """Everything an engine needs besides the store: the Python equivalent of the TOML file."""

    policy: Policy
    endpoints: Mapping[str, CredentialEndpoint] = attrs.field(factory=dict)
    prices: Mapping[str, ModelPrice] = attrs.field(factory=dict)
    accounts: tuple[OpenAccount, ...] = ()
    timeouts: Timeouts = attrs.field(factory=Timeouts)
    engine: EngineSettings = attrs.field(factory=EngineSettings)
    http: HttpSettings = attrs.field(factory=HttpSettings)
    #: Route alias -> the instruction that continues a cut live stream on a
    #: model without prefill (routes without one end the stream instead).
    continuations: Mapping[str, str] = attrs.field(factory=dict)
    #: Route alias -> each credential it can reach (fallbacks too) -> its dialect.
    dialects: Mapping[str, Mapping[str, str]] = attrs.field(factory=dict)
    #: Client name -> who may call ``routeledger serve`` and how.
    clients: Mapping[str, ClientSpec] = attrs.field(factory=dict)
    server: ServerSettings = attrs.field(factory=ServerSettings)
    #: ``[[classification.rules]]``: rows tried before the built-in message table,
    #: by every classifier of an engine on this configuration (``Engine.classifier``).
    classification: tuple[MessageRule, ...] = ()
    telemetry: TelemetrySettings = attrs.field(factory=TelemetrySettings)

    def classifier(self, base: Classifier = DEFAULT_CLASSIFIER) -> Classifier:
        """``base`` extended with this configuration's rows (``base`` itself without any)."""
        return base.extended(self.classification) if self.classification else base

    def dialect(self, alias: str) -> str:
        """The dialect of ``alias``'s credentials (``openai`` for none or an unknown alias)."""
        return next(iter(self.dialects.get(alias, {}).values()), "openai")


# --- the file's shape (structured by cattrs, strictly) ------------------------


@attrs.frozen(kw_only=True)
class _CredentialFile:
    provider: str
    account_wide_quota: bool = False
    owner: str | None = None
    base_url: str = ""
    secret_env: str = ""
    validates_model_names: bool = False
    #: ``openai`` or ``anthropic``; empty: ``anthropic`` for that provider, else ``openai``.
    dialect: str = ""
    max_in_flight: int | None = None


@attrs.frozen(kw_only=True)
class _ClientFile:
    key_env: str = ""
    key_sha256: str = ""
    caller_scope: str = ""
    accounts: list[str] = attrs.field(factory=list)
    routes: list[str] = attrs.field(factory=list)
    backups: list[str] = attrs.field(factory=list)


@attrs.frozen(kw_only=True)
class _ModelFile:
    streaming: bool = True
    prefill: bool = False
    context_window_tokens: int = 8_192
    input_micros_per_mtok: int = 0
    output_micros_per_mtok: int = 0
    max_output_tokens: int = 4_096


@attrs.frozen(kw_only=True)
class _MemberFile:
    credential: str
    model: str
    weight: int = 1
    rpm: int | None = None
    tpm: int | None = None


@attrs.frozen(kw_only=True)
class _TargetFile:
    members: tuple[_MemberFile, ...]
    strategy: Strategy = Strategy.PRIORITY


@attrs.frozen(kw_only=True)
class _RouteFile:
    chain: tuple[_TargetFile, ...]
    fallback: tuple[str, ...] = ()
    continue_instruction: str = ""
    prefer_wait_us_max: int = 0


@attrs.frozen(kw_only=True)
class _FailureFile:
    """A row override: every field it names replaces the default row's (G6: partial rows)."""

    scope: FailureScope | None = None
    action: FailureAction | None = None
    base_us: int | None = None
    factor: int | None = None
    max_us: int | None = None
    retry_same: int | None = None
    fallback: bool | None = None
    allowed_fails: int | None = None


@attrs.frozen(kw_only=True)
class _PeriodFile:
    kind: PeriodKind = PeriodKind.NONE
    length_us: int = 0
    zone: str = "UTC"


@attrs.frozen(kw_only=True)
class _AccountFile:
    scope: AccountScope
    unit: Unit = Unit.MICROS
    limit: int
    period: _PeriodFile = attrs.field(factory=_PeriodFile)


@attrs.frozen(kw_only=True)
class _RuleFile:
    """One ``[[classification.rules]]`` table (checked whole by :func:`_classification_rule`)."""

    failure: FailureClass
    #: An int or a list of ints (checked when converted).
    status: Any = None
    body: str = ""
    header: str = ""
    header_value: str = ""


@attrs.frozen(kw_only=True)
class _ClassificationFile:
    rules: tuple[_RuleFile, ...] = ()


@attrs.frozen(kw_only=True)
class _File:
    credentials: dict[str, _CredentialFile]
    models: dict[str, _ModelFile]
    routes: dict[str, _RouteFile]
    failures: dict[FailureClass, _FailureFile] = attrs.field(factory=dict)
    hints: HintClamp = attrs.field(factory=HintClamp)
    limits: RequestLimits = attrs.field(factory=RequestLimits)
    timeouts: Timeouts = attrs.field(factory=Timeouts)
    accounts: dict[str, _AccountFile] = attrs.field(factory=dict)
    engine: EngineSettings = attrs.field(factory=EngineSettings)
    http: HttpSettings = attrs.field(factory=HttpSettings)
    clients: dict[str, _ClientFile] = attrs.field(factory=dict)
    server: ServerSettings = attrs.field(factory=ServerSettings)
    classification: _ClassificationFile = attrs.field(factory=_ClassificationFile)
    telemetry: TelemetrySettings = attrs.field(factory=TelemetrySettings)


class _Refused(ValueError):
    """A value of the wrong type or outside an enumeration; its message says which."""


def _found(value: object) -> str:
    return f"got {type(value).__name__} {value!r}"


def _strict(kind: type[Any]) -> Any:
    def structure(value: object, _: object) -> object:
        if type(value) is not kind:
            raise _Refused(f"expected {kind.__name__}, {_found(value)}")
        return value

    return structure


def _enumerated(value: object, kind: type[enum.Enum]) -> enum.Enum:
    """An enumeration member by value; otherwise name every allowed value."""
    allowed = [member.value for member in kind]
    if type(value) is str and value in allowed:
        return kind(value)
    raise _Refused(f"must be one of {', '.join(map(str, allowed))}; {_found(value)}")


def _message(error: BaseException, kind: Any) -> str:
    """cattrs' message for ``error``, or ours when we raised it."""
    if isinstance(error, _Refused):
        return str(error)
    return format_exception(error, kind)


_CONVERTER: Final = Converter(forbid_extra_keys=True, detailed_validation=True)
for _kind in (int, str, bool):
    _CONVERTER.register_structure_hook(_kind, _strict(_kind))
_CONVERTER.register_structure_hook_func(
    lambda kind: (
        isinstance(kind, type)
        and issubclass(kind, enum.Enum)
        and all(type(m.value) is str for m in kind)
    ),
    _enumerated,
)


def _target(target: _TargetFile) -> Target:
    """One chain target of the file as a routing :class:`Target`."""
    return Target(
        strategy=target.strategy,
        members=tuple(
            Member(credential=m.credential, model=m.model, weight=m.weight, rpm=m.rpm, tpm=m.tpm)
            for m in target.members
        ),
    )


def _route(alias: str, route: _RouteFile) -> Route:
    """One ``[routes.<alias>]`` table as a routing :class:`Route`."""
    return Route(
        alias=alias,
        fallback=route.fallback,
        chain=tuple(_target(target) for target in route.chain),
        prefer_wait_us_max=route.prefer_wait_us_max,
    )


def _policy(shape: _File) -> Policy:
    """The routing policy of the file: credentials, models, routes, failures, hints, limits."""
    return Policy(
        credentials=tuple(
            CredentialSpec(
                id=key,
                provider=value.provider,
                account_wide_quota=value.account_wide_quota,
                owner=value.owner,
                max_in_flight=value.max_in_flight,
            )
            for key, value in shape.credentials.items()
        ),
        models=tuple(
            ModelSpec(
                id=key,
                streaming=value.streaming,
                prefill=value.prefill,
                context_window_tokens=value.context_window_tokens,
                input_micros_per_mtok=value.input_micros_per_mtok,
                output_micros_per_mtok=value.output_micros_per_mtok,
                max_output_tokens=value.max_output_tokens,
            )
            for key, value in shape.models.items()
        ),
        routes=tuple(_route(alias, route) for alias, route in shape.routes.items()),
        failures=tuple(_failure_rule(failure, row) for failure, row in shape.failures.items()),
        hints=shape.hints,
        limits=shape.limits,
    )


def _failure_rule(failure: FailureClass, row: _FailureFile) -> FailureRule:
    """The default row of ``failure`` with the fields ``row`` names replaced."""
    given = {name: value for name, value in attrs.asdict(row).items() if value is not None}
    return attrs.evolve(DEFAULT_FAILURE_TABLE[failure], **given)


def _endpoints(shape: _File) -> dict[str, CredentialEndpoint]:
    """Where to call each credential's provider, by credential id."""
    return {
        key: CredentialEndpoint(
            credential_id=key,
            base_url=value.base_url,
            secret_env=value.secret_env,
            validates_model_names=value.validates_model_names,
            dialect=_dialect(key, value),
        )
        for key, value in shape.credentials.items()
    }


def _dialect(key: str, value: _CredentialFile) -> str:
    """The dialect a credential speaks: its setting, else its provider's."""
    if not value.dialect:
        return "anthropic" if value.provider == "anthropic" else "openai"
    if value.dialect not in DIALECTS:
        raise PolicyError(
            f"credentials.{key}.dialect",
            f"must be one of {', '.join(DIALECTS)}, got {value.dialect!r}",
        )
    return value.dialect


def _route_dialects(
    policy: Policy, endpoints: Mapping[str, CredentialEndpoint]
) -> dict[str, dict[str, str]]:
    """Each route's credentials (with its fallbacks') and the dialect each speaks."""
    dialects: dict[str, dict[str, str]] = {}
    for route in policy.routes:
        chain = policy.chain(route.alias)
        dialects[route.alias] = {
            member.credential: endpoints[member.credential].dialect
            for plan in (chain.targets if chain is not None else ())
            for member in plan.members
            if member.credential in endpoints
        }
    return dialects


def mixed_dialects(config: EngineConfig) -> ConfigError | None:
    """The first route whose credentials speak more than one dialect, as an error naming it.

    The engine itself routes any mix (a gateway that translates calls each
    provider its own way); the executor, which does not translate, refuses it.
    """
    for alias, spoken in config.dialects.items():
        if len(set(spoken.values())) > 1:
            pairs = ", ".join(f"{cid}: {dialect}" for cid, dialect in sorted(spoken.items()))
            return ConfigError(
                "<config>",
                f"routes.{alias}",
                f"mixes dialects ({pairs}); the executor does not translate between them",
                None,
            )
    return None


def _prices(shape: _File) -> dict[str, ModelPrice]:
    """The estimate prices of each model, by model id."""
    return {
        key: ModelPrice(
            input_micros_per_mtok=value.input_micros_per_mtok,
            output_micros_per_mtok=value.output_micros_per_mtok,
            max_output_tokens=value.max_output_tokens,
        )
        for key, value in shape.models.items()
    }


def _open_account(key: str, value: _AccountFile) -> OpenAccount:
    """The start-up command opening the ``[accounts.<key>]`` budget account (checked whole
    here, so a mistake is a ``ConfigError`` before anything is appended)."""
    if value.limit < 0:
        raise PolicyError(f"accounts.{key}.limit", f"must be >= 0, got {value.limit}")
    zone = value.period.zone
    if zone != "UTC":
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise PolicyError(
                f"accounts.{key}.period.zone",
                f"unknown time zone {zone!r} (an IANA name such as 'Europe/Paris', or 'UTC')",
            ) from None
    return OpenAccount(
        command_id=f"config:open:{key}",
        account_id=key,
        scope=value.scope,
        unit=value.unit,
        limit=value.limit,
        period=PeriodSpec(
            kind=value.period.kind,
            length_us=value.period.length_us,
            zone=value.period.zone,
        ),
    )


_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")


def _client(name: str, value: _ClientFile, shape: _File) -> ClientSpec:
    """One ``[clients.<name>]`` table, checked against the routes and accounts it names."""
    where = f"clients.{name}"
    if bool(value.key_env) == bool(value.key_sha256):
        raise PolicyError(where, "set exactly one of key_env and key_sha256")
    if value.key_sha256 and not _SHA256_HEX.fullmatch(value.key_sha256):
        raise PolicyError(f"{where}.key_sha256", "must be 64 lower-case hex digits (SHA-256)")
    for field, names, known in (
        ("routes", value.routes, shape.routes),
        ("backups", value.backups, shape.routes),
        ("accounts", value.accounts, shape.accounts),
    ):
        for index, item in enumerate(names):
            if item not in known:
                raise PolicyError(f"{where}.{field}[{index}]", f"no {field[:-1]} named {item!r}")
    return ClientSpec(
        name=name,
        key_env=value.key_env,
        key_sha256=value.key_sha256,
        caller_scope=value.caller_scope or f"client:{name}",
        accounts=tuple(value.accounts),
        routes=tuple(value.routes),
        backups=tuple(value.backups),
    )


#: Classes a configuration rule may not give an upstream's answer: the gateway decides
#: them itself (its caller left, its own pool was full, its caller's validation refused).
_LOCAL_CLASSES: Final = frozenset(
    {
        FailureClass.CALLER_CANCELLED,
        FailureClass.GATEWAY_POOL_EXHAUSTED,
        FailureClass.RESPONSE_REJECTED,
    }
)
#: Header names as RFC 9110 allows them (a token).
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _statuses(where: str, value: object) -> frozenset[int]:
    """A rule's ``status``: none, one HTTP error status or a list of them."""
    given = [] if value is None else value if isinstance(value, list) else [value]
    for index, status in enumerate(given):
        if type(status) is not int or not 400 <= status <= 599:
            at = f"{where}.status" + (f"[{index}]" if isinstance(value, list) else "")
            raise PolicyError(at, f"must be an HTTP error status (400-599), {_found(status)}")
    return frozenset(given)


def _regex(where: str, pattern: str) -> str | None:
    """A rule's regex, compiled once here so a mistake names its key."""
    if not pattern:
        return None
    try:
        re.compile(pattern, re.IGNORECASE | re.DOTALL)
    except re.error as error:
        raise PolicyError(where, f"not a valid regular expression: {error}") from None
    return pattern


def _classification_rule(index: int, rule: _RuleFile) -> MessageRule:
    """One ``[[classification.rules]]`` table as a classifier row (tried before the defaults)."""
    where = f"classification.rules[{index}]"
    if rule.failure in _LOCAL_CLASSES:
        raise PolicyError(
            f"{where}.failure",
            f"{rule.failure.value} is decided by the gateway, never read from an upstream's answer",
        )
    if rule.header and not _HEADER_NAME.fullmatch(rule.header):
        raise PolicyError(f"{where}.header", f"not a header name: {rule.header!r}")
    if rule.header_value and not rule.header:
        raise PolicyError(f"{where}.header_value", "needs header (the header whose value it tests)")
    statuses = _statuses(where, rule.status)
    if not (statuses or rule.body or rule.header):
        raise PolicyError(where, "needs at least one of status, body and header")
    return MessageRule(
        phrases=(),
        failure=rule.failure,
        statuses=statuses,
        body_pattern=_regex(f"{where}.body", rule.body),
        header=rule.header.lower() or None,
        header_pattern=_regex(f"{where}.header_value", rule.header_value),
    )


def _to_config(shape: _File) -> EngineConfig:
    """The engine configuration the file describes; PolicyError if its policy is wrong."""
    policy = _policy(shape)
    endpoints = _endpoints(shape)
    return EngineConfig(
        policy=policy,
        endpoints=endpoints,
        dialects=_route_dialects(policy, endpoints),
        prices=_prices(shape),
        accounts=tuple(_open_account(key, value) for key, value in shape.accounts.items()),
        timeouts=shape.timeouts,
        engine=shape.engine,
        http=shape.http,
        clients={name: _client(name, value, shape) for name, value in shape.clients.items()},
        server=shape.server,
        telemetry=shape.telemetry,
        classification=tuple(
            _classification_rule(index, rule)
            for index, rule in enumerate(shape.classification.rules)
        ),
        continuations={
            alias: route.continue_instruction
            for alias, route in shape.routes.items()
            if route.continue_instruction
        },
    )


# --- errors with key paths and lines -----------------------------------------

_CATTRS_PATH: Final = re.compile(r"@ \$?(?P<path>\S*)$")


def _dotted(cattrs_path: str) -> str:
    """``$.routes['chat'].chain[1]`` -> ``routes.chat.chain[1]``."""
    path = cattrs_path.lstrip("$").lstrip(".")
    path = re.sub(r"\['([^']*)'\]", lambda m: "." + _toml_key(m.group(1)), path)
    path = re.sub(r"\[<FailureClass\.[A-Z_]+: '([a-z_]+)'>\]", r".\1", path)
    return path.lstrip(".")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else f'"{key}"'


def line_of(text: str, key_path: str) -> int | None:
    """Best-effort line of ``key_path`` (``routes.chat.chain[1].members``) in a TOML text."""
    parts = re.findall(r'"[^"]*"|[^.\[\]]+|\[\d+\]', key_path)
    tables: list[str] = []
    leaf: str | None = None
    for part in parts:
        if part.startswith("["):
            tables[-1] += part
        else:
            tables.append(part.strip('"'))
    # Try the longest table prefix that has a header, then the leaf key under it.
    for cut in range(len(tables), 0, -1):
        header, leaf = tables[:cut], (tables[cut] if cut < len(tables) else None)
        line = _header_line(text, header)
        if line is not None:
            if leaf is not None:
                key_line = _key_line(text, line, leaf.split("[")[0])
                if key_line is not None:
                    return key_line
            return line
    return None


def _header_line(text: str, header: list[str]) -> int | None:
    names = [h.split("[")[0] for h in header]
    index = int(header[-1].split("[")[1].rstrip("]")) if "[" in header[-1] else None
    pattern = r"\.".join(rf'(?:"{re.escape(n)}"|{re.escape(n)})' for n in names)
    seen = -1
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if index is None and re.fullmatch(rf"\[\s*{pattern}\s*\](\s*#.*)?", line):
            return number
        if re.fullmatch(rf"\[\[\s*{pattern}\s*\]\](\s*#.*)?", line):
            seen += 1
            if index is None or seen == index:
                return number
    return None


def _key_line(text: str, start: int, key: str) -> int | None:
    lines = text.splitlines()
    for number in range(start, len(lines)):
        line = lines[number].strip()
        if line.startswith("["):
            return None
        if re.match(rf'(?:"{re.escape(key)}"|{re.escape(key)})\s*=', line):
            return number + 1
    return None


def _policy_error(error: BaseException) -> PolicyError | None:
    """The first :class:`PolicyError` a validator raised inside cattrs' error groups."""
    if isinstance(error, PolicyError):
        return error
    for inner in getattr(error, "exceptions", ()):
        found = _policy_error(inner)
        if found is not None:
            return found
    return None


def parse_config(text: str, *, source: str = "<config>") -> EngineConfig:
    """Parse a TOML text into an :class:`EngineConfig`; :class:`ConfigError` on any problem."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        match = re.search(r"line (\d+)", str(error))
        raise ConfigError(
            source, "", f"not valid TOML: {error}", int(match.group(1)) if match else None
        ) from error
    try:
        shape = _CONVERTER.structure(raw, _File)
    except ClassValidationError as error:
        bad = _policy_error(error)
        if bad is not None:
            raise ConfigError(source, bad.path, bad.problem, line_of(text, bad.path)) from error
        first = transform_error(error, format_exception=_message)[0]
        match = _CATTRS_PATH.search(first)
        key = _dotted(match.group("path")) if match else ""
        problem = first[: match.start()].strip() if match else first
        raise ConfigError(source, key, problem, line_of(text, key) if key else None) from error
    except ForbiddenExtraKeysError as error:  # pragma: no cover - detailed validation wraps it
        raise ConfigError(source, "", str(error), None) from error
    try:
        return _to_config(shape)
    except PolicyError as error:
        raise ConfigError(source, error.path, error.problem, line_of(text, error.path)) from error


def load_config(path: str | Path) -> EngineConfig:
    """Read and parse a TOML configuration file."""
    file = Path(path)
    try:
        size = file.stat().st_size
        if size > CONFIG_BYTES_MAX:
            raise ConfigError(str(file), "", f"{size} bytes is more than {CONFIG_BYTES_MAX}", None)
        text = file.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(str(file), "", f"cannot read: {error.strerror or error}", None) from error
    except UnicodeDecodeError as error:
        raise ConfigError(str(file), "", f"not UTF-8: {error}", None) from error
    return parse_config(text, source=str(file))


def load_policy(path: str | Path) -> Policy:
    """Read only the routing policy of a configuration file."""
    return load_config(path).policy
