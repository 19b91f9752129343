"""`journeyctl test` as an operator runs it: lines, exit codes and JUnit XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from click.testing import CliRunner

from engine.cli.test import test_command as journeyctl_test
from tests.unit.engine.testing.test_runner import FAILING, READ, write

ROOT = Path(__file__).resolve().parents[4]


def test_the_examples_pass_with_exit_0_and_junit_xml(tmp_path: Path) -> None:
    out = tmp_path / "junit.xml"
    result = CliRunner().invoke(journeyctl_test, [str(ROOT / "examples"), "--junit", str(out)])
    assert result.exit_code == 0, result.output
    passed = [line for line in result.output.splitlines() if line.startswith("PASS  ")]
    assert result.output.splitlines()[-1].startswith(f"{len(passed)} passed, 0 failed in ")
    suites = ET.parse(out).getroot().findall("testsuite")
    assert sum(int(s.get("tests", "0")) for s in suites) == len(passed)
    assert not ET.parse(out).getroot().findall(".//failure")


def test_a_failure_exits_1_and_is_a_junit_failure(tmp_path: Path) -> None:
    path = write(tmp_path, READ + FAILING["path"] + "\n")
    out = tmp_path / "junit.xml"
    result = CliRunner().invoke(journeyctl_test, [str(path), "--junit", str(out), "--verbose"])
    assert result.exit_code == 1
    assert f"FAIL  {path}  read  (" in result.output
    assert "        expected: notify-crm > thank > done\n" in result.output
    assert "      | 2026-03-02T10:00:00Z  orders/notify-crm" in result.output  # --verbose
    (failure,) = ET.parse(out).getroot().findall(".//failure")
    assert failure.get("message") == "path:"
    assert "actual:   notify-crm > thank > wait-read > done" in (failure.text or "")


def test_an_invalid_file_exits_1_with_its_location(tmp_path: Path) -> None:
    path = write(tmp_path, READ + "      exit: finished\n")
    out = tmp_path / "junit.xml"
    result = CliRunner().invoke(journeyctl_test, [str(path), "--junit", str(out)])
    assert result.exit_code == 1
    assert f"{path}:12:13: cases[0].expect.exit: Input should be " in result.output
    assert "0 passed, 0 failed, 1 invalid file(s)" in result.output
    assert ET.parse(out).getroot().findall(".//error")


def test_a_directory_without_test_files_is_an_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(journeyctl_test, [str(tmp_path)])
    assert result.exit_code == 1
    assert "no test files (*.test.yaml)" in result.output
