"""Backends for contract tests: in-memory, a SQLite file, and the test run's PostgreSQL.

PostgreSQL: ``$ROUTELEDGER_TEST_POSTGRES_URL`` when set (an existing server),
otherwise a throwaway cluster started by ``.ci/postgres.sh`` for the test
session and stopped after it. A server that cannot start fails the tests that
need it: nothing is skipped.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / ".ci" / "postgres.sh"
_counter = itertools.count(1)


class PostgresServer:
    """A PostgreSQL server for the session; hands out fresh databases."""

    def __init__(self) -> None:
        self._dir: str | None = None
        given = os.environ.get("ROUTELEDGER_TEST_POSTGRES_URL")
        if given:
            self.admin_url = given
            return
        self._dir = tempfile.mkdtemp(prefix="routeledger-pg-")
        env = dict(os.environ, PG_EXTRA_OPTS="-c fsync=off -c synchronous_commit=off")
        result = subprocess.run(
            ["bash", str(SCRIPT), "start", self._dir],
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"PostgreSQL could not start for the tests (exit {result.returncode}):\n"
                f"{result.stderr[-4000:]}"
            )
        self.admin_url = result.stdout.strip().splitlines()[-1]

    def fresh_database(self) -> str:
        """Create an empty database and return its URL."""
        name = f"rl_test_{os.getpid()}_{next(_counter)}"
        with psycopg.connect(_libpq(self.admin_url), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        parts = urlsplit(self.admin_url)
        return urlunsplit(parts._replace(path=f"/{name}"))

    def drop_database(self, url: str) -> None:
        """Drop a database made by :meth:`fresh_database` (closing stray sessions)."""
        name = urlsplit(url).path.lstrip("/")
        with psycopg.connect(_libpq(self.admin_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Stop the throwaway cluster (if this session started it)."""
        if self._dir is not None:
            subprocess.run(
                ["bash", str(SCRIPT), "stop", self._dir],
                capture_output=True,
                timeout=120,
                check=False,
            )


def _libpq(url: str) -> str:
    return url.replace("postgresql://", "postgresql://", 1)


def sqlite_url(directory: Path, name: str = "store.db") -> str:
    """A SQLite store URL for a file in ``directory``."""
    return f"sqlite:///{directory / name}"


def iter_backends() -> Iterator[str]:
    """Names of the three backends, for parametrisation."""
    yield from ("memory", "sqlite", "postgresql")
