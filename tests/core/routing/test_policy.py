"""Policy validation: every invalid policy is rejected with the TOML path of the offending value."""

from __future__ import annotations

from collections.abc import Callable

import attrs
import pytest

from routeledger.core.errors import UsageError
from routeledger.core.events import stream_id_problem
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
from routeledger.core.routing.policy import CHAIN_TARGETS_MAX, FALLBACKS_MAX, ROUTES_MAX, toml_key
from routeledger.core.streams import CREDENTIAL_ID_LENGTH_MAX, MODEL_NAME_LENGTH_MAX

from .support import policy, target

CREDS = (CredentialSpec(id="a", provider="openai"), CredentialSpec(id="b", provider="openai"))
MODELS = (ModelSpec(id="m1"), ModelSpec(id="gpt-4.1"))


def _route(alias: str = "chat", *targets: Target, fallback: tuple[str, ...] = ()) -> Route:
    return Route(alias=alias, chain=targets or (target("a/m1"),), fallback=fallback)


def _build(**changes: object) -> Policy:
    base: dict[str, object] = {"credentials": CREDS, "models": MODELS, "routes": (_route(),)}
    base.update(changes)
    return Policy(**base)  # type: ignore[arg-type]


def _rule(**changes: object) -> FailureRule:
    return attrs.evolve(DEFAULT_FAILURE_TABLE[FailureClass.RATE_LIMITED], **changes)  # type: ignore[arg-type]


INVALID: list[tuple[str, Callable[[], Policy], str]] = [
    (
        "unknown credential",
        lambda: _build(
            routes=(
                _route(
                    "chat", target("a/m1"), Target(members=(Member(credential="zz", model="m1"),))
                ),
            )
        ),
        "routes.chat.chain[1].members[0].credential",
    ),
    (
        "unknown model",
        lambda: _build(
            routes=(_route("chat", Target(members=(Member(credential="a", model="x"),))),)
        ),
        "routes.chat.chain[0].members[0].model",
    ),
    (
        "member listed twice",
        lambda: _build(routes=(_route("chat", target("a/m1", "b/m1", "a/m1")),)),
        "routes.chat.chain[0].members[2]",
    ),
    (
        "weight zero",
        lambda: _build(
            routes=(
                _route("chat", Target(members=(Member(credential="a", model="m1", weight=0),))),
            )
        ),
        "routes.chat.chain[0].members[0].weight",
    ),
    (
        "empty chain",
        lambda: _build(routes=(Route(alias="chat", chain=()),)),
        "routes.chat.chain",
    ),
    (
        "too many targets",
        lambda: _build(routes=(_route("chat", *[target("a/m1")] * (CHAIN_TARGETS_MAX + 1)),)),
        "routes.chat.chain",
    ),
    (
        "empty pool",
        lambda: _build(routes=(_route("chat", Target(members=())),)),
        "routes.chat.chain[0].members",
    ),
    (
        "unknown strategy",
        lambda: _build(
            routes=(
                _route(
                    "chat",
                    Target(members=(Member(credential="a", model="m1"),), strategy="x"),  # type: ignore[arg-type]
                ),
            )
        ),
        "routes.chat.chain[0].strategy",
    ),
    (
        "duplicate route",
        lambda: _build(routes=(_route("chat"), _route("chat"))),
        "routes.chat",
    ),
    (
        "route alias empty",
        lambda: _build(routes=(_route(""),)),
        "routes[0].alias",
    ),
    (
        "unknown fallback alias",
        lambda: _build(routes=(_route("chat", fallback=("nope",)),)),
        "routes.chat.fallback[0]",
    ),
    (
        "fallback listed twice",
        lambda: _build(routes=(_route("chat", fallback=("b", "b")), _route("b"))),
        "routes.chat.fallback[1]",
    ),
    (
        "self fallback is a cycle",
        lambda: _build(routes=(_route("chat", fallback=("chat",)),)),
        "routes.chat.fallback[0]",
    ),
    (
        "two-route cycle",
        lambda: _build(routes=(_route("chat", fallback=("b",)), _route("b", fallback=("chat",)))),
        "routes.b.fallback[0]",
    ),
    (
        "too many fallbacks",
        lambda: _build(routes=(_route("chat", fallback=("x",) * (FALLBACKS_MAX + 1)),)),
        "routes.chat.fallback",
    ),
    (
        "credential id with colon",
        lambda: _build(credentials=(CredentialSpec(id="a:b", provider="p"),)),
        "credentials[0].id",
    ),
    (
        "credential twice",
        lambda: _build(credentials=(*CREDS, CREDS[0])),
        "credentials.a",
    ),
    (
        "empty provider",
        lambda: _build(credentials=(CredentialSpec(id="a", provider=""),)),
        "credentials.a.provider",
    ),
    (
        "owner with space",
        lambda: _build(credentials=(CredentialSpec(id="a", provider="p", owner="x y"),)),
        "credentials.a.owner",
    ),
    (
        "model twice",
        lambda: _build(models=(*MODELS, MODELS[1])),
        'models."gpt-4.1"',
    ),
    (
        "model window zero",
        lambda: _build(models=(ModelSpec(id="m1", context_window_tokens=0),)),
        "models.m1.context_window_tokens",
    ),
    (
        "overlong model id",
        lambda: _build(models=(ModelSpec(id="m" * 129),)),
        "models[0].id",
    ),
    (
        "negative cooldown",
        lambda: _build(failures=(_rule(base_us=-1),)),
        "failures.rate_limited.base_us",
    ),
    (
        "cooldown of zero cannot work",
        lambda: _build(failures=(_rule(base_us=0),)),
        "failures.rate_limited.base_us",
    ),
    (
        "max below base",
        lambda: _build(failures=(_rule(base_us=10, max_us=5),)),
        "failures.rate_limited.max_us",
    ),
    (
        "factor zero",
        lambda: _build(failures=(_rule(factor=0),)),
        "failures.rate_limited.factor",
    ),
    (
        "float duration",
        lambda: _build(failures=(_rule(max_us=1.5),)),
        "failures.rate_limited.max_us",
    ),
    (
        "retry storm",
        lambda: _build(failures=(_rule(retry_same=11),)),
        "failures.rate_limited.retry_same",
    ),
    (
        "failure row twice",
        lambda: _build(failures=(_rule(), _rule())),
        "failures.rate_limited",
    ),
    (
        "unknown failure class",
        lambda: _build(failures=(_rule(failure="boom"),)),
        "failures[0]",
    ),
    (
        "scope not an enum",
        lambda: _build(failures=(_rule(scope="pair"),)),
        "failures.rate_limited.scope",
    ),
    (
        "action not an enum",
        lambda: _build(failures=(_rule(action="cooldown"),)),
        "failures.rate_limited.action",
    ),
    (
        "fallback not a bool",
        lambda: _build(failures=(_rule(fallback=1),)),
        "failures.rate_limited.fallback",
    ),
    (
        "account-wide flag not a bool",
        lambda: _build(
            credentials=(CredentialSpec(id="a", provider="p", account_wide_quota="no"),)
        ),
        "credentials.a.account_wide_quota",
    ),
    (
        "streaming not a bool",
        lambda: _build(models=(ModelSpec(id="m1", streaming=None),)),
        "models.m1.streaming",
    ),
    (
        "prefill not a bool",
        lambda: _build(models=(ModelSpec(id="m1", prefill=0),)),
        "models.m1.prefill",
    ),
    (
        "hint min zero",
        lambda: _build(hints=HintClamp(min_us=0, max_us=5)),
        "hints.min_us",
    ),
    (
        "hint min above max",
        lambda: _build(hints=HintClamp(min_us=10, max_us=5)),
        "hints.max_us",
    ),
    (
        "zero attempts",
        lambda: _build(limits=RequestLimits(attempts_max=0)),
        "limits.attempts_max",
    ),
    (
        "negative wait",
        lambda: _build(limits=RequestLimits(wait_total_us_max=-1)),
        "limits.wait_total_us_max",
    ),
    (
        "zero deadline",
        lambda: _build(limits=RequestLimits(deadline_us=0)),
        "limits.deadline_us",
    ),
    (
        "zero probe timeout",
        lambda: _build(limits=RequestLimits(probe_timeout_us=0)),
        "limits.probe_timeout_us",
    ),
    (
        "boolean is not an integer",
        lambda: _build(limits=RequestLimits(attempts_max=True)),
        "limits.attempts_max",
    ),
]


@pytest.mark.parametrize(("name", "build", "path"), INVALID, ids=[row[0] for row in INVALID])
def test_invalid_policy_names_its_path(name: str, build: Callable[[], Policy], path: str) -> None:
    """Policy: an invalid policy raises PolicyError (a UsageError) naming the TOML path."""
    with pytest.raises(PolicyError) as caught:
        build()
    assert caught.value.path == path, name
    assert str(caught.value).startswith(f"{path}: ")
    assert isinstance(caught.value, UsageError)


def test_too_many_routes_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    """Policy: the number of routes is bounded by ROUTES_MAX."""
    monkeypatch.setattr("routeledger.core.routing.policy.ROUTES_MAX", 1)
    with pytest.raises(PolicyError) as caught:
        _build(routes=(_route("a"), _route("b")))
    assert caught.value.path == "routes"
    assert ROUTES_MAX > 1


def test_too_many_members_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    """Policy: a pool is bounded by POOL_MEMBERS_MAX."""
    monkeypatch.setattr("routeledger.core.routing.policy.POOL_MEMBERS_MAX", 1)
    with pytest.raises(PolicyError) as caught:
        _build(routes=(_route("chat", target("a/m1", "b/m1")),))
    assert caught.value.path == "routes.chat.chain[0].members"


def test_credential_and_model_limits_keep_every_pair_stream_storable() -> None:
    """Policy: ids over the credential or model limit are rejected; the longest legal pair fits."""
    longest = "c" * CREDENTIAL_ID_LENGTH_MAX, "m" * MODEL_NAME_LENGTH_MAX
    for credential, model, path in (
        ("c" * (CREDENTIAL_ID_LENGTH_MAX + 1), longest[1], "credentials[0].id"),
        (longest[0], "m" * (MODEL_NAME_LENGTH_MAX + 1), "models[0].id"),
    ):
        with pytest.raises(PolicyError) as caught:
            _one_pair_policy(credential, model)
        assert caught.value.path == path
    policy = _one_pair_policy(*longest)
    (entry,) = policy.pools()[0].entries
    assert stream_id_problem(entry.pair_stream) is None


def _one_pair_policy(credential: str, model: str) -> Policy:
    route = Route(
        alias="chat", chain=(Target(members=(Member(credential=credential, model=model),)),)
    )
    return Policy(
        credentials=(CredentialSpec(id=credential, provider="p"),),
        models=(ModelSpec(id=model),),
        routes=(route,),
    )


def test_valid_policy_exposes_total_failure_table() -> None:
    """A1: every failure class has a rule; overrides replace exactly their row."""
    override = _rule(base_us=7, max_us=70)
    pol = _build(failures=(override,))
    assert {cls for cls in FailureClass if pol.rule(cls)} == set(FailureClass)
    assert pol.rule(FailureClass.RATE_LIMITED) == override
    assert pol.rule(FailureClass.AUTH_ERROR) == DEFAULT_FAILURE_TABLE[FailureClass.AUTH_ERROR]
    assert pol.credential("a").provider == "openai"
    assert pol.model("m1").streaming
    assert pol.route("nope") is None


def test_suspension_rule_may_have_max_below_base() -> None:
    """Policy: max_us bounds only cooldowns; a suspension's period is base_us."""
    rule = FailureRule(
        failure=FailureClass.MODEL_NOT_SUPPORTED,
        scope=FailureScope.PAIR,
        action=FailureAction.SUSPEND,
        base_us=9,
    )
    assert _build(failures=(rule,)).rule(FailureClass.MODEL_NOT_SUPPORTED).base_us == 9


def test_toml_key_quotes_non_bare_keys() -> None:
    """Policy paths: bare TOML keys stay bare, others are quoted and escaped."""
    assert toml_key("chat-1_x") == "chat-1_x"
    assert toml_key("gpt-4.1") == '"gpt-4.1"'
    assert toml_key('a"b\\') == '"a\\"b\\\\"'


def test_chain_orders_route_backups_then_fallback_once_each() -> None:
    """I3: the chain is route, backups, then the route's fallback; each target once, unknowns left out."""
    pol = policy(
        {"chat": [target("a/m")], "b1": [target("b/m")], "g": [target("c/m")]},
        fallback={"chat": ["g"]},
    )
    chain = pol.chain("chat", ("nope", "b1", "g", "chat"))
    assert chain is not None
    assert [t.path for t in chain.targets] == [
        "routes.chat.chain[0]",
        "routes.b1.chain[0]",
        "routes.g.chain[0]",
    ]
    assert chain.left_out == (
        ("nope", 1, "unknown_route"),
        ("chat", 3, "duplicate_target"),
        ("g", 3, "duplicate_target"),
    )
    assert pol.chain("nope") is None
    assert pol.chain("nope", ("chat",)) is None


def test_strategies_are_accepted() -> None:
    """Policy: every strategy value is valid on a target."""
    for strategy in Strategy:
        pol = policy({"chat": [target("a/m", "b/m", strategy=strategy)]})
        assert pol.chain("chat") is not None


def test_fallback_diamond_is_not_a_cycle() -> None:
    """Policy: two routes sharing a fallback (a diamond) is valid; only a path back to the start is a cycle."""
    pol = policy(
        {"a": [target("k/m")], "b": [target("k/m")], "c": [target("k/m")], "d": [target("k/m")]},
        fallback={"a": ["b", "c"], "b": ["d"], "c": ["d"]},
    )
    chain = pol.chain("a")
    assert chain is not None
    assert [t.path for t in chain.targets] == [
        "routes.a.chain[0]",
        "routes.b.chain[0]",
        "routes.c.chain[0]",
    ]
