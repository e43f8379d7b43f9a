"""The ``routeledger`` command line.

Exit codes (documented in ``routeledger --help`` and ``docs/cli.md``):

* ``0`` — success;
* ``1`` — the command ran and found a problem it reports (for example a
  failed verification);
* ``2`` — usage error: a bad option, a malformed URL or policy file, an
  unknown request id or route;
* ``3`` — the store could not be opened or read (missing file, unreachable
  database, a stored event that does not decode). Read commands open the
  store with ``create=False`` and never write to it.

Every read command takes ``--store URL`` and ``--json`` (one JSON document on
stdout instead of tables for people). Times (``--at``, ``--since``) are
integer engine microseconds since the epoch or ISO 8601 (``2026-11-22T14:02:00Z``;
no offset means UTC).
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import click
import orjson

from routeledger.adapters.providers.scrub import DEFAULT_SCRUBBER
from routeledger.adapters.store.eventstore import EventStore, StoreError, open_store
from routeledger.core import catalog  # noqa: F401  (registers every event type for decoding)
from routeledger.core.errors import DataError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from routeledger.adapters.engine.config import EngineConfig
    from routeledger.core.fold import Folded
    from routeledger.core.routing.policy import Policy, PoolPlan
    from routeledger.core.usability import CredentialUsability

EXIT_OK: Final = 0
EXIT_PROBLEM: Final = 1
EXIT_USAGE: Final = 2
EXIT_STORE: Final = 3

STORE_OPTION_HELP: Final = (
    "Store URL: memory://, sqlite:///path.db or postgresql://user:pw@host/db "
    "(default: $ROUTELEDGER_STORE_URL, else sqlite:///routeledger.db)."
)
JSON_OPTION_HELP: Final = "Print one JSON document instead of tables."
#: Table width when stdout is not a terminal. Why: rich falls back to 80
#: columns and then truncates ids; 200 fits every board's columns unabridged.
TABLE_WIDTH_PIPE: Final = 200
#: Most ``serve --workers``. Why: each worker is a process with its own engine
#: state and store connections; past a few per core they only contend.
SERVE_WORKERS_MAX: Final = 64
#: Seconds ``serve`` lets in-flight requests finish on shutdown before closing them.
SERVE_GRACE_S: Final = 30
#: Seconds ``serve`` keeps an idle client connection open. Why: longer than the
#: idle expiry of client pools (httpx and the SDKs on it: 5 s, uvicorn's own
#: default too), so the server never closes a connection just as a client reuses
#: it (seen as ReadError under load at 5 s); 75 s is what load balancers use.
SERVE_KEEP_ALIVE_S: Final = 75
TIME_HELP: Final = "engine µs since the epoch, or ISO 8601 such as 2026-11-22T14:02:00Z"


class Problem(Exception):
    """The command ran and found a problem (exit 1); the message is already printed."""


# --------------------------------------------------------------------------- helpers


def parse_time(text: str) -> int:
    """Engine microseconds from an integer or an ISO 8601 timestamp (UTC when no offset)."""
    value = text.strip()
    if value.lstrip("-").isdigit():
        return int(value)
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not {TIME_HELP}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    delta = moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def format_time(at_us: int | None) -> str:
    """An engine time for people: ISO 8601 UTC with milliseconds."""
    if at_us is None:
        return "-"
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=at_us)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def format_duration(us: int) -> str:
    """A duration for people (``1.5s``, ``3m20s``)."""
    seconds = us / 1_000_000
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _now_us() -> int:
    return time.time_ns() // 1_000


def _console() -> Console:
    from rich.console import Console

    # Pipes and files get wide tables rather than rich's 80-column default.
    return Console(highlight=False, width=None if sys.stdout.isatty() else TABLE_WIDTH_PIPE)


def _emit_json(document: object) -> None:
    click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())


@contextmanager
def _read_store(url: str | None) -> Iterator[EventStore]:
    store = open_store(url, create=False)
    try:
        yield store
    finally:
        store.close()


def _load_config(path: Path) -> EngineConfig:
    """The whole configuration in ``path``; errors name the file, line and key."""
    from routeledger.adapters.engine.config import load_config

    try:
        return load_config(path)
    except UsageError as error:
        raise UsageError(f"policy file {error}") from error


def _load_policy(path: Path) -> Policy:
    """The routing policy in ``path`` (``adapters.config``); errors name the file, line and key."""
    from routeledger.adapters.engine.config import load_policy

    try:
        return load_policy(path)
    except UsageError as error:
        raise UsageError(f"policy file {error}") from error


time_option = click.option(
    "--at",
    "at",
    default=None,
    metavar="TIME",
    help=f"The instant to evaluate statuses at ({TIME_HELP}); default: now.",
)
store_option = click.option(
    "--store", "store_url", default=None, metavar="URL", help=STORE_OPTION_HELP
)
json_option = click.option("--json", "as_json", is_flag=True, help=JSON_OPTION_HELP)


# --------------------------------------------------------------------------- the group


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Exit codes: 0 ok, 1 a problem was found, 2 usage error, 3 store error.",
)
@click.version_option(package_name="routeledger")
def cli() -> None:
    """RouteLedger: an event-sourced decision engine for LLM gateways."""


@cli.command()
@click.option("--store", "store_url", default=None, help=STORE_OPTION_HELP)
def demo(store_url: str | None) -> None:
    """Run the demo workload against the store and print a summary."""
    from routeledger.adapters.cli.demo import run_demo

    run_demo(store_url, echo=click.echo)


# --------------------------------------------------------------------------- status


@cli.command()
@store_option
@json_option
@time_option
def status(store_url: str | None, as_json: bool, at: str | None) -> None:
    """The availability board: every credential x model (and credential-wide scope).

    For each scope: available / cooling / suspended / half_open / probing at
    the instant, until when, why (failure class, clamp) and since which event.
    """
    from routeledger.projections.availability import AvailabilityBoard

    now = parse_time(at) if at is not None else _now_us()
    board = AvailabilityBoard()
    with _read_store(store_url) as store:
        board.catch_up(store.read_all(0, page=10_000))
    if as_json:
        _emit_json(board.document(now))
        return
    rows = board.rows(now)
    from rich.table import Table

    table = Table(title=f"Availability at {format_time(now)} (log position {board.position})")
    for column in ("credential", "model", "status", "until", "why", "clamp", "since"):
        table.add_column(column)
    styles = {"available": "green", "cooling": "yellow", "suspended": "red"}
    for row in rows:
        style = styles.get(row.status.value, "cyan")
        table.add_row(
            row.credential_id,
            row.upstream_model or "(all models)",
            f"[{style}]{row.status.value}[/]",
            format_time(row.until_us),
            row.reason.value if row.reason else ("operator" if row.until_us else "-"),
            row.clamp.value if row.clamp else "-",
            f"#{row.since_position} {format_time(row.since_at_us)}",
        )
    _console().print(table)


# --------------------------------------------------------------------------- budget


@cli.command()
@store_option
@json_option
@time_option
def budget(store_url: str | None, as_json: bool, at: str | None) -> None:
    """The budget board: per account, limit, spends, reserved, open holds and their age."""
    from routeledger.projections.budget import BudgetBoard

    now = parse_time(at) if at is not None else _now_us()
    board = BudgetBoard()
    with _read_store(store_url) as store:
        board.catch_up(store.read_all(0, page=10_000))
    if as_json:
        _emit_json(board.document(now))
        return
    rows = board.rows(now)
    from rich.table import Table

    table = Table(title=f"Budget at {format_time(now)} (log position {board.position})")
    for column in (
        "account",
        "scope",
        "unit",
        "limit",
        "spent",
        "reserved",
        "available",
        "lifetime",
        "overage",
        "open holds",
    ):
        table.add_column(
            column,
            justify="right" if column not in ("account", "scope", "unit", "open holds") else "left",
        )
    for row in rows:
        holds = ", ".join(
            f"{h.hold_id}={h.amount} ({format_duration(h.age_us)} old)" for h in row.holds[:5]
        )
        if len(row.holds) > 5:
            holds += f", +{len(row.holds) - 5} more"
        table.add_row(
            row.account_id,
            row.scope.value,
            row.unit.value,
            f"{row.limit:,}",
            f"{row.spent:,}",
            f"{row.reserved:,}",
            f"{row.available:,}",
            f"{row.lifetime_spent:,}",
            f"{row.overage:,}",
            holds or "-",
        )
    _console().print(table)


# --------------------------------------------------------------------------- audit


def _ms(us: int) -> str:
    """A duration in µs, readable: ``850 ms`` below a second, else ``2.5 s``."""
    return f"{us / 1_000:.1f} ms" if us < 1_000_000 else f"{us / 1_000_000:g} s"


def _timing(d: dict[str, Any]) -> str:
    """An outcome's measured times and announced limits, as a suffix (empty when none)."""
    parts = []
    if d.get("ttft_us") is not None:
        parts.append(f"first token after {_ms(d['ttft_us'])}")
    if d.get("duration_us") is not None:
        parts.append(f"took {_ms(d['duration_us'])}")
    for window in ("requests", "tokens"):
        left, reset = d.get(f"remaining_{window}"), d.get(f"{window}_reset_us")
        if left is not None or reset is not None:
            when = f" (reset in {_ms(reset)})" if reset is not None else ""
            parts.append(f"announced {'?' if left is None else left} {window} left{when}")
    return f"; {', '.join(parts)}" if parts else ""


def _blocked_by(d: dict[str, Any]) -> str:
    """What blocked a skipped candidate: the event, its position, class and request."""
    if not d.get("blocked_by"):
        return ""
    cause = d.get("blocked_by_reason")
    request = d.get("blocked_by_request")
    who = f"request {request}" if request else f"operator command {d.get('blocked_by_command')}"
    what = f"{cause}, " if cause else ""
    return f" [{d['blocked_by']} at position {d['blocked_by_position']}: {what}by {who}]"


def _describe(kind: str, details: dict[str, Any]) -> str:
    """One readable line for a timeline entry."""
    d = details
    pair = f"{d.get('credential_id')}/{d.get('upstream_model')}"
    if kind == "received":
        return f"received for route {d['route']} (caller {d['caller_scope']}, {d['input_tokens']} input tokens)"
    if kind == "attempt":
        probe = ", probe" if d["probe"] else ""
        return (
            f"attempt {d['attempt_no']} -> {pair} (owner scope {d['owner_scope']}, chain position "
            f"{d['chain_position']} {d['target']}{probe})"
        )
    if kind == "skipped":
        target = pair if d.get("credential_id") else f"alias {d['alias']}"
        until = f" until {format_time(d['recovers_at_us'])}" if d.get("recovers_at_us") else ""
        return (
            f"  skipped {target} at chain position {d['chain_position']}: {d['reason']}{until}"
            f"{_blocked_by(d)}"
        )
    if kind == "wait":
        return f"wait until {format_time(d['until_us'])} for {d['recovering']}"
    if kind == "succeeded":
        return (
            f"succeeded on {pair} ({d['input_tokens']}+{d['output_tokens']} tokens, "
            f"{d['evidence']}){_timing(d)}"
        )
    if kind == "failed":
        status = f" HTTP {d['status']}" if d.get("status") is not None else ""
        detail = f": {d['detail']}" if d.get("detail") else ""
        billed = " (billed)" if d.get("billed") else ""
        return f"failed on {pair}: {d['failure']} {d['phase']}{status}{billed}{detail}{_timing(d)}"
    if kind == "exhausted":
        retry = f", retry at {format_time(d['retry_at_us'])}" if d.get("retry_at_us") else ""
        return f"fallback exhausted: {d['reason']} after {d['failures']} failures{retry}"
    if kind == "degraded":
        return f"degraded: {d['reason']}"
    if kind in ("cooldown", "suspended", "cleared", "probe", "predicted", "prediction_cleared"):
        scope = pair if d.get("upstream_model") else f"{d.get('credential_id')} (all models)"
        until = f" until {format_time(d['until_us'])}" if d.get("until_us") else ""
        why = (
            f" ({d['reason']}" + (f", clamp {d['clamp']}" if d.get("clamp") else "") + ")"
            if d.get("reason")
            else ""
        )
        return f"{d['event']} {scope}{until}{why}"
    if kind == "hold_placed":
        return f"hold placed: {d['legs']} (expires {format_time(d['expires_at_us'])})"
    if kind == "hold_rejected":
        return f"hold rejected: {d['rejection']} on {d.get('rejected_by') or d['accounts']}"
    if kind == "hold_settled":
        over = " with overage" if d.get("overage") else ""
        return f"hold settled: {d['cost_micros']} micros, {d['tokens']} tokens{over}"
    if kind == "posted":
        return f"posted {d['posted']} (+{d['overage']} overage) of {d['held']} held on {d['account_id']}"
    rest = ", ".join(f"{k}={v}" for k, v in d.items())
    return f"{kind.replace('_', ' ')}" + (f": {rest}" if rest else "")


@cli.command()
@store_option
@json_option
@click.argument("request_id")
def audit(store_url: str | None, as_json: bool, request_id: str) -> None:
    """The timeline of one request: every event about it, in log order.

    Its hold is linked by the convention hold_id == request_id.
    """
    from routeledger.projections.timeline import RequestTimeline

    timeline = RequestTimeline(request_id, scrub=DEFAULT_SCRUBBER)
    with _read_store(store_url) as store:
        timeline.catch_up(store.read_all(0, page=10_000))
    entries = timeline.entries(request_id)
    if entries is None:
        raise UsageError(
            f"no request {request_id!r} in the log (read up to position {timeline.position})"
        )
    if as_json:
        _emit_json({"request_id": request_id, "entries": [e.as_json() for e in entries]})
        return
    from rich.table import Table

    table = Table(title=f"Request {request_id}")
    table.add_column("position", justify="right")
    table.add_column("time")
    table.add_column("what")
    for entry in entries:
        table.add_row(
            str(entry.position),
            format_time(entry.at_us),
            _describe(entry.kind, dict(entry.details)),
        )
    _console().print(table)


# --------------------------------------------------------------------------- explain


@cli.command()
@store_option
@json_option
@click.option(
    "--at", "at", required=True, metavar="TIME", help=f"The instant to explain ({TIME_HELP})."
)
@click.option(
    "--policy",
    "policy_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The routing policy (TOML) the route is defined in.",
)
@click.argument("route")
def explain(store_url: str | None, as_json: bool, at: str, policy_path: Path, route: str) -> None:
    """Which members of ROUTE's chain were usable at TIME, and why the others were not.

    Folds the log up to TIME (the first event after it stops the fold) and
    lists each member of the chain (the route's targets, then its fallbacks')
    with its lifecycle, owner scope and availability at that instant.
    """
    from routeledger.core.credentials import lifecycle

    now = parse_time(at)
    policy = _load_policy(policy_path)
    chain = policy.chain(route)
    if chain is None:
        raise UsageError(f"route {route!r} is not defined in {policy_path}")
    folded = _fold_until(store_url, now)
    views = lifecycle.usability(folded.credentials, now) if folded.credentials.credentials else None
    members = [
        _explain_member(policy, folded, views, now, position, plan, index)
        for position, plan in enumerate(chain.targets)
        for index in range(len(plan.entries))
    ]
    left_out = [{"alias": a, "chain_position": p, "why_not": w} for a, p, w in chain.left_out]
    if as_json:
        _emit_json(
            {
                "route": route,
                "at_us": now,
                "position": folded.position,
                "members": members,
                "left_out": left_out,
            }
        )
        return
    _print_explain(route, now, folded.position, members, left_out)


def _fold_until(store_url: str | None, now: int) -> Folded:
    """The decision state folded up to ``now``: the first event after it stops the fold."""
    from routeledger.core.fold import Folded

    folded = Folded()
    with _read_store(store_url) as store:
        for recorded in store.read_all(0, page=10_000):
            if recorded.event.at_us > now:
                break
            folded.apply(recorded.event)
            folded.position = recorded.position
    return folded


def _print_explain(
    route: str,
    now: int,
    position: int,
    members: list[dict[str, object]],
    left_out: list[dict[str, object]],
) -> None:
    """Render ``explain``'s members as a rich table, then its left-out aliases and caveats."""
    from rich.table import Table

    table = Table(title=f"Route {route} at {format_time(now)} (log folded to position {position})")
    for column in (
        "pos",
        "target",
        "credential",
        "model",
        "owner",
        "status",
        "usable",
        "why not",
        "until",
    ):
        table.add_column(column)
    for m in members:
        table.add_row(
            str(m["chain_position"]),
            str(m["target"]),
            str(m["credential_id"]),
            str(m["upstream_model"]),
            str(m["owner"] or "shared"),
            str(m["status"]),
            "[green]yes[/]" if m["usable"] else "[red]no[/]",
            str(m["why_not"] or "-"),
            format_time(m["until_us"]),  # type: ignore[arg-type]
        )
    console = _console()
    console.print(table)
    for item in left_out:
        console.print(
            f"left out: alias {item['alias']} at chain position {item['chain_position']}: {item['why_not']}"
        )
    console.print(
        "owner-scoped members are usable only for requests in that owner's scope; "
        "a request's own failures and capabilities (streaming, context window) are per request."
    )


def _explain_member(
    policy: Policy,
    folded: Folded,
    views: Mapping[str, CredentialUsability] | None,
    now: int,
    position: int,
    plan: PoolPlan,
    index: int,
) -> dict[str, object]:
    """One row of ``explain``: the picker's own verdict (no request), with the scope's status."""
    from routeledger.core.routing.events import SkipReason
    from routeledger.core.routing.selection import BLOCKED, member_verdict
    from routeledger.core.routing.state import Status, status_at

    entry = plan.entries[index]
    routing = folded.routing
    verdict, ready = member_verdict(
        policy, entry, None, routing.creds, routing.pairs, now, views, routing.loads
    )
    cred_scope = routing.creds.get(entry.cred_stream)
    pair_scope = routing.pairs.get(entry.pair_stream)
    cred_status, pair_status = status_at(cred_scope, now), status_at(pair_scope, now)
    status, until, described = Status.AVAILABLE, None, None
    for kind, scope, scope_status in (
        ("credential", cred_scope, cred_status),
        ("pair", pair_scope, pair_status),
    ):
        if scope is not None and scope_status in (Status.COOLING, Status.SUSPENDED):
            status, until = scope_status, scope.until_us
            reason = scope.reason.value if scope.reason else "operator"
            described = f"{kind} {scope_status.value} ({reason})"
            break
    else:
        if Status.PROBING in (cred_status, pair_status):
            status = Status.PROBING
            scope = pair_scope if pair_status is Status.PROBING else cred_scope
            until = scope.probe_until_us if scope is not None else None
            described = "probe_in_flight"
        elif Status.HALF_OPEN in (cred_status, pair_status):
            status = Status.HALF_OPEN
    why = None
    if verdict is not None:
        why = described if verdict in BLOCKED and described else verdict.value
    if verdict is SkipReason.PREDICTED_EXHAUSTED and pair_scope is not None:
        until = pair_scope.predicted_us  # announced limits: skipped until their reset
    elif verdict in (SkipReason.AT_CAPACITY, SkipReason.RATE_LIMIT_REACHED):
        until = ready or None  # configured limits: when the member admits again
    return {
        "chain_position": position,
        "target": plan.path,
        "strategy": plan.strategy.value,
        "member_index": index,
        "credential_id": entry.credential,
        "upstream_model": entry.model,
        "owner": entry.owner,
        "status": status.value,
        "until_us": until,
        "usable": why is None,
        "why_not": why,
    }


# --------------------------------------------------------------------------- replay


def _progress(enabled: bool) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A rich progress bar with events/s on stderr, or no-ops."""
    if not enabled:
        return (lambda _position, _last: None), (lambda: None)
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        ProgressColumn,
        Task,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("- events/s" if speed is None else f"{speed:,.0f} events/s")

    progress = Progress(
        TextColumn("replaying"),
        BarColumn(),
        TextColumn("{task.completed:,.0f} positions"),
        Rate(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
        # Redrawn on every update (a page of events) rather than by a thread:
        # replay --verify forks helpers only while no other thread runs.
        auto_refresh=False,
    )
    task = progress.add_task("replay", total=1)
    progress.start()
    seen = {"position": 0}

    def update(position: int, last: int) -> None:
        progress.update(task, total=max(last, 1), advance=position - seen["position"])
        progress.refresh()
        seen["position"] = position

    return update, progress.stop


@cli.command()
@store_option
@json_option
@click.option(
    "--verify", is_flag=True, help="Compare snapshots and projections with the full fold."
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show a progress bar with events/s on stderr (default: when stderr is a terminal).",
)
def replay(store_url: str | None, as_json: bool, verify: bool, progress: bool | None) -> None:
    """Re-fold the whole log and print its canonical state hash.

    With --verify, also check every stored snapshot (snapshot + tail == full
    fold) and every projection (rebuilt from scratch == resumed from half-way,
    and == the decision state); a mismatch exits 1 naming the first divergent
    log position.
    """
    from routeledger.adapters.audit.replay import PAGE_EVENTS, verify_log
    from routeledger.adapters.store.canonical import state_hash
    from routeledger.adapters.store.snapshots import gc_paused
    from routeledger.adapters.store.urls import DEFAULT_STORE_URL, STORE_URL_ENV
    from routeledger.core.fold import Folded

    show = sys.stderr.isatty() if progress is None else progress
    update, stop = _progress(show)
    began = time.perf_counter()
    try:
        with _read_store(store_url) as store:
            if verify:
                # The URL lets a second process check snapshot tails alongside.
                url = store_url or os.environ.get(STORE_URL_ENV) or DEFAULT_STORE_URL
                report = verify_log(store, progress=update, url=url)
                document: dict[str, object] = report.as_json()
            else:
                folded = Folded()
                last = store.max_position()
                with gc_paused():
                    for recorded in store.read_all(0, page=PAGE_EVENTS):
                        folded.apply(recorded.event)
                        folded.position = recorded.position
                        if folded.events % PAGE_EVENTS == 0:
                            update(recorded.position, last)
                update(folded.position, last)
                document = {
                    "events": folded.events,
                    "position": folded.position,
                    "state_hash": state_hash(folded),
                }
    finally:
        stop()
    elapsed = time.perf_counter() - began
    document["seconds"] = round(elapsed, 3)
    mismatches = document.get("mismatches") or []
    if as_json:
        _emit_json(document)
    else:
        click.echo(f"events:     {document['events']:,}")
        click.echo(f"position:   {document['position']}")
        rate = int(document["events"]) / elapsed if elapsed > 0 else 0.0  # type: ignore[call-overload]
        click.echo(f"elapsed:    {elapsed:.2f}s ({rate:,.0f} events/s)")
        if verify:
            click.echo(
                f"snapshots:  {document['snapshots_checked']} checked, {document['snapshots_ignored']} ignored"
            )
            click.echo(
                f"projections: {', '.join(document['projections_checked'])} "  # type: ignore[arg-type]
                f"(resumed at position {document['resumed_at']})"
            )
        click.echo(f"state hash: {document['state_hash']}")
        for mismatch in mismatches:  # type: ignore[attr-defined]
            click.echo(
                f"MISMATCH at position {mismatch['position']}: {mismatch['subject']}: {mismatch['detail']}",
                err=True,
            )
    if mismatches:
        first = mismatches[0]  # type: ignore[index]
        raise Problem(f"verification failed: first divergent position {first['position']}")


# --------------------------------------------------------------------------- what-if


@cli.command("what-if")
@store_option
@json_option
@click.option(
    "--policy",
    "policy_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The new configuration (TOML): its routing policy and budget accounts.",
)
@click.option(
    "--since",
    "since",
    default=None,
    metavar="TIME",
    help=f"Only requests received at or after TIME ({TIME_HELP}).",
)
def what_if_command(
    store_url: str | None, as_json: bool, policy_path: Path, since: str | None
) -> None:
    """Re-decide the recorded requests under a new configuration, side by side with the log.

    Budgets, operator commands, period rollovers and hold expiries are decided
    again in log order; a request keeps its recorded outcomes while its
    decisions are the recorded ones (the unchanged file reproduces the log).
    Where a decision differs, an attempt on a pair gets the next outcome
    recorded for that pair at or after that time, or is 'unobserved' (counted)
    when the log has none.
    """
    from routeledger.adapters.audit.whatif import what_if

    since_us = parse_time(since) if since is not None else None
    config = _load_config(policy_path)
    with _read_store(store_url) as store:
        report = what_if(store.read_all(0, page=10_000), config, since_us=since_us)
    if as_json:
        _emit_json(report.as_json())
        return
    from rich.table import Table

    table = Table(
        title=f"What if {policy_path.name} had decided"
        + (f" (since {format_time(since_us)})" if since_us else "")
    )
    table.add_column("")
    table.add_column("recorded", justify="right")
    table.add_column("what-if", justify="right")
    table.add_column("delta", justify="right")
    before, after = report.recorded.as_json(), report.what_if.as_json()
    for key in (
        "requests",
        "served",
        "exhausted",
        "degraded",
        "budget_rejected",
        "unfinished",
        "attempts",
        "waits",
        "waited_us",
        "tokens",
        "cost_micros",
        "unobserved",
    ):
        delta = after[key] - before[key]
        table.add_row(key, f"{before[key]:,}", f"{after[key]:,}", f"{delta:+,}" if delta else "=")
    console = _console()
    console.print(table)
    summary = [
        f"{report.changed_count} of {before['requests']} requests end differently",
        f"attempts {after['attempts'] - before['attempts']:+,}",
        f"waits {after['waits'] - before['waits']:+,}",
        f"exhaustions {after['exhausted'] - before['exhausted']:+,}",
        f"budget rejections {after['budget_rejected'] - before['budget_rejected']:+,}",
        f"spend {after['cost_micros'] - before['cost_micros']:+,} micros",
    ]
    if after["unobserved"]:
        summary.append(
            f"{after['unobserved']} attempts unobserved (no recorded outcome for the pair)"
        )
    console.print("summary: " + "; ".join(summary))
    for change in report.changed:
        console.print(
            f"  {change.request_id}: {change.recorded} ({change.recorded_attempts} attempts) -> "
            f"{change.what_if} ({change.what_if_attempts} attempts)"
        )


# --------------------------------------------------------------------------- export


def _scrubbed(value: object, scrub: Callable[[str], str]) -> object:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, list):
        return [_scrubbed(v, scrub) for v in value]
    if isinstance(value, dict):
        return {scrub(str(k)): _scrubbed(v, scrub) for k, v in value.items()}
    return value


@cli.command()
@store_option
@json_option
@click.option("--after", default=0, show_default=True, help="Only events after this log position.")
def export(store_url: str | None, as_json: bool, after: int) -> None:
    """The log as JSONL: one object per event (position, tag, schema, stream_id, version, at_us, fields).

    Every string is scrubbed of secret-looking tokens. Output is JSON either way
    (--json is accepted for uniformity).
    """
    del as_json

    with _read_store(store_url) as store:
        codec = store.codec
        out = sys.stdout.buffer
        for recorded in store.read_all(after, page=10_000):
            evt = recorded.event
            _, payload = codec.encode(evt)
            fields = orjson.loads(payload)
            for envelope in ("stream_id", "version", "at_us"):
                fields.pop(envelope, None)
            line = {
                "position": recorded.position,
                "tag": type(evt).TAG,
                "schema": type(evt).SCHEMA,
                "stream_id": DEFAULT_SCRUBBER(evt.stream_id),
                "version": evt.version,
                "at_us": evt.at_us,
                "fields": _scrubbed(fields, DEFAULT_SCRUBBER),
            }
            out.write(orjson.dumps(line) + b"\n")
        out.flush()


# --------------------------------------------------------------------------- fake provider


@cli.command("fake-provider")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8099,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on.",
)
def fake_provider(host: str, port: int) -> None:
    """Serve the fake LLM provider (for demos and tests) until interrupted."""
    module = importlib.import_module("routeledger.adapters.testing.fake_provider")
    module.serve(host=host, port=port)


# --------------------------------------------------------------------------- import-litellm


@cli.command("import-litellm")
@click.argument("config_path", type=click.Path(dir_okay=False, path_type=Path))
def import_litellm(config_path: Path) -> None:
    """Convert a LiteLLM config.yaml into gateway TOML on stdout; what did not map on stderr.

    Needs PyYAML (pip install 'routeledger[litellm]'). Secrets are never copied:
    api_key: os.environ/X becomes secret_env = "X"; a literal key is refused and
    reported. Exit 0 with the TOML even when keys did not map (read the report).
    """
    from routeledger.adapters.integrations.litellm_config import (
        LITELLM_CONFIG_BYTES_MAX,
        convert_litellm_yaml,
    )

    try:
        if config_path.stat().st_size > LITELLM_CONFIG_BYTES_MAX:
            raise UsageError(f"{config_path}: more than {LITELLM_CONFIG_BYTES_MAX} bytes")
        text = config_path.read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"{config_path}: cannot read: {error.strerror or error}") from error
    except UnicodeDecodeError as error:
        raise UsageError(f"{config_path}: not UTF-8: {error}") from error
    conversion = convert_litellm_yaml(text, source=str(config_path))
    click.echo(conversion.toml, nl=False)
    for finding in conversion.findings:
        click.echo(f"import-litellm: {finding.line()}", err=True)


# --------------------------------------------------------------------------- serve


@cli.command()
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The gateway's TOML configuration (routes, credentials, [clients.*], [server]).",
)
@store_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=4000, show_default=True, type=click.IntRange(0, 65535), help="Port."
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, SERVE_WORKERS_MAX),
    help="Worker processes sharing the port (and the store).",
)
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def serve(
    config_path: Path,
    store_url: str | None,
    host: str,
    port: int,
    workers: int,
    log_format: str,
    log_level: str,
) -> None:
    """Serve the gateway: OpenAI- and Anthropic-compatible HTTP (docs/server.md)."""
    try:
        import uvicorn

        from routeledger.adapters.server import app as server
    except ImportError as error:  # pragma: no cover - the extra is part of dev
        raise UsageError(
            f"routeledger serve needs the server extra: pip install 'routeledger[server]' ({error})"
        ) from error
    from routeledger.adapters.engine.config import load_config

    config = load_config(config_path)
    server.Gateway(config, store_url)  # client and admin keys are checked before any worker starts
    os.environ[server.ENV_CONFIG] = str(config_path.resolve())
    os.environ[server.ENV_LOG] = f"{log_format}:{log_level}"
    if store_url:
        os.environ[server.ENV_STORE] = store_url
    uvicorn.run(
        "routeledger.adapters.server.app:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_level=log_level,
        timeout_graceful_shutdown=SERVE_GRACE_S,
        timeout_keep_alive=SERVE_KEEP_ALIVE_S,
    )


# --------------------------------------------------------------------------- admin

from routeledger.adapters.cli.admin import admin  # noqa: E402  (a group of its own module)

cli.add_command(admin)


# --------------------------------------------------------------------------- entry points


@cli.command(
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def simulate(args: tuple[str, ...]) -> None:
    """Run the deterministic fleet simulation (see `routeledger simulate --help`, docs/reliability.md)."""
    from routeledger.adapters.testing.simulation import main as simulation_main

    code = simulation_main(list(args))
    if code:
        raise click.exceptions.Exit(code)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``routeledger`` console script; returns the exit code."""
    try:
        cli.main(args=argv, prog_name="routeledger", standalone_mode=False)
    except click.exceptions.Exit as done:
        return int(done.exit_code or 0)
    except click.ClickException as error:
        error.show()
        return EXIT_USAGE
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return EXIT_PROBLEM
    except Problem as problem:
        click.echo(f"routeledger: {problem}", err=True)
        return EXIT_PROBLEM
    except StoreError as error:
        click.echo(f"routeledger: {error}", err=True)
        return EXIT_STORE
    except DataError as error:
        click.echo(f"routeledger: {error}", err=True)
        return EXIT_STORE
    except UsageError as error:
        click.echo(f"routeledger: {error}", err=True)
        return EXIT_USAGE
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def console() -> None:  # pragma: no cover - the console-script shim
    """Console-script entry point: exit with :func:`main`'s code."""
    sys.exit(main())
