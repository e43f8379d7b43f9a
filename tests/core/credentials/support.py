"""Shared helpers for the credential tests: metadata, a tiny versioned log."""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from routeledger.core.credentials import (
    CredentialEvent,
    CredentialMetadata,
    CredentialsState,
    check_invariants,
    evolve,
    initial,
)
from routeledger.core.events import Event, envelope_problem
from routeledger.core.time import US_PER_S

INSTALL = "inst-1"
#: 2023-11-14T22:13:20Z, an arbitrary engine time.
T0 = 1_700_000_000 * US_PER_S
DATED_DEFAULT = "claude-sonnet-4-5-20250929"


def meta(**changes: object) -> CredentialMetadata:
    """Metadata of a name-validating LiteLLM gateway, with ``changes`` applied."""
    base = CredentialMetadata(
        provider="litellm",
        base_url="https://llm.example.com/v1",
        region="eu",
        expires_at_us=None,
        validates_model_names=True,
    )
    return attrs.evolve(base, **changes)  # type: ignore[misc, arg-type]


class StaleVersion(Exception):
    """The in-memory log refused a batch (optimistic concurrency)."""


@attrs.define
class Log:
    """An append-only log with per-stream optimistic concurrency, folded as it grows."""

    events: list[Event] = attrs.Factory(list)
    state: CredentialsState = attrs.Factory(initial)
    heads: dict[str, int] = attrs.Factory(dict)

    def append(self, batch: Iterable[CredentialEvent]) -> tuple[CredentialEvent, ...]:
        """Append a batch atomically (every version must follow its stream's head)."""
        batch = tuple(batch)
        heads = dict(self.heads)
        for evt in batch:
            assert envelope_problem(evt) is None, envelope_problem(evt)
            if evt.version != heads.get(evt.stream_id, 0) + 1:
                raise StaleVersion(f"{evt.stream_id} v{evt.version}")
            heads[evt.stream_id] = evt.version
        self.heads = heads
        for evt in batch:
            self.events.append(evt)
            self.state = evolve(self.state, evt)
            check_invariants(self.state)
        return batch
