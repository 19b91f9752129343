"""`journeyctl simulate` over files: timelines, the comparison of two versions, bad lines."""

from __future__ import annotations

from pathlib import Path

import orjson
from click.testing import CliRunner

from engine.cli.simulate import simulate_command
from tests.unit import ANA

ROOT = Path(__file__).resolve().parents[4]
CART = str(ROOT / "examples/journeys/cart-recovery.yaml")


def event(eid: str, type_: str, pid: str, at: str, **extra: object) -> bytes:
    return orjson.dumps(
        {"event_id": eid, "type": type_, "profile_id": pid, "occurred_at": at, **extra}
    )


def write_events(tmp_path: Path) -> Path:
    lines = [
        event(
            "e1",
            "cart.abandoned",
            "p-1",
            "2026-03-02T10:00:00Z",
            attributes=ANA,
            data={"cart_total": 42.5},
        ),
        event("e2", "cart.abandoned", "p-2", "2026-03-02T10:05:00Z", data={"cart_total": 30}),
        event("e3", "order.placed", "p-1", "2026-03-02T11:30:00Z"),
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_a_timeline_per_profile_and_a_summary(tmp_path: Path) -> None:
    events = write_events(tmp_path)
    profiles = tmp_path / "profiles.jsonl"
    profiles.write_bytes(
        orjson.dumps({"profile_id": "p-2", "attributes": {**ANA, "language": "en"}})
    )
    result = CliRunner().invoke(
        simulate_command, [CART, "--events", str(events), "--profiles", str(profiles)]
    )
    assert result.exit_code == 0, result.output
    assert "profile p-1" in result.output and "profile p-2" in result.output
    assert "cart-recovery/send-en" in result.output  # p-2's language came from --profiles
    assert "exits completed 1, exit_event 1" in result.output
    assert "+34600111222" not in result.output


def test_compare_shows_what_a_new_version_changes(tmp_path: Path) -> None:
    events = write_events(tmp_path)
    slower = tmp_path / "cart-v2.yaml"
    slower.write_text(Path(CART).read_text().replace("duration: 1h,", "duration: 2h,"))
    result = CliRunner().invoke(
        simulate_command,
        [str(slower), "--events", str(events), "--compare", CART, "--format", "json"],
    )
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.output)
    old, new = report["compare"]["old"], report["summary"]
    assert old["messages"] == {"send-es": 1} and new["messages"] == {}  # p-1 ordered first
    assert report["compare"]["differences"] == [
        {
            "profile_id": "p-1",
            "old": ["message send-es cart_reminder/es at 2026-03-02T11:00:00Z", "exit exit_event"],
            "new": ["exit exit_event"],
        }
    ]


def test_a_bad_line_says_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(
        event("e1", "cart.abandoned", "p-1", "2026-03-02T10:00:00Z") + b'\n{"type": 1}\n'
    )
    result = CliRunner().invoke(simulate_command, [CART, "--events", str(path)])
    assert result.exit_code == 1
    assert f"{path}:2: " in result.output
