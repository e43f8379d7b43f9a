"""Routing deciders an operator runs: lift a block, impose a suspension.

Both are pure like every decider: (state, order, now) in, events out. Who
asked and why live on the command's own record
(:class:`routeledger.core.operator.OperatorActed`); these only decide what the
order does to availability:

* **lift** — every blocked or half-open scope the order names (one pair, one
  credential with all its pairs, or everything) becomes AVAILABLE at once
  (``BlockLifted``). A scope that is already available gets no event.
* **impose** — one pair, or one credential, is suspended until
  ``now + duration_us`` (``BlockImposed``); ``until_us`` only grows (A2), the
  duration is bounded by ``COOLDOWN_US_MAX`` (A3) and one probe follows its
  end (A4), as after any block.
"""

from __future__ import annotations

import attrs

from ..errors import CommandError
from ..streams import CREDENTIAL_ID_LENGTH_MAX, PAIR, credential_stream, pair_stream
from .events import BlockImposed, BlockLifted
from .policy import COOLDOWN_US_MAX
from .state import RoutingState, ScopeState

__all__ = ["ImposeBlock", "LiftBlocks", "decide_impose", "decide_lift"]


@attrs.frozen(kw_only=True)
class LiftBlocks:
    """Lift cooldowns and suspensions: of one pair, of one credential, or (both ``None``) all."""

    credential_id: str | None = None
    #: With ``credential_id``: only this pair; without: the credential and all its pairs.
    upstream_model: str | None = None


@attrs.frozen(kw_only=True)
class ImposeBlock:
    """Suspend one pair (or, without ``upstream_model``, one credential) for ``duration_us``."""

    credential_id: str
    upstream_model: str | None
    duration_us: int


def _check_target(order: LiftBlocks | ImposeBlock) -> None:
    credential, model = order.credential_id, order.upstream_model
    if credential is None:
        if model is not None:
            raise CommandError(order, "upstream_model", "names a model without a credential")
        return
    if not (type(credential) is str and 0 < len(credential) <= CREDENTIAL_ID_LENGTH_MAX):
        raise CommandError(
            order, "credential_id", f"must be 1..{CREDENTIAL_ID_LENGTH_MAX} characters"
        )
    if ":" in credential:
        raise CommandError(order, "credential_id", f"{credential!r} contains ':'")
    if model is not None and not (type(model) is str and model):
        raise CommandError(order, "upstream_model", f"must be a non-empty str, got {model!r}")


def _named(state: RoutingState, order: LiftBlocks) -> list[tuple[str, ScopeState]]:
    """The scopes the order names, credential-wide first, then pairs, each in id order."""
    credential, model = order.credential_id, order.upstream_model
    if credential is None:
        named = sorted(state.creds.items()) + sorted(state.pairs.items())
    elif model is not None:
        stream = pair_stream(credential, model)
        scope = state.pairs.get(stream)
        named = [] if scope is None else [(stream, scope)]
    else:
        prefix = f"{PAIR}{credential}:"
        cred = state.creds.get(credential_stream(credential))
        named = [] if cred is None else [(credential_stream(credential), cred)]
        named += sorted((k, v) for k, v in state.pairs.items() if k.startswith(prefix))
    return named


def _parts(stream: str) -> tuple[str, str | None]:
    """(credential, model) of a ``pair:`` or ``cred:`` stream id."""
    kind, _, rest = stream.partition(":")
    if kind + ":" == PAIR:
        credential, _, model = rest.partition(":")
        return credential, model
    return rest, None


def decide_lift(
    state: RoutingState, order: LiftBlocks, *, command_id: str, now_us: int
) -> tuple[BlockLifted, ...]:
    """``BlockLifted`` for each named scope that is blocked or half-open (none if all are fine)."""
    _check_target(order)
    lifted = []
    for stream, scope in _named(state, order):
        if not scope.needs_probe:
            continue
        credential, model = _parts(stream)
        lifted.append(
            BlockLifted(
                stream_id=stream,
                version=scope.version + 1,
                at_us=now_us,
                credential_id=credential,
                upstream_model=model,
                command_id=command_id,
            )
        )
    return tuple(lifted)


def decide_impose(
    state: RoutingState, order: ImposeBlock, *, command_id: str, now_us: int
) -> BlockImposed:
    """``BlockImposed`` until ``max(current block, now + duration_us)`` (A2, A3)."""
    _check_target(order)
    duration = order.duration_us
    if not (type(duration) is int and 0 < duration <= COOLDOWN_US_MAX):
        raise CommandError(
            order, "duration_us", f"must be an int in 1..{COOLDOWN_US_MAX} µs, got {duration!r}"
        )
    if order.upstream_model is None:
        stream = credential_stream(order.credential_id)
        scope = state.creds.get(stream)
    else:
        stream = pair_stream(order.credential_id, order.upstream_model)
        scope = state.pairs.get(stream)
    version = 0 if scope is None else scope.version
    until = now_us + duration
    if scope is not None and scope.until_us > until:
        until = scope.until_us
    return BlockImposed(
        stream_id=stream,
        version=version + 1,
        at_us=now_us,
        credential_id=order.credential_id,
        upstream_model=order.upstream_model,
        command_id=command_id,
        until_us=until,
    )
