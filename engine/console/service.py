"""What the console's API answers, computed only when asked: a profile's state from the worker
that owns it, live instance counts from the workers' tables, and the last 24 hours' figures
from journey-steps and delivery-events (engine.reporting's fold, cached briefly).

Nothing here runs per event: the engine's hot path does not know this module exists.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
import faust
import orjson
import structlog
from yarl import URL

from engine.console.profile import profile_view
from engine.console.records import read_profile_records
from engine.console.timeline import inspection
from engine.reporting.aggregate import JourneyReport, Report
from engine.reporting.html import journey_svg
from engine.reporting.reader import read_report
from engine.worker.codec import state_from_bytes
from engine.worker.runtime import EngineRuntime
from schemas.settings import Settings

log = structlog.get_logger(__name__)

ROUTED_HEADER = "X-Journey-Routed"  # set on a forwarded lookup: the receiver answers itself
STATS_WINDOW = timedelta(hours=24)
STATS_TTL_SECONDS = 10.0  # the 24-hour figures are read again at most this often
STATS_TIMEOUT_SECONDS = 20.0
LIVE_TTL_SECONDS = 2.0
PEER_TIMEOUT_SECONDS = 3.0


def _ident(url: URL | str) -> tuple[str, int]:
    url = URL(str(url))
    return (url.host or "", int(url.port or 80))


class ConsoleService:
    """The console's answers; `runtime` is the engine worker's (table, catalog, partitions)."""

    def __init__(self, app: faust.App, runtime: EngineRuntime, settings: Settings) -> None:
        self.app = app
        self.runtime = runtime
        self.settings = settings
        self._stats: tuple[float, Report] | None = None
        self._stats_lock = asyncio.Lock()
        self._live: tuple[float, Counter[tuple[str, str]]] | None = None

    # --- one profile ----------------------------------------------------------------------

    def local_profile(self, profile_id: str) -> dict[str, Any] | None:
        """The profile's state as this worker's table holds it, or None."""
        raw = self.runtime.profiles.data.get(profile_id.encode())
        if not raw:
            return None
        return profile_view(state_from_bytes(raw), self.runtime.catalog, datetime.now(UTC))

    async def profile(
        self, profile_id: str, headers: dict[str, str], routed: bool
    ) -> tuple[int, dict[str, Any]]:
        """(status, body) of `GET /api/profiles/{id}`: from the worker owning its partition."""
        owner = self._owner(profile_id)
        if routed or owner is None or _ident(owner) == _ident(self.app.conf.canonical_url):
            view = self.local_profile(profile_id)
            if view is None:
                return 404, {"error": f"no profile {profile_id!r} is known to the engine"}
            return 200, view
        url = owner.with_path(f"/api/profiles/{quote(profile_id, safe='')}")
        return await self._forward(url, headers)

    def _owner(self, profile_id: str) -> URL | None:
        """The web address of the worker owning the profile (faust's table routing)."""
        try:
            return self.app.router.key_store(self.runtime.profiles.name, profile_id.encode())
        except (KeyError, AssertionError, AttributeError):
            return None  # no assignment known yet (starting, rebalancing): answer locally

    async def _forward(self, url: URL, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        send = {k: v for k, v in headers.items() if k.lower() == "authorization"}
        send[ROUTED_HEADER] = "1"
        try:
            async with self.app.http_client.get(
                url, headers=send, timeout=aiohttp.ClientTimeout(total=PEER_TIMEOUT_SECONDS)
            ) as response:
                body = await response.read()
                return response.status, orjson.loads(body)
        except (OSError, TimeoutError, orjson.JSONDecodeError) as exc:
            log.warning("profile lookup on the owning worker failed", url=str(url), error=str(exc))
            return 502, {
                "error": f"the worker owning this profile ({url.host}:{url.port}) "
                f"did not answer: {exc}"
            }

    async def inspect(
        self, profile_id: str, since: datetime, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        """`journeyctl inspect`'s answer, computed on this worker (state routed to its owner)."""
        status, state = await self.profile(profile_id, headers, routed=False)
        if status not in (200, 404):
            return status, state
        records = await read_profile_records(self.settings, profile_id, since)
        known = state if status == 200 else None
        if known is None and not (records.steps or records.deliveries or records.dead_letters):
            return 404, {"error": f"no profile {profile_id!r} is known to the engine"}
        return 200, inspection(profile_id, known, records, since=since.isoformat())

    # --- journeys -------------------------------------------------------------------------

    def local_live(self) -> Counter[tuple[str, str]]:
        """Live instances by (journey, activity) in this worker's partitions (a table pass)."""
        now = time.monotonic()
        if self._live is not None and now - self._live[0] < LIVE_TTL_SECONDS:
            return self._live[1]
        owned = self.runtime._owned_partitions()
        counts: Counter[tuple[str, str]] = Counter()
        for key, raw in self.runtime.profiles.data.items():
            if not raw or self.runtime._scanned_partition_of(key) not in owned:
                continue
            for inst in orjson.loads(raw)["state"].get("instances", {}).values():
                counts[(inst["journey_id"], inst["activity_id"])] += 1
        self._live = (now, counts)
        return counts

    async def live(self, headers: dict[str, str]) -> Counter[tuple[str, str]]:
        """Live instances of every worker of the group: this one's plus each peer's."""
        counts = Counter(self.local_live())
        for peer in self._peers():
            status, body = await self._forward(peer.with_path("/api/live"), headers)
            if status == 200:
                for row in body.get("live", []):
                    counts[(row["journey_id"], row["activity_id"])] += int(row["count"])
        return counts

    def _peers(self) -> list[URL]:
        try:
            hosts = self.app.router.table_metadata(self.runtime.profiles.name)
        except (KeyError, AttributeError):
            return []
        me = _ident(self.app.conf.canonical_url)
        return [URL(str(host)) for host in hosts if _ident(str(host)) != me]

    async def stats(self) -> Report:
        """The last 24 hours of journey-steps and delivery-events, folded by engine.reporting."""
        async with self._stats_lock:  # one read at a time; the others wait for its result
            now = time.monotonic()
            if self._stats is None or now - self._stats[0] > STATS_TTL_SECONDS:
                since = datetime.now(UTC) - STATS_WINDOW
                report = await read_report(self.settings, since, None, STATS_TIMEOUT_SECONDS)
                self._stats = (time.monotonic(), report)
            return self._stats[1]

    async def journeys(self, headers: dict[str, str]) -> list[dict[str, Any]]:
        live = await self.live(headers)
        report = await self.stats()
        return [
            _journey_summary(compiled.journey_id, self.runtime, live, report)
            for compiled in self.runtime.catalog
        ]

    async def journey(self, journey_id: str, headers: dict[str, str]) -> dict[str, Any] | None:
        compiled = self.runtime.catalog.current(journey_id)
        if compiled is None:
            return None
        live = await self.live(headers)
        report = await self.stats()
        summary = _journey_summary(journey_id, self.runtime, live, report)
        activities = _activity_figures(journey_id, live, report)
        labels: dict[str, int | str] = {
            activity_id: f"{row['waiting']} now · {row['passed']} passed"
            for activity_id, row in activities.items()
        }
        labels["entry"] = f"{summary['last_24h']['entered']} entered"
        summary["activities"] = [{"activity_id": a, **row} for a, row in sorted(activities.items())]
        summary["svg"] = journey_svg(compiled.definition, labels)
        return summary


def _reports_of(journey_id: str, report: Report) -> list[JourneyReport]:
    return [j for j in report.journeys if j.journey_id == journey_id]


def _journey_summary(
    journey_id: str, runtime: EngineRuntime, live: Counter[tuple[str, str]], report: Report
) -> dict[str, Any]:
    catalog = runtime.catalog
    compiled = catalog.current(journey_id)
    assert compiled is not None
    mine = _reports_of(journey_id, report)
    activities = [a for j in mine for a in j.activities]
    return {
        "journey_id": journey_id,
        "name": compiled.definition.name,
        "kind": "campaign" if compiled.is_campaign else "journey",
        "status": compiled.status,
        "versions": catalog.versions(journey_id),
        "current_version": compiled.version,
        "live": sum(n for (jid, _), n in live.items() if jid == journey_id),
        "last_24h": {
            "entered": sum(j.entered for j in mine),
            "completed": sum(j.completed for j in mine),
            "exited": sum(sum(j.exited.values()) for j in mine),
            "sent": sum(a.accepted for a in activities),
            "delivered": sum(a.delivered for a in activities),
            "read": sum(a.read for a in activities),
            "failed": sum(sum(a.failed.values()) for a in activities),
            "skipped": sum(sum(a.skipped.values()) for a in activities),
        },
    }


def _activity_figures(
    journey_id: str, live: Counter[tuple[str, str]], report: Report
) -> dict[str, dict[str, Any]]:
    """Per activity: waiting now, and the last 24 hours' passes and messages, all versions."""
    rows: dict[str, dict[str, Any]] = {}

    def row(activity_id: str) -> dict[str, Any]:
        return rows.setdefault(
            activity_id,
            {
                "waiting": 0,
                "passed": 0,
                "sent": 0,
                "delivered": 0,
                "read": 0,
                "failed": Counter(),
                "skipped": Counter(),
            },
        )

    for (jid, activity_id), n in live.items():
        if jid == journey_id:
            row(activity_id)["waiting"] += n
    for journey in _reports_of(journey_id, report):
        for a in journey.activities:
            r = row(a.activity_id)
            r["passed"] += a.visits
            r["sent"] += a.accepted
            r["delivered"] += a.delivered
            r["read"] += a.read
            r["failed"].update(a.failed)
            r["skipped"].update(a.skipped)
    for r in rows.values():
        r["failed"], r["skipped"] = dict(r["failed"]), dict(r["skipped"])
    return rows
