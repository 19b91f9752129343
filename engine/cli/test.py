"""`journeyctl test FILE|DIR... [--junit OUT] [--verbose]`: run journey test files.

One line per case (PASS/FAIL, file, name, duration); a failure is followed by each
expectation that did not hold, expected above actual. Exit 0 when every case passes, 1 when
one fails or a file is invalid (its problems as FILE:LINE:COLUMN: field: message). No
Kafka, no network: the interpreter runs on a virtual clock (engine/testing).
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET  # writing only; nothing untrusted is parsed
from pathlib import Path

import click

from engine.core.loader import JourneyProblem
from engine.testing.expect import CaseResult, case_lines, run_files
from engine.testing.show import timeline_lines
from engine.testing.suite import find_test_files


@click.command("test")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--junit", "junit", type=click.Path(dir_okay=False), help="write JUnit XML here")
@click.option("--verbose", "-v", is_flag=True, help="print every case's timeline")
def test_command(paths: tuple[str, ...], junit: str | None, verbose: bool) -> None:
    """Run journey test files (directories: every *.test.yaml in them)."""
    files = find_test_files(paths)
    if not files:
        click.echo(f"error: no test files (*.test.yaml) in {', '.join(paths)}", err=True)
        sys.exit(1)
    run = run_files(
        files,
        on_result=lambda result: click.echo("\n".join(case_lines(result, verbose=verbose))),
        on_invalid=lambda problem: click.echo(str(problem), err=True),
    )
    click.echo(run.summary())
    if junit:
        write_junit(Path(junit), run.results, run.invalid)
    sys.exit(0 if run.ok else 1)


def failure_text(result: CaseResult) -> str:
    return "\n".join(line for m in result.mismatches for line in m.lines())


def write_junit(
    out: Path, results: list[CaseResult], invalid: dict[str, list[JourneyProblem]]
) -> None:
    """One <testsuite> per file; an invalid file is a suite with one <error>."""
    root = ET.Element("testsuites", name="journeyctl test")
    by_file: dict[str, list[CaseResult]] = {}
    for result in results:
        by_file.setdefault(result.file, []).append(result)
    for file, cases in by_file.items():
        suite = ET.SubElement(
            root,
            "testsuite",
            name=file,
            tests=str(len(cases)),
            failures=str(sum(1 for c in cases if not c.passed)),
            errors="0",
            time=f"{sum(c.seconds for c in cases):.6f}",
        )
        for case in cases:
            node = ET.SubElement(
                suite, "testcase", classname=file, name=case.name, time=f"{case.seconds:.6f}"
            )
            if not case.passed:
                text = failure_text(case)
                failure = ET.SubElement(node, "failure", message=text.splitlines()[0])
                failure.text = text + "\n\n" + "\n".join(timeline_lines(case.trace))
    for file, problems in invalid.items():
        suite = ET.SubElement(root, "testsuite", name=file, tests="1", failures="0", errors="1")
        node = ET.SubElement(suite, "testcase", classname=file, name="load")
        error = ET.SubElement(node, "error", message="invalid test file")
        error.text = "\n".join(str(p) for p in problems)
    ET.indent(root)
    ET.ElementTree(root).write(out, encoding="utf-8", xml_declaration=True)
