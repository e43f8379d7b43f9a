"""docs/routing.md is executed: its Python example runs, and its TOML maps onto the same Policy."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

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
    RequestLimits,
    Route,
    Strategy,
    Target,
)

DOC = Path(__file__).parents[3] / "docs" / "routing.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def _from_toml(data: dict[str, Any]) -> Policy:
    """The mapping an adapter applies: keyed tables become ids, enum names become enums."""
    return Policy(
        credentials=tuple(
            CredentialSpec(id=key, **value) for key, value in data["credentials"].items()
        ),
        models=tuple(ModelSpec(id=key, **value) for key, value in data["models"].items()),
        routes=tuple(
            Route(
                alias=alias,
                fallback=tuple(route.get("fallback", ())),
                prefer_wait_us_max=route.get("prefer_wait_us_max", 0),
                chain=tuple(
                    Target(
                        strategy=Strategy(target.get("strategy", "priority")),
                        members=tuple(Member(**m) for m in target["members"]),
                    )
                    for target in route["chain"]
                ),
            )
            for alias, route in data["routes"].items()
        ),
        failures=tuple(
            FailureRule(
                failure=FailureClass(key),
                **{
                    **row,
                    "scope": FailureScope(row["scope"]),
                    "action": FailureAction(row["action"]),
                },
            )
            for key, row in data["failures"].items()
        ),
        hints=HintClamp(**data["hints"]),
        limits=RequestLimits(**data["limits"]),
    )


def test_python_examples_run() -> None:
    """Docs: the policy value and the worked example in docs/routing.md execute and their asserts hold."""
    namespace: dict[str, Any] = {}
    exec("from routeledger.core.routing import *", namespace)
    for block in _blocks("python"):
        exec(block, namespace)
    assert isinstance(namespace["policy"], Policy)


def test_toml_shape_maps_onto_the_python_value() -> None:
    """Docs: the documented TOML shape describes the same policy as the documented Python value."""
    (toml_text,) = _blocks("toml")
    namespace: dict[str, Any] = {}
    exec("from routeledger.core.routing import *", namespace)
    exec(_blocks("python")[1], namespace)
    loaded = _from_toml(tomllib.loads(toml_text))
    documented: Policy = namespace["policy"]
    assert loaded.credentials == documented.credentials
    assert loaded.models == documented.models
    assert loaded.routes == documented.routes
    rate_limited = FailureClass.RATE_LIMITED
    assert loaded.rule(rate_limited) == DEFAULT_FAILURE_TABLE[rate_limited]
