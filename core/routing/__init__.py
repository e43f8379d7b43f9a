"""Routing: per-(credential, upstream model) availability, failure policy, fallback chains.

Modules:

* :mod:`.failures` — the failure taxonomy and its default table (A1);
* :mod:`.policy` — the validated, immutable routing policy;
* :mod:`.events` — the routing events (the storage contract);
* :mod:`.state` — the availability/request state and its fold (rules and theory there);
* :mod:`.index` — the optional per-pool readiness index (O(log n) picks in large pools);
* :mod:`.selection` — the one precedence rule: why a member is or is not selectable now;
* :mod:`.steps` — the typed step :func:`decide_next` returns;
* :mod:`.commands` — the commands and every check of a caller's mistake in one (the edge);
* :mod:`.decide` — the deciders: start a request, decide its next step, record an outcome.

``docs/routing.md`` describes the policy format, the failure table and the decisions.
"""

from __future__ import annotations

from .commands import Failed, RecordOutcome, RouteNext, StartRequest, Succeeded, succeeded_problem
from .decide import OutcomeConflict, RequestConflict, decide_next, decide_outcome, decide_start
from .events import Announced
from .failures import (
    DEFAULT_FAILURE_TABLE,
    Evidence,
    FailureAction,
    FailureClass,
    FailureRule,
    FailureScope,
    Phase,
)
from .policy import (
    CredentialSpec,
    HintClamp,
    Member,
    ModelSpec,
    Policy,
    PolicyError,
    RequestLimits,
    Route,
    Strategy,
    Target,
)
from .state import RoutingState, Status, check_invariants, evolve, fold, initial, status_at
from .steps import RouteAttempt, RouteDegraded, RouteExhausted, RouteIdle, RouteStep, RouteWait

__all__ = [
    "DEFAULT_FAILURE_TABLE",
    "Announced",
    "CredentialSpec",
    "Evidence",
    "Failed",
    "FailureAction",
    "FailureClass",
    "FailureRule",
    "FailureScope",
    "HintClamp",
    "Member",
    "ModelSpec",
    "OutcomeConflict",
    "Phase",
    "Policy",
    "PolicyError",
    "RecordOutcome",
    "RequestConflict",
    "RequestLimits",
    "Route",
    "RouteAttempt",
    "RouteDegraded",
    "RouteExhausted",
    "RouteIdle",
    "RouteNext",
    "RouteStep",
    "RouteWait",
    "RoutingState",
    "StartRequest",
    "Status",
    "Strategy",
    "Succeeded",
    "Target",
    "check_invariants",
    "decide_next",
    "decide_outcome",
    "decide_start",
    "evolve",
    "fold",
    "initial",
    "status_at",
    "succeeded_problem",
]
