"""What a request ended as: the four results a gateway renders (one per way it ends)."""

from __future__ import annotations

import attrs

from routeledger.core.budget.values import Rejection
from routeledger.core.routing import FailureClass

__all__ = ["BudgetRejected", "Degradation", "Exhausted", "Result", "Served"]


@attrs.frozen(kw_only=True)
class Served:
    """The request was served by this credential and upstream model."""

    credential_id: str
    upstream_model: str
    attempts: int
    input_tokens: int
    output_tokens: int
    cost_micros: int


@attrs.frozen(kw_only=True)
class Exhausted:
    """Every candidate failed (or none could serve within the wait bound)."""

    attempts: int
    #: When anything could serve again (-> Retry-After), engine time.
    retry_at_us: int | None
    failures: tuple[FailureClass, ...]


@attrs.frozen(kw_only=True)
class Degradation:
    """Nothing usable is configured or resolved for the request."""

    reason: str


@attrs.frozen(kw_only=True)
class BudgetRejected:
    """The budget hold was refused; nothing was dispatched."""

    rejection: Rejection


Result = Served | Exhausted | Degradation | BudgetRejected
