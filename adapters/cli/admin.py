"""``routeledger admin …``: operator commands on the log a gateway runs on (docs/operations.md).

Each command subcommand opens the engine on ``--store`` with ``--config`` (the
store must exist: ``create=False``; no maintenance thread), carries out one
operator command and prints what it did; ``admin log`` lists what operators and
the configuration file changed. Every command is recorded with ``--actor``
(default ``$ROUTELEDGER_ACTOR``, else ``$USER``) and ``--reason``, and is
idempotent by ``--command-id``: run it again with the same id and nothing
new is recorded.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import click
import orjson

from routeledger.core.events import Event, Origin
from routeledger.core.time import US_PER_S

if TYPE_CHECKING:  # pragma: no cover
    from routeledger.adapters.engine.engine import Engine
    from routeledger.adapters.engine.operator import OperatorResult

__all__ = ["admin"]

#: Units ``--for`` accepts, in seconds.
_DURATION_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def _default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # pragma: no cover - a uid without a name
        return "operator"


def _common(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options every admin subcommand takes."""
    options = [
        click.option(
            "--config",
            "config_path",
            required=True,
            type=click.Path(dir_okay=False, path_type=Path),
            help="The gateway's TOML configuration.",
        ),
        click.option("--store", "store_url", default=None, metavar="URL", help="Store URL."),
        click.option(
            "--actor",
            envvar="ROUTELEDGER_ACTOR",
            default=_default_actor,
            show_default="$ROUTELEDGER_ACTOR, else the login name",
            help="Who is acting (recorded).",
        ),
        click.option("--reason", required=True, help="Why (recorded, one sentence)."),
        click.option("--command-id", default=None, help="Idempotency key (default: a fresh id)."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON document."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _run(
    config_path: Path,
    store_url: str | None,
    as_json: bool,
    act: Callable[[Engine], OperatorResult],
) -> None:
    from routeledger.adapters.engine.engine import Engine

    with Engine.open(store_url, config_path, maintenance=False, create=False) as engine:
        result = act(engine)
    if as_json:
        document = {
            "command_id": result.command_id,
            "action": result.action.value,
            "target": result.target,
            "effects": result.effects,
            "duplicate": result.duplicate,
        }
        click.echo(orjson.dumps(document, option=orjson.OPT_SORT_KEYS).decode())
        return
    again = (
        " (already done under this command id: nothing new recorded)" if result.duplicate else ""
    )
    click.echo(
        f"{result.action.value} on {result.target}: {result.effects} event(s), "
        f"command {result.command_id}{again}"
    )


def parse_duration(text: str) -> int:
    """``90s``, ``15m``, ``2h``, ``1d`` (or bare seconds) in microseconds."""
    unit = text[-1:] if text[-1:] in _DURATION_UNITS else "s"
    number = text[:-1] if text[-1:] in _DURATION_UNITS else text
    try:
        value = float(number)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 15m, 2h or 1d") from None
    if not value > 0:
        raise click.BadParameter(f"{text!r}: a duration must be positive")
    return round(value * _DURATION_UNITS[unit] * US_PER_S)


@click.group()
def admin() -> None:
    """Operator commands: lift or impose blocks, change limits, correct spend, release holds."""


@admin.command("lift")
@_common
@click.option("--credential", default=None, help="Only this credential (and its pairs).")
@click.option("--model", default=None, help="With --credential: only this upstream model.")
@click.option("--all", "everything", is_flag=True, help="Every blocked scope.")
def lift(credential: str | None, model: str | None, everything: bool, **common: Any) -> None:
    """Clear cooldowns and suspensions (one pair, one credential, or --all); no probe needed."""
    if everything == (credential is not None):
        raise click.UsageError("give --credential (optionally with --model) or --all")
    _act(common, lambda e, who: e.lift_blocks(credential, model, **who))


@admin.command("suspend")
@_common
@click.option("--credential", required=True, help="The credential.")
@click.option("--model", default=None, help="Only this upstream model (default: every model).")
@click.option("--for", "duration", required=True, help="How long: 90s, 15m, 2h, 1d.")
def suspend(credential: str, model: str | None, duration: str, **common: Any) -> None:
    """Suspend a pair (or a credential) for a duration; one probe follows its end."""
    duration_us = parse_duration(duration)
    _act(common, lambda e, who: e.impose_block(credential, model, duration_us=duration_us, **who))


@admin.command("set-limit")
@_common
@click.argument("account")
@click.argument("limit", type=int)
def set_limit(account: str, limit: int, **common: Any) -> None:
    """Set ACCOUNT's limit to LIMIT (its unit: micro-units of money, tokens or requests)."""
    _act(common, lambda e, who: e.change_limit(account, limit, **who))


@admin.command("correct-spend")
@_common
@click.argument("account")
@click.option("--delta", required=True, type=int, help="Amount to add (negative credits).")
def correct_spend(account: str, delta: int, **common: Any) -> None:
    """Add --delta (negative to credit) to ACCOUNT's period and lifetime spend."""
    _act(common, lambda e, who: e.correct_spend(account, delta, **who))


@admin.command("release-hold")
@_common
@click.argument("hold")
def release_hold(hold: str, **common: Any) -> None:
    """Release the open hold HOLD (a request id) now, before its TTL."""
    _act(common, lambda e, who: e.release_hold(hold, **who))


def _act(common: dict[str, Any], act: Callable[[Engine, dict[str, Any]], OperatorResult]) -> None:
    who = {"actor": common["actor"], "reason": common["reason"], "command_id": common["command_id"]}
    _run(common["config_path"], common["store_url"], common["as_json"], lambda e: act(e, who))


@admin.command("log")
@click.option("--store", "store_url", default=None, metavar="URL", help="Store URL.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--last", default=50, show_default=True, type=click.IntRange(1), help="How many.")
def log(store_url: str | None, as_json: bool, last: int) -> None:
    """What operators and the configuration changed: every Origin.ADMIN event, newest last."""
    from routeledger.adapters.cli.main import _emit_json, _read_store, format_time

    with _read_store(store_url) as store:
        found = (_admin_row(r.position, r.event) for r in store.read_all(0, page=10_000))
        rows = [row for row in found if row is not None][-last:]
    if as_json:
        _emit_json({"events": rows})
        return
    for row in rows:
        what = ", ".join(f"{k}={v}" for k, v in row.items() if k not in _ROW_HEAD and v != "")
        click.echo(f"#{row['position']} {format_time(row['at_us'])} {row['event']} {what}")


#: The columns every ``admin log`` row starts with.
_ROW_HEAD: Final = ("position", "at_us", "event")


def _admin_row(position: int, evt: Event) -> dict[str, Any] | None:
    """One ``admin log`` row, or ``None`` for an event no operator or file decided."""
    if type(evt).ORIGIN is not Origin.ADMIN:
        return None
    row: dict[str, Any] = {"position": position, "at_us": evt.at_us, "event": type(evt).__name__}
    row["stream"] = evt.stream_id
    for name in ("actor", "reason", "command_id", "limit", "previous_limit", "delta", "until_us"):
        value = getattr(evt, name, None)
        if value is not None:
            row[name] = value
    action = getattr(evt, "action", None)
    if action is not None:
        row["action"] = action.value
        row["effects"] = getattr(evt, "effects", 0)
    return row


@admin.group("snapshots")
def snapshots_group() -> None:
    """The stored snapshots (a cache of the fold beside the log; never events)."""


@snapshots_group.command("list")
@click.option("--store", "store_url", default=None, metavar="URL", help="Store URL.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def snapshots_list(store_url: str | None, as_json: bool) -> None:
    """Every stored snapshot, oldest first: position, size, and whether restore would trust it."""
    from routeledger.adapters.cli.main import _emit_json, _read_store
    from routeledger.adapters.store.snapshots import check_snapshot, iter_snapshots

    with _read_store(store_url) as store:
        rows: list[dict[str, Any]] = [
            {"position": s.version, "bytes": len(s.payload), "problem": check_snapshot(s)}
            for s in iter_snapshots(store)
        ]
    if as_json:
        _emit_json({"snapshots": rows})
        return
    if not rows:
        click.echo("no snapshots stored")
    for row in rows:
        verdict = "good" if row["problem"] is None else f"BAD: {row['problem']}"
        click.echo(f"#{row['position']} {row['bytes'] / 1e6:.2f} MB {verdict}")


@snapshots_group.command("drop")
@click.option("--store", "store_url", default=None, metavar="URL", help="Store URL.")
@click.argument("position", type=click.IntRange(1))
def snapshots_drop(store_url: str | None, position: int) -> None:
    """Delete the snapshot at POSITION (restore then uses an older one or the whole log)."""
    from routeledger.adapters.cli.main import _read_store
    from routeledger.adapters.store.snapshots import drop_snapshot

    with _read_store(store_url) as store:
        if not drop_snapshot(store, position):
            raise click.BadParameter(f"no snapshot at position {position}", param_hint="POSITION")
    click.echo(f"dropped the snapshot at position {position}")


@snapshots_group.command("prune")
@click.option("--store", "store_url", default=None, metavar="URL", help="Store URL.")
@click.option("--keep", default=3, show_default=True, type=click.IntRange(1), help="How many.")
@click.option("--bad", "bad_only", is_flag=True, help="Delete only the snapshots that are bad.")
def snapshots_prune(store_url: str | None, keep: int, bad_only: bool) -> None:
    """Delete all but the newest KEEP snapshots (or, with --bad, every bad one)."""
    from routeledger.adapters.cli.main import _read_store
    from routeledger.adapters.store.snapshots import (
        check_snapshot,
        drop_snapshot,
        iter_snapshots,
        prune_snapshots,
    )

    with _read_store(store_url) as store:
        if bad_only:
            bad = [s.version for s in iter_snapshots(store) if check_snapshot(s) is not None]
            deleted = [v for v in bad if drop_snapshot(store, v)]
        else:
            deleted = prune_snapshots(store, keep)
    click.echo(f"deleted {len(deleted)} snapshots" + (f": {deleted}" if deleted else ""))
