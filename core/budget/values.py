"""Value types and limits of the budget ledger: units, scopes, periods, usage, rejections.

Every amount is an ``int`` in a named unit (micro-units of money, tokens or
requests); floats never reach the core (L9). :func:`amount_problem` is the one
validation the adapter edge calls on anything it parsed from outside.
"""

from __future__ import annotations

import enum
from typing import Final

import attrs

from ..time import US_PER_H

__all__ = [
    "ACCOUNTS_PER_HOLD_MAX",
    "AMOUNT_MAX",
    "BALANCE_MAX",
    "HOLD_TTL_US_MAX",
    "LIMIT_MAX",
    "AccountScope",
    "HoldStatus",
    "Leg",
    "PeriodKind",
    "PeriodSpec",
    "Rejection",
    "RejectionReason",
    "Unit",
    "Usage",
    "amount_problem",
    "check_amount",
]

#: Largest single amount (a hold, a usage figure, a correction), in the
#: account's unit. Why 10**15: one quadrillion micro-dollars is one billion
#: dollars (or 10**15 tokens) for *one* request, far beyond anything real,
#: and 9,000 such amounts still sum below 2**63, so a balance computed from a
#: few of them can never overflow a signed 64-bit column (SQL ``bigint``).
AMOUNT_MAX: Final = 10**15
#: Largest limit an account may have: same bound, same reason.
LIMIT_MAX: Final = AMOUNT_MAX
#: Largest balance (spent, reserved, lifetime) :func:`check_invariants` accepts:
#: signed 64 bits, the storage contract of every backend.
BALANCE_MAX: Final = 2**63 - 1
#: Longest hold TTL. Why: a provider call that has not finished after a day is
#: lost; a longer TTL would only keep leaked budget reserved (L5).
HOLD_TTL_US_MAX: Final = 24 * US_PER_H
#: Most accounts (scopes) one hold may touch. Why: key + user + team + org +
#: provider + model is six; eight leaves room and bounds the batch size.
ACCOUNTS_PER_HOLD_MAX: Final = 8


class Unit(enum.Enum):
    """What an account's amounts count."""

    #: Money, in micro-units of the account's currency (1 USD = 1_000_000).
    MICROS = "micros"
    #: Tokens (prompt + completion).
    TOKENS = "tokens"
    #: Requests (each hold counts as one).
    REQUESTS = "requests"


class AccountScope(enum.Enum):
    """Which principal or resource an account budgets."""

    #: One API key.
    KEY = "key"
    #: One end user.
    USER = "user"
    #: A team.
    TEAM = "team"
    #: An organisation.
    ORG = "org"
    #: A provider (all its models).
    PROVIDER = "provider"
    #: One upstream model.
    MODEL = "model"


class PeriodKind(enum.Enum):
    """How an account's period spend resets (T2)."""

    #: Never: period spend is lifetime spend.
    NONE = "none"
    #: Fixed-length windows of ``length_us`` anchored at the account's opening.
    ROLLING = "rolling"
    #: Calendar day in the account's time zone.
    DAY = "day"
    #: Calendar week (Monday 00:00) in the account's time zone.
    WEEK = "week"
    #: Calendar month (the 1st, 00:00) in the account's time zone.
    MONTH = "month"


@attrs.frozen(kw_only=True)
class PeriodSpec:
    """An account's period: its kind, the window length (rolling only) and the zone *name*.

    The zone is a name (``"Europe/Paris"``); the core never loads the tz
    database, the caller passes a resolver (see :mod:`.periods`).
    """

    kind: PeriodKind = PeriodKind.NONE
    length_us: int = 0
    zone: str = "UTC"


@attrs.frozen(kw_only=True)
class Usage:
    """An amount of usage in every unit at once: an estimate or an actual."""

    cost_micros: int = 0
    tokens: int = 0
    requests: int = 0

    def amount_in(self, unit: Unit) -> int:
        """This usage counted in ``unit``."""
        if unit is Unit.MICROS:
            return self.cost_micros
        if unit is Unit.TOKENS:
            return self.tokens
        return self.requests

    @classmethod
    def of(cls, unit: Unit, amount: int) -> Usage:
        """A usage of ``amount`` in ``unit`` and nothing else."""
        if unit is Unit.MICROS:
            return cls(cost_micros=amount)
        if unit is Unit.TOKENS:
            return cls(tokens=amount)
        return cls(requests=amount)

    def is_zero(self) -> bool:
        """Tell whether nothing at all was used."""
        return self.cost_micros == 0 and self.tokens == 0 and self.requests == 0


@attrs.frozen(kw_only=True)
class Leg:
    """One account a hold touches and the amount it holds there (in that account's unit)."""

    account_id: str
    amount: int


class HoldStatus(enum.Enum):
    """Where a hold is in its life (the table lives in :mod:`.ledger`)."""

    #: Identity hash (members are singletons): ``Enum.__hash__`` runs in Python
    #: and the transition table is looked up on every hold command. Nothing
    #: iterates a hash-ordered container of these, so D1 is unaffected.
    __hash__ = object.__hash__

    #: Admitted; its legs are counted in each account's ``reserved``.
    OPEN = "open"
    #: Resolved by actual usage: ``min(actual, held)`` posted, the rest released.
    SETTLED = "settled"
    #: Resolved by releasing everything (failure before billable output).
    REFUNDED = "refunded"
    #: Resolved by its deadline passing: everything released.
    EXPIRED = "expired"
    #: Expired, then its usage arrived and was booked as a late posted debit.
    LATE_BOOKED = "late_booked"
    #: Never admitted; the id stays rejected (X2).
    REJECTED = "rejected"


class RejectionReason(enum.Enum):
    """Why a command was refused (a result, never an exception)."""

    #: ``spent + reserved + amount > limit`` on ``account_id``.
    BUDGET_EXCEEDED = "budget_exceeded"
    #: The command names an account that was never opened.
    UNKNOWN_ACCOUNT = "unknown_account"
    #: The command names a hold that was never placed.
    UNKNOWN_HOLD = "unknown_hold"
    #: The hold already resolved (``resolved_as`` says how) (L4).
    ALREADY_RESOLVED = "already_resolved"
    #: The hold's deadline passed; it expired instead (L6).
    HOLD_EXPIRED = "hold_expired"
    #: An amount is not an int, is a bool, is negative or above its limit (L9).
    AMOUNT_INVALID = "amount_invalid"
    #: The account already exists.
    ACCOUNT_EXISTS = "account_exists"
    #: The same command id was used before with another payload (X1).
    COMMAND_CONFLICT = "command_conflict"
    #: A lease cannot be returned while holds are still open on it.
    LEASE_IN_USE = "lease_in_use"


@attrs.frozen(kw_only=True)
class Rejection:
    """A refused command: the reason and the figures that explain it."""

    reason: RejectionReason
    #: The account (scope) that refused, and which kind of scope it budgets.
    account_id: str | None = None
    scope: AccountScope | None = None
    hold_id: str | None = None
    limit: int | None = None
    spent: int | None = None
    reserved: int | None = None
    requested: int | None = None
    resolved_as: HoldStatus | None = None
    detail: str = ""


def amount_problem(value: object, *, maximum: int = AMOUNT_MAX, minimum: int = 0) -> str | None:
    """Why ``value`` is not a valid amount, or ``None`` when it is.

    Valid: an ``int`` (not a ``bool``) in ``minimum..maximum``. Floats (NaN and
    ±inf among them), strings and ``Decimal`` are refused: money is integer
    micro-units (L9).
    """
    if type(value) is not int:
        return f"amount must be an int, got {type(value).__name__} {value!r}"
    if value < minimum:
        return f"amount {value} is below {minimum}"
    if value > maximum:
        return f"amount {value} is above {maximum}"
    return None


def check_amount(value: object, *, field: str, maximum: int = AMOUNT_MAX) -> Rejection | None:
    """The typed result the adapter edge returns for an invalid amount (L9), or ``None``."""
    problem = amount_problem(value, maximum=maximum)
    if problem is None:
        return None
    return Rejection(reason=RejectionReason.AMOUNT_INVALID, detail=f"{field}: {problem}")
