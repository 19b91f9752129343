"""Send-time checks of template components and free-form content, and the text a person reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connectors.whatsapp.sandbox.errors import ApiError
from schemas.templates import BODY_MAX_CHARS, PLACEHOLDER_RE, Template

TEXT_MAX_CHARS = 4096
MEDIA_TYPES = frozenset({"image", "video", "audio", "document", "sticker"})


@dataclass(slots=True)
class Rendered:
    text: str
    media: dict[str, str] | None = None


def _param_text(param: Any, where: str, index: int) -> str:
    if not isinstance(param, dict):
        raise ApiError(131009, f"{where}: parameter {index} must be an object")
    kind = param.get("type")
    if kind == "text":
        value = param.get("text")
        if not isinstance(value, str) or not value.strip():
            raise ApiError(131008, f"{where}: parameter {index} of type text is missing text value")
        return value
    if kind in ("currency", "date_time"):
        inner = param.get(kind)
        fallback = inner.get("fallback_value") if isinstance(inner, dict) else None
        if not isinstance(fallback, str) or not fallback:
            raise ApiError(
                131008, f"{where}: parameter {index} of type {kind} needs fallback_value"
            )
        return fallback
    raise ApiError(
        132012,
        f"{where}: Format mismatch, expected TEXT, received {str(kind or 'UNKNOWN').upper()}",
    )


def _check_count(where: str, given: int, expected: int) -> None:
    if given != expected:
        raise ApiError(
            132000,
            f"{where}: number of localizable_params ({given}) does not match the expected "
            f"number of params ({expected})",
        )


def _fill(text: str, values: list[str]) -> str:
    return PLACEHOLDER_RE.sub(lambda m: values[int(m.group(1)) - 1], text)


def _media_param(template: Template, params: list[Any]) -> dict[str, str]:
    assert template.header is not None
    expected = template.header.type
    received = "UNKNOWN"
    if params:
        first = params[0]
        received = (
            str(first.get("type", "UNKNOWN")).upper() if isinstance(first, dict) else received
        )
    if not params or received != expected.upper():
        raise ApiError(
            132012, f"header: Format mismatch, expected {expected.upper()}, received {received}"
        )
    _check_count("header", len(params), 1)
    media = params[0].get(expected)
    if not isinstance(media, dict):
        raise ApiError(131008, f"header: parameter of type {expected} needs an '{expected}' object")
    link, media_id = media.get("link"), media.get("id")
    if isinstance(link, str) and link:
        if not link.startswith(("https://", "http://")):
            raise ApiError(131009, f"header: {expected}.link must be an http(s) URL")
        return {"type": expected, "link": link}
    if isinstance(media_id, str) and media_id:
        return {"type": expected, "id": media_id}
    raise ApiError(131008, f"header: {expected} needs a 'link' or an 'id'")


def render_template(template: Template, components: Any) -> Rendered:
    """Check send-time components against the template and return what the person reads."""
    if components is None:
        components = []
    if not isinstance(components, list):
        raise ApiError(100, "template.components must be a list")
    header: list[Any] | None = None
    body: list[Any] | None = None
    buttons: dict[int, tuple[str, list[Any]]] = {}
    for position, component in enumerate(components):
        if not isinstance(component, dict):
            raise ApiError(100, f"components[{position}] must be an object")
        kind = str(component.get("type", "")).lower()
        params = component.get("parameters", [])
        if not isinstance(params, list):
            raise ApiError(100, f"components[{position}].parameters must be a list")
        if kind == "header":
            header = params
        elif kind == "body":
            body = params
        elif kind == "button":
            try:
                index = int(component.get("index", ""))
            except (TypeError, ValueError):
                raise ApiError(131009, f"components[{position}]: button index is missing") from None
            buttons[index] = (str(component.get("sub_type", "")).lower(), params)
        else:
            raise ApiError(100, f"components[{position}]: unsupported component type {kind!r}")

    lines: list[str] = []
    media: dict[str, str] | None = None
    tpl_header = template.header
    if tpl_header is None:
        _check_count("header", len(header or []), 0)
    elif tpl_header.type == "text":
        assert tpl_header.text is not None
        params = header or []
        _check_count("header", len(params), template.header_params)
        values = [_param_text(p, "header", i + 1) for i, p in enumerate(params)]
        lines.append(_fill(tpl_header.text, values))
    else:
        media = _media_param(template, header or [])

    params = body or []
    _check_count("body", len(params), template.body_params)
    values = []
    for i, param in enumerate(params):
        value = _param_text(param, "body", i + 1)
        # Meta refuses these in body parameters; connectors that pass raw user input hit it.
        if "\n" in value or "\t" in value or "     " in value:
            raise ApiError(
                132018,
                "body: Param text cannot have new-line/tab characters or more than 4 "
                "consecutive spaces",
            )
        values.append(value)
    text = _fill(template.body, values)
    if len(text) > BODY_MAX_CHARS:
        raise ApiError(132005, f"body: hydrated text is {len(text)} characters, over 1024")
    lines.append(text)
    if template.footer:
        lines.append(template.footer)

    for index in buttons:
        if not 0 <= index < len(template.buttons):
            raise ApiError(131009, f"buttons: Button at index {index} does not exist in template")
    for index, button in enumerate(template.buttons):
        sub_type, params = buttons.get(index, ("", []))
        given = index in buttons
        if given and sub_type != button.type:
            raise ApiError(
                131009,
                f"buttons: Button at index {index} is of type {button.type}, not {sub_type!r}",
            )
        if button.type == "url":
            assert button.url is not None
            if button.dynamic and not params:
                raise ApiError(
                    131008, f"buttons: Button at index {index} of type Url requires a parameter"
                )
            _check_count(f"button at index {index}", len(params), 1 if button.dynamic else 0)
            suffix = [_param_text(p, f"button at index {index}", 1) for p in params]
            lines.append(f"[{button.text}]({_fill(button.url, suffix)})")
        else:
            if len(params) > 1:
                _check_count(f"button at index {index}", len(params), 1)
            for param in params:
                if not isinstance(param, dict) or param.get("type") != "payload":
                    raise ApiError(132012, f"button at index {index}: expected PAYLOAD parameter")
                if not isinstance(param.get("payload"), str):
                    raise ApiError(131008, f"button at index {index}: payload is missing")
            lines.append(f"[{button.text}]")
    return Rendered(text="\n".join(lines), media=media)


def render_free_form(kind: str, payload: dict[str, Any]) -> Rendered:
    content = payload.get(kind)
    if not isinstance(content, dict) and not (kind == "contacts" and isinstance(content, list)):
        raise ApiError(
            100,
            f"The parameter {kind} is required.",
            message=f"(#100) The parameter {kind} is required.",
        )
    if kind == "text":
        assert isinstance(content, dict)
        body = content.get("body")
        if not isinstance(body, str) or not body:
            raise ApiError(
                100,
                "text['body'] is required",
                message="(#100) The parameter text['body'] is required.",
            )
        if len(body) > TEXT_MAX_CHARS:
            raise ApiError(100, f"text['body'] must be at most {TEXT_MAX_CHARS} characters long")
        return Rendered(text=body)
    if kind in MEDIA_TYPES:
        assert isinstance(content, dict)
        link, media_id = content.get("link"), content.get("id")
        if isinstance(link, str) and link.startswith(("https://", "http://")):
            media = {"type": kind, "link": link}
        elif isinstance(media_id, str) and media_id:
            media = {"type": kind, "id": media_id}
        else:
            raise ApiError(131008, f"{kind} needs an http(s) 'link' or an 'id'")
        caption = content.get("caption")
        text = f"[{kind}]" + (f" {caption}" if isinstance(caption, str) and caption else "")
        return Rendered(text=text, media=media)
    if kind == "interactive":
        assert isinstance(content, dict)
        inner = content.get("body")
        body_text = inner.get("text") if isinstance(inner, dict) else None
        return Rendered(text=body_text if isinstance(body_text, str) else "[interactive]")
    if kind == "reaction":
        assert isinstance(content, dict)
        return Rendered(text=str(content.get("emoji", "")))
    return Rendered(text=f"[{kind}]")


# --------------------------------------------------------------------------- handlers
