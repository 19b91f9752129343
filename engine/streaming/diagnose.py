"""Say why Kafka could not be used, in words a user can act on.

aiokafka reports a failed bootstrap as "Unable to bootstrap from [...]" whatever the cause
(it logs the cause and drops it), and an ACL refusal as a bare error class. Here one
direct connection to the first bootstrap address finds the cause again: refused
credentials, an untrusted certificate, TLS against a plaintext listener, or the reverse.
"""

from __future__ import annotations

import asyncio
import ssl

from aiokafka.conn import create_conn
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    UnsupportedSaslMechanismError,
)

from schemas.settings import Settings

AUTHORIZATION_ERRORS = (
    TopicAuthorizationFailedError,
    GroupAuthorizationFailedError,
    ClusterAuthorizationFailedError,
)
ACLS_DOC = "docs/KAFKA.md lists the ACLs each part needs"


def _principal(settings: Settings) -> str:
    if settings.kafka_sasl_username:
        return f"user {settings.kafka_sasl_username!r}"
    return f"this client ({settings.kafka_security_protocol})"


def refused(settings: Settings, exc: BaseException) -> str:
    """An authorization error (missing ACL) as one line naming the principal and the fix."""
    what = {
        TopicAuthorizationFailedError: "a topic",
        GroupAuthorizationFailedError: "a consumer group",
        ClusterAuthorizationFailedError: "the cluster",
    }.get(type(exc), "a resource")
    return (
        f"Kafka at {settings.kafka_bootstrap_servers} refused {_principal(settings)} access "
        f"to {what} ({type(exc).__name__}: {exc}): an ACL is missing; {ACLS_DOC}"
    )


async def connection_problem(settings: Settings, timeout: float = 5.0) -> str | None:
    """Why a connection to the first bootstrap address fails, or None if it works."""
    first = settings.kafka_bootstrap_servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    security = settings.aiokafka_security()
    try:
        conn = await asyncio.wait_for(
            create_conn(
                host,
                int(port),
                client_id="journeyctl-diagnose",
                request_timeout_ms=int(timeout * 1000),
                **security,
            ),
            timeout,
        )
    except SaslAuthenticationFailed:
        return (
            f"Kafka at {first} refused the credentials of {_principal(settings)} "
            f"({settings.kafka_sasl_mechanism}): check KAFKA_SASL_USERNAME and "
            "KAFKA_SASL_PASSWORD (or KAFKA_SASL_PASSWORD_FILE)"
        )
    except UnsupportedSaslMechanismError as exc:
        return f"Kafka at {first} does not offer {settings.kafka_sasl_mechanism}: {exc}"
    except ssl.SSLCertVerificationError as exc:
        return (
            f"the TLS certificate of Kafka at {first} is not trusted "
            f"({exc.verify_message}): KAFKA_SSL_CAFILE names the CA that signed it"
        )
    except ssl.SSLError as exc:
        return (
            f"TLS with Kafka at {first} failed ({exc.reason or exc}): is the listener "
            f"{settings.kafka_security_protocol}?"
        )
    except (OSError, TimeoutError, KafkaError) as exc:
        if settings.kafka_security_protocol in ("SSL", "SASL_SSL") and isinstance(
            exc, (ConnectionResetError, TimeoutError)
        ):
            return f"Kafka at {first} did not complete a TLS handshake: is it a TLS listener?"
        return None
    conn.close()
    return None
