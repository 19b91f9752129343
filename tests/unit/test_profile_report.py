"""bench.profile_report: where py-spy's raw stacks put a worker's samples."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.profile_report import categories, summarize

RAW = "\n".join(
    [
        "_run_once (asyncio/base_events.py:1);select (selectors.py:9);epoll_wait 40",
        "_run_once (asyncio/base_events.py:1);WhatsAppConnector.handle (connectors/whatsapp/"
        "connector.py:5);CloudApiClient.send (connectors/whatsapp/client.py:7) 30",
        "_run_once (asyncio/base_events.py:1);WhatsAppConnector.handle (connectors/whatsapp/"
        "connector.py:5);WhatsAppConnector._store (connectors/whatsapp/connector.py:9) 20",
        "_run_once (asyncio/base_events.py:1);Fetcher._fetch (aiokafka/fetcher.py:3) 10",
    ]
)


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    path = tmp_path / "worker-py-spy.txt"
    path.write_text(RAW + "\n")
    return path


def test_connector_samples_land_in_the_connector_categories(raw: Path) -> None:
    shares = dict(categories(raw))
    assert shares["waiting (event loop idle)"] == pytest.approx(40.0)
    assert shares["Cloud API call (CloudApiClient.send)"] == pytest.approx(30.0)
    assert shares["table and changelog writes (_store)"] == pytest.approx(20.0)
    assert shares["other (faust and asyncio machinery)"] == pytest.approx(10.0)
    assert "rest of a request (handle: table, policy)" not in shares


def test_summary_counts_inclusive_and_self_samples(raw: Path) -> None:
    summary = summarize(raw, top=50)
    inclusive = dict(summary.inclusive)
    assert summary.samples == 100
    assert summary.idle == 40
    assert inclusive["WhatsAppConnector.handle (connectors/whatsapp/connector.py)"] == 50
    assert dict(summary.self_time)["CloudApiClient.send (connectors/whatsapp/client.py)"] == 30
