"""One phone masker for logs, the CLI, the console and the sandbox: numbers can be told
apart but never read back, however they were written."""

from __future__ import annotations

import logging

import pytest

from engine.observability import MaskingFilter, mask_json, mask_sensitive
from schemas.common import mask_phone, mask_phones_in


@pytest.mark.parametrize(
    "written",
    ["+34600111222", "34600111222", "+34 600 111 222", "(+34) 600-111-222"],
)
def test_a_number_has_one_masked_form_however_it_is_written(written: str) -> None:
    assert mask_phone(written) == "+34******222"


def test_short_or_missing_numbers_keep_no_digit() -> None:
    assert mask_phone("+1234") == "+****"
    assert mask_phone("12345") == "+*****"
    assert mask_phone(None) == "-"
    assert mask_phone("") == "-"
    assert mask_phone("no digits") == "-"


def test_free_text_masks_numbers_with_and_without_plus() -> None:
    text = "'to' 34600111222 and +34600111333 (#100), offset 42"
    assert mask_phones_in(text) == "'to' +34******222 and +34******333 (#100), offset 42"
    assert mask_phones_in(None) is None


def test_logs_mask_a_bare_whatsapp_id_under_any_key() -> None:
    # The log masker used to keep bare digits unless the key named a phone.
    event = {"event": "sent 34600111222", "details": "wa_id 34600111222", "token": "abc"}
    masked = mask_sensitive(None, "info", event)
    assert masked == {
        "event": "sent +34******222",
        "details": "wa_id +34******222",
        "token": "***",
    }
    assert mask_json({"phone": "+34600111222", "n": [7]}) == {"phone": "+34******222", "n": [7]}


def test_library_log_lines_are_masked(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.masking")
    logger.addFilter(MaskingFilter())
    with caplog.at_level(logging.INFO, logger="tests.masking"):
        logger.info("record %r", b'{"wa_id":"34600111222"}')
    assert "34600111222" not in caplog.text and "+34******222" in caplog.text


def test_digits_inside_an_identifier_are_not_a_phone_number() -> None:
    text = "topic journey-definitions-bf5712345874 id a1234567890 to=34600111222 wa_id:34600111333"
    assert mask_phones_in(text) == (
        "topic journey-definitions-bf5712345874 id a1234567890 to=+34******222 wa_id:+34******333"
    )
