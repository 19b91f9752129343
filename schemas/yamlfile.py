"""Parse untrusted YAML (journeys, campaigns, templates, journey tests) in bounded time and memory.

Invariant: a document is refused, with FILE:LINE:COLUMN, before it can cost more than a
few seconds or a few hundred MiB: it must be under `max_bytes`, use no aliases (an alias
bomb of a few hundred bytes expands to gigabytes), nest at most `max_depth` collections
deep and hold at most `max_nodes` values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

MAX_YAML_BYTES = 512 * 1024
MAX_YAML_DEPTH = 64
MAX_YAML_NODES = 20_000


class YamlInputError(Exception):
    """A YAML input that cannot be read or parsed, with the position of the first problem."""

    def __init__(self, file: str, line: int, column: int, message: str) -> None:
        self.file = file
        self.line = line
        self.column = column
        self.message = message
        super().__init__(f"{file}:{line}:{column}: {message}")


@dataclass(frozen=True, slots=True)
class YamlDocument:
    """A parsed document: the plain data and the node tree (for the position of every field)."""

    data: Any
    node: yaml.Node | None


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with aliases refused and depth and size counted while composing."""

    def __init__(self, text: str, max_depth: int, max_nodes: int) -> None:
        super().__init__(text)
        self._max_depth = max_depth
        self._max_nodes = max_nodes
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        mark: Any = event.start_mark
        if isinstance(event, yaml.AliasEvent):
            raise ComposerError(
                None,
                None,
                f"YAML aliases (*{event.anchor}) are not allowed: write the value out",
                mark,
            )
        self._nodes += 1
        if self._nodes > self._max_nodes:
            raise ComposerError(None, None, f"too many values (limit {self._max_nodes})", mark)
        self._depth += 1
        try:
            if self._depth > self._max_depth:
                raise ComposerError(None, None, f"nested too deep (limit {self._max_depth})", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # A scalar Python cannot hold (an int of 5,000 digits, 2021-02-30) raises ValueError.
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            raise ConstructorError(None, None, f"bad value: {exc}", node.start_mark) from None


def parse_yaml(
    text: str,
    filename: str = "<string>",
    *,
    max_bytes: int = MAX_YAML_BYTES,
    max_depth: int = MAX_YAML_DEPTH,
    max_nodes: int = MAX_YAML_NODES,
) -> YamlDocument:
    """Parse one YAML document within the limits; raise YamlInputError naming where it broke."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise YamlInputError(filename, 1, 1, f"file too large: {size} bytes (limit {max_bytes})")
    try:
        loader = _BoundedLoader(text, max_depth, max_nodes)
    except yaml.reader.ReaderError as exc:  # a control character: the reader checks first
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        message = f"invalid YAML: character #x{exc.character:04x} is not allowed"
        raise YamlInputError(filename, line, column, message) from None
    try:
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise YamlInputError(filename, line, col, f"invalid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise YamlInputError(filename, 1, 1, f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    return YamlDocument(data, node)


def read_yaml_text(path: str | Path, *, max_bytes: int = MAX_YAML_BYTES) -> str:
    """Read a UTF-8 YAML file of at most `max_bytes`; never reads more than that into memory."""
    file = Path(path)
    try:
        with file.open("rb") as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as exc:
        raise YamlInputError(str(file), 1, 1, f"cannot read file: {exc.strerror}") from None
    if len(raw) > max_bytes:
        raise YamlInputError(str(file), 1, 1, f"file too large: over {max_bytes} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise YamlInputError(str(file), line, 1, "not UTF-8 text") from None


def load_yaml_file(path: str | Path, **limits: int) -> YamlDocument:
    """`read_yaml_text` then `parse_yaml` with the same limits."""
    max_bytes = limits.get("max_bytes", MAX_YAML_BYTES)
    return parse_yaml(read_yaml_text(path, max_bytes=max_bytes), str(path), **limits)
