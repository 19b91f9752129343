"""Pure rules of the WhatsApp channel: who may be messaged, what an inbound keyword means,
how a phone shows in logs and how a refused record is kept.

No I/O here: the connector and the webhook receiver call these with the clock they own.

Rules, in the order they are checked by `check_send`:

1. A template (business-initiated) message needs consent: `opted_out` is skipped with
   OPTED_OUT, anything else but `opted_in` with NO_CONSENT.
   A free-form text message is a reply to the person, not business-initiated: it is
   allowed inside the 24-hour customer-service window whatever the consent. The
   connector only ever sends text as keyword replies (STOP, START, HELP), which the
   webhook receiver requests right after the inbound message; the confirmation of a
   STOP is what Meta's policy expects, so it must go out even though the person just
   opted out. The receiver records the consent that results from the keyword in the
   request (`opted_out` for STOP) so that analysts see the truth.
2. `to` must be a valid E.164 number, else INVALID_PHONE.
3. Text only inside the window: `trigger_at` (when the inbound message arrived) must be
   less than 24 hours before `now`; a text request without `trigger_at` cannot prove it
   is inside the window and is skipped with OUTSIDE_WINDOW.
4. Something to send: a template needs its name and language, a text its body, else
   TEMPLATE_ERROR.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime, timedelta
from enum import StrEnum

from schemas.common import is_e164
from schemas.messages import SendRequest, SkipReason
from schemas.settings import Settings

CUSTOMER_SERVICE_WINDOW = timedelta(hours=24)


def check_send(request: SendRequest, *, now: datetime) -> SkipReason | None:
    """Why this request must not be sent, or None when it may be."""
    if request.kind == "template":
        if request.consent == "opted_out":
            return SkipReason.OPTED_OUT
        if request.consent != "opted_in":
            return SkipReason.NO_CONSENT
    if request.to is None or not is_e164(request.to):
        return SkipReason.INVALID_PHONE
    if request.kind == "text":
        if not inside_window(request.trigger_at, now=now):
            return SkipReason.OUTSIDE_WINDOW
        if not request.text:
            return SkipReason.TEMPLATE_ERROR
    elif not (request.template and request.language):
        return SkipReason.TEMPLATE_ERROR
    return None


def inside_window(opened_at: datetime | None, *, now: datetime) -> bool:
    """True when a customer-service window opened at `opened_at` is still open at `now`."""
    return opened_at is not None and timedelta(0) <= now - opened_at < CUSTOMER_SERVICE_WINDOW


class Keyword(StrEnum):
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    HELP = "help"


def normalize_keyword(text: str) -> str:
    """Upper case, no accents, no surrounding punctuation or spaces: 'báJa.' -> 'BAJA'."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    # Strip punctuation and symbols around the word ("Stop.", "¡BAJA!"), never inside it.
    start, end = 0, len(bare)
    while start < end and not bare[start].isalnum():
        start += 1
    while end > start and not bare[end - 1].isalnum():
        end -= 1
    return bare[start:end].upper()


class KeywordMatcher:
    """Matches a whole inbound message against the configured opt-out, opt-in and help words."""

    __slots__ = ("_words",)

    def __init__(self, *, opt_out: frozenset[str], opt_in: frozenset[str], help: frozenset[str]):
        words: dict[str, Keyword] = {}
        # Help first, so a word configured twice resolves to the stronger meaning (opt-out).
        for kind, group in (
            (Keyword.HELP, help),
            (Keyword.OPT_IN, opt_in),
            (Keyword.OPT_OUT, opt_out),
        ):
            for word in group:
                words[normalize_keyword(word)] = kind
        self._words = words

    def match(self, text: str | None) -> Keyword | None:
        if not text or len(text) > 64:  # a keyword is one short word; skip normalising essays
            return None
        return self._words.get(normalize_keyword(text))


def keyword_rules(settings: Settings) -> tuple[KeywordMatcher, dict[Keyword, str]]:
    """The configured keywords and the text reply each one gets."""
    matcher = KeywordMatcher(
        opt_out=settings.words("opt_out"),
        opt_in=settings.words("opt_in"),
        help=settings.words("help"),
    )
    replies = {
        Keyword.OPT_OUT: settings.whatsapp_opt_out_reply,
        Keyword.OPT_IN: settings.whatsapp_opt_in_reply,
        Keyword.HELP: settings.whatsapp_help_reply,
    }
    return matcher, replies
