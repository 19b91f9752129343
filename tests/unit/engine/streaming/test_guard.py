"""The version guard of engine/streaming: faust's and aiokafka's private internals are used
only with the versions they were checked against."""

from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path

import pytest

from engine.streaming import guard
from engine.streaming.guard import WRITTEN_AGAINST, UnsupportedVersionError, check_versions


def _installed(**overrides: str) -> dict[str, str]:
    versions = {name: importlib.metadata.version(name) for name in WRITTEN_AGAINST}
    return versions | overrides


def test_the_installed_versions_are_the_ones_written_against() -> None:
    check_versions()  # what importing the module did
    for name, known in WRITTEN_AGAINST.items():
        assert importlib.metadata.version(name) in known


@pytest.mark.parametrize("package", ["faust-streaming", "aiokafka"])
def test_another_version_fails_naming_what_is_installed_and_what_to_check(package: str) -> None:
    versions = _installed(**{package: "99.0.0"})
    with pytest.raises(UnsupportedVersionError) as failed:
        check_versions(versions.__getitem__)
    message = str(failed.value)
    assert f"installed {package} 99.0.0" in message
    assert "drain.py" in message and "WRITTEN_AGAINST" in message


def test_importing_the_module_with_another_faust_fails_loudly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    versions = _installed(**{"faust-streaming": "0.16.0"})
    monkeypatch.setattr(importlib.metadata, "version", versions.__getitem__)
    try:
        # ImportError: a reload defines UnsupportedVersionError anew.
        with pytest.raises(ImportError, match=r"installed faust-streaming 0\.16\.0"):
            importlib.reload(guard)
    finally:
        monkeypatch.undo()
        importlib.reload(guard)


def test_every_module_reaching_into_faust_internals_imports_the_guard() -> None:
    from engine.streaming import clients, consumer, drain, internals

    for module in (clients, consumer, drain, internals):
        source = Path(module.__file__ or "").read_text(encoding="utf-8")
        assert "import engine.streaming.guard" in source, module.__name__
