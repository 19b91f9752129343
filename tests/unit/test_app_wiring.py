"""The faust wiring: what the worker's Kafka consumer is built with."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.app import ShortFetchThread, create_app
from schemas.settings import Settings


@pytest.mark.parametrize("roles", [frozenset({"engine"}), frozenset({"whatsapp"})])
async def test_worker_consumer_fetch_wait_comes_from_settings(
    roles: frozenset[str], tmp_path: Path
) -> None:
    # faust builds its worker consumer with fetch_max_wait_ms=1500; a fetch that asks
    # only for idle partitions then holds every busy one back for 1.5 s.
    settings = Settings(
        whatsapp_token="sandbox-token",
        kafka_fetch_max_wait_ms=37,
        data_dir=tmp_path,
        app_id=f"wiring-{tmp_path.name}",
    )
    app = create_app(settings, roles, web=False)
    thread = app.consumer._new_consumer_thread()  # type: ignore[attr-defined]
    assert isinstance(thread, ShortFetchThread)
    consumer = thread._create_worker_consumer(app.transport)
    assert consumer._fetch_max_wait_ms == 37
    assert consumer._group_id == settings.app_id  # still faust's worker consumer


def test_fetch_wait_is_bounded() -> None:
    with pytest.raises(ValueError, match="kafka_fetch_max_wait_ms"):
        Settings(kafka_fetch_max_wait_ms=0)
