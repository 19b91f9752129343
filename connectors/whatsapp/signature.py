"""HMAC-SHA256 signatures for WhatsApp Cloud API webhooks (the X-Hub-Signature-256 header).

Shared by the local sandbox, which signs what it posts, and the webhook receiver, which checks it.
"""

from __future__ import annotations

import hashlib
import hmac

PREFIX = "sha256="


def _key(app_secret: bytes | str) -> bytes:
    return app_secret.encode("utf-8") if isinstance(app_secret, str) else app_secret


def sign(app_secret: bytes | str, body: bytes) -> str:
    """Return the header value Meta sends: ``sha256=<hex HMAC-SHA256(app_secret, body)>``."""
    return PREFIX + hmac.new(_key(app_secret), body, hashlib.sha256).hexdigest()


def verify(app_secret: bytes | str, body: bytes, header_value: str | None) -> bool:
    """True when ``header_value`` is a valid signature of the raw ``body`` under ``app_secret``.

    The body must be the exact bytes received: re-serialised JSON will not match.
    """
    if not header_value or not _key(app_secret):
        return False
    value = header_value.strip()
    if not value.lower().startswith(PREFIX):
        return False
    # Hex digests are case-insensitive; normalise before the constant-time comparison.
    received = value[len(PREFIX) :].lower().encode("ascii", "replace")
    expected = sign(app_secret, body)[len(PREFIX) :].encode("ascii")
    return hmac.compare_digest(received, expected)
