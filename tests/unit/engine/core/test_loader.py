"""The journey loader: every kind of mistake is reported at its file, line, column and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.core.loader import JourneyValidationError, load_journey, parse_journey

EXAMPLES = Path(__file__).resolve().parents[4] / "examples" / "journeys"

BASE = """\
id: demo
name: Demo
entry:
  event: user.signed_up
start: first
activities:
  first: {type: wait, duration: 1h, next: done}
  done: {type: end}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(JourneyValidationError) as exc:
        parse_journey(text, "j.yaml")
    return [str(p) for p in exc.value.problems]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid(path: Path) -> None:
    journey = load_journey(path)
    assert journey.id == path.stem


def test_design_example_loads_with_its_properties() -> None:
    journey = load_journey(EXAMPLES / "cart-recovery.yaml")
    assert journey.reentry.mode == "after"
    assert journey.exit_on[0].event == "order.placed"
    assert journey.frequency_cap is not None and journey.frequency_cap.max == 2
    assert journey.quiet_hours is not None and journey.quiet_hours.action == "delay"
    assert list(journey.activities) == [
        "wait-1h",
        "pick-language",
        "send-es",
        "send-en",
        "wait-order",
        "done",
    ]


def test_unknown_top_level_field() -> None:
    assert problems(BASE + "colour: red\n") == ["j.yaml:9:1: colour: unknown field"]


def test_unknown_activity_field() -> None:
    text = BASE.replace("{type: end}", "{type: end, note: x}")
    assert problems(text) == ["j.yaml:8:21: activities.done.note: unknown field"]


def test_unknown_activity_type() -> None:
    text = BASE.replace("{type: end}", "{type: finish}")
    assert problems(text) == [
        "j.yaml:8:16: activities.done.type: unknown activity type 'finish'; expected one of "
        "'wait', 'condition', 'wait_for_event', 'split', 'whatsapp', 'http', 'jump', 'end'"
    ]


def test_transition_to_missing_activity() -> None:
    text = BASE.replace("next: done}", "next: nowhere}")
    found = problems(text)
    assert "j.yaml:7:43: activities.first.next: transition to missing activity 'nowhere'" in found


def test_unreachable_activity() -> None:
    text = BASE + "  orphan: {type: end}\n"
    assert problems(text) == [
        "j.yaml:9:11: activities.orphan: activity 'orphan' is unreachable from start"
    ]


def test_cycle_without_wait() -> None:
    text = """\
id: loop
name: Loop
entry: {event: e}
start: a
activities:
  a:
    type: condition
    branches: [{when: 'true', next: b}]
    else: done
  b:
    type: split
    paths: [{weight: 1, next: a}, {weight: 1, next: done}]
  done: {type: end}
"""
    assert problems(text) == ["j.yaml:7:5: activities.a: cycle passes no wait: a -> b -> a"]


def test_cycle_through_a_wait_is_fine() -> None:
    text = """\
id: loop
name: Loop
entry: {event: e}
start: a
activities:
  a: {type: wait, duration: 1d, next: b}
  b:
    type: condition
    branches: [{when: 'true', next: a}]
    else: done
  done: {type: end}
"""
    assert parse_journey(text).id == "loop"


def test_too_many_activities() -> None:
    lines = [f"  s{i}: {{type: wait, duration: 1h, next: s{i + 1}}}" for i in range(50)]
    text = BASE.split("activities:")[0].replace("start: first", "start: s0") + "activities:\n"
    text += "\n".join(lines) + "\n  s50: {type: end}\n"
    assert problems(text) == [
        "j.yaml:7:3: activities: a journey has at most 50 activities; this one has 51"
    ]


def test_timeout_over_91_days() -> None:
    assert problems(BASE + "timeout: 92d\n") == [
        "j.yaml:9:10: timeout: the journey timeout cannot exceed 91d"
    ]


def test_bad_duration() -> None:
    text = BASE.replace("duration: 1h", "duration: 1w")
    assert problems(text) == [
        "j.yaml:7:33: activities.first.duration: invalid duration '1w': use a whole number and a unit, "
        "like 30s, 15m, 1h or 7d"
    ]


def test_cel_syntax_error_is_caught_at_validation() -> None:
    text = BASE.replace(
        "  event: user.signed_up\n", "  event: user.signed_up\n  condition: 'event.data.x >'\n"
    )
    (found,) = problems(text)
    assert found.startswith(
        "j.yaml:5:14: entry.condition: invalid CEL expression 'event.data.x >': Syntax error"
    )


def test_reentry_after_needs_a_wait() -> None:
    (found,) = problems(BASE + "reentry: {mode: after}\n")
    assert (
        found
        == "j.yaml:9:10: reentry: reentry mode 'after' needs a wait, for example {mode: after, wait: 7d}"
    )


def test_condition_else_is_named_as_written() -> None:
    text = """\
id: c
name: C
entry: {event: e}
start: a
activities:
  a:
    type: condition
    branches: [{when: 'true', next: done}]
  done: {type: end}
"""
    assert problems(text) == ["j.yaml:7:5: activities.a.else: required field is missing"]


def test_duplicate_keys_are_reported() -> None:
    text = BASE + "name: Again\n"
    assert "j.yaml:9:1: name: duplicate key: the later value would hide the earlier" in problems(
        text
    )


def test_several_problems_at_once() -> None:
    text = BASE.replace("{type: end}", "{type: end, x: 1}") + "colour: red\ntimeout: 100d\n"
    assert problems(text) == [
        "j.yaml:8:21: activities.done.x: unknown field",
        "j.yaml:9:1: colour: unknown field",
        "j.yaml:10:10: timeout: the journey timeout cannot exceed 91d",
    ]


def test_invalid_yaml_names_the_line() -> None:
    assert problems("id: x\nname: [unclosed\n") == [
        "j.yaml:3:1: <journey>: invalid YAML: expected ',' or ']', but got '<stream end>'"
    ]


def test_not_a_mapping() -> None:
    assert problems("- a\n- b\n") == [
        "j.yaml:1:1: <journey>: a journey file holds one YAML mapping (id, name, entry, ...)"
    ]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(JourneyValidationError) as exc:
        load_journey(tmp_path / "none.yaml")
    assert str(exc.value).endswith(
        "none.yaml:1:1: <journey>: cannot read file: No such file or directory"
    )


def test_bad_journey_id() -> None:
    (found,) = problems(BASE.replace("id: demo", "id: Demo_1"))
    assert found == "j.yaml:1:5: id: String should match pattern '^[a-z0-9][a-z0-9-]*$'"
