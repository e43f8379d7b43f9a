"""Stream ids: one builder and one parser per stream kind, and the id limits they imply.

Every event lives on a stream named ``<kind>:<key>``. The kinds, and who folds them:

==============  ======================================  ===========================
kind            key                                     folded by
==============  ======================================  ===========================
``request:``    a request id                            routing
``pair:``       ``<credential id>:<upstream model>``    routing (availability)
``cred:``       a credential id                         routing and credentials
``load:``       a credential id                         routing (configured limits)
``count:``      a token count id                        nothing (a record: no state)
``install:``    an installation id                      credentials
``account:``    a budget account id                     budget
``hold:``       a budget hold id                        budget
``operator:``   an operator command id                  nothing (audit and idempotency)
==============  ======================================  ===========================

The id limits follow from :data:`~routeledger.core.events.STREAM_ID_LENGTH_MAX`
(200): a stream id is its prefix plus the key, and the longest key is a pair's.
"""

from __future__ import annotations

from typing import Final

from .events import STREAM_ID_LENGTH_MAX

__all__ = [
    "ACCOUNT",
    "COUNT",
    "CREDENTIAL",
    "CREDENTIAL_ID_LENGTH_MAX",
    "HOLD",
    "ID_LENGTH_MAX",
    "INSTALLATION",
    "LOAD",
    "MODEL_NAME_LENGTH_MAX",
    "OPERATOR",
    "PAIR",
    "REQUEST",
    "RETENTION_STREAM",
    "account_stream",
    "count_stream",
    "credential_stream",
    "hold_stream",
    "installation_stream",
    "is_pair_stream",
    "load_stream",
    "operator_stream",
    "pair_stream",
    "request_stream",
]

REQUEST: Final = "request:"
PAIR: Final = "pair:"
CREDENTIAL: Final = "cred:"
LOAD: Final = "load:"
COUNT: Final = "count:"
INSTALLATION: Final = "install:"
ACCOUNT: Final = "account:"
HOLD: Final = "hold:"
OPERATOR: Final = "operator:"
#: The one stream of retention decisions (``RecordsRetired``) of a whole log.
RETENTION_STREAM: Final = "retention:log"

#: Longest credential id. Why: ``pair:<credential>:<model>`` must fit the
#: 200-character stream id (5 + 64 + 1 + 128 = 198).
CREDENTIAL_ID_LENGTH_MAX: Final = 64
#: Longest upstream model name (see :data:`CREDENTIAL_ID_LENGTH_MAX`); the
#: longest seen in provider listings is about 80.
MODEL_NAME_LENGTH_MAX: Final = 128
#: Longest id of anything else a caller names (request, route, account, hold,
#: installation). Why: the longest prefix (``install:``, 8) plus the id must
#: fit the 200-character stream id.
ID_LENGTH_MAX: Final = STREAM_ID_LENGTH_MAX - len(INSTALLATION) - 12

assert len(PAIR) + CREDENTIAL_ID_LENGTH_MAX + 1 + MODEL_NAME_LENGTH_MAX <= STREAM_ID_LENGTH_MAX
assert len(INSTALLATION) + ID_LENGTH_MAX <= STREAM_ID_LENGTH_MAX
assert len(OPERATOR) + ID_LENGTH_MAX <= STREAM_ID_LENGTH_MAX


def request_stream(request_id: str) -> str:
    """The stream of one request's decisions: ``request:<request_id>``."""
    return REQUEST + request_id


def pair_stream(credential_id: str, upstream_model: str) -> str:
    """The availability stream of one (credential, model): ``pair:<credential>:<model>``."""
    return f"{PAIR}{credential_id}:{upstream_model}"


def credential_stream(credential_id: str) -> str:
    """The stream of one credential (lifecycle and credential-wide availability)."""
    return CREDENTIAL + credential_id


def load_stream(credential_id: str) -> str:
    """The stream of one credential's configured limits (slots in flight, rpm/tpm windows)."""
    return LOAD + credential_id


def count_stream(count_id: str) -> str:
    """The stream of one token count's record: ``count:<count_id>``."""
    return COUNT + count_id


def installation_stream(installation_id: str) -> str:
    """The stream of installation-wide facts: ``install:<installation_id>``."""
    return INSTALLATION + installation_id


def account_stream(account_id: str) -> str:
    """The stream of a budget account: ``account:<account_id>``."""
    return ACCOUNT + account_id


def hold_stream(hold_id: str) -> str:
    """The stream of a budget hold: ``hold:<hold_id>``."""
    return HOLD + hold_id


def operator_stream(command_id: str) -> str:
    """The stream of one operator command's record: ``operator:<command_id>``."""
    return OPERATOR + command_id


def is_pair_stream(stream_id: str) -> bool:
    """Tell whether ``stream_id`` is a (credential, model) availability stream."""
    return stream_id.startswith(PAIR)
