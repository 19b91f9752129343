"""Local WhatsApp Cloud API sandbox: a loopback aiohttp server that answers like Meta's Graph API."""

from connectors.whatsapp.sandbox.handlers import (
    STATE,
    ApiError,
    SandboxConfig,
    SandboxState,
    SentMessage,
    Template,
    TemplateButton,
    TemplateFileError,
    TemplateHeader,
    build_app,
    load_templates,
    main,
    mask_phone,
    normalize_phone,
    run_sandbox,
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
    "run_sandbox",
]
