"""The WhatsApp channel: Cloud API client, faust connector, webhook receiver and local sandbox.

The engine's wiring needs only `register` (the connector) and `run_webhook` (the receiver).
Names load on first use, so the receiver and the sandbox never import faust.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connectors.whatsapp.client import CloudApiClient, SendOutcome
    from connectors.whatsapp.connector import WhatsAppConnector, register
    from connectors.whatsapp.webhook import build_webhook_app, run_webhook

_EXPORTS = {
    "CloudApiClient": "connectors.whatsapp.client",
    "SendOutcome": "connectors.whatsapp.client",
    "WhatsAppConnector": "connectors.whatsapp.connector",
    "register": "connectors.whatsapp.connector",
    "build_webhook_app": "connectors.whatsapp.webhook",
    "run_webhook": "connectors.whatsapp.webhook",
}

__all__ = [
    "CloudApiClient",
    "SendOutcome",
    "WhatsAppConnector",
    "build_webhook_app",
    "register",
    "run_webhook",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module), name)
