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
from _floors import Floors

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


def bench_codec(floors: Floors) -> None:
    sample = make("request:req-7f3a9c2e", 1)
    topic, payload = CODEC.encode(sample)
    encode = per_call_us(lambda: CODEC.encode(sample), calls=50_000)
    figure("codec.encode.us", encode, "us")
    floors.ratio("codec.encode.us", encode, "attrs_event_us")
    decode = per_call_us(
        lambda: CODEC.decode(topic, payload, stream_id="request:req-7f3a9c2e", version=1),
        calls=50_000,
    )
    figure("codec.decode.us", decode, "us")
    floors.ratio("codec.decode.us", decode, "attrs_event_us")


def rate(floors: Floors, name: str, value: float, kind: str, per: float = 1.0) -> None:
    """Print a rate figure (events/s) and register its ratio to the floor ``kind``."""
    figure(name, value, "events/s")
    floors.rate_ratio(name, value, kind, per=per)


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
    """Ratios: codec and in-memory/decode rates per event over one attrs event; appends
    per commit (1 or 100 events) over one bare commit of the same database."""
    pg = postgres_url()
    kinds = ("attrs_event_us", "sqlite_commit_us") + (("postgres_commit_us",) if pg else ())
    floors = Floors(*kinds, postgres=pg)
    bench_codec(floors)
    memory = append_rate("memory://", batch=100, batches=300)
    rate(floors, "store.memory.append100.eps", memory, "attrs_event_us")
    with tempfile.TemporaryDirectory() as tmp:
        value = append_rate(f"sqlite:///{tmp}/a1.db", batch=1, batches=2_000)
        rate(floors, "store.sqlite.append1.eps", value, "sqlite_commit_us")
        value = append_rate(f"sqlite:///{tmp}/a100.db", batch=100, batches=300)
        rate(floors, "store.sqlite.append100.eps", value, "sqlite_commit_us", per=100)
        value = read_decode_rate(f"sqlite:///{tmp}/read.db", 100_000)
        rate(floors, "store.sqlite.read_decode.eps", value, "attrs_event_us")
    if pg is None:
        print("bench: no PostgreSQL; skipping store.postgres.* figures", file=sys.stderr)
    else:
        value = append_rate(pg, batch=100, batches=200)
        rate(floors, "store.postgres.append100.eps", value, "postgres_commit_us", per=100)
        value = read_decode_rate(pg, 100_000)
        rate(floors, "store.postgres.read_decode.eps", value, "attrs_event_us")
    floors.finish()


if __name__ == "__main__":
    main()
