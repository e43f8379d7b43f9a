"""Per-pool index of member readiness: pick a member without scanning blocked runs.

A derived, optional part of the routing state. A state built with
``initial(policy)`` keeps, for every pool of at least :data:`TREE_MIN_MEMBERS`
members, a min-segment-tree over its members' *ready time* — the latest of the
pair's ``ready_us`` and ``predicted_us`` and the credential's ``ready_us`` (0
when all are clear). The fold
updates the affected leaves after every availability event (O(log n) per
pool membership of the changed pair or credential).

:func:`first_ready` answers "the first member at or after ``lo`` that is
selectable at ``now``" in O(log n), so a long run of cooling members costs
nothing to jump over. The index is keyed by the pool's definition path; it
carries no availability of its own (the truth stays per pair and credential,
I1) and deciders produce exactly the same events with or without it (D3).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from ..errors import InvariantViolation
from ..usability import CredentialUsability
from .selection import BLOCKED, SKIPS_RECORDED_MAX, Scan, member_verdict, start_index

if TYPE_CHECKING:  # annotations only: the state imports this module
    from .policy import Policy, PoolPlan
    from .state import RequestState, RoutingState, ScopeState

__all__ = [
    "TREE_MIN_MEMBERS",
    "TREE_SCAN_FIRST",
    "ReadyTree",
    "first_ready",
    "index_pools",
    "pick_indexed",
    "refresh_leaves",
]

#: Smallest pool given a tree. Why: below this a plain scan is as fast as a
#: tree descent and keeps small pools (the common case) on the simplest path.
TREE_MIN_MEMBERS: Final = 32

#: Members a decision scans in order before it consults the tree. Why: with
#: blocked members spread through a pool the scan finds a pick within a few
#: members, cheaper than a tree descent; only long blocked runs reach the tree.
TREE_SCAN_FIRST: Final = 8

#: Leaf value of padding beyond the last member: never selectable.
_NEVER: Final = 1 << 63


class ReadyTree:
    """A min-segment-tree over a pool's member ready times (leaves ``size .. size + n``)."""

    __slots__ = ("data", "members", "size")

    def __init__(self, members: int) -> None:
        size = 1 << max(0, (members - 1).bit_length())
        self.members = members
        self.size = size
        data = [0] * (2 * size)
        for leaf in range(size + members, 2 * size):
            data[leaf] = _NEVER
        for node in range(size - 1, 0, -1):
            data[node] = min(data[2 * node], data[2 * node + 1])
        self.data = data

    def set(self, index: int, ready_us: int) -> None:
        """Set member ``index``'s ready time and repair the path to the root."""
        data = self.data
        node = index + self.size
        data[node] = ready_us
        node >>= 1
        while node:
            data[node] = min(data[2 * node], data[2 * node + 1])
            node >>= 1


def first_ready(tree: ReadyTree, lo: int, now_us: int) -> int:
    """The first member index >= ``lo`` with ready time <= ``now_us``, or -1 (O(log n))."""
    data = tree.data
    size = tree.size
    node = lo + size
    while True:
        if data[node] <= now_us:
            while node < size:
                node = 2 * node if data[2 * node] <= now_us else 2 * node + 1
            return node - size
        while node & 1:  # a right child: climb until a left child (or past the root)
            node >>= 1
        if node == 0:
            return -1
        node += 1


# --- the index kept by the fold -------------------------------------------------------


def index_pools(state: RoutingState, policy: Policy) -> None:
    """Give ``state`` a readiness tree per pool of ``policy`` of at least TREE_MIN_MEMBERS."""
    state.indexed_for = policy
    for plan in policy.pools():
        if len(plan.entries) >= TREE_MIN_MEMBERS:
            tree = state.trees[plan.path] = ReadyTree(len(plan.entries))
            for member, entry in enumerate(plan.entries):
                pair_key, cred_key = entry.pair_stream, entry.cred_stream
                leaf = (tree, member, pair_key, cred_key)
                state.tree_leaves.setdefault(pair_key, []).append(leaf)
                state.tree_leaves.setdefault(cred_key, []).append(leaf)


def refresh_leaves(state: RoutingState, stream: str) -> None:
    """Refresh the tree leaves fed by ``stream`` (derived data: the later ready time wins)."""
    for tree, member, pair_key, cred_key in state.tree_leaves.get(stream, ()):
        pair = state.pairs.get(pair_key)
        cred = state.creds.get(cred_key)
        ready = max(pair.ready_us, pair.predicted_us) if pair else 0
        tree.set(member, max(ready, cred.ready_us if cred else 0))


# --- the indexed pick -----------------------------------------------------------------


def pick_indexed(
    policy: Policy,
    state: RoutingState,
    request: RequestState,
    plan: PoolPlan,
    at: tuple[int, ReadyTree, int, int],
    now_us: int,
    credentials: Mapping[str, CredentialUsability] | None,
    scan: Scan,
) -> tuple[int, PoolPlan, int, ScopeState | None, ScopeState | None] | None:
    """Continue :func:`~.decide._pick` in an indexed pool after ``examined`` members, in O(log n) jumps.

    ``at`` is where the scan stands: (chain position, the pool's tree, the
    strategy salt, members examined so far).

    Records exactly the skips the scan would record; ``None`` when nothing
    further in the pool is selectable (the caller then scans on for the wait).
    """
    position, tree, salt, examined = at
    entries = plan.entries
    size = len(entries)
    creds, pairs, loads = state.creds, state.pairs, state.loads
    begin = start_index(plan, state, request.received, salt)
    resume = begin + examined
    ranges = ((resume, size), (0, begin)) if resume < size else ((resume - size, begin),)
    for low, high in ranges:
        member = first_ready(tree, low, now_us) if low < high else -1
        while 0 <= member < high:
            verdict, _ = member_verdict(
                policy, entries[member], request, creds, pairs, now_us, credentials, loads
            )
            if verdict is None:
                passed = (member - begin) % size
                recorded = min(passed, examined + max(0, SKIPS_RECORDED_MAX - len(scan.skipped)))
                for step in range(examined, recorded):
                    entry = entries[(begin + step) % size]
                    why, ready = member_verdict(
                        policy, entry, request, creds, pairs, now_us, credentials, loads
                    )
                    if why is None:  # pragma: no cover (unreachable: the tree passed over it)
                        raise InvariantViolation(
                            f"{plan.path}[{(begin + step) % size}] was selectable"
                        )
                    until = ready if why in BLOCKED and ready else None
                    scan.skip(plan.alias, position, entry.credential, entry.model, why, until)
                scan.skipped_more += passed - recorded
                picked = entries[member]
                return (
                    position,
                    plan,
                    member,
                    pairs.get(picked.pair_stream),
                    creds.get(picked.cred_stream),
                )
            member = first_ready(tree, member + 1, now_us) if member + 1 < high else -1
    return None
