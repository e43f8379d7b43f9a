"""The runtime's fold: routing each event only to the contexts that read it equals folding it everywhere."""

from __future__ import annotations

from routeledger.adapters.engine.config import parse_config
from routeledger.adapters.engine.engine import Engine
from routeledger.adapters.store.canonical import state_hash
from routeledger.adapters.testing.clock import FakeClock, counter_ids
from routeledger.core.credentials.events import CredentialMetadata
from routeledger.core.fold import Folded, fold_log
from routeledger.core.routing import FailureClass, Phase

CONFIG = """
[credentials.gw]
provider = "litellm"
[credentials.b]
provider = "openai"
[models.m1]
input_micros_per_mtok = 1_000_000
[models.m2]
[routes.chat]
[[routes.chat.chain]]
members = [{ credential = "gw", model = "m1" }, { credential = "b", model = "m2" }]
[accounts.team]
scope = "team"
limit = 1_000_000
"""

META = CredentialMetadata(
    provider="litellm",
    base_url="https://llm.example.test",
    region=None,
    expires_at_us=None,
    validates_model_names=True,
)


def _mixed_log() -> Engine:
    """Routing, budget and credential events, including a credential-wide failure on cred:gw."""
    engine = Engine.open(
        "memory://",
        parse_config(CONFIG),
        clock=FakeClock(),
        ids=counter_ids(),
        track_credentials=True,
    )
    engine.provision_key("gw", META)
    engine.record_models("gw", frozenset({"m1"}))
    engine.provision_key("b", META)
    engine.record_models("b", frozenset({"m2"}))
    outcomes = [
        FailureClass.AUTH_ERROR,
        FailureClass.QUOTA_EXHAUSTED,
        FailureClass.RATE_LIMITED,
        None,
        FailureClass.STREAM_INTERRUPTED,
    ]
    for failure in outcomes:
        with engine.request(route="chat", caller_scope="u", accounts=("team",)) as req:
            for attempt in req.sync_attempts():
                if failure is None or attempt.credential_id == "b":
                    attempt.succeeded(input_tokens=3, output_tokens=4)
                elif failure is FailureClass.STREAM_INTERRUPTED:
                    attempt.failed(failure, phase=Phase.MID_STREAM, billed=True)
                else:
                    attempt.failed(
                        failure, status=401 if failure is FailureClass.AUTH_ERROR else 429
                    )
    return engine


def test_targeted_fold_equals_folding_every_event_through_every_context() -> None:
    """D2: Folded.apply's per-context dispatch gives the same state as sending each event to all three."""
    engine = _mixed_log()
    records = list(engine.store.read_all())
    kinds = {type(r.event).__name__ for r in records}
    assert {"CredentialAuthFailed", "HoldSettled", "AttemptFailed", "ModelsResolved"} <= kinds
    assert any(r.event.stream_id.startswith("cred:") for r in records)

    targeted = fold_log(records)
    everywhere = Folded()
    for recorded in records:
        everywhere._apply_all(recorded.event)
        everywhere.events += 1
        everywhere.at_us_max = max(everywhere.at_us_max, recorded.event.at_us)
        everywhere.position = recorded.position

    assert state_hash(targeted) == state_hash(everywhere)
    assert state_hash(targeted) == state_hash(engine.state)
