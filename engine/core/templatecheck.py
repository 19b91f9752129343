"""Check a journey's (or campaign's) WhatsApp steps against the account's message templates.

Each step must name a template that exists in its language, is APPROVED, and takes as many
header, body and button parameters as the step gives. Problems are JourneyProblems at the
step's own FILE:LINE:COLUMN. Pure: the caller reads the files.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from engine.core.loader import JourneyProblem, Path_, field_locator
from schemas.campaign import CampaignDefinition
from schemas.journey import JourneyDefinition, WhatsAppActivity
from schemas.templates import Template

TemplateIndex = Mapping[tuple[str, str], Template]


def index(templates: list[Template]) -> dict[tuple[str, str], Template]:
    return {(t.name, t.language): t for t in templates}


def _steps(definition: JourneyDefinition | CampaignDefinition) -> Iterator[tuple[Path_, Any]]:
    if isinstance(definition, CampaignDefinition):
        yield ("message",), definition.message
        return
    for activity_id, activity in definition.activities.items():
        if isinstance(activity, WhatsAppActivity):
            yield ("activities", activity_id), activity


def _count(n: int, what: str) -> str:
    return f"{n} {what} parameter" + ("" if n == 1 else "s")


def step_problems(step: Any, templates: TemplateIndex) -> list[tuple[Path_, str]]:
    """(relative field path, message) for one WhatsApp step (activity or campaign message)."""
    name, language = step.template, step.language
    template = templates.get((name, language))
    if template is None:
        languages = sorted(lang for (n, lang) in templates if n == name)
        if not languages:
            return [(("template",), f"template {name!r} does not exist in the templates file")]
        there = ", ".join(languages)
        return [(("language",), f"template {name!r} has no {language!r} translation ({there})")]
    label = f"template {name!r} ({language})"
    problems: list[tuple[Path_, str]] = []
    if template.status != "APPROVED":
        problems.append((("template",), f"{label} is {template.status}, not APPROVED"))
    params = step.parameters
    header = template.header
    if header is not None and header.type != "text":
        if step.media is None:
            problems.append((("media",), f"{label} has a {header.type} header: give media"))
        elif step.media.type != header.type:
            problems.append(
                (("media", "type"), f"{label} has a {header.type} header, not {step.media.type}")
            )
    elif step.media is not None:
        problems.append((("media",), f"{label} has no media header"))
    if len(params.header) != template.header_params:
        problems.append(
            (
                ("parameters", "header"),
                f"{label} takes {_count(template.header_params, 'header')}; "
                f"the step gives {len(params.header)}",
            )
        )
    if len(params.body) != template.body_params:
        problems.append(
            (
                ("parameters", "body"),
                f"{label} takes {_count(template.body_params, 'body')}; "
                f"the step gives {len(params.body)}",
            )
        )
    buttons = template.buttons
    if len(params.buttons) > len(buttons):
        problems.append(
            (
                ("parameters", "buttons"),
                f"{label} has {len(buttons)} button(s); the step gives "
                f"{len(params.buttons)} button parameters",
            )
        )
    for i, button in enumerate(buttons):
        if button.dynamic and i >= len(params.buttons):
            problems.append(
                (("parameters", "buttons"), f"{label}: url button {i} needs a parameter")
            )
    return problems


def check_templates(
    definition: JourneyDefinition | CampaignDefinition,
    text: str,
    filename: str,
    templates: TemplateIndex,
) -> list[JourneyProblem]:
    """Every template problem of `definition` (loaded from `text`), located in `filename`."""
    locate, field_name = field_locator(text, filename)
    problems = []
    for base, step in _steps(definition):
        for relative, message in step_problems(step, templates):
            path = (*base, *relative)
            line, column = locate(path)
            problems.append(JourneyProblem(filename, line, column, field_name(path), message))
    return sorted(problems, key=lambda p: (p.line, p.column))
