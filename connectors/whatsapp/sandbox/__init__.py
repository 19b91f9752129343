"""Local WhatsApp Cloud API sandbox: a loopback aiohttp server that answers like Meta's Graph API.

It lets the real connector be tested end to end: same request checks, error codes and signed
webhooks. Rooms: templates (model and YAML loading), config, errors, state, rendering, faults,
webhooks (out), handlers, app (aiohttp application and serving) and cli (the click command).
"""

from connectors.whatsapp.sandbox.app import build_app, run_sandbox
from connectors.whatsapp.sandbox.cli import main
from connectors.whatsapp.sandbox.config import SandboxConfig, normalize_phone
from connectors.whatsapp.sandbox.errors import ApiError
from connectors.whatsapp.sandbox.rendering import render_free_form, render_template
from connectors.whatsapp.sandbox.state import STATE, SandboxState, SentMessage
from schemas.common import mask_phone
from schemas.templates import (
    Template,
    TemplateButton,
    TemplateFileError,
    TemplateHeader,
    load_templates,
)

__all__ = [
    "STATE",
    "ApiError",
    "SandboxConfig",
    "SandboxState",
    "SentMessage",
    "Template",
    "TemplateButton",
    "TemplateFileError",
    "TemplateHeader",
    "build_app",
    "load_templates",
    "main",
    "mask_phone",
    "normalize_phone",
    "render_free_form",
    "render_template",
    "run_sandbox",
]
