"""Name why a Cloud API call got no answer at all: refused, DNS, TLS, timeout, closed.

A failure of the network is not one of Meta's error codes: it gets the code `transport`
and a title naming the cause and the host ("connection refused to graph.facebook.com"),
so an outage reads as an outage in the logs, the delivery events and the report.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from typing import Final

import aiohttp
import httpx
import yarl
from prometheus_client import Counter

TRANSPORT_CODE: Final = "transport"

TRANSPORT_ERRORS = Counter(
    "whatsapp_transport_errors_total",
    "Cloud API calls that got no answer: the network failed, not Meta",
    ["cause", "host"],
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and the ones it was raised from or during (aiohttp and httpx wrap)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 16:
        seen.add(id(current))
        yield current
        if isinstance(current, aiohttp.ClientConnectorError):
            yield current.os_error
        current = current.__cause__ or current.__context__


def transport_cause(exc: BaseException) -> str:
    """A short cause for a call that got no HTTP answer: `connection refused`, `DNS lookup
    failed`, `TLS handshake failed`, `connect timeout`, `read timeout`, `connection
    closed`, `connection reset` or `network error`."""
    for link in _chain(exc):
        if isinstance(link, (ssl.SSLError, ssl.CertificateError, aiohttp.ClientSSLError)):
            return "TLS handshake failed"
        if isinstance(link, (socket.gaierror, aiohttp.ClientConnectorDNSError)):
            return "DNS lookup failed"
        if isinstance(link, ConnectionRefusedError):
            return "connection refused"
        if isinstance(link, ConnectionResetError):
            return "connection reset"
        if isinstance(link, (httpx.ConnectTimeout, aiohttp.ConnectionTimeoutError)):
            return "connect timeout"
        if isinstance(link, (httpx.TimeoutException, TimeoutError)):
            return "read timeout"
        if isinstance(link, (httpx.RemoteProtocolError, aiohttp.ServerDisconnectedError)):
            return "connection closed"
    return "network error"


def host_of(url: yarl.URL) -> str:
    """The host, with the port when the URL names one."""
    host = url.host or "?"
    return f"{host}:{url.explicit_port}" if url.explicit_port else host


def transport_title(exc: BaseException, url: yarl.URL) -> str:
    """`<cause> to <host>`, counted in whatsapp_transport_errors_total{cause, host}."""
    cause, host = transport_cause(exc), host_of(url)
    TRANSPORT_ERRORS.labels(cause=cause, host=host).inc()
    return f"{cause} to {host}"
