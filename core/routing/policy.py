"""The routing policy: a validated, immutable value.

A :class:`Policy` names credentials (by id only: never a secret), concrete
upstream models and their capabilities, routes (a public alias -> an ordered
chain of targets, each a pool of (credential, upstream model) members with a
selection strategy, plus the aliases of the route's global fallback), the
failure table (:mod:`.failures`; rows override the defaults), the clamp for
provider hints and the per-request limits.

Building a :class:`Policy` validates it; an invalid policy raises
:class:`PolicyError` whose ``path`` is the TOML path a user would write, e.g.
``routes.chat.chain[1].members[0].credential``. ``docs/routing.md`` shows the
TOML shape an adapter loads into these values.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Final, NamedTuple

import attrs

from ..errors import UsageError
from ..events import stream_id_problem
from ..streams import (
    CREDENTIAL_ID_LENGTH_MAX,
    ID_LENGTH_MAX,
    MODEL_NAME_LENGTH_MAX,
    credential_stream,
    pair_stream,
)
from ..time import US_PER_DAY, US_PER_H, US_PER_MIN, US_PER_S
from .failures import DEFAULT_FAILURE_TABLE, FailureAction, FailureClass, FailureRule, FailureScope

__all__ = [
    "ALLOWED_FAILS_MAX",
    "ATTEMPTS_MAX",
    "BACKUPS_MAX",
    "CHAIN_TARGETS_MAX",
    "COOLDOWN_US_MAX",
    "DEADLINE_US_MAX",
    "FACTOR_MAX",
    "FALLBACKS_MAX",
    "IN_FLIGHT_MAX",
    "POOL_MEMBERS_MAX",
    "PRICE_MAX",
    "PROBE_TIMEOUT_US_MAX",
    "RANKED",
    "RETRY_SAME_MAX",
    "ROUTES_MAX",
    "RPM_MAX",
    "SLOT_LEASE_US_MAX",
    "TPM_MAX",
    "WAIT_TOTAL_US_MAX",
    "WEIGHT_MAX",
    "Capacity",
    "ChainPlan",
    "CredentialSpec",
    "HintClamp",
    "Member",
    "ModelSpec",
    "Policy",
    "PolicyError",
    "PoolMember",
    "PoolPlan",
    "RequestLimits",
    "Route",
    "Strategy",
    "Target",
]

#: Targets in one route's chain. Why: a chain is read by humans; real configs
#: have 1-4 targets; 16 bounds the work of one decision and the size of events.
CHAIN_TARGETS_MAX: Final = 16
#: Members in one pool. Why: the largest key pools seen in gateways are a few
#: hundred keys; 4,096 keeps a full scan (the rare wait path) under a millisecond.
POOL_MEMBERS_MAX: Final = 4_096
#: Global fallback aliases per route. Why: same reasoning as the chain, fewer hops.
FALLBACKS_MAX: Final = 8
#: Per-request backup aliases (I3's per-agent backup models). Why: agents list 1-3.
BACKUPS_MAX: Final = 8
#: Routes in one policy. Why: a bound on validation work; far above real configs.
ROUTES_MAX: Final = 10_000
#: Longest cooldown or suspension, in µs. Why: A3 needs every block to end by
#: itself; a week covers monthly-quota providers' longest practical resets.
COOLDOWN_US_MAX: Final = 7 * US_PER_DAY
#: Largest backoff factor. Why: 10x per failure already reaches any max in a few steps.
FACTOR_MAX: Final = 10
#: Retries of the same member by one request. Why: more is a retry storm.
RETRY_SAME_MAX: Final = 10
#: Failures a scope may tolerate before its rule's action applies. Why: past
#: ten, a failing upstream takes ten requests' latency before it cools.
ALLOWED_FAILS_MAX: Final = 10
#: Attempts per request. Why: every attempt costs latency and money; 64 covers
#: a 16-target chain with retries; zero could never serve anything.
ATTEMPTS_MAX: Final = 64
#: Total wait per request, in µs. Why: a client holding a connection longer
#: than 10 minutes has gone; waits beyond that become Retry-After instead.
WAIT_TOTAL_US_MAX: Final = 10 * US_PER_MIN
#: Relative request deadline, in µs. Why: the longest streaming answers last minutes.
DEADLINE_US_MAX: Final = 1 * US_PER_H
#: How long a half-open probe may stay unanswered, in µs, before another is allowed.
#: Why: bounded so a lost probe never blocks a pair forever (A3).
PROBE_TIMEOUT_US_MAX: Final = 10 * US_PER_MIN
#: Largest member weight. Why: integers keep weighted picks exact; 1e6 is ample resolution.
WEIGHT_MAX: Final = 1_000_000
#: Largest price, in micro-units per million tokens. Why: 10^12 micros ($1M) per
#: million tokens is past any model; it keeps costs exact integers.
PRICE_MAX: Final = 10**12
#: Largest ``max_in_flight`` of a credential. Why: every slot is a state entry
#: examined when the credential is considered; no provider key takes more.
IN_FLIGHT_MAX: Final = 10_000
#: Largest ``rpm`` (requests per minute) of a pair. Why: 10^7/min is past any
#: provider tier; the window counts per second, so the cost does not grow with it.
RPM_MAX: Final = 10_000_000
#: Largest ``tpm`` (tokens per minute) of a pair. Why: 10^10 is past any provider tier.
TPM_MAX: Final = 10_000_000_000
#: Longest an attempt's slot counts against its credential, in µs. Why: a
#: process that died mid-attempt never returns its slot; an hour bounds the loss.
SLOT_LEASE_US_MAX: Final = 1 * US_PER_H

_BARE_KEY: Final = re.compile(r"^[A-Za-z0-9_-]+$")


class PolicyError(UsageError):
    """An invalid policy; ``path`` is the TOML path of the offending value."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class Strategy(enum.Enum):
    """How a pool picks its next member."""

    #: Members in listed order; the first selectable one wins.
    PRIORITY = "priority"
    #: Start after the member last routed to (the cursor is state), then in order.
    ROUND_ROBIN = "round_robin"
    #: Start at a member drawn by weight from the request's seed, then in order.
    WEIGHTED = "weighted"
    #: The member with the lowest moving estimate of time to first token first (:mod:`.selection`).
    LEAST_LATENCY = "least_latency"
    #: The member whose model costs least for the request's estimate first.
    LOWEST_COST = "lowest_cost"
    #: The member with the fewest attempts in flight first.
    LEAST_IN_FLIGHT = "least_in_flight"


#: The strategies that examine a pool best first by a per-member key (:func:`.selection.member_order`).
RANKED: Final = frozenset({Strategy.LEAST_LATENCY, Strategy.LOWEST_COST, Strategy.LEAST_IN_FLIGHT})


@attrs.frozen(kw_only=True)
class CredentialSpec:
    """A credential, referenced by id (never a secret value)."""

    id: str
    provider: str
    #: The provider enforces one quota for the whole account (quota failures cool the credential).
    account_wide_quota: bool = False
    #: Owner scope for bring-your-own credentials (I3); ``None`` = shared by everyone.
    owner: str | None = None
    #: Attempts in flight on this key at once, across every process on the store; ``None``: no cap.
    max_in_flight: int | None = None


@attrs.frozen(kw_only=True)
class ModelSpec:
    """A concrete upstream model name and its capabilities."""

    id: str
    streaming: bool = True
    #: Can continue a partial answer sent as an assistant prefix (mid-stream continuation).
    prefill: bool = False
    context_window_tokens: int = 8_192
    #: Prices, for the ``lowest_cost`` strategy: micro-units per million tokens.
    input_micros_per_mtok: int = 0
    output_micros_per_mtok: int = 0
    #: Output tokens a request may produce at most (the worst case ``lowest_cost`` prices).
    max_output_tokens: int = 4_096


@attrs.frozen(kw_only=True)
class Member:
    """One pool member: a credential x a concrete upstream model."""

    credential: str
    model: str
    weight: int = 1
    #: Requests per minute the pair admits (LiteLLM's ``rpm``); ``None``: no limit.
    rpm: int | None = None
    #: Tokens per minute the pair admits (input estimate at routing, actual usage after).
    tpm: int | None = None


@attrs.frozen(kw_only=True)
class Capacity:
    """A credential's configured limits: slots in flight, and rpm/tpm per pair stream."""

    max_in_flight: int | None
    #: ``pair:<c>:<m>`` -> (rpm, tpm), for the pairs of this credential that have either.
    rates: Mapping[str, tuple[int | None, int | None]]


@attrs.frozen(kw_only=True)
class Target:
    """One chain position: a pool of members and how to pick among them."""

    members: tuple[Member, ...]
    strategy: Strategy = Strategy.PRIORITY


@attrs.frozen(kw_only=True)
class Route:
    """A public name (alias) -> an ordered chain of targets, then its global fallback."""

    alias: str
    chain: tuple[Target, ...]
    #: Aliases whose chains follow this one (their own fallbacks are never consulted, I3).
    fallback: tuple[str, ...] = ()
    #: Wait up to this long (µs) for an earlier target's time-bound recovery (a short
    #: Retry-After) instead of routing to a later one; 0: never wait while one serves.
    prefer_wait_us_max: int = 0


@attrs.frozen(kw_only=True)
class HintClamp:
    """Bounds applied to provider hints (Retry-After, reset times), A3."""

    min_us: int = 1 * US_PER_S
    max_us: int = 1 * US_PER_H


@attrs.frozen(kw_only=True)
class RequestLimits:
    """Per-request limits."""

    attempts_max: int = 8
    wait_total_us_max: int = 30 * US_PER_S
    #: Relative deadline from the request's arrival; ``None`` = no deadline.
    deadline_us: int | None = None
    probe_timeout_us: int = 30 * US_PER_S
    #: How long an attempt's slot counts against its credential's configured
    #: limits at most (a process that died mid-attempt frees it then).
    slot_lease_us: int = 5 * US_PER_MIN


class PoolMember(NamedTuple):
    """One member of a pool as routing reads it (derived once per policy).

    A named tuple, not an attrs class: the picker reads one per examined member
    on the hot path, and a tuple's fields are the cheapest to read.
    """

    credential: str
    model: str
    #: ``pair:<credential>:<model>``: the pair's availability stream.
    pair_stream: str
    #: ``cred:<credential>``: the credential-wide availability stream.
    cred_stream: str
    #: The credential's owner scope (``None``: anyone may use it, I3).
    owner: str | None
    streaming: bool
    context_window_tokens: int
    #: The model can continue a cut answer from its prefix (prefill).
    prefill: bool


@attrs.frozen(kw_only=True)
class PoolPlan:
    """Derived, read-only data for one chain target (built once per policy)."""

    #: The route that defines the target.
    alias: str
    #: Where the target is defined, e.g. ``routes.chat.chain[1]``.
    path: str
    members: tuple[Member, ...]
    strategy: Strategy
    #: Per member, in member order, what routing reads of it.
    entries: tuple[PoolMember, ...]
    #: Running sums of weights (for weighted picks by bisection).
    cumulative_weights: tuple[int, ...]
    #: Per member, its model's (input price, worst-case output cost) in micro-units per
    #: million tokens: a request of ``n`` input tokens costs ``n * a + b`` (``lowest_cost``).
    prices: tuple[tuple[int, int], ...] = ()
    #: ``strategy in RANKED``, read per decision (hashing an enum member runs Python code).
    ranked: bool = False


def toml_key(key: str) -> str:
    """``key`` as TOML writes it in a dotted path (quoted unless bare)."""
    if _BARE_KEY.match(key):
        return key
    escaped = key.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


@attrs.frozen(kw_only=True)
class Policy:
    """A validated routing policy (see the module docstring and ``docs/routing.md``)."""

    credentials: tuple[CredentialSpec, ...]
    models: tuple[ModelSpec, ...]
    routes: tuple[Route, ...]
    #: Overrides of :data:`DEFAULT_FAILURE_TABLE` rows (one per class at most).
    failures: tuple[FailureRule, ...] = ()
    hints: HintClamp = HintClamp()
    limits: RequestLimits = RequestLimits()

    _credential_by_id: Mapping[str, CredentialSpec] = attrs.field(init=False, eq=False, repr=False)
    _model_by_id: Mapping[str, ModelSpec] = attrs.field(init=False, eq=False, repr=False)
    _route_by_alias: Mapping[str, Route] = attrs.field(init=False, eq=False, repr=False)
    _table: Mapping[FailureClass, FailureRule] = attrs.field(init=False, eq=False, repr=False)
    _plans: Mapping[str, tuple[PoolPlan, ...]] = attrs.field(init=False, eq=False, repr=False)
    _chains: Mapping[str, ChainPlan] = attrs.field(init=False, eq=False, repr=False)
    #: Credential id -> its configured limits, for the credentials that have any.
    capacities: Mapping[str, Capacity] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        creds = _validate_credentials(self.credentials)
        models = _validate_models(self.models)
        routes = _validate_routes(self.routes, creds, models)
        table = _validate_failures(self.failures)
        _validate_hints(self.hints)
        _validate_limits(self.limits)
        plans = {route.alias: _plan(route, creds, models) for route in self.routes}
        object.__setattr__(self, "_credential_by_id", creds)
        object.__setattr__(self, "_model_by_id", models)
        object.__setattr__(self, "_route_by_alias", routes)
        object.__setattr__(self, "_table", table)
        object.__setattr__(self, "_plans", plans)
        chains = {route.alias: _chain(plans, route, ()) for route in self.routes}
        object.__setattr__(self, "_chains", chains)
        object.__setattr__(self, "capacities", _capacities(self.credentials, self.routes))

    def credential(self, credential_id: str) -> CredentialSpec:
        """The credential with this id (it exists: members are validated)."""
        return self._credential_by_id[credential_id]

    def model(self, model_id: str) -> ModelSpec:
        """The upstream model with this id (it exists: members are validated)."""
        return self._model_by_id[model_id]

    def route(self, alias: str) -> Route | None:
        """The route for ``alias``, or ``None``."""
        return self._route_by_alias.get(alias)

    def rule(self, failure: FailureClass) -> FailureRule:
        """The failure-table row for ``failure`` (the table is total, A1)."""
        return self._table[failure]

    def pools(self) -> tuple[PoolPlan, ...]:
        """Every target of every route, in definition order."""
        return tuple(plan for plans in self._plans.values() for plan in plans)

    def chain(self, alias: str, backups: tuple[str, ...] = ()) -> ChainPlan | None:
        """A request's chain for route ``alias`` with its backups, or ``None`` for an unknown alias.

        The chain is the route's targets, then those of each backup alias (I3:
        ahead of the global fallback), then those of the route's fallback
        aliases. Each alias contributes its own chain only, never its fallbacks,
        and each target appears once.
        """
        if not backups:
            return self._chains.get(alias)
        route = self._route_by_alias.get(alias)
        return None if route is None else _chain(self._plans, route, backups)


@attrs.frozen(kw_only=True)
class ChainPlan:
    """A request's ordered chain of targets and the aliases or targets left out of it."""

    targets: tuple[PoolPlan, ...]
    #: (alias, position it would have had, why it was left out) per alias or target left out.
    left_out: tuple[tuple[str, int, str], ...]
    #: The route's :attr:`Route.prefer_wait_us_max`.
    prefer_wait_us_max: int = 0


def _chain(
    plans: Mapping[str, tuple[PoolPlan, ...]], route: Route, backups: tuple[str, ...]
) -> ChainPlan:
    targets: list[PoolPlan] = []
    left_out: list[tuple[str, int, str]] = []
    seen: set[str] = set()
    for alias in (route.alias, *backups, *route.fallback):
        alias_plans = plans.get(alias)
        if alias_plans is None:
            left_out.append((alias, len(targets), "unknown_route"))
            continue
        for plan in alias_plans:
            if plan.path in seen:
                left_out.append((alias, len(targets), "duplicate_target"))
                continue
            seen.add(plan.path)
            targets.append(plan)
    return ChainPlan(
        targets=tuple(targets),
        left_out=tuple(left_out),
        prefer_wait_us_max=route.prefer_wait_us_max,
    )


def _plan(
    route: Route, creds: Mapping[str, CredentialSpec], models: Mapping[str, ModelSpec]
) -> tuple[PoolPlan, ...]:
    plans = []
    for index, target in enumerate(route.chain):
        total = 0
        cumulative = []
        for member in target.members:
            total += member.weight
            cumulative.append(total)
        path = f"routes.{toml_key(route.alias)}.chain[{index}]"
        plans.append(
            PoolPlan(
                alias=route.alias,
                path=path,
                members=target.members,
                strategy=target.strategy,
                ranked=target.strategy in RANKED,
                entries=tuple(
                    PoolMember(
                        credential=m.credential,
                        model=m.model,
                        pair_stream=pair_stream(m.credential, m.model),
                        cred_stream=credential_stream(m.credential),
                        owner=creds[m.credential].owner,
                        streaming=models[m.model].streaming,
                        context_window_tokens=models[m.model].context_window_tokens,
                        prefill=models[m.model].prefill,
                    )
                    for m in target.members
                ),
                cumulative_weights=tuple(cumulative),
                prices=tuple(
                    (
                        models[m.model].input_micros_per_mtok,
                        models[m.model].output_micros_per_mtok * models[m.model].max_output_tokens,
                    )
                    for m in target.members
                ),
            )
        )
    return tuple(plans)


def _check_int(path: str, value: object, low: int, high: int) -> None:
    if type(value) is not int:
        raise PolicyError(path, f"must be an integer, got {value!r}")
    if not low <= value <= high:
        raise PolicyError(path, f"must be in {low}..{high}, got {value}")


def _check_bool(path: str, value: object) -> None:
    if type(value) is not bool:
        raise PolicyError(path, f"must be true or false, got {value!r}")


def _check_id(
    path: str, value: object, *, colon_ok: bool = True, length_max: int = ID_LENGTH_MAX
) -> None:
    if type(value) is not str or not value:
        raise PolicyError(path, f"must be a non-empty string, got {value!r}")
    if len(value) > length_max:
        raise PolicyError(path, f"is longer than {length_max} characters")
    if stream_id_problem(value) is not None:
        raise PolicyError(path, "must be printable with no spaces")
    if not colon_ok and ":" in value:
        raise PolicyError(path, "must not contain ':' (it separates stream id parts)")


def _validate_credentials(specs: tuple[CredentialSpec, ...]) -> dict[str, CredentialSpec]:
    by_id: dict[str, CredentialSpec] = {}
    for index, spec in enumerate(specs):
        _check_id(
            f"credentials[{index}].id",
            spec.id,
            colon_ok=False,
            length_max=CREDENTIAL_ID_LENGTH_MAX,
        )
        path = f"credentials.{toml_key(spec.id)}"
        if spec.id in by_id:
            raise PolicyError(path, "is defined twice")
        _check_id(f"{path}.provider", spec.provider)
        _check_bool(f"{path}.account_wide_quota", spec.account_wide_quota)
        if spec.owner is not None:
            _check_id(f"{path}.owner", spec.owner)
        by_id[spec.id] = spec
    return by_id


def _validate_models(specs: tuple[ModelSpec, ...]) -> dict[str, ModelSpec]:
    by_id: dict[str, ModelSpec] = {}
    for index, spec in enumerate(specs):
        _check_id(f"models[{index}].id", spec.id, length_max=MODEL_NAME_LENGTH_MAX)
        path = f"models.{toml_key(spec.id)}"
        if spec.id in by_id:
            raise PolicyError(path, "is defined twice")
        _check_int(f"{path}.context_window_tokens", spec.context_window_tokens, 1, 1 << 40)
        _check_bool(f"{path}.streaming", spec.streaming)
        _check_bool(f"{path}.prefill", spec.prefill)
        _check_int(f"{path}.input_micros_per_mtok", spec.input_micros_per_mtok, 0, PRICE_MAX)
        _check_int(f"{path}.output_micros_per_mtok", spec.output_micros_per_mtok, 0, PRICE_MAX)
        _check_int(f"{path}.max_output_tokens", spec.max_output_tokens, 1, 1 << 40)
        by_id[spec.id] = spec
    return by_id


def _validate_routes(
    routes: tuple[Route, ...],
    creds: Mapping[str, CredentialSpec],
    models: Mapping[str, ModelSpec],
) -> dict[str, Route]:
    if len(routes) > ROUTES_MAX:
        raise PolicyError("routes", f"has {len(routes)} routes, more than {ROUTES_MAX}")
    by_alias: dict[str, Route] = {}
    for index, route in enumerate(routes):
        _check_id(f"routes[{index}].alias", route.alias)
        path = f"routes.{toml_key(route.alias)}"
        if route.alias in by_alias:
            raise PolicyError(path, "is defined twice")
        by_alias[route.alias] = route
        if not route.chain:
            raise PolicyError(f"{path}.chain", "is empty; a route needs at least one target")
        if len(route.chain) > CHAIN_TARGETS_MAX:
            raise PolicyError(f"{path}.chain", f"has more than {CHAIN_TARGETS_MAX} targets")
        for t_index, target in enumerate(route.chain):
            _validate_target(f"{path}.chain[{t_index}]", target, creds, models)
        if len(route.fallback) > FALLBACKS_MAX:
            raise PolicyError(f"{path}.fallback", f"has more than {FALLBACKS_MAX} aliases")
        _check_int(f"{path}.prefer_wait_us_max", route.prefer_wait_us_max, 0, WAIT_TOTAL_US_MAX)
    for route in routes:
        path = f"routes.{toml_key(route.alias)}.fallback"
        seen: set[str] = set()
        for f_index, alias in enumerate(route.fallback):
            if alias not in by_alias:
                raise PolicyError(f"{path}[{f_index}]", f"names unknown route {alias!r}")
            if alias in seen:
                raise PolicyError(f"{path}[{f_index}]", f"lists {alias!r} twice")
            seen.add(alias)
    for route in routes:
        _reject_cycle(route.alias, by_alias)
    return by_alias


def _reject_cycle(start: str, by_alias: Mapping[str, Route]) -> None:
    """Reject a fallback graph that leads back to ``start`` (a cycle is a misconfiguration)."""
    stack: list[tuple[str, tuple[str, ...]]] = [(start, (start,))]
    done: set[str] = set()
    while stack:
        alias, trail = stack.pop()
        for f_index, nxt in enumerate(by_alias[alias].fallback):
            if nxt == start:
                cycle = " -> ".join((*trail, nxt))
                path = f"routes.{toml_key(alias)}.fallback[{f_index}]"
                raise PolicyError(path, f"closes a fallback cycle {cycle}")
            if nxt not in done:
                done.add(nxt)
                stack.append((nxt, (*trail, nxt)))


def _validate_target(
    path: str,
    target: Target,
    creds: Mapping[str, CredentialSpec],
    models: Mapping[str, ModelSpec],
) -> None:
    if not target.members:
        raise PolicyError(f"{path}.members", "is empty; a target needs at least one member")
    if len(target.members) > POOL_MEMBERS_MAX:
        raise PolicyError(f"{path}.members", f"has more than {POOL_MEMBERS_MAX} members")
    if not isinstance(target.strategy, Strategy):
        raise PolicyError(f"{path}.strategy", f"is not one of {[s.value for s in Strategy]}")
    seen: set[tuple[str, str]] = set()
    for m_index, member in enumerate(target.members):
        m_path = f"{path}.members[{m_index}]"
        if member.credential not in creds:
            raise PolicyError(
                f"{m_path}.credential", f"names unknown credential {member.credential!r}"
            )
        if member.model not in models:
            raise PolicyError(f"{m_path}.model", f"names unknown model {member.model!r}")
        key = (member.credential, member.model)
        if key in seen:
            raise PolicyError(m_path, f"lists {member.credential} x {member.model} twice")
        seen.add(key)
        _check_int(f"{m_path}.weight", member.weight, 1, WEIGHT_MAX)


def _validate_failures(rules: tuple[FailureRule, ...]) -> dict[FailureClass, FailureRule]:
    table = dict(DEFAULT_FAILURE_TABLE)
    overridden: set[FailureClass] = set()
    for index, rule in enumerate(rules):
        if not isinstance(rule.failure, FailureClass):
            raise PolicyError(f"failures[{index}]", f"names unknown failure class {rule.failure!r}")
        path = f"failures.{rule.failure.value}"
        if rule.failure in overridden:
            raise PolicyError(path, "is defined twice")
        overridden.add(rule.failure)
        if not isinstance(rule.scope, FailureScope):
            raise PolicyError(f"{path}.scope", f"is not one of {[m.value for m in FailureScope]}")
        if not isinstance(rule.action, FailureAction):
            raise PolicyError(f"{path}.action", f"is not one of {[m.value for m in FailureAction]}")
        _check_bool(f"{path}.fallback", rule.fallback)
        _check_int(f"{path}.base_us", rule.base_us, 0, COOLDOWN_US_MAX)
        _check_int(f"{path}.max_us", rule.max_us, 0, COOLDOWN_US_MAX)
        _check_int(f"{path}.factor", rule.factor, 1, FACTOR_MAX)
        _check_int(f"{path}.retry_same", rule.retry_same, 0, RETRY_SAME_MAX)
        _check_int(f"{path}.allowed_fails", rule.allowed_fails, 0, ALLOWED_FAILS_MAX)
        if rule.action is not FailureAction.NOTHING and rule.base_us == 0:
            raise PolicyError(f"{path}.base_us", f"must be > 0 for action {rule.action.value!r}")
        if rule.base_us > rule.max_us and rule.action is FailureAction.COOLDOWN:
            raise PolicyError(f"{path}.max_us", f"is below base_us ({rule.base_us})")
        table[rule.failure] = rule
    return table


def _validate_hints(hints: HintClamp) -> None:
    # A hint clamped to 0 would end the cooldown the instant it starts (A5).
    _check_int("hints.min_us", hints.min_us, 1, COOLDOWN_US_MAX)
    _check_int("hints.max_us", hints.max_us, 0, COOLDOWN_US_MAX)
    if hints.min_us > hints.max_us:
        raise PolicyError("hints.max_us", f"is below hints.min_us ({hints.min_us})")


def _validate_limits(limits: RequestLimits) -> None:
    _check_int("limits.attempts_max", limits.attempts_max, 1, ATTEMPTS_MAX)
    _check_int("limits.wait_total_us_max", limits.wait_total_us_max, 0, WAIT_TOTAL_US_MAX)
    if limits.deadline_us is not None:
        _check_int("limits.deadline_us", limits.deadline_us, 1, DEADLINE_US_MAX)
    _check_int("limits.probe_timeout_us", limits.probe_timeout_us, 1, PROBE_TIMEOUT_US_MAX)
    _check_int("limits.slot_lease_us", limits.slot_lease_us, 1, SLOT_LEASE_US_MAX)


def _capacities(
    credentials: tuple[CredentialSpec, ...], routes: tuple[Route, ...]
) -> Mapping[str, Capacity]:
    """Each credential's configured limits (validated: a pair's rpm/tpm agree wherever named)."""
    rates: dict[str, dict[str, tuple[int | None, int | None]]] = {}
    named_at: dict[str, str] = {}
    for route in routes:
        for t_index, target in enumerate(route.chain):
            for m_index, member in enumerate(target.members):
                path = f"routes.{toml_key(route.alias)}.chain[{t_index}].members[{m_index}]"
                if member.rpm is not None:
                    _check_int(f"{path}.rpm", member.rpm, 1, RPM_MAX)
                if member.tpm is not None:
                    _check_int(f"{path}.tpm", member.tpm, 1, TPM_MAX)
                limits = (member.rpm, member.tpm)
                if limits == (None, None):
                    continue  # a member naming no limit shares the pair's
                pair = pair_stream(member.credential, member.model)
                known = rates.setdefault(member.credential, {})
                if known.setdefault(pair, limits) != limits:
                    raise PolicyError(
                        path, f"rpm/tpm differ from {named_at[pair]}'s (one pair, one limit)"
                    )
                named_at.setdefault(pair, path)
    capacities: dict[str, Capacity] = {}
    for spec in credentials:
        if spec.max_in_flight is not None:
            path = f"credentials.{toml_key(spec.id)}.max_in_flight"
            _check_int(path, spec.max_in_flight, 1, IN_FLIGHT_MAX)
        pair_rates = rates.get(spec.id, {})
        if spec.max_in_flight is not None or pair_rates:
            capacities[spec.id] = Capacity(max_in_flight=spec.max_in_flight, rates=pair_rates)
    return capacities  # a plain dict: policies are pickled with the states that index them
