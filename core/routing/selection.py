"""Which pool members a decision examines, in which order, and why each is or is not selectable.

Order: a target's members are examined in strategy order
(:func:`member_order`): priority from the first member, round-robin from the
target's cursor, weighted from a seeded draw (:func:`mix64`, so a replay draws
the same), each wrapping around the pool. What a scan of the chain finds
(skips, the earliest recovery to wait for) accumulates in a :class:`Scan`.

Precedence: one rule for every reader.

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
   half-open with its one probe in flight, or predicted exhausted by the
   provider's announced limits until their reset (the later bound wins).

Reasons 1–2 are permanent for the request (``ready`` is 0); 3 to 5 come with
the time the member may be selectable again.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping
from itertools import chain as chain_iter
from typing import TYPE_CHECKING, Final

from ..usability import CredentialUsability, model_problem
from .capacity import LoadState, capacity_verdict
from .events import Skipped, SkipReason
from .policy import RANKED, Policy, PoolMember, PoolPlan, Strategy

if TYPE_CHECKING:  # annotations only: the state imports the index, which imports this
    from .events import RequestReceived
    from .state import RequestState, RoutingState, ScopeState

__all__ = [
    "BLOCKED",
    "EXPLORE_ONE_IN",
    "RANKED",
    "RANKED_SORT_MAX",
    "SKIPS_RECORDED_MAX",
    "Scan",
    "member_order",
    "member_verdict",
    "mix64",
    "start_index",
    "why_blocked",
]

#: Largest pool a ranked strategy sorts exactly at each decision. Why: sorting 16
#: keys costs about as much as a round-robin pick; a larger pool starts from the
#: better of two seeded draws instead (power of two choices: O(1), and within a
#: small factor of the best, as Envoy's least_request does).
RANKED_SORT_MAX: Final = 16
#: One ``least_latency`` request in this many explores (starts at a seeded draw).
#: Why: 1 in 20 keeps estimates fresh for ~5% of traffic on possibly slower pairs.
EXPLORE_ONE_IN: Final = 20
_EXPLORE_SALT: Final = 0x5EED_E7B1

#: Skipped candidates recorded on one decision; the rest are counted. Why: a
#: 4,096-member pool must not produce a 4,096-entry event; 16 explain any pick.
SKIPS_RECORDED_MAX: Final = 16
_MASK64: Final = (1 << 64) - 1


#: The reasons of rule 4: the member is only blocked until ``ready``.
BLOCKED: Final = frozenset(
    {
        SkipReason.COOLING_DOWN,
        SkipReason.SUSPENDED,
        SkipReason.CREDENTIAL_BLOCKED,
        SkipReason.PROBE_IN_FLIGHT,
        SkipReason.PREDICTED_EXHAUSTED,
    }
)


def why_blocked(cred: ScopeState | None, pair: ScopeState | None, ready: int) -> SkipReason:
    """The rule-4 reason of a member not selectable before ``ready`` (the later block wins)."""
    if pair is not None and pair.predicted_us == ready and pair.ready_us < ready:
        return SkipReason.PREDICTED_EXHAUSTED
    if pair is None or pair.ready_us != ready:
        return SkipReason.CREDENTIAL_BLOCKED
    if pair.until_us != ready:
        return SkipReason.PROBE_IN_FLIGHT
    return SkipReason.SUSPENDED if pair.suspended else SkipReason.COOLING_DOWN


def _lifecycle_problem(
    credentials: Mapping[str, CredentialUsability], credential: str, model: str
) -> SkipReason | None:
    """Rule 1: why the lifecycle does not let ``credential`` serve ``model`` (``None``: it does)."""
    view = credentials.get(credential)
    if view is None:
        return SkipReason.NOT_PROVISIONED
    problem = model_problem(view, model)
    return None if problem is None else SkipReason(problem.value)


def member_verdict(
    policy: Policy,
    member: PoolMember,
    request: RequestState | None,
    creds: Mapping[str, ScopeState],
    pairs: Mapping[str, ScopeState],
    now_us: int,
    credentials: Mapping[str, CredentialUsability] | None,
    loads: Mapping[str, LoadState] | None = None,
) -> tuple[SkipReason | None, int]:
    """Why ``member`` is not selectable at ``now_us`` (``None``: it is) and when it is ready.

    ``request`` is the request asking, or ``None`` for a reader with no request
    (``explain``): rules 2 and 3 are then not applied. ``credentials`` is ``None`` when the lifecycle
    is not tracked (rule 1 is then not applied). ``ready`` is 0 for a permanent
    reason and for a member available now. ``loads`` (the state's configured-limit
    counts) applies rule 5; ``None`` leaves it out.
    """
    # One unpack each, not attribute reads: this runs per examined member (hot path).
    credential, model, pair_stream, cred_stream, owner, streaming, window, _ = member
    if credentials is not None:
        unusable = _lifecycle_problem(credentials, credential, model)
        if unusable is not None:
            return unusable, 0
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
    if pair is not None:
        pair_ready = pair.ready_us if pair.ready_us >= pair.predicted_us else pair.predicted_us
        if pair_ready > now_us and pair_ready > ready:
            ready = pair_ready
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
    if loads is not None and credential in policy.capacities:
        tokens = request.received.input_tokens if request is not None else 0
        return capacity_verdict(
            policy.capacities[credential], loads.get(credential), pair_stream, tokens, now_us
        )
    return None, 0


# --- the order members are examined in, and what a scan found ------------------------


def mix64(seed: int, salt: int) -> int:
    """A deterministic 64-bit mix of two integers (one splitmix64 step), independent of PYTHONHASHSEED."""
    acc = ((seed & _MASK64) * 0x9E3779B97F4A7C15 + (salt & _MASK64)) & _MASK64
    acc = ((acc ^ (acc >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    acc = ((acc ^ (acc >> 27)) * 0x94D049BB133111EB) & _MASK64
    return acc ^ (acc >> 31)


class Scan:
    """What a scan of the request's chain found (a private accumulator)."""

    __slots__ = (
        "any_attemptable",
        "recovering",
        "retry_at_us",
        "skipped",
        "skipped_more",
        "wait_us",
    )

    def __init__(self) -> None:
        self.skipped: list[Skipped] = []
        self.skipped_more = 0
        #: Earliest time-bound recovery for this request, and who recovers then.
        self.wait_us: int | None = None
        self.recovering: list[tuple[str, str]] = []
        #: Earliest time anything could serve a new request (Retry-After).
        self.retry_at_us: int | None = None
        #: Whether any member was not ruled out for good (lifecycle, scope, capability).
        self.any_attemptable = False

    def skip(
        self,
        plan_alias: str,
        position: int,
        credential: str | None,
        model: str | None,
        reason: SkipReason,
        recovers_at_us: int | None = None,
    ) -> None:
        if len(self.skipped) < SKIPS_RECORDED_MAX:
            self.skipped.append(
                Skipped(
                    alias=plan_alias,
                    chain_position=position,
                    credential_id=credential,
                    upstream_model=model,
                    reason=reason,
                    recovers_at_us=recovers_at_us,
                )
            )
        else:
            self.skipped_more += 1

    def blocked(
        self,
        plan_alias: str,
        position: int,
        credential: str,
        model: str,
        reason: SkipReason,
        ready_us: int,
    ) -> None:
        """A member blocked until ``ready_us``: the earliest recovery is what to wait for (I1.3)."""
        if self.wait_us is None or ready_us < self.wait_us:
            self.wait_us = ready_us
            self.recovering = [(credential, model)]
        elif ready_us == self.wait_us and len(self.recovering) < SKIPS_RECORDED_MAX:
            self.recovering.append((credential, model))
        self.skip(plan_alias, position, credential, model, reason, ready_us)

    def could_serve_at(self, at_us: int) -> None:
        self.any_attemptable = True
        if self.retry_at_us is None or at_us < self.retry_at_us:
            self.retry_at_us = at_us


def start_index(plan: PoolPlan, state: RoutingState, received: RequestReceived, salt: int) -> int:
    """The member a pool starts from: 0 (priority), its cursor (round-robin), a seeded
    draw (weighted), or the better of two seeded draws (the ranked strategies)."""
    strategy = plan.strategy
    if strategy is Strategy.PRIORITY:
        return 0
    if strategy is Strategy.ROUND_ROBIN:
        return state.cursors.get(plan.path, 0) % len(plan.entries)
    if strategy is Strategy.WEIGHTED:
        draw = mix64(received.seed, salt) % plan.cumulative_weights[-1]
        return bisect.bisect_right(plan.cumulative_weights, draw)
    size = len(plan.entries)
    first = mix64(received.seed, salt) % size
    if _explores(plan, received, salt):
        return first
    second = mix64(received.seed, salt + 1) % size
    second = second if second != first else (first + 1) % size
    rank = _ranker(plan, state, received)
    return first if (rank(first), first) <= (rank(second), second) else second


def member_order(
    plan: PoolPlan, state: RoutingState, received: RequestReceived, salt: int
) -> Iterable[int]:
    """Member indices in strategy order: from the pool's start member, wrapping around.

    A ranked strategy's pool of at most :data:`RANKED_SORT_MAX` members is
    examined best first (ties in member order); a larger one from the better
    of two seeded draws, wrapping around (power of two choices, O(1)).
    """
    size = len(plan.entries)
    if plan.strategy is Strategy.PRIORITY:
        return range(size)
    if plan.ranked and size <= RANKED_SORT_MAX:
        if _explores(plan, received, salt):
            start = mix64(received.seed, salt) % size
            return chain_iter(range(start, size), range(start))
        rank = _ranker(plan, state, received)
        return sorted(range(size), key=lambda index: (rank(index), index))
    start = start_index(plan, state, received, salt)
    return chain_iter(range(start, size), range(start))


def _explores(plan: PoolPlan, received: RequestReceived, salt: int) -> bool:
    """Whether this request explores (``least_latency``: one in :data:`EXPLORE_ONE_IN`).

    Seeded by the request, so a replay explores the same requests: a pair whose
    estimate went stale (slow once, fast again) is measured again.
    """
    if plan.strategy is not Strategy.LEAST_LATENCY:
        return False
    return mix64(received.seed, salt ^ _EXPLORE_SALT) % EXPLORE_ONE_IN == 0


def _ranker(plan: PoolPlan, state: RoutingState, received: RequestReceived) -> Callable[[int], int]:
    """The ranked strategy's key of a member index: lower is better."""
    entries = plan.entries
    if plan.strategy is Strategy.LEAST_IN_FLIGHT:
        in_flight = state.in_flight
        return lambda index: in_flight.get(entries[index].pair_stream, 0)
    if plan.strategy is Strategy.LEAST_LATENCY:
        latency = state.latency  # a pair never measured ranks 0: it is tried first
        return lambda index: latency.get(entries[index].pair_stream, 0)
    tokens, prices = received.input_tokens, plan.prices
    return lambda index: tokens * prices[index][0] + prices[index][1]
