"""What every `journeyctl` command shares: exit codes, settings, failing with a message,
running a Kafka call, and loading YAML files with every problem reported.

Exit codes: 0 ok, 1 invalid input, 2 cannot reach Kafka, 3 not found, 4 other failure.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn, TypeVar

import click
from aiokafka.errors import KafkaConnectionError, KafkaError

from engine.core.loader import JourneyValidationError
from engine.streaming.diagnose import AUTHORIZATION_ERRORS, connection_problem, refused
from schemas.settings import Settings

EXIT_OK, EXIT_INVALID, EXIT_KAFKA, EXIT_NOT_FOUND, EXIT_FAILURE = 0, 1, 2, 3, 4
KAFKA_CALL_SECONDS = 60.0  # a command's Kafka work that takes longer fails with exit code 2

T = TypeVar("T")


def fail(message: str, code: int) -> NoReturn:
    """Print `error: message` on stderr and exit with `code`."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def load_settings() -> Settings:
    """Settings from the environment; an invalid one exits 1 saying which."""
    try:
        return Settings()
    except Exception as exc:
        fail(f"invalid configuration: {exc}", EXIT_INVALID)


def unreachable(settings: Settings, exc: BaseException) -> str:
    return (
        f"cannot reach Kafka at {settings.kafka_bootstrap_servers} ({type(exc).__name__}: {exc}). "
        "Is the broker running? `make kafka-up` starts a local one; "
        "KAFKA_BOOTSTRAP_SERVERS names another."
    )


def run_kafka(
    coro: Coroutine[Any, Any, T],
    settings: Settings,
    timeout: float | None = KAFKA_CALL_SECONDS,
) -> T:
    """Run a coroutine that talks to Kafka; a broker that does not answer is exit code 2."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout=timeout)

    try:
        return asyncio.run(bounded())
    except (KafkaConnectionError, TimeoutError, OSError) as exc:
        fail(kafka_problem(settings) or unreachable(settings, exc), EXIT_KAFKA)
    except AUTHORIZATION_ERRORS as exc:
        fail(refused(settings, exc), EXIT_KAFKA)
    except KafkaError as exc:
        fail(f"Kafka error: {exc}", EXIT_KAFKA)


def kafka_problem(settings: Settings) -> str | None:
    """The cause a failed connection hides (refused credentials, TLS), if one is found."""
    if settings.kafka_security_protocol == "PLAINTEXT":
        return None
    try:
        return asyncio.run(connection_problem(settings))
    except Exception:  # a diagnosis that fails adds nothing to the original error
        return None


def load_files(files: tuple[str, ...], load: Callable[[str], T]) -> list[tuple[str, T]]:
    """Each file loaded with `load`; any problem in any file is printed and exits 1."""
    loaded, problems = [], []
    for f in files:
        try:
            loaded.append((f, load(f)))
        except JourneyValidationError as exc:
            problems.extend(exc.problems)
    if problems:
        for p in problems:
            click.echo(str(p), err=True)
        fail(
            f"{len(problems)} problem(s) in {len({p.file for p in problems})} file(s)", EXIT_INVALID
        )
    return loaded


def run_forever(coro: Awaitable[None]) -> None:
    """Run a server until it stops or Ctrl-C."""

    async def runner() -> None:
        await coro

    try:
        asyncio.run(runner())
    except KeyboardInterrupt:
        pass
