"""A secret reader over environment variables (operator-supplied keys).

The key of credential ``cred-a`` is read from ``ROUTELEDGER_SECRET_CRED_A`` by
default: the prefix, then the credential id upper-cased with every character
other than ``A-Z0-9`` replaced by ``_``. Two ids that differ only in those
characters share a variable; name them explicitly with ``names`` (credential id
-> variable) when that matters.

The reader is read-only on purpose: writing keys into the process environment
would hand them to every child process. Trial provisioning and key recovery
need a writable :class:`~routeledger.core.credentials.secrets.SecretStore`.

:meth:`EnvironmentSecretReader.secret_values` lists the value of every
variable carrying the prefix and of every explicitly named variable, so the
scrubber redacts operator keys even for credentials not provisioned yet.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Final

from routeledger.core.errors import UsageError

__all__ = ["DEFAULT_PREFIX", "EnvironmentSecretReader", "variable_for"]

#: Default prefix of the variables holding keys.
DEFAULT_PREFIX: Final = "ROUTELEDGER_SECRET_"

_NOT_ALNUM: Final = re.compile(r"[^A-Z0-9]")
_PREFIX_RE: Final = re.compile(r"^[A-Z_][A-Z0-9_]*$")


def variable_for(credential_id: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The variable holding ``credential_id``'s key: ``prefix`` + normalised id."""
    if not credential_id:
        raise UsageError("secret store: credential id must be non-empty")
    return prefix + _NOT_ALNUM.sub("_", credential_id.upper())


class EnvironmentSecretReader:
    """A :class:`~routeledger.core.credentials.secrets.SecretReader` over environment variables.

    ``environ`` defaults to :data:`os.environ`, read at every call (so a key
    exported after start-up is seen). Empty values count as absent.
    """

    def __init__(
        self,
        *,
        prefix: str = DEFAULT_PREFIX,
        names: Mapping[str, str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if not _PREFIX_RE.match(prefix):
            raise UsageError(f"secret store: prefix {prefix!r} is not an upper-case variable name")
        self._prefix = prefix
        self._names = dict(names or {})
        self._environ = os.environ if environ is None else environ

    def variable(self, credential_id: str) -> str:
        """The variable read for ``credential_id``."""
        return self._names.get(credential_id) or variable_for(credential_id, self._prefix)

    def get(self, credential_id: str) -> str | None:
        """The key of ``credential_id``, or ``None`` when its variable is unset or empty."""
        return self._environ.get(self.variable(credential_id)) or None

    def secret_values(self) -> frozenset[str]:
        """The non-empty values of every prefixed or explicitly named variable."""
        wanted = set(self._names.values())
        return frozenset(
            value
            for name, value in self._environ.items()
            if value and (name.startswith(self._prefix) or name in wanted)
        )

    def __repr__(self) -> str:
        return f"EnvironmentSecretReader(prefix={self._prefix!r}, names={self._names!r})"
