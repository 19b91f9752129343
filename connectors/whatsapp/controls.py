"""What Meta tells the business, shared by every connector worker through one compacted topic.

The `whatsapp-controls` topic (one partition, compacted: last write per key wins) holds:

  template:{name}:{language}:{aspect}
                              status, quality or category of a translation (each its own
                              key, so the writers never need to merge): {"value", "previous",
                              "reason", "at"}; the view merges them into a TemplateState
  optout:{profile_id}         {"opted_out": bool}: the user stopped (or resumed) marketing
  hold:{profile_id}           {"until": iso}: Meta limited marketing to this user (131049)
  tier                        {"limit": int}: the messaging limit from business_capability_update
  reach:{recipient}           {"at": iso}: a template went to this user (sha256 of the digits)

The webhook receiver writes what Meta's webhooks say; connectors write reach records and
what Meta answered synchronously. Every connector worker reads the topic from the start and
follows it (`ControlsFollower`), so a change reaches all of them within the follower's poll
(half a second). `Controls` is the in-memory view; it never does I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from datetime import datetime, timedelta
from typing import Any

import orjson
import structlog
from pydantic import ValidationError

from connectors.kafka import CompactedFollower, acknowledged_producer, partitions_of
from schemas.settings import Settings
from schemas.templates import TemplateState, state_key

log = structlog.get_logger("connectors.whatsapp.controls")

MARKETING_HOLD = timedelta(hours=24)
# A user counts from just before the call here, and from when Meta takes the message there:
# here a user leaves the moving window this much later than at Meta, never earlier.
REACH_MARGIN_SECONDS = 2.0
Record = tuple[bytes, bytes | None]


def recipient_key(phone: str) -> str:
    """A user's key in reach records: not the number itself, but stable for it."""
    digits = re.sub(r"\D", "", phone)
    return hashlib.sha256(digits.encode()).hexdigest()[:20]


# -------------------------------------------------------------------- records


def template_records(
    name: str,
    language: str,
    at: datetime,
    *,
    status: str | None = None,
    quality: str | None = None,
    category: str | None = None,
    previous: str | None = None,
    reason: str | None = None,
) -> list[Record]:
    """Records for what changed about one translation (`previous`: the category before)."""
    records: list[Record] = []
    for aspect, value in (("status", status), ("quality", quality), ("category", category)):
        if value is None:
            continue
        data: dict[str, Any] = {"value": value, "at": at.isoformat()}
        if aspect == "category" and previous is not None:
            data["previous"] = previous
        if aspect == "status" and reason is not None:
            data["reason"] = reason
        records.append((f"template:{name}:{language}:{aspect}".encode(), orjson.dumps(data)))
    return records


def optout_record(profile_id: str, opted_out: bool, at: datetime) -> Record:
    value = {"opted_out": opted_out, "at": at.isoformat()}
    return f"optout:{profile_id}".encode(), orjson.dumps(value)


def hold_record(profile_id: str, until: datetime) -> Record:
    return f"hold:{profile_id}".encode(), orjson.dumps({"until": until.isoformat()})


def tier_record(limit: int | None, at: datetime) -> Record:
    return b"tier", orjson.dumps({"limit": limit, "at": at.isoformat()})


def reach_record(recipient: str, at: float) -> Record:
    return f"reach:{recipient}".encode(), orjson.dumps({"at": at})


# -------------------------------------------------------------------- the view


class Controls:
    """The latest value of every control key, plus the users reached in the moving window.

    `changed` is set (and replaced) on every applied record, so waiters wake on news.
    """

    def __init__(self, *, window_seconds: float = 24 * 3600) -> None:
        self.templates: dict[str, TemplateState] = {}
        self.opted_out: set[str] = set()
        self.holds: dict[str, datetime] = {}
        self.tier: int | None = None
        self.window = window_seconds + REACH_MARGIN_SECONDS
        # recipient -> when first reached in the current window, oldest first.
        self.reach: dict[str, float] = {}
        self._changed = asyncio.Event()

    # -- applying records

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        try:
            self._apply(key.decode(), orjson.loads(value) if value is not None else None)
        except (ValueError, ValidationError, TypeError, KeyError):
            log.warning("whatsapp_controls.bad_record", key=key[:60].decode(errors="replace"))
            return
        self._changed.set()
        self._changed = asyncio.Event()

    def _apply(self, key: str, data: Any) -> None:
        kind, _, rest = key.partition(":")
        if kind == "template":
            translation, _, aspect = rest.rpartition(":")
            name, _, language = translation.partition(":")
            if data is not None and aspect in ("status", "quality", "category"):
                self._merge_template(name, language, aspect, data)
        elif kind == "optout":
            if data and data.get("opted_out"):
                self.opted_out.add(rest)
            else:
                self.opted_out.discard(rest)
        elif kind == "hold":
            if data is None:
                self.holds.pop(rest, None)
            else:
                self.holds[rest] = datetime.fromisoformat(data["until"])
        elif kind == "tier":
            limit = data.get("limit") if data else None
            self.tier = limit if isinstance(limit, int) and limit > 0 else None
        elif kind == "reach" and data is not None:
            at = float(data["at"])
            if self.reach.get(rest, -1.0) < at - self.window:
                self.reach.pop(rest, None)
                self.reach[rest] = at

    def _merge_template(self, name: str, language: str, aspect: str, data: Any) -> None:
        key = state_key(name, language)
        at = datetime.fromisoformat(data["at"])
        current = self.templates.get(key) or TemplateState(
            name=name, language=language, updated_at=at
        )
        update: dict[str, Any] = {aspect: data["value"], "updated_at": max(at, current.updated_at)}
        if aspect == "category":
            update["previous_category"] = data.get("previous")
        if aspect == "status":
            update["reason"] = data.get("reason")
        self.templates[key] = TemplateState.model_validate(current.model_dump() | update)

    async def changed(self, timeout: float) -> None:
        """Return when the next record is applied, or after `timeout` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    # -- questions the connector asks

    def template(self, name: str | None, language: str | None) -> TemplateState | None:
        if name is None or language is None:
            return None
        return self.templates.get(state_key(name, language))

    def marketing_hold(self, profile_id: str, now: datetime) -> datetime | None:
        until = self.holds.get(profile_id)
        return until if until is not None and until > now else None

    def limit(self, configured: int | None) -> int | None:
        """The messaging limit in force: WHATSAPP_MESSAGING_LIMIT, else Meta's tier."""
        return configured if configured is not None else self.tier

    def _prune(self, now: float) -> None:
        while self.reach:
            recipient, at = next(iter(self.reach.items()))
            if now - at < self.window:
                return
            del self.reach[recipient]

    def reached(self, recipient: str, now: float) -> bool:
        at = self.reach.get(recipient)
        return at is not None and now - at < self.window

    def admit(self, recipient: str, limit: int | None, now: float) -> bool:
        """Whether a template may go to `recipient` now; records it as reached when it may."""
        self._prune(now)
        if self.reached(recipient, now):
            return True
        if limit is not None and len(self.reach) >= limit:
            return False
        self.reach[recipient] = now
        return True

    def frees_in(self, now: float) -> float:
        """Seconds until the oldest user reached leaves the window."""
        if not self.reach:
            return 0.0
        return max(0.0, next(iter(self.reach.values())) + self.window - now)


# -------------------------------------------------------------------- Kafka


class ControlsFollower:
    """Reads `whatsapp-controls` from the beginning into `controls`, then follows it.

    A missing topic is waited for (logged), never fatal: sends go on without controls.
    """

    def __init__(self, settings: Settings, controls: Controls) -> None:
        self.settings = settings
        self.controls = controls
        self.loaded = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def ready(self, timeout: float = 10.0) -> None:
        """Wait (bounded) until the topic is read to its end; at once if not following."""
        if self._task is None or self.loaded.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.loaded.wait(), timeout)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="follow-controls")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _run(self) -> None:
        topic = self.settings.topic_whatsapp_controls
        while not await partitions_of(self.settings, topic):
            log.warning("whatsapp_controls.no_topic", topic=topic)
            self.loaded.set()  # nothing to wait for: sends go on without controls
            await asyncio.sleep(5)
        follower = CompactedFollower(
            self.settings, topic, self.controls.apply, poll_ms=100, max_records=5000
        )

        def loaded() -> None:
            self.loaded.set()
            log.info("whatsapp_controls.loaded", templates=len(self.controls.templates))

        await follower.run(wait_seconds=0, on_caught_up=loaded)


async def read_controls(settings: Settings, *, window_seconds: float | None = None) -> Controls:
    """The topic's current content (for `journeyctl templates list`)."""
    controls = Controls(window_seconds=window_seconds or settings.whatsapp_messaging_window_seconds)
    follower = ControlsFollower(settings, controls)
    follower.start()
    try:
        await asyncio.wait_for(follower.loaded.wait(), 15)
    finally:
        await follower.stop()
    return controls


async def publish_controls(settings: Settings, records: list[Record]) -> None:
    """Write control records and wait until the broker has every one."""
    producer = acknowledged_producer(settings, linger_ms=0)
    await producer.start()
    try:
        topic = settings.topic_whatsapp_controls
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
