"""Check a send request against a template file, as the WhatsApp sandbox would answer it.

The request goes through the connector's own payload builder (`client.build_message`) and
the sandbox's template lookup and renderer, so a test fails exactly where the Cloud API
emulation would refuse the call (unknown or paused template, wrong parameter count...).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from schemas.messages import SendRequest


class TemplateRefusal(Exception):
    """The Cloud API (sandbox) would refuse this send: Meta's error code and its detail."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"error {code}: {detail}")
        self.code = code
        self.detail = detail


class TemplateBook:
    """Templates by (name, language) from a sandbox template file."""

    def __init__(self, path: str | Path) -> None:
        from connectors.whatsapp.sandbox import load_templates

        self.path = str(path)
        templates = load_templates(path)  # raises TemplateFileError naming file and entry
        # The sandbox's lookup reads `state.templates`; this is all of its state it needs.
        self._state: Any = SimpleNamespace(templates={(t.name, t.language): t for t in templates})

    def render(self, request: SendRequest) -> str:
        """The text the person would read; raises TemplateRefusal when the API would refuse."""
        from connectors.whatsapp.client import build_message
        from connectors.whatsapp.sandbox import ApiError, render_template
        from connectors.whatsapp.sandbox.handlers import _find_template

        spec = build_message(request)["template"]
        try:
            template = _find_template(self._state, spec)
            return render_template(template, spec["components"]).text
        except ApiError as exc:
            raise TemplateRefusal(exc.code, exc.details or exc.message) from None
