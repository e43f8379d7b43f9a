"""In-process reactions to what the engine records: ``Engine.on`` and ``Engine.events``.

::

    def paged(evt: CooldownStarted) -> None:
        pager.notify(f"{evt.credential_id}/{evt.upstream_model} cooling down")

    unsubscribe = engine.on(CooldownStarted, paged)   # call unsubscribe() to stop

    async with engine.events(BlockEvent) as events:   # every availability change
        async for evt in events:
            if isinstance(evt, Gap):                  # a slow consumer lost some
                ...
            ...

The rules (docs/integrations.md says the same for users):

* **Which events.** Every event *this engine* appended, once it is durably in
  the store and folded into the state (L10: a subscriber never sees a decision
  that was not recorded), in log order. A type matches itself and its
  subclasses: ``BlockEvent`` gets every cooldown, suspension, probe and clear;
  ``Event`` gets everything. Events appended by *other processes* on the same
  store are not delivered (this engine folds them when it next decides, but it
  did not decide them); tail the log with ``store.follow()`` for those.
* **Who calls an ``on`` subscriber.** The thread that committed the events,
  while it still holds the runtime's lock, before the caller that caused them
  goes on: the event loop's thread (a memory store, or a lone request), the
  group committer's worker thread, the maintenance thread (expired holds,
  rolled periods), or a sync caller's own thread. So a subscriber must be
  quick and must not block; it must not call the engine's recording methods
  (``request``, ``lift_blocks``…) — hand such work to a queue, a thread, or
  ``loop.call_soon_threadsafe``. ``Engine.events`` does exactly that for you.
* **A subscriber that raises** is logged (logger ``routeledger.engine``, with
  the traceback) and skipped for that event; the commit, the request and the
  other subscribers go on. The events are already recorded.
* **Back-pressure of ``Engine.events``.** Each stream buffers at most
  ``buffered_max`` events (default :data:`EVENTS_BUFFERED_DEFAULT`). When the
  consumer falls that far behind, new events are dropped — the engine never
  waits for a consumer — and the stream yields one :class:`Gap` with how many
  were dropped, in the place they would have been, once it has room again; a
  WARNING is logged when a gap opens, and :attr:`EventStream.dropped` counts
  every drop.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, TypeVar

import attrs

from routeledger.core.errors import UsageError
from routeledger.core.events import Event

__all__ = [
    "EVENTS_BUFFERED_DEFAULT",
    "EVENTS_BUFFERED_MAX",
    "EventStream",
    "Gap",
    "Hooks",
    "Unsubscribe",
    "check_buffered_max",
    "check_types",
]

LOGGER: Final = logging.getLogger("routeledger.engine")

#: Events one :meth:`Engine.events` stream holds for a slow consumer by default.
#: Why: a busy gateway records a few thousand events a second; 10,000 is a few
#: seconds of slack for a consumer that stalls briefly (a few MB at most).
EVENTS_BUFFERED_DEFAULT: Final = 10_000
#: Largest buffer a stream may ask for. Why: past a million events (~hundreds
#: of MB) a consumer is not slow but stopped; dropping with a gap is kinder.
EVENTS_BUFFERED_MAX: Final = 1_000_000

E = TypeVar("E", bound=Event)


@attrs.frozen(kw_only=True)
class Gap:
    """In an event stream: ``dropped`` events were lost here because the consumer fell behind.

    Not an event (never stored): only the stream's marker of where it lost some.
    """

    dropped: int


class Unsubscribe:
    """What :meth:`Engine.on` returns: call it (or use it as a context manager) to stop."""

    __slots__ = ("_hooks", "_subscriber")

    def __init__(self, hooks: Hooks, subscriber: _Subscriber) -> None:
        self._hooks = hooks
        self._subscriber = subscriber

    def __call__(self) -> None:
        """Stop delivering to this subscriber (idempotent; safe from any thread)."""
        self._hooks.remove(self._subscriber)

    def __enter__(self) -> Unsubscribe:
        return self

    def __exit__(self, *exc: object) -> None:
        self()


@attrs.frozen(eq=False)
class _Subscriber:
    types: tuple[type[Event], ...]
    fn: Callable[[Any], None]
    #: For the log line of a subscriber that raised.
    name: str


def check_types(types: Iterable[object], where: str) -> tuple[type[Event], ...]:
    """``types`` as event classes, or a :class:`UsageError` naming the one that is not."""
    checked: list[type[Event]] = []
    for kind in types:
        if not (isinstance(kind, type) and issubclass(kind, Event)):
            raise UsageError(
                f"{where}: {kind!r} is not an event class (for example "
                f"routeledger.core.routing.events.CooldownStarted, or BlockEvent for all its kinds)"
            )
        checked.append(kind)
    return tuple(checked)


class Hooks:
    """The engine's subscribers, matched by event type, called after each append.

    Subscribing and unsubscribing swap one immutable snapshot, so delivery
    (under the runtime's lock, on any thread) never sees a half-made change and
    never takes a lock of its own.
    """

    def __init__(self, on_change: Callable[[bool], None] | None = None) -> None:
        #: (subscribers, type -> the subscribers it matches): replaced whole.
        self._state: tuple[tuple[_Subscriber, ...], dict[type[Event], tuple[_Subscriber, ...]]] = (
            (),
            {},
        )
        self._mutex = threading.Lock()
        #: Told whether any subscriber is left after each change (the engine
        #: wires delivery in only while there is one: no cost otherwise).
        self._on_change = on_change

    def __bool__(self) -> bool:
        return bool(self._state[0])

    def add(self, types: tuple[type[Event], ...], fn: Callable[[Any], None]) -> Unsubscribe:
        """Deliver events of ``types`` (or their subclasses) to ``fn`` from now on."""
        subscriber = _Subscriber(types, fn, getattr(fn, "__qualname__", repr(fn)))
        with self._mutex:
            self._state = ((*self._state[0], subscriber), {})
            if self._on_change is not None:
                self._on_change(True)
        return Unsubscribe(self, subscriber)

    def remove(self, subscriber: _Subscriber) -> None:
        with self._mutex:
            subscribers = self._state[0]
            if subscriber not in subscribers:
                return
            left = tuple(s for s in subscribers if s is not subscriber)
            self._state = (left, {})
            if self._on_change is not None:
                self._on_change(bool(left))

    def dispatch(self, events: Sequence[Event]) -> None:
        """Call every matching subscriber with each of ``events``, in order; never raises."""
        subscribers, matching = self._state
        if not subscribers:
            return
        for evt in events:
            kind = type(evt)
            targets = matching.get(kind)
            if targets is None:
                targets = matching[kind] = tuple(
                    s for s in subscribers if issubclass(kind, s.types)
                )
            for subscriber in targets:
                try:
                    subscriber.fn(evt)
                except Exception:
                    LOGGER.exception(
                        "event subscriber %s raised on %s (the event is recorded; "
                        "the request goes on)",
                        subscriber.name,
                        kind.TAG,
                    )


class EventStream:
    """An async iterator over what the engine records (see the module docstring).

    Made by :meth:`Engine.events` on the event loop that iterates it. Ends when
    closed (:meth:`close`, ``async with``) or when the engine closes; dropping
    the last reference to it also unsubscribes it.
    """

    def __init__(
        self,
        hooks: Hooks,
        types: tuple[type[Event], ...],
        buffered_max: int,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.buffered_max = buffered_max
        #: Events dropped in all because the consumer fell behind.
        self.dropped = 0
        self._loop = loop
        self._buffer: collections.deque[Event | Gap] = collections.deque()
        self._held = 0  # events (not gaps) in the buffer
        self._gap = 0  # dropped since the last event buffered
        self._mutex = threading.Lock()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        ref = weakref.ref(self)

        def deliver(evt: Event) -> None:
            stream = ref()
            if stream is not None:
                stream._push(evt)
            else:
                unsubscribe()

        unsubscribe = hooks.add(types, deliver)
        self._unsubscribe = unsubscribe

    def _push(self, evt: Event) -> None:
        """From the committing thread: buffer ``evt`` or count it dropped; wake the consumer."""
        with self._mutex:
            if self._closed:
                return
            if self._held >= self.buffered_max:
                if not self._gap:
                    LOGGER.warning(
                        "event stream: the consumer is %d events behind; dropping events "
                        "until it catches up (a Gap in the stream says how many)",
                        self._held,
                    )
                self._gap += 1
                self.dropped += 1
                return
            if self._gap:
                self._buffer.append(Gap(dropped=self._gap))
                self._gap = 0
            self._buffer.append(evt)
            self._held += 1
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._wake(waiter)

    def _wake(self, waiter: asyncio.Future[None]) -> None:
        try:
            self._loop.call_soon_threadsafe(_settle, waiter)
        except RuntimeError:  # the consumer's loop is closed: nobody will read
            self.close()

    def _pop(self) -> Event | Gap | None:
        """Under the mutex: the next item, a trailing gap, or ``None``."""
        if self._buffer:
            item = self._buffer.popleft()
            if not isinstance(item, Gap):
                self._held -= 1
            return item
        if self._gap:
            gap, self._gap = Gap(dropped=self._gap), 0
            return gap
        return None

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event | Gap:
        while True:
            with self._mutex:
                item = self._pop()
                if item is not None:
                    return item
                if self._closed:
                    raise StopAsyncIteration
                waiter = self._waiter = self._loop.create_future()
            await waiter

    def close(self) -> None:
        """Stop receiving; a consumer waiting for the next event gets the end of the stream."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            waiter, self._waiter = self._waiter, None
        self._unsubscribe()
        if waiter is not None:
            self._wake(waiter)

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def check_buffered_max(value: object) -> int:
    """``value`` as a stream's buffer size, or a :class:`UsageError` naming the range."""
    if not (type(value) is int and 1 <= value <= EVENTS_BUFFERED_MAX):
        raise UsageError(
            f"events(buffered_max=...) must be an int in 1..{EVENTS_BUFFERED_MAX}, got {value!r}"
        )
    return value
