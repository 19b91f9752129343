"""Who may use the console: anyone on a loopback-only port, else only with the token."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from engine.console.api import Guard, is_loopback
from schemas.settings import Settings


def request(authorization: str | None = None) -> Any:
    headers = {} if authorization is None else {"Authorization": authorization}
    return SimpleNamespace(headers=headers)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("10.0.0.5", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_loopback_port_without_token_is_open() -> None:
    assert Guard(Settings(worker_web_host="127.0.0.1")).refusal(request()) is None


def test_a_public_port_without_token_refuses_everything() -> None:
    refused = Guard(Settings(worker_web_host="0.0.0.0")).refusal(request("Bearer x"))
    assert refused is not None
    status, body, _ = refused
    assert status == 403
    assert "set CONSOLE_TOKEN" in body["error"]


def test_the_token_is_checked_wherever_the_port_listens() -> None:
    guard = Guard(Settings(worker_web_host="0.0.0.0", console_token="s3cret"))
    assert guard.refusal(request("Bearer s3cret")) is None
    for wrong in (None, "Bearer nope", "s3cret"):
        refused = guard.refusal(request(wrong))
        assert refused is not None and refused[0] == 401
        assert refused[2] == {"WWW-Authenticate": "Bearer"}
    assert Guard(Settings(console_token="s3cret")).refusal(request()) is not None
