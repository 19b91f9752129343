"""docs/BENCHMARKS.md is generated whole but for its short table of changes that moved a figure."""

from __future__ import annotations

from pathlib import Path

from bench.run import DEFAULT_KEPT, DOC, KEEP_END, KEEP_START, kept_section


def test_the_changes_table_is_carried_over_as_written(tmp_path: Path) -> None:
    table = f"{KEEP_START}\n## Changes\n\n| date | change |\n| 2026-12-08 | x |\n{KEEP_END}"
    report = tmp_path / "BENCHMARKS.md"
    report.write_text(f"# Benchmarks\n\ngenerated text\n\n{table}\n")

    assert kept_section(report) == table


def test_a_report_without_the_table_gets_an_empty_one_not_an_old_diary(tmp_path: Path) -> None:
    report = tmp_path / "BENCHMARKS.md"
    report.write_text(
        "# Benchmarks\n\n<!-- before-after:start -->\n### Run 1\nran it\n"
        "<!-- before-after:end -->\n"
    )
    assert kept_section(report) in (DEFAULT_KEPT, kept_section(DOC))
    assert "Run 1" not in kept_section(report)


def test_the_generated_document_keeps_no_diary() -> None:
    text = DOC.read_text()
    kept = kept_section(DOC)
    assert kept != DEFAULT_KEPT, "docs/BENCHMARKS.md lost its changes table"
    assert "before-after:start" not in text, "docs/BENCHMARKS.md keeps a diary of runs"
    assert all(
        line.startswith(("|", "#", "<!--", "Hand-kept", "each was measured")) or not line
        for line in kept.splitlines()
    ), "the changes section holds more than its table"
