"""Google Gemini responses: status strings, body retryDelay, safety blocks (I4, A3)."""

from __future__ import annotations

import pytest

from routeledger.adapters.providers.observe import Provider, observe_response
from routeledger.core.routing.commands import Succeeded
from routeledger.core.routing.failures import FailureClass

from ._helpers import NOW_US, expect, response

F = FailureClass
S = 1_000_000
URL = "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"


def _err(
    code: int, status: str, message: str, details: list[object] | None = None
) -> dict[str, object]:
    error: dict[str, object] = {"code": code, "message": message, "status": status}
    if details is not None:
        error["details"] = details
    return {"error": error}


_RETRY = [
    {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "13s"},
]

CASES = [
    (
        "per-minute-quota-is-rate-limit",
        429,
        _err(
            429,
            "RESOURCE_EXHAUSTED",
            "You exceeded your current quota, please check your plan and billing details. Quota exceeded for metric: generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: 15, model: gemini-2.5-flash. quotaId: GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
            _RETRY,
        ),
        F.RATE_LIMITED,
        13 * S,
    ),
    (
        "daily-quota",
        429,
        _err(
            429,
            "RESOURCE_EXHAUSTED",
            "Quota exceeded for quota metric 'Generate Content API requests per day'",
            [{"retryDelay": "1.5s"}],
        ),
        F.QUOTA_EXHAUSTED,
        1_500_000,
    ),
    (
        "bare-resource-exhausted",
        429,
        _err(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
        F.QUOTA_EXHAUSTED,
        None,
    ),
    (
        "api-key-invalid-400",
        400,
        _err(
            400,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
            [{"reason": "API_KEY_INVALID"}],
        ),
        F.AUTH_ERROR,
        None,
    ),
    (
        "permission-denied",
        403,
        _err(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers."),
        F.AUTH_ERROR,
        None,
    ),
    (
        "model-not-found",
        404,
        _err(
            404,
            "NOT_FOUND",
            "models/gemini-3-flash-preview is not found for API version v1beta, or is not supported for generateContent.",
        ),
        F.MODEL_NOT_FOUND,
        None,
    ),
    (
        "input-too-long",
        400,
        _err(
            400,
            "INVALID_ARGUMENT",
            "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
        ),
        F.CONTEXT_LENGTH_EXCEEDED,
        None,
    ),
    (
        "invalid-argument",
        400,
        _err(400, "INVALID_ARGUMENT", 'Invalid JSON payload received. Unknown name "foo".'),
        F.INVALID_REQUEST,
        None,
    ),
    (
        "unavailable",
        503,
        _err(503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
        F.PROVIDER_UNAVAILABLE,
        None,
    ),
    (
        "internal",
        500,
        _err(500, "INTERNAL", "An internal error has occurred."),
        F.PROVIDER_UNAVAILABLE,
        None,
    ),
    (
        "list-wrapped",
        429,
        [
            _err(
                429,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded for metric x per minute",
                [{"retryDelay": "20ms"}],
            )
        ],
        F.RATE_LIMITED,
        20_000,
    ),
    (
        "bad-retry-delay",
        429,
        _err(429, "RESOURCE_EXHAUSTED", "quota", [{"retryDelay": "soon"}]),
        F.QUOTA_EXHAUSTED,
        None,
    ),
]


@pytest.mark.parametrize(
    ("status", "body", "failure", "hint_us"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_gemini_error_table(
    status: int, body: object, failure: FailureClass, hint_us: int | None
) -> None:
    """Each real-looking Gemini error maps to its class, keeps its status and reads retryDelay (I4, A3)."""
    observation = observe_response(response(status, body, url=URL), now_us=NOW_US)
    expect(observation, failure, status=status, hint_us=hint_us)
    assert observation.provider is Provider.GEMINI


def test_gemini_success_and_safety_block() -> None:
    """A candidate is a success with usageMetadata; a SAFETY finish or a blocked prompt is CONTENT_FILTERED."""
    body = {
        "candidates": [
            {"content": {"parts": [{"text": "Hi"}], "role": "model"}, "finishReason": "STOP"}
        ],
        "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 2, "totalTokenCount": 11},
        "modelVersion": "gemini-2.5-flash",
    }
    observation = observe_response(
        response(200, body, url=URL), now_us=NOW_US, provider=Provider.GEMINI
    )
    assert observation.outcome == Succeeded(input_tokens=9, output_tokens=2)
    assert observation.model == "gemini-2.5-flash"
    blocked = {"candidates": [{"finishReason": "SAFETY", "safetyRatings": []}]}
    expect(
        observe_response(response(200, blocked, url=URL), now_us=NOW_US),
        F.CONTENT_FILTERED,
        status=200,
    )
    prompt = {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}
    expect(
        observe_response(response(200, prompt, url=URL), now_us=NOW_US),
        F.CONTENT_FILTERED,
        status=200,
    )
