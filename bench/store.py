"""F1 figures: codec cost per event, and store append / read+decode throughput per backend.

Figures: codec.encode.us, codec.decode.us, store.memory.append100.eps,
store.sqlite.append1.eps, store.sqlite.append100.eps, store.sqlite.read_decode.eps,
store.postgres.append100.eps, store.postgres.read_decode.eps.
"""

from __future__ import annotations

import enum
import sys
import tempfile
import time
from pathlib import Path

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import figure, per_call_us, postgres_url

from routeledger.adapters.store.codec import Codec
from routeledger.adapters.store.eventstore import open_store
from routeledger.core.events import Event, EventRegistry, Origin, event

REG = EventRegistry()


class Phase(enum.Enum):
    BEFORE_RESPONSE = "before_response"
    MID_STREAM = "mid_stream"


@event("routeledger.BenchAttemptFailed", 1, Origin.OBSERVED, registry=REG)
@attrs.frozen(kw_only=True)
class BenchAttemptFailed(Event):
    """Shaped like a typical routing observation: ids, a class, a status, a hint, a detail."""

    request_id: str
    attempt_id: str
    credential_id: str
    upstream_model: str
    failure: str
    phase: Phase
    status: int
    retry_after_us: int | None
    detail: str


CODEC = Codec(REG)


def make(stream: str, version: int) -> BenchAttemptFailed:
    return BenchAttemptFailed(
        stream_id=stream,
        version=version,
        at_us=1_763_700_000_000_000 + version,
        request_id="req-7f3a9c2e",
        attempt_id=f"req-7f3a9c2e/{version}",
        credential_id="openai-prod-2",
        upstream_model="gpt-4o-2024-08-06",
        failure="rate_limited",
        phase=Phase.BEFORE_RESPONSE,
        status=429,
        retry_after_us=2_000_000,
        detail="Rate limit reached for requests",
    )


def bench_codec() -> None:
    sample = make("request:req-7f3a9c2e", 1)
    topic, payload = CODEC.encode(sample)
    figure("codec.encode.us", per_call_us(lambda: CODEC.encode(sample), calls=50_000), "us")
    figure(
        "codec.decode.us",
        per_call_us(
            lambda: CODEC.decode(topic, payload, stream_id="request:req-7f3a9c2e", version=1),
            calls=50_000,
        ),
        "us",
    )


def append_rate(url: str, *, batch: int, batches: int) -> float:
    with open_store(url, codec=CODEC) as store:
        version = 0
        began = time.perf_counter()
        for b in range(batches):
            events = [make(f"request:r{b}-{i}", 1) for i in range(batch)]
            store.append(events)
            version += batch
        return version / (time.perf_counter() - began)


def read_decode_rate(url: str, total: int) -> float:
    with open_store(url, codec=CODEC) as store:
        for b in range(total // 1000):
            store.append([make(f"fill:{b}", v) for v in range(1, 1001)])
        began = time.perf_counter()
        count = sum(1 for _ in store.read_all(0, page=1000))
        elapsed = time.perf_counter() - began
    assert count >= total, count
    return count / elapsed


def main() -> None:
    bench_codec()
    figure(
        "store.memory.append100.eps", append_rate("memory://", batch=100, batches=300), "events/s"
    )
    with tempfile.TemporaryDirectory() as tmp:
        figure(
            "store.sqlite.append1.eps",
            append_rate(f"sqlite:///{tmp}/a1.db", batch=1, batches=2_000),
            "events/s",
        )
        figure(
            "store.sqlite.append100.eps",
            append_rate(f"sqlite:///{tmp}/a100.db", batch=100, batches=300),
            "events/s",
        )
        figure(
            "store.sqlite.read_decode.eps",
            read_decode_rate(f"sqlite:///{tmp}/read.db", 100_000),
            "events/s",
        )
    pg = postgres_url()
    if pg is None:
        print("bench: no PostgreSQL; skipping store.postgres.* figures", file=sys.stderr)
        return
    figure("store.postgres.append100.eps", append_rate(pg, batch=100, batches=200), "events/s")
    figure("store.postgres.read_decode.eps", read_decode_rate(pg, 100_000), "events/s")


if __name__ == "__main__":
    main()
