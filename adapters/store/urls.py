"""Store URLs: ``memory://``, ``sqlite:///file.db``, ``postgresql://user:pw@host:port/db``.

Every message that names a URL uses :attr:`StoreUrl.masked`, with the password
replaced by ``***``: URLs end up in logs and error reports.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final
from urllib.parse import parse_qsl, unquote, urlsplit

import attrs

from routeledger.adapters.store.sqlite_log import SQLITE_SYNCHRONOUS_MODES
from routeledger.core.errors import UsageError

__all__ = ["DEFAULT_STORE_URL", "StoreUrl", "StoreUrlError", "mask_url", "parse_store_url"]

#: The embedded default: a SQLite file in the working directory.
DEFAULT_STORE_URL: Final = "sqlite:///routeledger.db"
#: Environment variable that overrides the default URL.
STORE_URL_ENV: Final = "ROUTELEDGER_STORE_URL"

_SQLITE_OPTIONS: Final = frozenset({"lock_timeout", "synchronous"})
_POSTGRES_OPTIONS: Final = frozenset(
    {"connect_timeout", "lock_timeout", "pool_size", "max_overflow", "schema"}
)
_INT_OPTIONS: Final = frozenset({"connect_timeout", "lock_timeout", "pool_size", "max_overflow"})


class StoreUrlError(UsageError):
    """A store URL is malformed; the message quotes it with the password masked."""


@attrs.frozen(kw_only=True)
class StoreUrl:
    """A parsed store URL."""

    backend: str
    masked: str
    path: str = ""
    host: str = ""
    port: int = 0
    user: str = ""
    password: str = attrs.field(default="", repr=False)
    dbname: str = ""
    options: Mapping[str, str] = attrs.field(factory=dict)

    def sqlite_path_exists(self) -> bool:
        """Whether the SQLite file exists (always ``True`` for other backends)."""
        return self.backend != "sqlite" or os.path.exists(self.path)


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``; never raises."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)
        userinfo = netloc[0].split(":", 1)[0]
        return parts._replace(netloc=f"{userinfo}:***@{netloc[1]}").geturl()
    except ValueError:
        return "<unparseable URL>"


def parse_store_url(url: str | None) -> StoreUrl:
    """Parse ``url`` (``None``: ``$ROUTELEDGER_STORE_URL`` or the SQLite default)."""
    if url is None:
        url = os.environ.get(STORE_URL_ENV) or DEFAULT_STORE_URL
    masked = mask_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise StoreUrlError(f"malformed store URL {masked!r}: {error}") from error
    scheme = parts.scheme.lower()
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    if scheme == "memory":
        if parts.netloc or parts.path or options:
            raise StoreUrlError(f"malformed store URL {masked!r}: write just 'memory://'")
        return StoreUrl(backend="memory", masked=masked)
    if scheme == "sqlite":
        _check_options(masked, options, _SQLITE_OPTIONS)
        if parts.netloc:
            raise StoreUrlError(
                f"malformed store URL {masked!r}: a SQLite URL has no host; write "
                f"'sqlite:///relative/path.db' or 'sqlite:////absolute/path.db'"
            )
        path = unquote(parts.path[1:]) if parts.path.startswith("/") else ""
        if not path or path.endswith("/"):
            raise StoreUrlError(
                f"malformed store URL {masked!r}: no database file named; e.g. "
                f"{DEFAULT_STORE_URL!r}"
            )
        if ":memory:" in path or "mode=memory" in path:
            raise StoreUrlError(f"store URL {masked!r}: use 'memory://' for an in-memory store")
        return StoreUrl(backend="sqlite", masked=masked, path=path, options=options)
    if scheme in {"postgresql", "postgres"}:
        _check_options(masked, options, _POSTGRES_OPTIONS)
        dbname = unquote(parts.path.lstrip("/"))
        if not parts.hostname or not dbname or "/" in dbname:
            raise StoreUrlError(
                f"malformed store URL {masked!r}: expected "
                f"'postgresql://user:password@host:port/dbname'"
            )
        if not parts.username:
            raise StoreUrlError(f"malformed store URL {masked!r}: no user name")
        return StoreUrl(
            backend="postgresql",
            masked=masked,
            host=parts.hostname,
            port=port or 5432,
            user=unquote(parts.username),
            password=unquote(parts.password or ""),
            dbname=dbname,
            options=options,
        )
    raise StoreUrlError(
        f"unsupported store URL {masked!r}: the scheme must be memory://, sqlite:/// "
        f"or postgresql://"
    )


def _check_options(masked: str, options: Mapping[str, str], allowed: frozenset[str]) -> None:
    for key, value in options.items():
        if key not in allowed:
            raise StoreUrlError(
                f"store URL {masked!r}: unknown option {key!r} (known: {', '.join(sorted(allowed))})"
            )
        if key in _INT_OPTIONS and not (value.isdigit() and int(value) < 86_400):
            raise StoreUrlError(
                f"store URL {masked!r}: option {key}={value!r} must be a whole number below 86400"
            )
        if key == "synchronous" and value not in SQLITE_SYNCHRONOUS_MODES:
            raise StoreUrlError(
                f"store URL {masked!r}: option synchronous={value!r} must be one of "
                f"{', '.join(SQLITE_SYNCHRONOUS_MODES)}"
            )
