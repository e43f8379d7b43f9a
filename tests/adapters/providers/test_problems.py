"""RFC 9457 problem details and the stream error event (I4, E1)."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from routeledger.adapters.providers.problems import (
    FAILURE_STATUS,
    FAILURE_TITLES,
    PROBLEM_CONTENT_TYPE,
    STANDARD_MEMBERS,
    BudgetRejection,
    DegradedCredential,
    ExhaustionReport,
    FailedAttempt,
    FailureProblem,
    Problem,
    _problem,
    attempt_summary,
    exhaustion_summary,
    problem_type,
    render_budget_rejection,
    render_degraded_credential,
    render_exhaustion,
    render_failure,
    stream_error_chunk,
    stream_error_payload,
)
from routeledger.adapters.providers.scrub import DEFAULT_SCRUBBER, Scrubber
from routeledger.core.errors import UsageError
from routeledger.core.routing.failures import FailureClass

F = FailureClass
S = 1_000_000
KEY = "AIzaSyD-" + "Q7x" * 11

# RFC 3986 URI-reference: no spaces, controls, or characters outside the allowed set.
_URI_REFERENCE = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*$")
_ABSOLUTE_URI = re.compile(
    r"^[A-Za-z][A-Za-z0-9+.\-]*:" + r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*$"
)


def validate_rfc9457(problem: Problem) -> dict[str, Any]:
    """Check the member rules of RFC 9457 section 3 on a rendered problem; return the parsed body."""
    body = json.loads(problem.to_json())
    assert isinstance(body, dict)
    headers = dict(problem.headers)
    assert headers["Content-Type"] == PROBLEM_CONTENT_TYPE
    # type: a URI reference (ours are absolute and dereferenceable in principle)
    assert isinstance(body["type"], str) and _ABSOLUTE_URI.match(body["type"])
    # status: a JSON number, an int equal to the HTTP status actually returned
    assert type(body["status"]) is int and 100 <= body["status"] <= 599
    assert body["status"] == problem.status
    # title and detail: strings; detail a human sentence, not a payload
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    # instance: a URI reference
    assert isinstance(body["instance"], str) and _URI_REFERENCE.match(body["instance"])
    # extension members: names are identifiers (RFC 9457 3.2 recommends [A-Za-z0-9_], 3+ chars)
    for name in set(body) - STANDARD_MEMBERS:
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{2,}", name), name
    if "Retry-After" in headers:
        assert headers["Retry-After"].isdigit()
        assert body["retry_after_s"] == int(headers["Retry-After"])
    return body


ATTEMPTS = (
    FailedAttempt(
        credential_id="google-main",
        upstream_model="google-gla:gemini-3-flash-preview",
        failure=F.MODEL_NOT_FOUND,
        status=404,
        detail="models/gemini-3-flash-preview is not found for API version v1beta",
    ),
    FailedAttempt(
        credential_id="google-backup",
        upstream_model="google-gla:gemini-2.5-flash",
        failure=F.QUOTA_EXHAUSTED,
        status=429,
        detail=f"You exceeded your current quota. url=https://x.test/v1?key={KEY} " + "x" * 400,
    ),
    FailedAttempt(
        credential_id="openai-a",
        upstream_model="gpt-4o",
        failure=F.STREAM_INTERRUPTED,
        status=None,
        detail="peer closed connection",
        billed=True,
    ),
)


def test_exhaustion_problem_shape() -> None:
    """Fallback exhaustion is a 502 problem with ordered failures, Retry-After and nothing secret (I4, E1)."""
    problem = render_exhaustion(
        ExhaustionReport(request_id="req_123", attempts=ATTEMPTS, retry_after_us=12_300_000)
    )
    body = validate_rfc9457(problem)
    assert problem.status == 502
    assert body["type"] == "https://routeledger.dev/problems/fallback-exhausted"
    assert body["instance"] == "req_123" and body["code"] == "FALLBACK_EXHAUSTED"
    assert dict(problem.headers)["Retry-After"] == "13"
    assert [f["upstream_model"] for f in body["failures"]] == [a.upstream_model for a in ATTEMPTS]
    assert [f["failure"] for f in body["failures"]] == [
        "model_not_found",
        "quota_exhausted",
        "stream_interrupted",
    ]
    assert [f["status"] for f in body["failures"]] == [404, 429, None]
    assert [f["billed"] for f in body["failures"]] == [False, False, True]
    assert all(len(f["detail"]) <= 300 for f in body["failures"])
    assert len(body["failures"][1]["detail"]) == 300
    raw = problem.to_json().decode()
    assert "AIza" not in raw and KEY[8:16] not in raw
    assert "sub-exceptions" not in raw


def test_summary_wording_is_deterministic() -> None:
    """Per-attempt and overall summaries follow the fixed wording, in attempt order (I4)."""
    assert (
        attempt_summary(ATTEMPTS[0])
        == "google-gla:gemini-3-flash-preview on google-main: model not found (HTTP 404)"
    )
    assert (
        attempt_summary(ATTEMPTS[2])
        == "gpt-4o on openai-a: stream interrupted (no HTTP status), billed"
    )
    report = ExhaustionReport(request_id="r", attempts=ATTEMPTS[:2], retry_after_us=500_000)
    assert exhaustion_summary(report) == (
        "All 2 attempts failed: "
        "google-gla:gemini-3-flash-preview on google-main: model not found (HTTP 404); "
        "google-gla:gemini-2.5-flash on google-backup: quota exhausted (HTTP 429). Retry after 1 s."
    )
    single = ExhaustionReport(request_id="r", attempts=ATTEMPTS[:1])
    assert exhaustion_summary(single).startswith("All 1 attempt failed: ")
    assert exhaustion_summary(ExhaustionReport(request_id="r")) == (
        "No attempt could be made: every candidate was unavailable."
    )
    assert exhaustion_summary(report) == exhaustion_summary(report)


def test_too_many_attempts_are_counted_not_listed() -> None:
    """A runaway report lists at most 64 attempts and says how many more there were."""
    many = tuple(ATTEMPTS[0] for _ in range(70))
    problem = render_exhaustion(ExhaustionReport(request_id="r", attempts=many))
    body = validate_rfc9457(problem)
    assert len(body["failures"]) == 64 and body["detail"].endswith("(6 more not listed.)")
    assert "Retry-After" not in dict(problem.headers)


@pytest.mark.parametrize("failure", list(FailureClass), ids=lambda f: f.value)
def test_single_failure_problem_per_class(failure: FailureClass) -> None:
    """Every class renders with its own stable type, title and status, and no failures member (I4, E1)."""
    attempt = FailedAttempt(
        credential_id="c1", upstream_model="m1", failure=failure, status=400, detail=f"token={KEY}"
    )
    problem = render_failure(FailureProblem(request_id="req 9/ü", attempt=attempt))
    body = validate_rfc9457(problem)
    assert (
        body["type"]
        == problem_type(failure.value)
        == "https://routeledger.dev/problems/" + failure.value.replace("_", "-")
    )
    assert body["title"] == FAILURE_TITLES[failure] and problem.status == FAILURE_STATUS[failure]
    assert "failures" not in body and KEY[:8] not in problem.to_json().decode()
    assert body["instance"] == "req%209/%C3%BC"


def test_failure_problem_without_detail_and_with_retry() -> None:
    """A rate-limited single failure is 429 with Retry-After; an empty detail adds nothing."""
    attempt = FailedAttempt(
        credential_id="c", upstream_model="m", failure=F.RATE_LIMITED, status=429
    )
    problem = render_failure(FailureProblem(request_id="r", attempt=attempt, retry_after_us=2 * S))
    body = validate_rfc9457(problem)
    assert (problem.status, dict(problem.headers)["Retry-After"]) == (429, "2")
    assert body["detail"] == "m on c: rate limited (HTTP 429)"


def test_budget_rejection_problem() -> None:
    """A budget rejection is a 402 with its scope, limit and remaining, and no failures (E1)."""
    problem = render_budget_rejection(
        BudgetRejection(
            request_id="r1",
            scope="team:alpha/monthly",
            limit=10_000_000,
            remaining=1_250,
            retry_after_us=-5,
        )
    )
    body = validate_rfc9457(problem)
    assert problem.status == 402 and body["type"].endswith("/budget-exceeded")
    assert (body["scope"], body["limit"], body["remaining"], body["unit"]) == (
        "team:alpha/monthly",
        10_000_000,
        1_250,
        "usd_micros",
    )
    assert dict(problem.headers)["Retry-After"] == "0" and "failures" not in body


def test_degraded_credential_problem() -> None:
    """A degraded credential is a 503 with its id and reason; its detail is scrubbed (I0, E1)."""
    problem = render_degraded_credential(
        DegradedCredential(
            request_id="r2",
            credential_id="trial-1",
            reason="models unresolved",
            detail=f"resolution failed with Bearer {KEY}",
        )
    )
    body = validate_rfc9457(problem)
    assert problem.status == 503 and body["type"].endswith("/credential-degraded")
    assert (body["credential_id"], body["reason"]) == ("trial-1", "models unresolved")
    assert KEY[:8] not in body["detail"] and body["detail"].endswith(").")
    plain = render_degraded_credential(
        DegradedCredential(request_id="r", credential_id="c", reason="suspended")
    )
    assert validate_rfc9457(plain)["detail"] == "Credential c cannot serve: suspended."


def test_known_secret_in_ids_is_scrubbed() -> None:
    """Even ids and model names pass the scrubber built from the secret store (E1)."""
    secret = "tenant-secret-xyz-0001"
    attempt = FailedAttempt(
        credential_id=secret,
        upstream_model="m",
        failure=F.AUTH_ERROR,
        status=401,
        detail=f"bad key {secret}",
    )
    problem = render_exhaustion(
        ExhaustionReport(request_id="r", attempts=(attempt,)), scrubber=Scrubber([secret])
    )
    assert "tenant-secret" not in problem.to_json().decode()


def test_extensions_never_replace_standard_members() -> None:
    """An extension named like a standard member is refused (RFC 9457 3.2)."""
    with pytest.raises(UsageError, match="standard member"):
        _problem(
            kind="x",
            title="X",
            status=500,
            detail="d",
            request_id="r",
            retry_after_us=None,
            scrubber=DEFAULT_SCRUBBER,
            extensions={"status": 200},
        )


def test_stream_error_event_for_exhaustion() -> None:
    """The stream error chunk is OpenAI-shaped: a server_error whose code is fallback_exhausted, with the failures (I4)."""
    problem = render_exhaustion(
        ExhaustionReport(request_id="req_5", attempts=ATTEMPTS, retry_after_us=3 * S)
    )
    chunk = stream_error_chunk(problem)
    assert chunk.startswith(b"data: ") and chunk.endswith(b"\n\n") and chunk.count(b"\n") == 2
    error = orjson.loads(chunk[len(b"data: ") : -2])["error"]
    assert error["error_type"] == error["code"] == "fallback_exhausted"
    assert error["type"] == "server_error"  # OpenAI's type for a 502: what the SDK reads
    assert error["message"] == problem.body["detail"] and error["status"] == 502
    assert [f["failure"] for f in error["failures"]] == [
        "model_not_found",
        "quota_exhausted",
        "stream_interrupted",
    ]
    assert error["retry_after_s"] == 3 and error["request_id"] == "req_5"
    assert KEY[:8] not in chunk.decode()


def test_stream_error_event_for_other_errors_has_no_failures() -> None:
    """Non-fallback error events never carry a failures field (I4)."""
    attempt = FailedAttempt(
        credential_id="c", upstream_model="m", failure=F.CONTENT_FILTERED, status=400
    )
    for problem in (
        render_failure(FailureProblem(request_id="r", attempt=attempt)),
        render_budget_rejection(BudgetRejection(request_id="r", scope="s", limit=1, remaining=0)),
        render_degraded_credential(
            DegradedCredential(request_id="r", credential_id="c", reason="x")
        ),
    ):
        payload = stream_error_payload(problem)
        assert (
            "failures" not in payload["error"]
            and payload["error"]["error_type"] != "fallback_exhausted"
        )
        assert "retry_after_s" not in payload["error"]


@given(
    attempts=st.lists(
        st.builds(
            FailedAttempt,
            credential_id=st.text(min_size=1, max_size=20),
            upstream_model=st.text(min_size=1, max_size=40),
            failure=st.sampled_from(list(FailureClass)),
            status=st.none() | st.integers(100, 599),
            detail=st.text(max_size=600),
            billed=st.booleans(),
        ),
        max_size=5,
    ),
    request_id=st.text(min_size=1, max_size=30),
    retry_after_us=st.none() | st.integers(0, 10**12),
)
def test_any_exhaustion_is_valid_rfc9457(
    attempts: list[FailedAttempt], request_id: str, retry_after_us: int | None
) -> None:
    """Whatever the attempts, the exhaustion problem satisfies RFC 9457 and caps every detail (I4)."""
    problem = render_exhaustion(
        ExhaustionReport(
            request_id=request_id, attempts=tuple(attempts), retry_after_us=retry_after_us
        )
    )
    body = validate_rfc9457(problem)
    assert len(body["failures"]) == len(attempts)
    assert all(len(entry["detail"]) <= 300 for entry in body["failures"])
