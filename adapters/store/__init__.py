"""The event store: one interface, three backends, the codec, snapshots and canonical hashing."""

from __future__ import annotations

from routeledger.adapters.store.eventstore import (
    Conflict,
    EventStore,
    InvalidAppend,
    StoreError,
    StoreNotFound,
    StoreUnavailable,
    open_store,
)
from routeledger.adapters.store.urls import StoreUrlError

__all__ = [
    "Conflict",
    "EventStore",
    "InvalidAppend",
    "StoreError",
    "StoreNotFound",
    "StoreUnavailable",
    "StoreUrlError",
    "open_store",
]
