"""Structured logs (JSON in production, console in dev) with phones and tokens masked,
and the Prometheus metrics every engine process exposes.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from prometheus_client import Counter, Gauge, Histogram

from schemas.common import mask_phones_in

_SECRET_KEYS = ("token", "secret", "password", "authorization", "api_key")


def _mask_value(key: str, value: Any) -> Any:
    if any(s in key.lower() for s in _SECRET_KEYS):
        return "***"
    if isinstance(value, str):
        return mask_phones_in(value)
    return value


def mask_json(value: Any, key: str = "") -> Any:
    """A JSON value with every phone number and secret masked, as the logs mask them:
    what the console and `journeyctl inspect` show of attributes and records."""
    if isinstance(value, dict):
        return {k: mask_json(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_json(v, key) for v in value]
    return _mask_value(key, value)


def mask_sensitive(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: no log line carries a phone number or a secret in clear."""
    for key in list(event_dict):
        event_dict[key] = _mask_value(key, event_dict[key])
    return event_dict


class MaskingFilter(logging.Filter):
    # Libraries (faust, aiokafka) log through stdlib logging; mask their lines too.
    def filter(self, record: logging.LogRecord) -> bool:
        # Format first: aiokafka logs whole records (as bytes) through the arguments.
        try:
            message = record.getMessage()
        except Exception:  # a malformed format string: the handler reports it
            return True
        record.msg, record.args = mask_phones_in(message), None
        return True


def configure_logging(fmt: str = "console", level: str = "INFO") -> None:
    """Set up structlog and stdlib logging once per process."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            mask_sensitive,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    for handler in root.handlers:
        handler.addFilter(MaskingFilter())
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.addFilter(MaskingFilter())
        root.addHandler(handler)
    root.setLevel(level.upper())


# --- metrics --------------------------------------------------------------------------

EVENTS_PROCESSED = Counter(
    "journey_events_processed_total", "Records the engine processed", ["source", "outcome"]
)
EVENTS_REPARTITIONED = Counter(
    "journey_events_repartitioned_total",
    "Profile events read on another partition than their key's, moved onto it",
)
DEAD_LETTERS = Counter(
    "journey_dead_letters_total", "Records sent to the dead-letter topic", ["reason"]
)
INSTANCES_LIVE = Gauge(
    "journey_instances_live", "Live instances on this worker", ["journey_id", "activity_id"]
)
TIMERS_PENDING = Gauge("journey_timers_pending", "Profiles with a pending timer on this worker")
TIMER_LAG = Histogram(
    "journey_timer_lag_seconds",
    "Delay between a timer's due time and its firing",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
SENDS_REQUESTED = Counter("journey_send_requests_total", "Send requests emitted", ["journey_id"])
EVENT_TO_SEND = Histogram(
    "journey_event_to_send_seconds",
    "From an event's arrival to its send request being acknowledged by Kafka",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BATCH_SIZE = Histogram(
    "journey_batch_size", "Records per processed batch", buckets=(1, 10, 50, 100, 250, 500, 1000)
)
AUDIENCE_SCANNED = Counter(
    "journey_audience_profiles_scanned_total",
    "Stored profiles an audience scan tested",
    ["journey_id"],
)
AUDIENCE_QUEUED = Counter(
    "journey_audience_profiles_queued_total",
    "Profiles an audience scan queued (one tick each on journey-timers)",
    ["journey_id"],
)
AUDIENCE_TICKS = Counter(
    "journey_audience_ticks_total",
    "Audience ticks the engine applied, by outcome (admitted or declined)",
    ["journey_id", "outcome"],
)
