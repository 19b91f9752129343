"""Audience runs in the worker: the runs registry, the throttled fan-out over owned partitions,
the campaign trigger API, and the records `journeyctl campaign` publishes.

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
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import faust
import orjson
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.web import Response, View
from prometheus_client import Counter
from pydantic import ValidationError

from connectors.ratelimit import TokenBucket
from engine.campaigns.schedule import due_run
from engine.core.catalog import CompiledJourney, JourneyCatalog
from engine.core.interpreter import AudienceFilter
from engine.streaming.clients import assign_all
from schemas.campaign import (
    AudienceTick,
    CampaignDefinition,
    CampaignRun,
    RunProgress,
    TriggerRequest,
    progress_key,
)
from schemas.deployment import JourneyDeployment
from schemas.settings import Settings

log = structlog.get_logger(__name__)

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

MAX_TRIGGER_BODY_BYTES = 2 * 1024 * 1024
_RETRY_FAILED_JOB_SECONDS = 30.0

# --- records -----------------------------------------------------------------------------


def encode(record: CampaignRun | RunProgress | AudienceTick) -> bytes:
    return orjson.dumps(record.model_dump(mode="json"))


def tick_value(profile_id: str, tick_json: bytes) -> bytes:
    """The journey-timers record of one profile's share of a run (tick_json: the encoded tick)."""
    return b'{"profile_id":' + orjson.dumps(profile_id) + b',"audience":' + tick_json + b"}"


def decode_run_record(value: bytes | None) -> CampaignRun | RunProgress | None:
    """A campaign-runs record (a run, or a partition's progress); None for a tombstone."""
    if not value:
        return None
    data = orjson.loads(value)
    if isinstance(data, dict) and "partition" in data:
        return RunProgress.model_validate(data)
    return CampaignRun.model_validate(data)


def new_run_id(now: datetime) -> str:
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def plan_trigger(
    campaign_id: str,
    version: int,
    request: TriggerRequest,
    *,
    now: datetime,
    source: Literal["api", "cli"],
    requested_by: str | None = None,
) -> tuple[CampaignRun, list[tuple[str, bytes]]]:
    """The run record to publish and, for an explicit profile list, each profile's tick."""
    run_id = request.run_id or new_run_id(now)
    profile_ids = list(dict.fromkeys(request.profile_ids or ()))
    run = CampaignRun(
        campaign_id=campaign_id,
        run_id=run_id,
        target="profiles" if profile_ids else "audience",
        audience=request.audience,
        profiles=len(profile_ids),
        context=request.context,
        source=source,
        requested_at=now,
        requested_by=requested_by,
    )
    tick_json = encode(run_tick(run, version))
    return run, [(pid, tick_value(pid, tick_json)) for pid in profile_ids]


def run_tick(run: CampaignRun, version: int | None) -> AudienceTick:
    return AudienceTick(
        journey_id=run.campaign_id,
        version=version,
        run_id=run.run_id,
        condition=run.audience,
        context=run.context,
        requested_at=run.requested_at,
    )


def trigger_refusal(
    campaign_id: str, deployed: CompiledJourney | JourneyDeployment | None, run: CampaignRun | None
) -> tuple[int, str] | None:
    """Why a trigger is refused, as (HTTP status, message), or None to go ahead."""
    is_campaign = deployed is not None and (
        deployed.is_campaign
        if isinstance(deployed, CompiledJourney)
        else deployed.kind == "campaign"
    )
    if deployed is None or not is_campaign:
        return 404, f"no campaign {campaign_id!r} is deployed (see `journeyctl campaign list`)"
    if deployed.status == "archived":
        return 409, f"campaign {campaign_id!r} is cancelled; deploy it again to bring it back"
    if deployed.status == "paused":
        return 409, f"campaign {campaign_id!r} is paused; `journeyctl resume {campaign_id}` first"
    if run is not None and run.status == "cancelled":
        return 409, f"run {run.run_id!r} of campaign {campaign_id!r} is cancelled"
    return None


def next_campaign_deployment(
    campaign: CampaignDefinition,
    existing: JourneyDeployment | None,
    *,
    source: str | None = None,
    deployed_by: str | None = None,
    now: datetime | None = None,
) -> JourneyDeployment | None:
    """The record to publish for a campaign, or None when it is unchanged and active.

    A cancelled (archived) campaign deployed again unchanged is active again, same version.
    """
    if existing is not None and existing.kind != "campaign":
        raise ValueError(
            f"{campaign.id!r} is a journey; a campaign needs an id of its own (ids are shared)"
        )
    same = existing is not None and existing.campaign == campaign
    if existing is not None and same and existing.status == "active":
        return None
    version = 1 if existing is None else existing.version + (0 if same else 1)
    return JourneyDeployment(
        journey_id=campaign.id,
        version=version,
        status="active",
        kind="campaign",
        definition=campaign.to_journey(),
        campaign=campaign,
        deployed_at=now or datetime.now(UTC),
        deployed_by=deployed_by,
        source=source,
    )


# --- what every worker knows about runs --------------------------------------------------


@dataclass(slots=True)
class RunRegistry:
    """Runs and per-partition progress from `campaign-runs`; tells the catalog of cancels."""

    on_cancel: Callable[[str, str], None] | None = None
    runs: dict[tuple[str, str], CampaignRun] = field(default_factory=dict)
    progress: dict[tuple[str, str], dict[int, RunProgress]] = field(default_factory=dict)

    def apply_record(self, key: bytes | None, value: bytes | None) -> None:
        try:
            record = decode_run_record(value)
        except (ValidationError, ValueError) as exc:
            log.error("unreadable campaign-runs record", key=key, error=str(exc)[:300])
            return
        if record is not None:
            self.apply(record)

    def apply(self, record: CampaignRun | RunProgress) -> None:
        if isinstance(record, RunProgress):
            runs = self.progress.setdefault((record.journey_id, record.run_id), {})
            runs[record.partition] = record
            return
        key = (record.campaign_id, record.run_id)
        before = self.runs.get(key)
        if before is not None and before.status == "cancelled":
            return  # a cancelled run stays cancelled, whatever is written after
        self.runs[key] = record
        if record.status == "cancelled" and self.on_cancel is not None:
            self.on_cancel(record.campaign_id, record.run_id)

    def get(self, journey_id: str, run_id: str) -> CampaignRun | None:
        return self.runs.get((journey_id, run_id))

    def done(self, journey_id: str, run_id: str, partition: int) -> bool:
        return partition in self.progress.get((journey_id, run_id), {})

    def audience_runs(self) -> Iterator[CampaignRun]:
        """Triggered runs that are fanned out over the audience, not cancelled."""
        for run in self.runs.values():
            if run.status == "running" and run.target == "audience":
                yield run

    def run_ids(self, journey_id: str) -> list[str]:
        """Every run of a journey or campaign known here (triggered, or with progress)."""
        ids = {rid for jid, rid in self.runs if jid == journey_id}
        ids |= {rid for jid, rid in self.progress if jid == journey_id}
        return sorted(ids)


async def _read_until_caught_up(
    consumer: AIOKafkaConsumer, apply: Callable[[bytes | None, bytes | None], None]
) -> None:
    tps = list(consumer.assignment())
    end = await consumer.end_offsets(tps)
    for tp, offset in end.items():
        while await consumer.position(tp) < offset:
            for records in (await consumer.getmany(timeout_ms=500, max_records=2000)).values():
                for record in records:
                    apply(record.key, record.value)


def _runs_consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        enable_auto_commit=False,
        group_id=None,
        **settings.aiokafka_security(),
    )


async def _assign_existing(
    consumer: AIOKafkaConsumer, topic: str, wait_seconds: float
) -> list[TopicPartition]:
    """Assign every partition of the topic once it exists (never creating it).

    Asking for one topic's metadata creates it where the broker auto-creates topics, with
    the broker's defaults: not compacted. Listing all topics creates nothing.
    """
    deadline = time.monotonic() + wait_seconds
    while topic not in await consumer.topics():
        if time.monotonic() >= deadline:
            return []
        await asyncio.sleep(0.5)
    return await assign_all(consumer, topic, wait_seconds=wait_seconds)


class RunsFollower:
    """Keeps a RunRegistry in step with `campaign-runs` (every partition, no group)."""

    def __init__(self, settings: Settings, registry: RunRegistry) -> None:
        self._settings = settings
        self._registry = registry
        self.ready = asyncio.Event()

    async def run(self) -> None:
        consumer = _runs_consumer(self._settings)
        await consumer.start()
        try:
            topic = self._settings.topic_campaign_runs
            tps = await _assign_existing(consumer, topic, wait_seconds=60)
            if not tps:
                raise RuntimeError(f"topic {topic!r} does not exist; create the engine's topics")
            await consumer.seek_to_beginning(*tps)
            await _read_until_caught_up(consumer, self._registry.apply_record)
            self.ready.set()
            log.info("campaign runs loaded", topic=topic, runs=len(self._registry.runs))
            while True:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        self._registry.apply_record(record.key, record.value)
        finally:
            await consumer.stop()


async def read_runs(settings: Settings, timeout: float = 15.0) -> RunRegistry:
    """Read `campaign-runs` to its end (for the CLI)."""
    registry = RunRegistry()
    consumer = _runs_consumer(settings)
    await consumer.start()
    try:
        tps = await _assign_existing(consumer, settings.topic_campaign_runs, wait_seconds=0)
        if tps:
            await consumer.seek_to_beginning(*tps)
            await asyncio.wait_for(_read_until_caught_up(consumer, registry.apply_record), timeout)
        return registry
    finally:
        await consumer.stop()


async def publish_run(
    settings: Settings, run: CampaignRun, ticks: Iterable[tuple[str, bytes]] = ()
) -> None:
    """Publish a run record, then its profiles' ticks (keyed by profile: murmur2 partitions)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        **settings.aiokafka_security(),
    )
    await producer.start()
    try:
        await (await producer.send(settings.topic_campaign_runs, encode(run), key=run.key.encode()))
        futures = [
            await producer.send(settings.topic_timers, value, key=pid.encode())
            for pid, value in ticks
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


# --- the worker's part -------------------------------------------------------------------


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


def register_trigger_api(app: faust.App, audience: AudienceRuns, settings: Settings) -> None:
    """`POST /campaigns/{campaign_id}/trigger` on the worker's web server (bearer token)."""
    token = settings.campaign_api_token

    @app.page("/campaigns/{campaign_id}/trigger")
    class CampaignTrigger(View):
        async def post(self, request: Any, campaign_id: str) -> Response:
            if token is None:
                return self.json(
                    {"error": "the trigger API is off: set CAMPAIGN_API_TOKEN"}, status=503
                )
            given = request.headers.get("Authorization", "")
            expected = f"Bearer {token.get_secret_value()}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                return self.json(
                    {"error": "missing or wrong bearer token"},
                    status=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
            body = await request.read()
            if len(body) > MAX_TRIGGER_BODY_BYTES:
                return self.json({"error": "body too large"}, status=413)
            try:
                trigger = TriggerRequest.model_validate_json(body or b"{}")
            except ValidationError as exc:
                problems = [
                    f"{'.'.join(map(str, e['loc'])) or '<body>'}: {e['msg']}"
                    for e in exc.errors()[:10]
                ]
                return self.json({"error": "invalid trigger", "problems": problems}, status=422)
            status, answer = await audience.trigger(campaign_id, trigger)
            return self.json(answer, status=status)
