"""The wiring: one faust app with the engine and the channel connectors it runs.

`create_app` declares the topics once and hands each part what it needs, so a new
channel is a new folder under connectors/ and one line here.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import faust
from aiokafka.structs import TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from engine.campaigns.audience import register_trigger_api
from engine.console.api import register_console
from engine.streaming.drain import drain_messages
from engine.streaming.topics import ensure_topics
from engine.worker.gctuning import tune_gc
from engine.worker.runtime import EngineRuntime, EngineTopics
from schemas.settings import Settings

ROLES = frozenset({"engine", "whatsapp", "http"})
RECOVERY_FETCH_MAX_WAIT_MS = 1500  # faust's own fetch wait, kept while tables recover


class ShortFetchThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust's consumer thread, with the fetch wait of `KAFKA_FETCH_MAX_WAIT_MS`.

    faust fixes the worker consumer's `fetch_max_wait_ms` at 1,500 ms. aiokafka keeps one
    fetch in flight per broker and leaves out of it every partition whose fetched records
    the worker has not taken yet, so a fetch sent while the busy partitions are still
    buffered asks only for idle ones (timers, campaign runs) and the broker holds it for
    the whole wait, while records pile up on the busy partitions: a standing lag. The
    short wait is for steady processing only: from a new assignment until its changelog
    recovery ends, the fetch waits faust's own 1,500 ms (`SeekingConsumer`), the setting
    faust's recovery is built and tested with (a short wait there can stall the
    recovery). `KAFKA_FETCH_MIN_BYTES` (16 KB) lets the broker gather records for up to
    that wait, so a steady stream costs a fetch per batch rather than per few records;
    recovery fetches with 1 byte.
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = cast(EngineTransport, transport).fetch_max_wait_ms
        consumer._fetch_min_bytes = cast(EngineTransport, transport).fetch_min_bytes
        return consumer


class SeekingConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer, with a seek after a rebalance that loses no record.

    After a rebalance faust resumes the stream partitions while records already flow,
    then seeks to the committed offsets, then empties every stream buffer
    (`flow_control.resume()`) and resumes the flow (faust/tables/recovery.py,
    `on_recovery_completed` and `_resume_streams`). Records fetched during that seek
    reach a buffer and are emptied out unprocessed, while the fetch position is past
    them: a partition without a committed offset is not seeked at all, and the seek sets
    the read offset back to the committed one, so the next record looks like a gap.
    A read offset left over from before the rebalance drops records the same way.
    faust acks a gap (`Consumer._add_gap`) and the next commit passes the records nobody
    processed. This seek stops the flow first (the caller resumes it once the buffers
    are empty), then seeks every stream partition, the uncommitted ones to the beginning,
    as `consumer_auto_offset_reset="earliest"` would after a fresh assignment.
    """

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return ShortFetchThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:
        await drain_messages(self, fetcher)  # without faust's four tasks per record

    def _set_fetch_wait(self, ms: int, min_bytes: int) -> None:
        """The broker wait and byte count of the next fetches (aiokafka reads them for each
        request)."""
        fetcher = getattr(getattr(self._thread, "_consumer", None), "_fetcher", None)
        if fetcher is not None:
            fetcher._fetch_max_wait_ms = ms
            fetcher._fetch_min_bytes = min_bytes

    async def on_partitions_assigned(self, assigned: set[Any], generation_id: int = 0) -> None:
        # Recovery reads the changelogs with faust's own wait, answered as soon as any record
        # is there (a small changelog would otherwise wait the whole 1.5 s per fetch);
        # perform_seek, the last step of every recovery, puts the steady settings back.
        self._set_fetch_wait(RECOVERY_FETCH_MAX_WAIT_MS, 1)
        # The fetch loop records the offset of the record it was delivering when the
        # revocation stopped it, after the revocation forgot the partition's read offset;
        # faust then silently drops every record below that offset in the next generation.
        for tp in assigned:
            self._read_offset.pop(tp, None)
        await super().on_partitions_assigned(assigned, generation_id)

    async def perform_seek(self) -> None:
        self.stop_flow()
        await super().perform_seek()
        transport = cast(EngineTransport, self.transport)
        self._set_fetch_wait(transport.fetch_max_wait_ms, transport.fetch_min_bytes)
        # aiokafka's seek_to_committed skips a partition whose committed offset is None or 0.
        uncommitted = [
            TopicPartition(tp.topic, tp.partition)
            for tp in self.assignment()
            if not self._read_offset.get(tp)
            and not self._is_changelog_tp(tp)
            and self.app.topics.acks_enabled_for(tp.topic)
        ]
        if uncommitted and self.app.conf.consumer_auto_offset_reset == "earliest":
            # Looked up, then seeked: seek_to_beginning would leave the position unset
            # while it waits, and faust's livelock check asserts on an unset position.
            for tp, offset in (await self.earliest_offsets(*uncommitted)).items():
                await self._seek(tp, offset)
                self._read_offset[tp] = None


class EngineTransport(faust_aiokafka.Transport):
    """The aiokafka transport with `SeekingConsumer` and its fetch wait."""

    Consumer = SeekingConsumer
    fetch_max_wait_ms = RECOVERY_FETCH_MAX_WAIT_MS  # create_app sets KAFKA_FETCH_MAX_WAIT_MS
    fetch_min_bytes = 1  # create_app sets KAFKA_FETCH_MIN_BYTES (1: as during recovery)


def _broker_credentials(settings: Settings) -> Any:
    if settings.kafka_security_protocol == "PLAINTEXT":
        return None
    security = settings.aiokafka_security()
    if settings.kafka_sasl_mechanism:
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=security.get("sasl_plain_password"),
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=security.get("ssl_context"),
        )
    return faust.SSLCredentials(security["ssl_context"])


def create_app(settings: Settings, roles: frozenset[str] = ROLES, *, web: bool = True) -> faust.App:
    """Build the faust app for the given roles ('engine', 'whatsapp', 'http')."""
    unknown = roles - ROLES
    if unknown:
        raise ValueError(f"unknown role(s) {sorted(unknown)}; choose from {sorted(ROLES)}")
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{host}" for host in settings.kafka_bootstrap_servers.split(",")],
        broker_credentials=_broker_credentials(settings),
        store=settings.store,
        datadir=str(settings.data_dir),
        topic_partitions=settings.topic_partitions,
        # Changelogs and faust's own topics: replicated like the engine's topics.
        topic_replication_factor=settings.topic_replication_factor,
        key_serializer="raw",
        value_serializer="raw",
        processing_guarantee="at_least_once",
        producer_acks=-1,
        producer_linger=settings.kafka_producer_linger_ms / 1000,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        # No standby replicas: with them, faust's assignor filters the standby partitions
        # by the tables each worker declares, so a connector worker and an engine worker in
        # one group compute different assignments, and faust's coordinator dies on an
        # assertion (`on_assignment`, `a == b`) while the process lives on, consuming
        # nothing. A worker taking partitions over restores them from the changelog.
        table_standby_replicas=0,
        broker_session_timeout=settings.kafka_session_timeout_seconds,
        broker_heartbeat_interval=settings.kafka_session_timeout_seconds / 4,
        web_enabled=web,
        web_port=settings.worker_web_port,
        web_bind=settings.worker_web_host,
        canonical_url=settings.worker_url(),  # faust's table routing sends lookups here
        autodiscover=False,
    )
    transport = EngineTransport(app.conf.broker_consumer, app)
    transport.fetch_max_wait_ms = settings.kafka_fetch_max_wait_ms
    transport.fetch_min_bytes = settings.kafka_fetch_min_bytes
    app.transport = transport

    def topic(name: str) -> faust.TopicT:
        return app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.topic_partitions,
        )

    topics = EngineTopics(
        profile_events=topic(settings.topic_profile_events),
        profile_events_repartition=topic(settings.topic_profile_events_repartition),
        timers=topic(settings.topic_timers),
        delivery_events=topic(settings.topic_delivery_events),
        whatsapp_requests=topic(settings.topic_whatsapp_requests),
        journey_steps=topic(settings.topic_journey_steps),
        dead_letter=topic(settings.topic_dead_letter),
        profile_phones=topic(settings.topic_profile_phones),
        http_requests=topic(settings.topic_http_requests),
    )
    runtime: EngineRuntime | None = None
    if "engine" in roles:
        runtime = EngineRuntime(app, topics, settings)
        # Served by each engine worker: it has the catalog (404, 409) and a producer; behind
        # a load balancer any worker answers.
        register_trigger_api(app, runtime.audience, settings)
        register_console(app, runtime, settings)
    if "whatsapp" in roles:
        from connectors import whatsapp

        whatsapp.register(
            app,
            requests_topic=topics.whatsapp_requests,
            delivery_topic=topics.delivery_events,
            dead_letter_topic=topics.dead_letter,
            settings=settings,
        )

    if "http" in roles:
        from connectors import http

        http.register(
            app,
            requests_topic=topics.http_requests,
            profile_events_topic=topics.profile_events,
            dead_letter_topic=topics.dead_letter,
            settings=settings,
        )

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST)

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        ready = not app.rebalancing and (runtime is None or runtime.definitions.ready.is_set())
        return web.json({"ready": ready}, status=200 if ready else 503)

    app.runtime = runtime  # type: ignore[attr-defined]
    return app


def run_worker(
    settings: Settings,
    roles: frozenset[str] = ROLES,
    *,
    web: bool = True,
    loglevel: str = "warning",
) -> None:
    """Create the topics if needed, then run a faust worker until it is stopped."""
    asyncio.run(ensure_topics(settings))
    app = create_app(settings, roles, web=web)
    worker = faust.Worker(app, loglevel=loglevel, redirect_stdouts=False)
    # faust keeps a terminal spinner at levels >= WARNING and sets the root logger to DEBUG
    # for it, so every aiokafka/faust logger.debug() call would build a LogRecord.
    worker.spinner = None
    tune_gc()
    worker.execute_from_commandline()
