"""Bounded YAML: hostile files (alias bombs, deep nesting, huge files) fail fast at FILE:LINE."""

from __future__ import annotations

import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from connectors.whatsapp.sandbox import TemplateFileError, load_templates
from engine.core.loader import JourneyValidationError, load_campaign, load_journey
from schemas.yamlfile import (
    MAX_YAML_BYTES,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    YamlInputError,
    load_yaml_file,
    parse_yaml,
)

ROOT = Path(__file__).resolve().parents[3]

# The bomb: nine levels of nine aliases, 9**9 (387 million) strings once expanded.
ALIAS_BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{b}: &{b} [{', '.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)


def failure(text: str) -> str:
    with pytest.raises(YamlInputError) as exc:
        parse_yaml(text, "f.yaml")
    return str(exc.value)


def test_the_alias_bomb_fails_at_its_first_alias_in_bounded_time_and_memory() -> None:
    tracemalloc.start()
    started = time.perf_counter()
    message = failure(ALIAS_BOMB)
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert (
        message
        == "f.yaml:2:8: invalid YAML: YAML aliases (*a) are not allowed: write the value out"
    )
    assert elapsed < 1.0
    assert peak < 5 * 2**20


def test_journeyctl_validate_refuses_the_alias_bomb_quickly(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(ALIAS_BOMB)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "validate", str(bomb)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert time.monotonic() - started < 30
    assert done.returncode == 1
    assert f"{bomb}:2:8: <journey>: invalid YAML: YAML aliases (*a) are not allowed" in done.stderr


def test_a_merge_key_is_an_alias_too() -> None:
    text = "base: &base {a: 1}\nother:\n  <<: *base\n"
    assert failure(text).startswith("f.yaml:3:7: invalid YAML: YAML aliases (*base)")


def test_an_anchor_without_alias_is_harmless() -> None:
    assert parse_yaml("a: &x 1\nb: 2\n").data == {"a": 1, "b": 2}


def test_deep_nesting_fails_at_the_level_past_the_limit() -> None:
    assert failure("[" * 100_000) == (
        f"f.yaml:1:{MAX_YAML_DEPTH + 1}: invalid YAML: nested too deep (limit {MAX_YAML_DEPTH})"
    )
    block = "".join(" " * i + "k:\n" for i in range(MAX_YAML_DEPTH + 5))
    assert f"f.yaml:{MAX_YAML_DEPTH}:" in failure(block)
    assert parse_yaml("[" * (MAX_YAML_DEPTH - 1) + "]" * (MAX_YAML_DEPTH - 1)).data is not None


def test_too_many_values_fail_where_the_limit_is_crossed() -> None:
    text = "- 0\n" * (MAX_YAML_NODES + 10)
    assert failure(text) == (
        f"f.yaml:{MAX_YAML_NODES}:3: invalid YAML: too many values (limit {MAX_YAML_NODES})"
    )


def test_a_file_over_the_size_limit_is_refused_before_it_is_read_whole(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * MAX_YAML_BYTES + "\n")
    with pytest.raises(YamlInputError) as exc:
        load_yaml_file(big)
    assert str(exc.value) == f"{big}:1:1: file too large: over {MAX_YAML_BYTES} bytes"
    assert failure("a: " + "x" * MAX_YAML_BYTES).startswith("f.yaml:1:1: file too large:")


def test_values_python_cannot_hold_are_refused_where_they_are() -> None:
    assert failure("a: 1\nb: " + "9" * 5000).startswith("f.yaml:2:4: invalid YAML: bad value:")
    assert failure("when: 2021-02-30\n").startswith("f.yaml:1:7: invalid YAML: bad value:")


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"id: x\nname: \xff\xfe\n")
    with pytest.raises(YamlInputError) as exc:
        load_yaml_file(bad)
    assert str(exc.value) == f"{bad}:2:1: not UTF-8 text"


def test_every_loader_refuses_the_bomb(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(ALIAS_BOMB)
    for load in (load_journey, load_campaign):
        with pytest.raises(JourneyValidationError) as exc:
            load(bomb)
        assert str(exc.value).startswith(f"{bomb}:2:8: <journey>: invalid YAML: YAML aliases")
    with pytest.raises(TemplateFileError) as template_exc:
        load_templates(bomb)
    assert str(template_exc.value).startswith(f"{bomb}:2:8: invalid YAML: YAML aliases")


def test_a_control_character_names_its_line_and_column() -> None:
    assert failure("a: 1\nb: x\x08\n") == (
        "f.yaml:2:5: invalid YAML: character #x0008 is not allowed"
    )
