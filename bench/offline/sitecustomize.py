"""Loopback only: every Python process of ``make bench-compare`` loads this at start-up.

``bench/compare.py`` puts this folder first on ``PYTHONPATH`` (for itself and every
child: the fake provider, ``routeledger serve``, the start-up probes), so Python's
``site`` imports it instead of the system's ``sitecustomize``. A connect or name
look-up to anything but a loopback address or ``localhost`` raises
``PermissionError``: the comparison runs offline, and a library that phones home
(a price list, telemetry) fails loudly instead of timing the network.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def _loopback_host(host: object) -> bool:
    if host is None:  # getaddrinfo(None, port): the local wildcard/loopback
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _check(family: int, address: Any) -> None:
    if family == getattr(socket, "AF_UNIX", None):
        return
    host = address[0] if isinstance(address, tuple) and address else address
    if not _loopback_host(host):
        raise PermissionError(f"bench-compare is offline: connect to {address!r} refused")


_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex
_getaddrinfo = socket.getaddrinfo
_gethostbyname = socket.gethostbyname


def _loopback_connect(self: socket.socket, address: Any) -> None:
    _check(self.family, address)
    _connect(self, address)


def _loopback_connect_ex(self: socket.socket, address: Any) -> int:
    _check(self.family, address)
    return _connect_ex(self, address)


def _loopback_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if not _loopback_host(host):
        raise PermissionError(f"bench-compare is offline: look-up of {host!r} refused")
    return _getaddrinfo(host, *args, **kwargs)


def _loopback_gethostbyname(host: str) -> str:
    if not _loopback_host(host):
        raise PermissionError(f"bench-compare is offline: look-up of {host!r} refused")
    return _gethostbyname(host)


socket.socket.connect = _loopback_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _loopback_connect_ex  # type: ignore[method-assign]
socket.getaddrinfo = _loopback_getaddrinfo
socket.gethostbyname = _loopback_gethostbyname
#: Read by bench/compare.py to know the guard is on in its own process.
LOOPBACK_ONLY = True
