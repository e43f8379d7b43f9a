"""Per-pool index of member readiness: pick a member without scanning blocked runs.

A derived, optional part of the routing state. A state built with
``initial(policy)`` keeps, for every pool of at least :data:`TREE_MIN_MEMBERS`
members, a min-segment-tree over its members' *ready time* — the later of the
pair's and the credential's ``ready_us`` (0 when both are healthy). The fold
updates the affected leaves after every availability event (O(log n) per
pool membership of the changed pair or credential).

:func:`first_ready` answers "the first member at or after ``lo`` that is
selectable at ``now``" in O(log n), so a long run of cooling members costs
nothing to jump over. The index is keyed by the pool's definition path; it
carries no availability of its own (the truth stays per pair and credential,
I1) and deciders produce exactly the same events with or without it (D3).
"""

from __future__ import annotations

from typing import Final

__all__ = ["TREE_MIN_MEMBERS", "TREE_SCAN_FIRST", "ReadyTree", "first_ready"]

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
