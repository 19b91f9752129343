"""Bulk import without Kafka (dry runs): what each row becomes, and where a bad one is."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.ingest.bulk import ImportFileError, Row, RowEvents, file_digest, import_file
from schemas.settings import Settings

CSV = (
    "profile_id,first_name,phone,language,plan\n"
    "p-1,Ana,+34600111222,es,gold\n"
    ",NoId,,,\n"
    "p-3,Bo,12345,en,\n"
    'p-4,"Line\none",,en,silver\n'
    "p-5,Too,,en,x,extra\n"
)


def dry(path: Path) -> tuple[int, int, list[str]]:
    summary = asyncio.run(import_file(Settings(), path, dry_run=True))
    return summary.rows, summary.published, summary.rejected


def test_csv_rows_are_checked_and_bad_ones_named_by_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_text(CSV)
    rows, published, rejected = dry(path)
    assert (rows, published) == (5, 2)
    assert rejected == [
        f"{path}:3:1: profile_id: required (a non-empty string)",
        f"{path}:4:3: invalid profile event: attributes.phone: Value error, phone numbers "
        "must be in E.164 form: '+' then country code and number",
        f"{path}:7: 6 cells, the header has 5",
    ]


def test_a_row_becomes_a_profile_updated_event_with_an_id_from_file_and_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "people.csv"
    path.write_text(CSV)
    events = RowEvents(path, Settings(), ["profile_id", "first_name", "phone", "language", "plan"])
    made = events.event(Row(2, {"profile_id": "p-1", "first_name": "Ana", "plan": "gold"}))
    assert not isinstance(made, str)
    key, value = made
    assert key == b"p-1"
    assert f'"event_id":"import-{file_digest(path)}-2"'.encode() in value
    assert b'"type":"profile.updated"' in value
    assert b'"attributes":{"first_name":"Ana","plan":"gold"}' in value


def test_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "people.jsonl"
    path.write_text('{"profile_id": "p-1", "tier": 3}\n\n[1]\n{nope\n{"tier": 1}\n')
    rows, published, rejected = dry(path)
    assert (rows, published) == (4, 1)
    assert rejected[0] == f"{path}:3: not a JSON object"
    assert rejected[1].startswith(f"{path}:4: invalid JSON")
    assert rejected[2] == f"{path}:5: profile_id: required (a non-empty string)"


def test_files_that_cannot_be_imported(tmp_path: Path) -> None:
    no_id = tmp_path / "no-id.csv"
    no_id.write_text("name,phone\nAna,+34600111222\n")
    with pytest.raises(ImportFileError, match=r"no-id.csv:1: the header has no profile_id"):
        dry(no_id)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ImportFileError, match="empty file"):
        dry(empty)
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"profile_id,name\np-1,Jos\xe9\n")
    with pytest.raises(ImportFileError, match=r"latin.csv:2: not UTF-8"):
        dry(latin)
