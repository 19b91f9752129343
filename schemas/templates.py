"""WhatsApp message templates: the YAML registry, Graph API's shape, and live status.

The YAML format is what the sandbox serves and `journeyctl templates sync` writes; the
Graph shape is GET /{waba_id}/message_templates'; TemplateState travels on the compacted
`whatsapp-templates` topic keyed by `name:language`, last write wins.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.yamlfile import YamlInputError, load_yaml_file

PLACEHOLDER_RE = re.compile(r"\{\{\s*(\d+)\s*\}\}")
BODY_MAX_CHARS = 1024


TemplateStatus = Literal[
    "APPROVED", "PAUSED", "DISABLED", "PENDING", "REJECTED", "FLAGGED", "IN_APPEAL"
]
Quality = Literal["GREEN", "YELLOW", "RED", "UNKNOWN"]
# message_template_status_update events and the status each leaves the template in.
STATUS_EVENTS: dict[str, TemplateStatus] = {
    "APPROVED": "APPROVED",
    "REINSTATED": "APPROVED",
    "PAUSED": "PAUSED",
    "DISABLED": "DISABLED",
    "FLAGGED": "FLAGGED",
    "REJECTED": "REJECTED",
    "PENDING": "PENDING",
    "IN_APPEAL": "IN_APPEAL",
}
Category = Literal["marketing", "utility", "authentication"]


class TemplateFileError(ValueError):
    """A template file is unreadable or has invalid entries; the message names the file."""


def _placeholders(text: str) -> list[int]:
    return [int(m.group(1)) for m in PLACEHOLDER_RE.finditer(text)]


def _check_sequential(text: str, where: str) -> int:
    numbers = sorted(set(_placeholders(text)))
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(f"{where}: placeholders must be {{{{1}}}}..{{{{n}}}} without gaps")
    return len(numbers)


class TemplateHeader(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["text", "image", "video", "document"]
    text: str | None = Field(default=None, max_length=60)

    @model_validator(mode="after")
    def _text_matches_type(self) -> TemplateHeader:
        if self.type == "text":
            if not self.text:
                raise ValueError("a text header needs 'text'")
            if _check_sequential(self.text, "header") > 1:
                raise ValueError("a text header takes at most one parameter")
        elif self.text is not None:
            raise ValueError(f"a {self.type} header has no 'text'; its media comes at send time")
        return self


class TemplateButton(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["quick_reply", "url"]
    text: str = Field(min_length=1, max_length=25)
    url: str | None = None

    @model_validator(mode="after")
    def _url_matches_type(self) -> TemplateButton:
        if self.type == "url":
            if not self.url or not self.url.startswith(("https://", "http://")):
                raise ValueError("a url button needs an http(s) 'url'")
            found = _placeholders(self.url)
            # Meta only allows one dynamic suffix, at the very end of the URL.
            if found and (found != [1] or not self.url.endswith("{{1}}")):
                raise ValueError("a url button may only end in {{1}}")
        elif self.url is not None:
            raise ValueError("a quick_reply button has no 'url'")
        return self

    @property
    def dynamic(self) -> bool:
        return self.type == "url" and bool(self.url and PLACEHOLDER_RE.search(self.url))


class Template(BaseModel):
    """One approved (or not) translation of a message template."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9_]{1,512}$")
    language: str = Field(pattern=r"^[a-z]{2,3}(_[A-Za-z]{2,4})?$")
    category: Category
    status: TemplateStatus = "APPROVED"
    quality: Quality = "UNKNOWN"
    header: TemplateHeader | None = None
    body: str = Field(min_length=1, max_length=BODY_MAX_CHARS)
    footer: str | None = Field(default=None, max_length=60)
    buttons: tuple[TemplateButton, ...] = Field(default=(), max_length=10)

    @model_validator(mode="after")
    def _body_placeholders(self) -> Template:
        _check_sequential(self.body, "body")
        if self.footer and _placeholders(self.footer):
            raise ValueError("footer: parameters are not allowed in a footer")
        return self

    @property
    def body_params(self) -> int:
        return len(set(_placeholders(self.body)))

    @property
    def header_params(self) -> int:
        if self.header is None or self.header.text is None:
            return 0
        return len(set(_placeholders(self.header.text)))


def load_templates(path: str | Path) -> list[Template]:
    """Read a YAML list of templates (or ``{templates: [...]}``); errors name the file and entry."""
    file = Path(path)
    try:
        raw = load_yaml_file(file).data
    except YamlInputError as exc:
        raise TemplateFileError(str(exc)) from None
    if isinstance(raw, dict) and "templates" in raw:
        raw = raw["templates"]
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise TemplateFileError(f"{file}: expected a list of templates, got {type(raw).__name__}")
    problems: list[str] = []
    templates: list[Template] = []
    seen: set[tuple[str, str]] = set()
    for index, entry in enumerate(raw):
        label = f"entry {index}"
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            label += f" ({entry['name']}/{entry.get('language', '?')})"
        try:
            template = Template.model_validate(entry)
        except ValidationError as exc:
            for err in exc.errors():
                where = ".".join(str(part) for part in err["loc"]) or "<entry>"
                problems.append(f"{file}: {label}: {where}: {err['msg']}")
            continue
        key = (template.name, template.language)
        if key in seen:
            problems.append(f"{file}: {label}: duplicate template {key[0]!r} in {key[1]!r}")
            continue
        seen.add(key)
        templates.append(template)
    if problems:
        raise TemplateFileError("\n".join(problems))
    return templates


def dump_templates(templates: list[Template]) -> str:
    """The YAML that load_templates reads back (sorted by name and language)."""
    entries = [
        t.model_dump(mode="json", exclude_defaults=True, exclude={"status", "quality"})
        | {"status": t.status, "quality": t.quality}
        for t in sorted(templates, key=lambda t: (t.name, t.language))
    ]
    return yaml.safe_dump({"templates": entries}, sort_keys=False, allow_unicode=True)


# --------------------------------------------------------------------------- Graph API shape


def to_graph(template: Template, template_id: str) -> dict[str, Any]:
    """One entry of GET /{waba_id}/message_templates for `template`."""
    components: list[dict[str, Any]] = []
    if template.header is not None:
        header: dict[str, Any] = {"type": "HEADER", "format": template.header.type.upper()}
        if template.header.text is not None:
            header["text"] = template.header.text
        components.append(header)
    components.append({"type": "BODY", "text": template.body})
    if template.footer:
        components.append({"type": "FOOTER", "text": template.footer})
    if template.buttons:
        buttons = []
        for button in template.buttons:
            entry = {"type": button.type.upper(), "text": button.text}
            if button.url is not None:
                entry["url"] = button.url
            buttons.append(entry)
        components.append({"type": "BUTTONS", "buttons": buttons})
    return {
        "name": template.name,
        "language": template.language,
        "status": template.status,
        "category": template.category.upper(),
        "quality_score": {"score": template.quality},
        "components": components,
        "id": template_id,
    }


def from_graph(entry: dict[str, Any]) -> Template:
    """A Graph API template entry as a Template; raises ValueError (pydantic's) when malformed."""
    data: dict[str, Any] = {
        "name": entry.get("name"),
        "language": entry.get("language"),
        "category": str(entry.get("category", "")).lower(),
        "status": entry.get("status", "APPROVED"),
    }
    score = entry.get("quality_score")
    if isinstance(score, dict) and score.get("score") in ("GREEN", "YELLOW", "RED"):
        data["quality"] = score["score"]
    for component in entry.get("components") or []:
        kind = str(component.get("type", "")).upper()
        if kind == "HEADER":
            header = {"type": str(component.get("format", "TEXT")).lower()}
            if component.get("text") is not None:
                header["text"] = component["text"]
            data["header"] = header
        elif kind == "BODY":
            data["body"] = component.get("text")
        elif kind == "FOOTER":
            data["footer"] = component.get("text")
        elif kind == "BUTTONS":
            data["buttons"] = [
                {"type": str(b.get("type", "")).lower(), "text": b.get("text")}
                | ({"url": b["url"]} if b.get("url") is not None else {})
                for b in component.get("buttons") or []
            ]
    return Template.model_validate(data)


# --------------------------------------------------------------------------- live state


class TemplateState(BaseModel):
    """What Meta last said about one translation: status, quality and category changes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    language: str
    status: TemplateStatus | None = None
    quality: Quality | None = None
    category: Category | None = None
    previous_category: Category | None = None
    reason: str | None = None
    updated_at: AwareDatetime

    @property
    def key(self) -> str:
        return state_key(self.name, self.language)

    @property
    def blocked(self) -> Literal["paused", "disabled"] | None:
        """Whether sends must stop: PAUSED, or DISABLED (for good)."""
        if self.status == "PAUSED":
            return "paused"
        if self.status == "DISABLED":
            return "disabled"
        return None


def state_key(name: str, language: str) -> str:
    return f"{name}:{language}"
