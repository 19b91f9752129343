"""Audience runs in the worker: the throttled fan-out over owned partitions.

How a run reaches profiles (each worker does this for its own partitions only):
1. The planner (every second) lists the runs that should exist now: an audience journey's
   run on deploy or on its schedule, a campaign's scheduled runs, and the audience runs
   triggered through the API or the CLI (records on the compacted `campaign-runs` topic).
2. For each such run and each owned partition without a progress record for it, a job
   scans the partition's stored profiles (a snapshot of the local table's keys), skips
   those the run already admitted, tests the audience condition on the stored attributes,
   and produces one audience tick per match to `journey-timers`, keyed by profile, at no
   more than CAMPAIGN_RATE_PER_SECOND profiles a second for the whole worker.
3. The engine agent applies each tick in order with the profile's other records
   (`interpreter.apply_audience`), which decides on the profile's current state: condition,
   re-entry, the run already remembered, the campaign or the run cancelled.
4. When a partition is done its progress record goes to `campaign-runs`, so no worker reads
   that partition's audience for that run again, after a restart or a rebalance.

A crash or a rebalance before a partition's progress record is written leaves the partition
to its next owner, which scans it again: profiles the run already admitted are skipped at the
scan or, for ticks still queued, by the agent. Ticks already produced are durable and are
applied by whichever worker owns the partition. A trigger with an explicit profile list skips
steps 1-2: the API handler (or the CLI) produces the ticks itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import faust
import orjson
import structlog

from connectors.ratelimit import TokenBucket
from engine.campaigns.planning import (
    RunRegistry,
    encode,
    plan_trigger,
    run_tick,
    tick_value,
    trigger_refusal,
)
from engine.campaigns.runs import RunsFollower
from engine.campaigns.schedule import due_run
from engine.core.catalog import JourneyCatalog
from engine.core.interpreter import AudienceFilter
from engine.observability import AUDIENCE_QUEUED, AUDIENCE_SCANNED
from schemas.campaign import (
    AudienceTick,
    RunProgress,
    TriggerRequest,
    progress_key,
)
from schemas.settings import Settings

log = structlog.get_logger(__name__)

_RETRY_FAILED_JOB_SECONDS = 30.0


@dataclass(slots=True)
class _Job:
    tick: AudienceTick
    partitions: list[int]
    generation: int


class AudienceRuns:
    """The fan-out of audience runs over this worker's partitions, and campaign triggers."""

    def __init__(
        self,
        app: faust.App,
        *,
        settings: Settings,
        catalog: JourneyCatalog,
        profiles: Any,
        timers_topic: faust.TopicT,
        runs_topic: faust.TopicT,
        definitions_ready: asyncio.Event,
        owned_partitions: Callable[[], set[int]],
        partition_of: Callable[[bytes], int],
        on_run_cancelled: Callable[[str, str], None],
    ) -> None:
        self.app = app
        self.settings = settings
        self.catalog = catalog
        self.profiles = profiles
        self.timers_topic = timers_topic
        self.runs_topic = runs_topic
        self._definitions_ready = definitions_ready
        self._owned_partitions = owned_partitions
        self._partition_of = partition_of
        self._on_run_cancelled = on_run_cancelled
        self.registry = RunRegistry(on_cancel=self._cancelled)
        self.follower = RunsFollower(settings, self.registry)
        self.limiter = TokenBucket(settings.campaign_rate_per_second)  # profiles a second, all jobs
        # Profiles tested between two yields to the event loop (the agent shares it): about a
        # tenth of a second's worth at the rate, and never so many that the agent waits.
        self._chunk = min(200, max(20, int(settings.campaign_rate_per_second / 10)))
        self._catch_up = timedelta(seconds=settings.campaign_catch_up_seconds)
        self._jobs: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._failed: dict[tuple[str, str], float] = {}
        self._recovered_at = -1
        app.task(self._follow_runs)
        app.timer(1.0)(self.plan)

    @property
    def ready(self) -> asyncio.Event:
        return self.follower.ready

    async def _follow_runs(self) -> None:
        await self.follower.run()

    def _cancelled(self, journey_id: str, run_id: str) -> None:
        self.catalog.cancel_run(journey_id, run_id)
        if self.ready.is_set():  # a cancel replayed at start-up is met when timers fire
            self._on_run_cancelled(journey_id, run_id)

    def on_recovered(self) -> None:
        """The profiles table is recovered after a rebalance: scans may start again."""
        self._recovered_at = self.app.rebalancing_count

    def _settled(self, generation: int | None = None) -> bool:
        app = self.app
        if app.rebalancing or app.in_recovery or self._recovered_at != app.rebalancing_count:
            return False
        return generation is None or generation == app.rebalancing_count

    # --- planning ------------------------------------------------------------------

    async def plan(self) -> None:
        """Start a job for every run that should be fanned out here and is not yet."""
        if not (self._definitions_ready.is_set() and self.ready.is_set() and self._settled()):
            return
        owned = self._owned_partitions()
        if not owned:
            return
        now = datetime.now(UTC)
        for tick in self._wanted(now):
            key = (tick.journey_id, tick.run_id)
            if key in self._jobs or self.catalog.run_cancelled(*key):
                continue
            if time.monotonic() - self._failed.get(key, -1e9) < _RETRY_FAILED_JOB_SECONDS:
                continue
            partitions = sorted(p for p in owned if not self.registry.done(*key, p))
            if not partitions:
                continue
            job = _Job(tick, partitions, self.app.rebalancing_count)
            self._jobs[key] = asyncio.ensure_future(self._run_job(job))

    def _wanted(self, now: datetime) -> Iterator[AudienceTick]:
        for compiled in self.catalog.audiences():
            due = due_run(compiled, now, self._catch_up)
            if due is not None:
                yield AudienceTick(
                    journey_id=compiled.journey_id,
                    version=compiled.version,
                    run_id=due.run_id,
                    requested_at=due.requested_at,
                )
        for run in self.registry.audience_runs():
            campaign = self.catalog.current(run.campaign_id)
            if campaign is not None and campaign.active:
                yield run_tick(run, campaign.version)

    # --- fanning out ---------------------------------------------------------------

    async def _run_job(self, job: _Job) -> None:
        key = (job.tick.journey_id, job.tick.run_id)
        try:
            await self._fan_out(job)
        except asyncio.CancelledError:
            raise
        except Exception:
            self._failed[key] = time.monotonic()
            log.exception("audience run failed; retried soon", journey_id=key[0], run_id=key[1])
        finally:
            self._jobs.pop(key, None)

    def _stopped(self, job: _Job, partition: int) -> str | None:
        tick = job.tick
        compiled = self.catalog.current(tick.journey_id)
        if compiled is None or not compiled.active:
            return "not active"
        if not compiled.is_campaign and tick.run_id == f"v{tick.version}" != f"v{compiled.version}":
            return "a newer version reads the audience again"
        if self.catalog.run_cancelled(tick.journey_id, tick.run_id):
            return "run cancelled"
        if not self._settled(job.generation) or partition not in self._owned_partitions():
            return "rebalanced"
        return None

    async def _fan_out(self, job: _Job) -> None:
        """Scan each of the job's partitions and queue its matching profiles (throttled)."""
        tick = job.tick
        jid, run_id = tick.journey_id, tick.run_id
        tick_json = encode(tick)
        keys: dict[int, list[bytes]] = {p: [] for p in job.partitions}
        for profile_key in list(self.profiles.keys()):  # a snapshot: the agent writes meanwhile
            share = keys.get(self._partition_of(profile_key))
            if share is not None:
                share.append(profile_key)
        started = time.monotonic()
        total_queued = 0
        log.info(
            "audience run fanning out",
            journey_id=jid,
            run_id=run_id,
            partitions=job.partitions,
            profiles=sum(map(len, keys.values())),
        )
        for partition, share in keys.items():
            scanned = queued = 0
            audience: AudienceFilter | None = None
            for start in range(0, len(share), self._chunk):
                stop = self._stopped(job, partition)
                if stop is not None:
                    log.info("audience run stopped", journey_id=jid, run_id=run_id, why=stop)
                    return
                compiled = self.catalog.current(jid)
                assert compiled is not None  # _stopped checked it
                if audience is None or audience.compiled is not compiled:
                    audience = AudienceFilter(compiled, tick)
                now = datetime.now(UTC)
                matched: list[bytes] = []
                for profile_key in share[start : start + self._chunk]:
                    raw = self.profiles.get(profile_key)
                    if not raw:
                        continue
                    scanned += 1
                    if audience.admits(orjson.loads(raw)["state"], now):
                        matched.append(profile_key)
                if not matched:
                    await asyncio.sleep(0)
                    continue
                at = time.monotonic()
                wait = self.limiter.reserve(at, len(matched)) - at
                if wait > 0:
                    await asyncio.sleep(wait)
                if self._stopped(job, partition) is not None:
                    continue  # said and returned at the top of the next round
                await self._queue(matched, tick_json)
                queued += len(matched)
                AUDIENCE_QUEUED.labels(journey_id=jid).inc(len(matched))
            AUDIENCE_SCANNED.labels(journey_id=jid).inc(scanned)
            progress = RunProgress(
                journey_id=jid,
                run_id=run_id,
                partition=partition,
                scanned=scanned,
                queued=queued,
                finished_at=datetime.now(UTC),
            )
            key = progress_key(jid, run_id, partition).encode()
            await (await self.runs_topic.send(key=key, value=encode(progress)))
            self.registry.apply(progress)
            total_queued += queued
        log.info(
            "audience run fanned out",
            journey_id=jid,
            run_id=run_id,
            partitions=job.partitions,
            queued=total_queued,
            seconds=round(time.monotonic() - started, 3),
        )

    async def _queue(self, profile_keys: list[bytes], tick_json: bytes) -> None:
        futures: list[Awaitable[Any]] = []
        for profile_key in profile_keys:
            value = tick_value(profile_key.decode(), tick_json)
            futures.append(await self.timers_topic.send(key=profile_key, value=value))
        await asyncio.gather(*futures)

    # --- triggers ------------------------------------------------------------------

    async def trigger(
        self, campaign_id: str, request: TriggerRequest
    ) -> tuple[int, dict[str, Any]]:
        """Start a run of a campaign; the HTTP status and the JSON answer."""
        compiled = self.catalog.current(campaign_id)
        existing = self.registry.get(campaign_id, request.run_id) if request.run_id else None
        refused = trigger_refusal(campaign_id, compiled, existing)
        if refused is not None:
            return refused[0], {"error": refused[1]}
        assert compiled is not None
        run, ticks = plan_trigger(
            campaign_id, compiled.version, request, now=datetime.now(UTC), source="api"
        )
        await (await self.runs_topic.send(key=run.key.encode(), value=encode(run)))
        futures = [
            await self.timers_topic.send(key=pid.encode(), value=value) for pid, value in ticks
        ]
        await asyncio.gather(*futures)
        self.registry.apply(run)
        log.info(
            "campaign triggered",
            campaign_id=campaign_id,
            run_id=run.run_id,
            target=run.target,
            profiles=run.profiles,
        )
        return 202, {
            "campaign_id": campaign_id,
            "run_id": run.run_id,
            "target": run.target,
            "profiles": run.profiles,
            "repeated": existing is not None,
        }
