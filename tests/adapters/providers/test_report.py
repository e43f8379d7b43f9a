"""I4 end to end: the exhaustion report comes from the log and renders without secrets."""

from __future__ import annotations

import orjson

from routeledger.adapters.providers.problems import render_exhaustion
from routeledger.adapters.providers.report import exhaustion_report
from routeledger.adapters.providers.scrub import Scrubber
from routeledger.core.routing import FailureClass
from routeledger.core.routing.commands import Failed
from tests.core.routing.support import S, World, policy, target

SECRET = "sk-live-9f8e7d6c5b4a39281706f5e4"


def test_an_exhausted_request_reports_every_failed_attempt_in_order_with_retry_after() -> None:
    """I4: the report lists each classified attempt from the log and the decided Retry-After."""
    world = World(
        policy({"chat": [target("k1/a")], "spare": [target("k2/b")]}, fallback={"chat": ["spare"]})
    )
    world.start()
    world.next()
    world.outcome(
        Failed(failure=FailureClass.RATE_LIMITED, status=429, detail="slow down", hint_us=30 * S)
    )
    world.next()
    world.outcome(
        Failed(
            failure=FailureClass.AUTH_ERROR,
            status=401,
            detail=f"Incorrect API key provided: {SECRET}",
        )
    )
    world.next()
    report = exhaustion_report("r1", world.log)
    assert report is not None
    assert [(a.credential_id, a.upstream_model, a.failure, a.status) for a in report.attempts] == [
        ("k1", "a", FailureClass.RATE_LIMITED, 429),
        ("k2", "b", FailureClass.AUTH_ERROR, 401),
    ]
    assert report.retry_after_us is not None
    assert report.retry_after_us > 0
    problem = render_exhaustion(report, scrubber=Scrubber([SECRET]))
    body = orjson.loads(problem.to_json())
    assert problem.status == body["status"] == 502
    assert [f["summary"] for f in body["failures"]] == [
        "a on k1: rate limited (HTTP 429)",
        "b on k2: authentication failed (HTTP 401)",
    ]
    assert SECRET not in problem.to_json().decode()
    assert SECRET[:12] not in problem.to_json().decode()
    assert dict(problem.headers)["Retry-After"] == "30"


def test_a_served_request_has_no_exhaustion_report() -> None:
    """I4: only fallback exhaustion produces a failures report."""
    world = World(policy({"chat": [target("k1/a")]}))
    world.start()
    world.next()
    world.succeed()
    assert exhaustion_report("r1", world.log) is None
