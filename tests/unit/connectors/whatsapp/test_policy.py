"""The WhatsApp channel's pure rules: consent, phone, the 24-hour window, keywords, masking."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from connectors.whatsapp.client import SendOutcome
from connectors.whatsapp.events import delivery_event, failed_error
from connectors.whatsapp.policy import (
    Keyword,
    KeywordMatcher,
    check_send,
    inside_window,
    normalize_keyword,
)
from schemas.deadletter import DeadLetter, dead_letter_record
from schemas.messages import DeliveryEvent, DeliveryStatus, SendRequest, SkipReason
from schemas.settings import Settings

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def request(**overrides: Any) -> SendRequest:
    fields: dict[str, Any] = {
        "message_id": "cart-recovery:3:p-42:send-es:1",
        "journey_id": "cart-recovery",
        "journey_version": 3,
        "activity_id": "send-es",
        "profile_id": "p-42",
        "to": "+34600111222",
        "consent": "opted_in",
        "template": "cart_reminder",
        "language": "es",
        "requested_at": NOW,
    }
    fields.update(overrides)
    return SendRequest.model_validate(fields)


def test_an_opted_in_template_with_a_valid_phone_may_be_sent() -> None:
    assert check_send(request(), now=NOW) is None


@pytest.mark.parametrize(
    ("consent", "reason"),
    [("opted_out", SkipReason.OPTED_OUT), ("unknown", SkipReason.NO_CONSENT)],
)
def test_a_template_needs_opt_in(consent: str, reason: SkipReason) -> None:
    assert check_send(request(consent=consent), now=NOW) is reason


@pytest.mark.parametrize("to", [None, "", "600111222", "+34", "+999123", "34600111222", "+34 600"])
def test_a_missing_or_non_e164_phone_is_invalid(to: str | None) -> None:
    assert check_send(request(to=to), now=NOW) is SkipReason.INVALID_PHONE


def test_consent_is_checked_before_the_phone() -> None:
    assert check_send(request(to=None, consent="opted_out"), now=NOW) is SkipReason.OPTED_OUT


def text_reply(**overrides: Any) -> SendRequest:
    fields: dict[str, Any] = {
        "kind": "text",
        "template": None,
        "language": None,
        "text": "You will no longer receive messages.",
        "consent": "opted_out",
        "trigger_at": NOW - timedelta(seconds=2),
    }
    fields.update(overrides)
    return request(**fields)


def test_a_keyword_reply_inside_the_window_goes_out_even_after_opt_out() -> None:
    assert check_send(text_reply(), now=NOW) is None
    assert check_send(text_reply(consent="unknown"), now=NOW) is None


def test_free_form_text_outside_the_window_is_skipped() -> None:
    late = text_reply(trigger_at=NOW - timedelta(hours=24))
    assert check_send(late, now=NOW) is SkipReason.OUTSIDE_WINDOW
    assert check_send(text_reply(trigger_at=None), now=NOW) is SkipReason.OUTSIDE_WINDOW
    # A window that opens in the future is a clock problem, not a window: refuse it.
    early = text_reply(trigger_at=NOW + timedelta(minutes=5))
    assert check_send(early, now=NOW) is SkipReason.OUTSIDE_WINDOW


def test_window_edges() -> None:
    assert inside_window(NOW, now=NOW)
    assert inside_window(NOW - timedelta(hours=23, minutes=59), now=NOW)
    assert not inside_window(NOW - timedelta(hours=24), now=NOW)
    assert not inside_window(None, now=NOW)


def test_nothing_to_send_is_a_template_error() -> None:
    assert check_send(request(template=None), now=NOW) is SkipReason.TEMPLATE_ERROR
    assert check_send(request(language=None), now=NOW) is SkipReason.TEMPLATE_ERROR
    assert check_send(text_reply(text=None), now=NOW) is SkipReason.TEMPLATE_ERROR
    assert check_send(text_reply(text=""), now=NOW) is SkipReason.TEMPLATE_ERROR


def test_a_text_reply_still_needs_a_valid_phone() -> None:
    assert check_send(text_reply(to="+1"), now=NOW) is SkipReason.INVALID_PHONE


@pytest.fixture
def matcher() -> KeywordMatcher:
    settings = Settings()
    return KeywordMatcher(
        opt_out=settings.words("opt_out"),
        opt_in=settings.words("opt_in"),
        help=settings.words("help"),
    )


@pytest.mark.parametrize(
    ("text", "keyword"),
    [
        ("stop", Keyword.OPT_OUT),
        ("Stop.", Keyword.OPT_OUT),
        ("  STOP  ", Keyword.OPT_OUT),
        ("BAJA", Keyword.OPT_OUT),
        ("báJa", Keyword.OPT_OUT),
        ("¡Baja!", Keyword.OPT_OUT),
        ("cancelar", Keyword.OPT_OUT),
        ("Start", Keyword.OPT_IN),
        ("alta", Keyword.OPT_IN),
        ("help?", Keyword.HELP),
        ("Ayúda", Keyword.HELP),
        ("please stop", None),
        ("stopped", None),
        ("st op", None),
        ("", None),
        (None, None),
        ("stop " * 40, None),
    ],
)
def test_keywords_match_the_whole_message(
    matcher: KeywordMatcher, text: str | None, keyword: Keyword | None
) -> None:
    assert matcher.match(text) is keyword


def test_normalize_keyword() -> None:
    assert normalize_keyword(" ¡BÁJA! ") == "BAJA"
    assert normalize_keyword("...") == ""


def test_configured_words_are_normalised_too() -> None:
    matcher = KeywordMatcher(
        opt_out=frozenset({"Désabonner"}), opt_in=frozenset(), help=frozenset()
    )
    assert matcher.match("desabonner") is Keyword.OPT_OUT


def test_dead_letter_keeps_the_original_bytes() -> None:
    raw = b'{"not": "a send request"}\xff'
    record = DeadLetter.model_validate_json(
        dead_letter_record(
            reason="invalid SendRequest: message_id: Field required",
            error_type="ValidationError",
            component="whatsapp-connector",
            key=b"p-42",
            value=raw,
            now=NOW,
            source_topic="whatsapp-requests",
            partition=3,
            offset=17,
        )
    )
    assert base64.b64decode(record.value_base64) == raw
    assert record.value_text is None  # not UTF-8
    assert (record.key, record.partition, record.offset) == ("p-42", 3, 17)
    text = DeadLetter.model_validate_json(
        dead_letter_record(
            reason="r", error_type="E", component="c", key=None, value=b"{}", now=NOW
        )
    )
    assert text.value_text == "{}"
    assert orjson.loads(text.model_dump_json())["key"] is None


def test_delivery_events_built_without_validation_equal_validated_ones() -> None:
    request = SendRequest(
        message_id="j:1:p-1:send:1",
        journey_id="j",
        journey_version=1,
        activity_id="send",
        profile_id="p-1",
        to="+34600111222",
        consent="opted_in",
        template="welcome",
        language="es",
        requested_at=datetime(2026, 11, 24, 10, tzinfo=UTC),
    )
    when = datetime(2026, 11, 24, 10, 0, 1, tzinfo=UTC)
    error = failed_error(SendOutcome(False, code=132001, title="no such template"))
    for status, wamid, err in (
        (DeliveryStatus.ACCEPTED, "wamid.X", None),
        (DeliveryStatus.FAILED, None, error),
    ):
        built = delivery_event(request, status, occurred_at=when, wamid=wamid, error=err)
        checked = DeliveryEvent.model_validate_json(built.model_dump_json())
        assert built.model_dump_json() == checked.model_dump_json()
        assert checked.status is status and checked.wamid == wamid and checked.error == err
    with pytest.raises(ValueError, match="time zone"):
        delivery_event(request, DeliveryStatus.ACCEPTED, occurred_at=datetime(2026, 11, 24))
