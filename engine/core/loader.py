"""Load journey (and campaign) YAML into validated models, or say exactly what is wrong.

Every problem is reported as `FILE:LINE:COLUMN: path.to.field: message`, all at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from schemas.campaign import CampaignDefinition
from schemas.journey import JourneyDefinition, check_graph
from schemas.yamlfile import YamlDocument, YamlInputError, parse_yaml, read_yaml_text

Path_ = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class JourneyProblem:
    file: str
    line: int
    column: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.field or '<journey>'}: {self.message}"


class JourneyValidationError(Exception):
    """A journey file is invalid; `problems` lists each one with its location."""

    def __init__(self, problems: Sequence[JourneyProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class _Marks:
    """Line and column of every mapping key and value in a YAML document, by field path."""

    def __init__(self) -> None:
        self.value_at: dict[Path_, tuple[int, int]] = {}
        self.key_at: dict[Path_, tuple[int, int]] = {}
        self.duplicates: list[tuple[Path_, tuple[int, int]]] = []

    def walk(self, node: yaml.Node, path: Path_) -> None:
        self.value_at[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, value_node in node.value:
                key = key_node.value
                child = (*path, key)
                mark = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                if key in seen:
                    self.duplicates.append((child, mark))
                seen.add(key)
                self.key_at[child] = mark
                self.walk(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.walk(item, (*path, i))

    def locate(self, path: Path_, *, key: bool = False) -> tuple[int, int]:
        """The closest known position: the field itself, else its nearest ancestor."""
        probe = path
        while probe:
            table = self.key_at if key else self.value_at
            if probe in table:
                return table[probe]
            if probe in self.value_at:
                return self.value_at[probe]
            probe = probe[:-1]
        return self.value_at.get((), (1, 1))


def _yaml_path(loc: Iterable[str | int], data: Any) -> Path_:
    """Map a pydantic error location onto the YAML's own keys.

    Pydantic inserts the union tag (`whatsapp`) into locations inside a discriminated
    union and uses the alias (`else`) for aliased fields; the YAML has neither tag.
    """
    out: list[str | int] = []
    node: Any = data
    for part in loc:
        in_map = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_map or in_list:
            out.append(part)
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and node.get("type") == part:
            continue  # the discriminator tag
        elif part == "else_":
            out.append("else")
            node = node.get("else") if isinstance(node, dict) else None
        else:
            out.append(part)
            node = None
    return tuple(out)


def _field_name(path: Path_) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    if kind == "union_tag_invalid":
        ctx = error.get("ctx", {})
        return f"unknown activity type {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags', '')}"
    if kind == "union_tag_not_found":
        return "activity has no 'type'"
    msg: str = error["msg"]
    return msg.removeprefix("Value error, ")


def _problem(exc: YamlInputError) -> JourneyValidationError:
    return JourneyValidationError([JourneyProblem(exc.file, exc.line, exc.column, "", exc.message)])


def safe_load_yaml(text: str, filename: str = "<string>") -> YamlDocument:
    """The one door for YAML a user wrote (journeys, campaigns, journey tests).

    Refuses aliases, deep nesting, too many values and files over the size limit
    (`schemas.yamlfile`), so a hostile file fails in bounded time and memory; raises
    JourneyValidationError with FILE:LINE:COLUMN.
    """
    try:
        return parse_yaml(text, filename)
    except YamlInputError as exc:
        raise _problem(exc) from None


def read_yaml_file(path: str | Path) -> tuple[str, str]:
    """Read a YAML file a user wrote, bounded in size: (text, filename) for `safe_load_yaml`."""
    try:
        return read_yaml_text(path), str(path)
    except YamlInputError as exc:
        raise _problem(exc) from None


def _compose(text: str, filename: str, shape: str) -> tuple[dict[str, Any], _Marks]:
    """Parse YAML text into data and the position of every field; raise on bad YAML."""
    document = safe_load_yaml(text, filename)
    node, data = document.node, document.data
    if node is None or not isinstance(data, dict):
        raise JourneyValidationError([JourneyProblem(filename, 1, 1, "", shape)])
    marks = _Marks()
    marks.walk(node, ())
    return data, marks


def _duplicate_problems(marks: _Marks, filename: str) -> list[JourneyProblem]:
    return [
        JourneyProblem(
            filename,
            *mark,
            _field_name(path),
            "duplicate key: the later value would hide the earlier",
        )
        for path, mark in marks.duplicates
    ]


def _validation_problems(
    exc: ValidationError, data: Any, marks: _Marks, filename: str
) -> list[JourneyProblem]:
    problems = []
    for error in exc.errors():
        path = _yaml_path(error["loc"], data)
        if error["type"] == "union_tag_invalid":
            path = (*path, "type")
        line, col = marks.locate(path, key=error["type"] == "extra_forbidden")
        problems.append(JourneyProblem(filename, line, col, _field_name(path), _message(error)))
    return problems


def _sorted(problems: list[JourneyProblem]) -> list[JourneyProblem]:
    return sorted(problems, key=lambda p: (p.line, p.column))


def parse_journey(text: str, filename: str = "<string>") -> JourneyDefinition:
    """Validate journey YAML text; raise JourneyValidationError listing every problem."""
    data, marks = _compose(
        text, filename, "a journey file holds one YAML mapping (id, name, entry, ...)"
    )
    if data.get("kind") == "campaign":
        line, col = marks.locate(("kind",))
        raise JourneyValidationError(
            [
                JourneyProblem(
                    filename,
                    line,
                    col,
                    "kind",
                    "this file is a campaign: use `journeyctl campaign validate|deploy`",
                )
            ]
        )
    problems = _duplicate_problems(marks, filename)
    try:
        journey = JourneyDefinition.model_validate(data, context={"skip_graph": True})
    except ValidationError as exc:
        problems.extend(_validation_problems(exc, data, marks, filename))
        raise JourneyValidationError(_sorted(problems)) from None
    for path, message in check_graph(journey):
        line, col = marks.locate(path)
        problems.append(JourneyProblem(filename, line, col, _field_name(path), message))
    if problems:
        raise JourneyValidationError(_sorted(problems))
    return journey


def parse_campaign(text: str, filename: str = "<string>") -> CampaignDefinition:
    """Validate campaign YAML text (`kind: campaign`); raise JourneyValidationError if wrong."""
    data, marks = _compose(
        text, filename, "a campaign file holds one YAML mapping (kind: campaign, id, name, ...)"
    )
    problems = _duplicate_problems(marks, filename)
    try:
        campaign = CampaignDefinition.model_validate(data)
    except ValidationError as exc:
        problems.extend(_validation_problems(exc, data, marks, filename))
        raise JourneyValidationError(_sorted(problems)) from None
    if problems:
        raise JourneyValidationError(_sorted(problems))
    return campaign


def field_locator(
    text: str, filename: str
) -> tuple[Callable[[Path_], tuple[int, int]], Callable[[Path_], str]]:
    """For checks after loading: (path -> LINE, COLUMN) and (path -> field name) in `text`."""
    _, marks = _compose(text, filename, "a YAML mapping")
    return marks.locate, _field_name


def load_campaign(path: str | Path) -> CampaignDefinition:
    """Read and validate one campaign file."""
    return parse_campaign(*read_yaml_file(path))


def load_journey(path: str | Path) -> JourneyDefinition:
    """Read and validate one journey file."""
    return parse_journey(*read_yaml_file(path))
