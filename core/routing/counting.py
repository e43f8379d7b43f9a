"""Token counts (G6): which pair a route would use for a count, and the record of one.

A gateway counting a prompt's tokens (to size a request, to answer an SDK's
``count_tokens``) needs the model the route would use now, but the count is not
an attempt: it takes no probe slot, no configured-limit slot and no budget hold,
and its answer is no evidence about the pair. So :func:`count_target` only
reads the state (the first member a request would be routed to now, half-open
ones included, since nothing is sent to them as a probe), and
:func:`decide_count` records what was counted as ``TokensCounted`` on its own
``count:<count_id>`` stream, which the routing fold keeps nothing of.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from ..errors import CommandError
from ..events import stream_id_problem
from ..streams import count_stream
from ..usability import CredentialUsability
from .commands import StartRequest, check_start
from .decide import pick_for
from .events import RequestReceived, TokensCounted
from .failures import Evidence
from .policy import Policy
from .state import RequestState, RoutingState

__all__ = ["CountTarget", "RecordCount", "count_target", "decide_count"]


@attrs.frozen(kw_only=True)
class CountTarget:
    """The pair a count is for: the one the route would use now, else its first member."""

    route: str
    caller_scope: str
    credential_id: str
    upstream_model: str


@attrs.frozen(kw_only=True)
class RecordCount:
    """Record ``input_tokens`` counted for ``target`` (ids come from the caller, X3)."""

    count_id: str
    target: CountTarget
    input_tokens: int
    evidence: Evidence = Evidence.LOCAL_COUNT


def count_target(
    policy: Policy,
    state: RoutingState,
    *,
    route: str,
    caller_scope: str,
    now_us: int,
    credentials: Mapping[str, CredentialUsability] | None = None,
) -> CountTarget | None:
    """The pair a request on ``route`` would be routed to now (``None``: no such route).

    When nothing is selectable now (all cooling, say), the route's first member
    that the caller may use: a count does not call the pair to answer.
    """
    check_start(StartRequest(request_id="count", route=route, caller_scope=caller_scope))
    received = RequestReceived(
        stream_id="request:count",
        version=1,
        at_us=now_us,
        request_id="count",
        route=route,
        backups=(),
        caller_scope=caller_scope,
        model_owner=None,
        seed=0,
        stream=False,
        input_tokens=0,
        deadline_us=None,
    )
    chain = policy.chain(route)
    if chain is None:
        return None
    member = pick_for(policy, state, RequestState(received), chain.targets, now_us, credentials)
    if member is None:
        member = next(
            (
                entry
                for plan in chain.targets
                for entry in plan.entries
                if entry.owner is None or entry.owner == caller_scope
            ),
            None,
        )
    if member is None:
        return None
    return CountTarget(
        route=route,
        caller_scope=caller_scope,
        credential_id=member.credential,
        upstream_model=member.model,
    )


def decide_count(command: RecordCount, *, now_us: int) -> tuple[TokensCounted]:
    """``TokensCounted`` for a well-formed command (:class:`CommandError` naming a bad field)."""
    count_id = command.count_id
    if type(count_id) is not str or not count_id:
        raise CommandError(command, "count_id", f"must be a non-empty string, got {count_id!r}")
    stream = count_stream(count_id)
    problem = stream_id_problem(stream)
    if problem is not None:
        raise CommandError(command, "count_id", problem)
    tokens = command.input_tokens
    if type(tokens) is not int or tokens < 0:
        raise CommandError(command, "input_tokens", f"must be an int >= 0, got {tokens!r}")
    if type(command.evidence) is not Evidence or command.evidence is Evidence.CACHE_HIT:
        raise CommandError(
            command, "evidence", f"must be local_count or upstream, got {command.evidence!r}"
        )
    target = command.target
    return (
        TokensCounted(
            stream_id=stream,
            version=1,
            at_us=now_us,
            count_id=count_id,
            route=target.route,
            caller_scope=target.caller_scope,
            credential_id=target.credential_id,
            upstream_model=target.upstream_model,
            input_tokens=tokens,
            evidence=command.evidence,
        ),
    )
