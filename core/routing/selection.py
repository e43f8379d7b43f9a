"""Why one pool member is or is not selectable at ``now``: the one precedence rule.

Every reader that says whether a member can be used — the picker
(:mod:`.decide`), its indexed fast path, and the CLI's ``explain`` — asks
:func:`member_verdict`, so they cannot disagree. The precedence, first match
wins:

1. **lifecycle** — the credential is not provisioned, or this model name is
   not usable on it (I0);
2. **scope and capability** — the credential belongs to another owner (I3),
   the model cannot stream a streamed request, or its context window is
   smaller than the input;
3. **this request's failures** — the request already failed on this pair and
   has no retry left for it;
4. **availability** — the credential or the pair is cooling down, suspended,
   or half-open with its one probe in flight (the later block wins).

Reasons 1–2 are permanent for the request (``ready`` is 0); 3 and 4 come with
the time availability allows the member again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from ..usability import CredentialUsability, model_problem
from .events import SkipReason
from .policy import Policy, PoolMember
from .state import RequestState, ScopeState

__all__ = ["BLOCKED", "member_verdict", "why_blocked"]

#: The reasons of rule 4: the member is only blocked until ``ready``.
BLOCKED: Final = frozenset(
    {
        SkipReason.COOLING_DOWN,
        SkipReason.SUSPENDED,
        SkipReason.CREDENTIAL_BLOCKED,
        SkipReason.PROBE_IN_FLIGHT,
    }
)


def why_blocked(cred: ScopeState | None, pair: ScopeState | None, ready: int) -> SkipReason:
    """The rule-4 reason of a member not selectable before ``ready`` (the later block wins)."""
    if pair is None or pair.ready_us != ready:
        return SkipReason.CREDENTIAL_BLOCKED
    if pair.until_us != ready:
        return SkipReason.PROBE_IN_FLIGHT
    return SkipReason.SUSPENDED if pair.suspended else SkipReason.COOLING_DOWN


def member_verdict(
    policy: Policy,
    member: PoolMember,
    request: RequestState | None,
    creds: Mapping[str, ScopeState],
    pairs: Mapping[str, ScopeState],
    now_us: int,
    credentials: Mapping[str, CredentialUsability] | None,
) -> tuple[SkipReason | None, int]:
    """Why ``member`` is not selectable at ``now_us`` (``None``: it is) and when it is ready.

    ``request`` is the request asking, or ``None`` for a reader with no request
    (``explain``): rules 2 and 3 are then not applied. ``credentials`` is ``None`` when the lifecycle
    is not tracked (rule 1 is then not applied). ``ready`` is 0 for a permanent
    reason and for a member available now.
    """
    # One unpack each, not attribute reads: this runs per examined member (hot path).
    credential, model, pair_stream, cred_stream, owner, streaming, window, _ = member
    if credentials is not None:
        view = credentials.get(credential)
        if view is None:
            return SkipReason.NOT_PROVISIONED, 0
        problem = model_problem(view, model)
        if problem is not None:
            return SkipReason(problem.value), 0
    if request is not None:
        received = request.received
        if owner is not None:  # members resolve in the model owner's scope (I3)
            scope = received.caller_scope if received.model_owner is None else received.model_owner
            if owner != scope:
                return SkipReason.OUT_OF_SCOPE, 0
        if received.stream and not streaming:
            return SkipReason.NO_STREAMING, 0
        if received.input_tokens > window:
            return SkipReason.CONTEXT_TOO_SMALL, 0
    cred = creds.get(cred_stream)
    pair = pairs.get(pair_stream)
    ready = 0
    if cred is not None and cred.ready_us > now_us:
        ready = cred.ready_us
    if pair is not None and pair.ready_us > now_us and pair.ready_us > ready:
        ready = pair.ready_us
    if request is not None:
        count = request.fails_by_pair.get(pair_stream)
        if (
            count is not None
            and count > policy.rule(request.last_class_by_pair[pair_stream]).retry_same
        ):
            return SkipReason.ALREADY_FAILED, ready
    if ready:
        blocking_cred = cred if cred is not None and cred.ready_us > now_us else None
        return why_blocked(blocking_cred, pair, ready), ready
    return None, 0
