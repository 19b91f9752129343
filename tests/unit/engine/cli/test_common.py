"""journeyctl's shared pieces: exit codes for bad input and for a Kafka that fails."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaError

from engine.cli.common import EXIT_INVALID, EXIT_KAFKA, fail, load_files, run_kafka
from engine.core.loader import load_journey
from schemas.settings import Settings

SETTINGS = Settings(kafka_bootstrap_servers="127.0.0.1:1")


async def _answer() -> int:
    return 42


async def _raise(exc: BaseException) -> None:
    raise exc


def test_run_kafka_returns_what_the_coroutine_returns() -> None:
    assert run_kafka(_answer(), SETTINGS) == 42


def test_an_unreachable_broker_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run_kafka(_raise(KafkaConnectionError("refused")), SETTINGS)
    assert exited.value.code == EXIT_KAFKA
    assert "error: cannot reach Kafka at 127.0.0.1:1" in capsys.readouterr().err


def test_a_kafka_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run_kafka(_raise(KafkaError("broken")), SETTINGS, timeout=None)
    assert exited.value.code == EXIT_KAFKA
    assert "error: Kafka error: " in capsys.readouterr().err


def test_fail_prints_the_message_and_exits_with_the_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        fail("no such journey", 3)
    assert exited.value.code == 3
    assert capsys.readouterr().err == "error: no such journey\n"


def test_load_files_reports_every_problem_with_its_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\nname: X\nentry: {event: signup}\nstart: nowhere\nactivities: {}\n")
    with pytest.raises(SystemExit) as exited:
        load_files((str(bad),), load_journey)
    assert exited.value.code == EXIT_INVALID
    err = capsys.readouterr().err
    assert f"{bad}:" in err and "problem(s) in 1 file(s)" in err
