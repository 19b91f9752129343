"""The metric label of each rejection reason the ingestion API gives."""

from __future__ import annotations

from engine.ingest.server import reason_label


def test_reason_labels() -> None:
    assert reason_label("malformed JSON") == "malformed_json"
    assert reason_label("empty record value") == "empty"
    assert reason_label("event too large: 70000 bytes (limit 65536)") == "too_large"
    assert reason_label("invalid profile event: type: Field required") == "invalid"
    old = "event 'e' occurred at 2020-01-01T00:00:00+00:00, more than 91d before now"
    assert reason_label(old) == "too_old"
    assert (
        reason_label("event 'e' occurred at ..., more than 1h after ...: check the sender's clock")
        == "too_new"
    )
