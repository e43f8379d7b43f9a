"""Client keys of ``routeledger serve``: who is calling, compared in constant time.

A client presents its key as ``Authorization: Bearer <key>`` (the openai SDK)
or ``x-api-key: <key>`` (the anthropic SDK). Keys are never kept: each
client's key is reduced to its SHA-256 digest at start-up (read from
``key_env``, or given as ``key_sha256``), a presented key is hashed once and
compared with every digest by :func:`hmac.compare_digest`, so neither the
time taken nor a log line tells anything about a key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Final

import attrs

from routeledger.adapters.engine.config import ClientSpec, ConfigError

__all__ = ["KEY_CHARS_MAX", "ClientKeys", "key_digest"]

#: Longest key read from a request, in characters. Why: provider keys are under
#: 200 characters; hashing a megabyte header for every request is a cheap attack.
KEY_CHARS_MAX: Final = 512


def key_digest(key: str) -> bytes:
    """The SHA-256 digest a key is compared by."""
    return hashlib.sha256(key.encode("utf-8")).digest()


@attrs.frozen
class ClientKeys:
    """Each configured client with its key's digest."""

    clients: tuple[tuple[bytes, ClientSpec], ...]

    @classmethod
    def load(cls, clients: Mapping[str, ClientSpec], environ: Mapping[str, str]) -> ClientKeys:
        """Read every client's key; :class:`ConfigError` names a client whose key is missing."""
        if not clients:
            raise ConfigError(
                "<config>",
                "clients",
                "no [clients.<name>] is configured: every request would be refused "
                "(docs/server.md shows one)",
                None,
            )
        loaded = []
        for name, spec in clients.items():
            if spec.key_sha256:
                loaded.append((bytes.fromhex(spec.key_sha256), spec))
                continue
            key = environ.get(spec.key_env, "")
            if not key.strip():
                raise ConfigError(
                    "<config>",
                    f"clients.{name}.key_env",
                    f"the environment variable {spec.key_env} is not set or empty",
                    None,
                )
            loaded.append((key_digest(key.strip()), spec))
        return cls(tuple(loaded))

    def authenticate(self, headers: Mapping[str, str]) -> ClientSpec | None:
        """The client whose key the request presents, or ``None``."""
        key = presented_key(headers)
        if key is None:
            return None
        digest = key_digest(key)
        found = None
        for known, spec in self.clients:  # every digest compared: no early exit
            if hmac.compare_digest(known, digest):
                found = spec
        return found


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key in ``Authorization: Bearer`` or ``x-api-key`` (headers by lower-case name)."""
    key = headers.get("x-api-key")
    if key is None:
        authorization = headers.get("authorization", "")
        scheme, _, rest = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        key = rest
    key = key.strip()
    if not key or len(key) > KEY_CHARS_MAX:
        return None
    return key
