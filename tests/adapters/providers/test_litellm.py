"""LiteLLM-style validating gateways (I0: invalid model name is the pair, never auth; I1)."""

from __future__ import annotations

import pytest

from routeledger.adapters.providers.observe import (
    DEFAULT_CLASSIFIER,
    MessageRule,
    Provider,
    observe_response,
)
from routeledger.core.routing.failures import FailureClass

from ._helpers import NOW_US, expect, response

F = FailureClass
URL = "https://llm.example.test/chat/completions"


def _err(
    message: str, type_: str = "invalid_request_error", code: str = "400"
) -> dict[str, object]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


CASES = [
    (
        "invalid-model-name-i0",
        400,
        {},
        _err(
            "litellm.BadRequestError: Invalid model name passed in model=claude-sonnet-4-5-20250929. Call `/v1/models` to view available models for your key."
        ),
        F.MODEL_NOT_FOUND,
    ),
    (
        "team-not-allowed-401-is-pair",
        401,
        {"x-litellm-version": "1.74.0"},
        _err(
            "Authentication Error, team not allowed to access model. This team can only access models=['gpt-4o']. Tried to access claude-3-opus",
            "auth_error",
            "401",
        ),
        F.MODEL_NOT_SUPPORTED,
    ),
    (
        "invalid-proxy-token",
        401,
        {"x-litellm-version": "1.74.0"},
        _err(
            "Authentication Error, Invalid proxy server token passed. valid_token=None.",
            "auth_error",
            "401",
        ),
        F.AUTH_ERROR,
    ),
    (
        "budget-exceeded",
        400,
        {},
        _err(
            "litellm.BudgetExceededError: Budget has been exceeded! Current cost: 10.02, Max budget: 10.0",
            "budget_exceeded",
        ),
        F.QUOTA_EXHAUSTED,
    ),
    (
        "model-not-supported-422",
        422,
        {},
        {
            "detail": {
                "error": "litellm.UnsupportedParamsError: model not supported by this deployment"
            }
        },
        F.MODEL_NOT_SUPPORTED,
    ),
    (
        "fastapi-detail-string",
        400,
        {},
        {"detail": "Unsupported model: gpt-x"},
        F.MODEL_NOT_SUPPORTED,
    ),
    (
        "router-rate-limit",
        429,
        {},
        _err(
            "litellm.RateLimitError: No deployments available for selected model, Try again in 60 seconds.",
            "None",
            "429",
        ),
        F.RATE_LIMITED,
    ),
    (
        "error-as-string",
        500,
        {},
        {"error": "litellm.InternalServerError: upstream failed", "type": "server"},
        F.PROVIDER_UNAVAILABLE,
    ),
]


@pytest.mark.parametrize(
    ("status", "headers", "body", "failure"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_litellm_error_table(
    status: int, headers: dict[str, str], body: object, failure: FailureClass
) -> None:
    """Gateway errors map to the pair-scoped class when they are about a model, never auth (I0, I1, I4)."""
    observation = observe_response(response(status, body, headers=headers, url=URL), now_us=NOW_US)
    expect(observation, failure, status=status)


def test_invalid_model_name_is_never_auth() -> None:
    """I0's 400 'Invalid model name' stays pair-scoped even when the caller says it came from LiteLLM."""
    body = _err("Invalid model name passed in model=x")
    for provider in (None, Provider.LITELLM, Provider.OPENAI):
        observation = observe_response(
            response(400, body, url=URL), now_us=NOW_US, provider=provider
        )
        assert observation.failure is F.MODEL_NOT_FOUND


def test_classifier_extended_by_configuration() -> None:
    """Extra configured rows win over the defaults and leave the default classifier unchanged."""
    row = MessageRule(
        phrases=("deployment paused",),
        failure=F.PROVIDER_UNAVAILABLE,
        providers=frozenset({Provider.LITELLM}),
        statuses=frozenset({400}),
    )
    custom = DEFAULT_CLASSIFIER.extended([row])
    body = _err("litellm.BadRequestError: deployment paused by operator")
    observed = observe_response(response(400, body, url=URL), now_us=NOW_US, classifier=custom)
    assert observed.failure is F.PROVIDER_UNAVAILABLE
    assert (
        observe_response(response(400, body, url=URL), now_us=NOW_US).failure is F.INVALID_REQUEST
    )
    other_status = observe_response(response(422, body, url=URL), now_us=NOW_US, classifier=custom)
    assert other_status.failure is F.INVALID_REQUEST
    assert custom.rules[0] == row and len(custom.rules) == len(DEFAULT_CLASSIFIER.rules) + 1
