"""The ``routeledger`` command line.

Exit codes (documented in ``routeledger --help`` and ``docs/cli.md``):

* ``0`` — success;
* ``1`` — the command ran and found a problem it reports (for example a
  failed verification);
* ``2`` — usage error: a bad option, a malformed URL or policy file;
* ``3`` — the store could not be opened or read (missing file, unreachable
  database, a stored event that does not decode).
"""

from __future__ import annotations

import sys
from typing import Final

import click

from routeledger.core.errors import DataError, UsageError

from .store import StoreError

EXIT_OK: Final = 0
EXIT_PROBLEM: Final = 1
EXIT_USAGE: Final = 2
EXIT_STORE: Final = 3

STORE_OPTION_HELP: Final = (
    "Store URL: memory://, sqlite:///path.db or postgresql://user:pw@host/db "
    "(default: $ROUTELEDGER_STORE_URL, else sqlite:///routeledger.db)."
)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Exit codes: 0 ok, 1 a problem was found, 2 usage error, 3 store error.",
)
@click.version_option(package_name="routeledger")
def cli() -> None:
    """RouteLedger: an event-sourced decision engine for LLM gateways."""


@cli.command()
@click.option("--store", "store_url", default=None, help=STORE_OPTION_HELP)
@click.option("--seed", default=7, show_default=True, help="Seed for the demo workload.")
def demo(store_url: str | None, seed: int) -> None:
    """Run the demo workload against the store and print a summary."""
    from .demo import run_demo

    run_demo(store_url, seed=seed, echo=click.echo)


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
