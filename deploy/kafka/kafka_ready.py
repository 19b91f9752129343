#!/usr/bin/env python3
"""Is a Kafka broker really answering on HOST:PORT?

Usage: kafka_ready.py HOST PORT [TIMEOUT_SECONDS [MIN_BROKERS]]

Standard library only (it runs before any virtualenv exists). Over one TCP
connection it sends an ApiVersions v0 request, picks a Metadata version it can
parse (v1, else v0) from the broker's answer, sends a Metadata request for no
topics and parses the broker list. It succeeds once the broker lists at least
MIN_BROKERS brokers (default 1), retrying until TIMEOUT_SECONDS (default 5)
have passed.

With KAFKA_READY_CAFILE set the connection is TLS (verified against that CA)
and only ApiVersions is asked: a SASL listener answers nothing else before
authentication, and a broker enables its listeners once it has started.

Exit status: 0 ready (one line "ready: node N at host:port, ..." on stdout),
1 not ready (the last reason on stderr), 2 bad usage.
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
import sys
import time

API_METADATA = 3
API_VERSIONS = 18
CLIENT_ID = b"kafka_ready"


class NotReady(Exception):
    pass


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise NotReady("truncated response")
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values[0] if len(values) == 1 else values

    def string(self, nullable: bool = False) -> str | None:
        length = self.take(">h")
        if length < 0:
            if nullable:
                return None
            raise NotReady("unexpected null string")
        if self.pos + length > len(self.data):
            raise NotReady("truncated response")
        value = self.data[self.pos : self.pos + length].decode("utf-8", "replace")
        self.pos += length
        return value


def recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            raise NotReady("connection closed by peer")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def call(
    sock: socket.socket, api_key: int, api_version: int, correlation_id: int, body: bytes
) -> Reader:
    """Send one request (header v1) and return a reader after the response header v0."""
    header = struct.pack(">hhih", api_key, api_version, correlation_id, len(CLIENT_ID)) + CLIENT_ID
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", recv_exact(sock, 4))[0]
    if size < 4 or size > 64 * 1024 * 1024:
        raise NotReady(f"implausible response size {size}")
    reader = Reader(recv_exact(sock, size))
    got = reader.take(">i")
    if got != correlation_id:
        raise NotReady(f"correlation id {got} != {correlation_id}")
    return reader


def probe(host: str, port: int, timeout: float, min_brokers: int = 1) -> str:
    cafile = os.environ.get("KAFKA_READY_CAFILE")
    with socket.create_connection((host, port), timeout=timeout) as plain:
        sock = plain
        if cafile:
            sock = ssl.create_default_context(cafile=cafile).wrap_socket(
                plain, server_hostname=host
            )
        sock.settimeout(timeout)

        # ApiVersions v0: empty body. Response: error_code, [api_key min max].
        reader = call(sock, API_VERSIONS, 0, 1, b"")
        error = reader.take(">h")
        if error != 0:
            raise NotReady(f"ApiVersions error code {error}")
        ranges = {}
        for _ in range(reader.take(">i")):
            key, low, high = reader.take(">hhh")
            ranges[key] = (low, high)
        if cafile:
            return f"TLS listener at {host}:{port} answers ApiVersions"
        if API_METADATA not in ranges:
            raise NotReady("broker does not offer Metadata")
        low, high = ranges[API_METADATA]
        version = next((v for v in (1, 0) if low <= v <= high), None)
        if version is None:
            raise NotReady(f"Metadata versions {low}..{high} exclude v0 and v1")

        # Metadata: topics array. v1: empty = no topics; v0: empty = all topics.
        reader = call(sock, API_METADATA, version, 2, struct.pack(">i", 0))
        brokers = []
        for _ in range(reader.take(">i")):
            node_id = reader.take(">i")
            broker_host = reader.string()
            broker_port = reader.take(">i")
            if version >= 1:
                reader.string(nullable=True)  # rack
            brokers.append(f"node {node_id} at {broker_host}:{broker_port}")
        if len(brokers) < min_brokers:
            raise NotReady(f"metadata lists {len(brokers)} of {min_brokers} brokers")
        return ", ".join(brokers)


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4, 5):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    host = argv[1]
    try:
        port = int(argv[2])
        timeout = float(argv[3]) if len(argv) >= 4 else 5.0
        min_brokers = int(argv[4]) if len(argv) == 5 else 1
    except ValueError:
        print("PORT and MIN_BROKERS must be integers and TIMEOUT a number", file=sys.stderr)
        return 2

    deadline = time.monotonic() + timeout
    reason = "no attempt made"
    while True:
        remaining = deadline - time.monotonic()
        try:
            summary = probe(host, port, max(0.2, min(remaining, 5.0)), min_brokers)
        except (OSError, NotReady) as exc:
            reason = str(exc) or type(exc).__name__
        else:
            print(f"ready: {summary}")
            return 0
        if deadline - time.monotonic() <= 0.25:
            break
        time.sleep(0.25)
    print(f"kafka_ready: {host}:{port} not ready: {reason}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
