"""I0 through the engine: routing only uses what the credential lifecycle says is usable."""

from __future__ import annotations

from routeledger.adapters.engine.config import parse_config
from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.engine.results import Degradation, Exhausted, Served
from routeledger.adapters.testing.clock import FakeClock, counter_ids
from routeledger.core.credentials.events import CredentialMetadata
from routeledger.core.credentials.lifecycle import CredentialState
from routeledger.core.routing import FailureClass

CONFIG = """
[credentials.gw]
provider = "litellm"
[models."claude-sonnet-4-5"]
[models."claude-3-haiku-20240307"]
[routes.summary]
[[routes.summary.chain]]
members = [
  { credential = "gw", model = "claude-3-haiku-20240307" },
  { credential = "gw", model = "claude-sonnet-4-5" },
]
"""

META = CredentialMetadata(
    provider="litellm",
    base_url="https://llm.example.test",
    region=None,
    expires_at_us=None,
    validates_model_names=True,
)


def engine() -> Engine:
    return Engine.open(
        "memory://",
        parse_config(CONFIG),
        clock=FakeClock(),
        ids=counter_ids(),
        track_credentials=True,
    )


def test_a_half_provisioned_key_is_never_routed_and_degrades() -> None:
    """I0: key stored but models unresolved -> the request degrades instead of sending a default name."""
    gw = engine()
    gw.provision_key("gw", META)
    with gw.request(route="summary", caller_scope="u") as req:
        assert list(req.sync_attempts()) == []
    assert isinstance(req.result, Degradation)


def test_only_resolved_model_names_are_routed() -> None:
    """I0: the dated default (first in the pool) is skipped; the resolved model serves."""
    gw = engine()
    gw.provision_key("gw", META)
    gw.record_models("gw", frozenset({"claude-sonnet-4-5"}))
    with gw.request(route="summary", caller_scope="u") as req:
        models = []
        for attempt in req.sync_attempts():
            models.append(attempt.upstream_model)
            attempt.succeeded(input_tokens=1, output_tokens=1)
    assert models == ["claude-sonnet-4-5"]
    assert isinstance(req.result, Served)


def test_auth_failure_marks_the_key_but_budget_and_invalid_model_do_not() -> None:
    """I0: a 401 moves the credential to auth_failed; quota and invalid-model failures never do."""
    for failure, expected in [
        (FailureClass.QUOTA_EXHAUSTED, CredentialState.USABLE),
        (FailureClass.MODEL_NOT_FOUND, CredentialState.USABLE),
        (FailureClass.AUTH_ERROR, CredentialState.AUTH_FAILED),
    ]:
        gw = engine()
        gw.provision_key("gw", META)
        gw.record_models("gw", frozenset({"claude-sonnet-4-5"}))
        with gw.request(route="summary", caller_scope="u") as req:
            for attempt in req.sync_attempts():
                attempt.failed(failure, status=401 if failure is FailureClass.AUTH_ERROR else 400)
        assert isinstance(req.result, (Exhausted, Degradation))
        assert gw.state.credentials.credentials["gw"].state is expected, failure
