"""The settlement sink port: where a request's usage goes once it is known (I2).

A gateway runs in one of two modes: it keeps the budget ledger itself
("standalone", :class:`LocalLedgerSink`) or it reports outcomes to a platform
that keeps it ("platform"; :class:`RecordingPlatformSink` here, real ones in
adapters). I2 shipped because the two modes were interleaved in one handler
per endpoint: a pre-first-chunk streaming failure refunded on one endpoint and
leaked on two.

The port fixes that by construction:

* the sink is chosen **once per request** (:func:`open_sink`);
* it exposes the **same four hooks for every endpoint shape** (chat, messages,
  responses; streaming or not): :meth:`~SettlementSink.on_success`,
  :meth:`~SettlementSink.on_error_before_output`,
  :meth:`~SettlementSink.on_no_usage`, :meth:`~SettlementSink.on_incomplete`;
* *what* a request is billed is decided by one function for every mode,
  :func:`billing_for` (refund before output; observed usage or the estimate
  for a cut stream, never zero, L11); a sink only decides *where* it goes.

Sinks are pure: the local one turns the billing into ledger commands
(:class:`~.decide.SettleHold` / :class:`~.decide.RefundHold`) it keeps in a
list for the caller to decide and append; the recording one keeps
:class:`PlatformReport` values.
"""

from __future__ import annotations

import abc
import enum
from typing import Protocol

import attrs

from ..errors import UsageError
from .decide import RefundHold, SettleHold
from .values import Usage

__all__ = [
    "Billing",
    "LocalLedgerSink",
    "PlatformReport",
    "RecordingPlatformSink",
    "RequestEnd",
    "SettlementSink",
    "SinkMode",
    "billing_for",
    "open_sink",
]


class RequestEnd(enum.Enum):
    """How a request ended, whatever its endpoint shape."""

    #: Finished; the provider reported usage.
    SUCCESS = "success"
    #: Failed before any billable output (for a stream: before the first chunk).
    ERROR_BEFORE_OUTPUT = "error_before_output"
    #: Finished, but the provider reported no usage.
    NO_USAGE = "no_usage"
    #: A stream was cut after output started (usage observed so far, if any).
    INCOMPLETE = "incomplete"


@attrs.frozen(kw_only=True)
class Billing:
    """What a request is billed: nothing (``usage is None``: refund) or ``usage``."""

    outcome: RequestEnd
    usage: Usage | None


def billing_for(outcome: RequestEnd, *, estimate: Usage, observed: Usage | None) -> Billing:
    """The one billing rule for every mode and endpoint shape (I2, L11).

    * error before output -> refund;
    * success -> the reported usage;
    * no usage reported -> the estimate (the provider did bill something);
    * incomplete stream -> the observed usage, or the estimate when nothing
      (or only zeros) was observed: never zero.
    """
    if outcome is RequestEnd.ERROR_BEFORE_OUTPUT:
        return Billing(outcome=outcome, usage=None)
    if outcome is RequestEnd.SUCCESS and observed is not None:
        return Billing(outcome=outcome, usage=observed)
    if outcome is RequestEnd.INCOMPLETE and observed is not None and not observed.is_zero():
        return Billing(outcome=outcome, usage=observed)
    return Billing(outcome=outcome, usage=estimate)


class SettlementSink(Protocol):
    """The port: the same four hooks for every endpoint shape, in every mode."""

    def on_success(self, usage: Usage) -> None:
        """The request finished and the provider reported ``usage``."""

    def on_error_before_output(self) -> None:
        """The request failed before any billable output."""

    def on_no_usage(self) -> None:
        """The request finished without a usage report."""

    def on_incomplete(self, observed: Usage | None) -> None:
        """A stream was cut after output started, with the usage observed (or ``None``)."""


class _Sink(abc.ABC):
    """The hooks, shared by every sink: only :meth:`_deliver` differs per mode."""

    def __init__(self, *, hold_id: str, command_id: str, estimate: Usage) -> None:
        self.hold_id = hold_id
        self.command_id = command_id
        self.estimate = estimate

    def on_success(self, usage: Usage) -> None:
        self._deliver(billing_for(RequestEnd.SUCCESS, estimate=self.estimate, observed=usage))

    def on_error_before_output(self) -> None:
        self._deliver(
            billing_for(RequestEnd.ERROR_BEFORE_OUTPUT, estimate=self.estimate, observed=None)
        )

    def on_no_usage(self) -> None:
        self._deliver(billing_for(RequestEnd.NO_USAGE, estimate=self.estimate, observed=None))

    def on_incomplete(self, observed: Usage | None) -> None:
        self._deliver(billing_for(RequestEnd.INCOMPLETE, estimate=self.estimate, observed=observed))

    @abc.abstractmethod
    def _deliver(self, billing: Billing) -> None:
        """Send ``billing`` where this mode sends it (the only per-mode code)."""


class LocalLedgerSink(_Sink):
    """Standalone mode: turns each billing into a ledger command, kept in :attr:`commands`."""

    def __init__(self, *, hold_id: str, command_id: str, estimate: Usage) -> None:
        super().__init__(hold_id=hold_id, command_id=command_id, estimate=estimate)
        #: The commands to decide and append, in hook order.
        self.commands: list[SettleHold | RefundHold] = []

    def _deliver(self, billing: Billing) -> None:
        if billing.usage is None:
            self.commands.append(RefundHold(command_id=self.command_id, hold_id=self.hold_id))
        else:
            self.commands.append(
                SettleHold(command_id=self.command_id, hold_id=self.hold_id, usage=billing.usage)
            )


@attrs.frozen(kw_only=True)
class PlatformReport:
    """What a platform is told about one request."""

    hold_id: str
    command_id: str
    outcome: RequestEnd
    #: The usage billed, or ``None`` when nothing is billed (refund).
    usage: Usage | None


class RecordingPlatformSink(_Sink):
    """Platform mode, in memory: records each report in :attr:`reports` (tests, replays)."""

    def __init__(self, *, hold_id: str, command_id: str, estimate: Usage) -> None:
        super().__init__(hold_id=hold_id, command_id=command_id, estimate=estimate)
        #: The reports a platform would receive, in hook order.
        self.reports: list[PlatformReport] = []

    def _deliver(self, billing: Billing) -> None:
        self.reports.append(
            PlatformReport(
                hold_id=self.hold_id,
                command_id=self.command_id,
                outcome=billing.outcome,
                usage=billing.usage,
            )
        )


class SinkMode(enum.Enum):
    """Where usage goes, chosen once per request."""

    #: The gateway keeps the ledger itself.
    STANDALONE = "standalone"
    #: A platform is told the outcome (recorded in memory here).
    PLATFORM = "platform"


def open_sink(
    mode: SinkMode, *, hold_id: str, command_id: str, estimate: Usage
) -> LocalLedgerSink | RecordingPlatformSink:
    """Choose the sink of one request: the one place where the mode is looked at."""
    if mode is SinkMode.STANDALONE:
        return LocalLedgerSink(hold_id=hold_id, command_id=command_id, estimate=estimate)
    if mode is SinkMode.PLATFORM:
        return RecordingPlatformSink(hold_id=hold_id, command_id=command_id, estimate=estimate)
    raise UsageError(f"unknown sink mode {mode!r}")
