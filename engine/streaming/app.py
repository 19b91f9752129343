"""The wiring: one faust app with the engine and the channel connectors it runs.

`create_app` declares the topics once and hands each part what it needs, so a new
channel is a new folder under connectors/ and one line here.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from engine.campaigns.api import register_trigger_api
from engine.console.api import register_console
from engine.streaming.consumer import EngineTransport
from engine.streaming.internals import FaustShell
from engine.streaming.topics import ensure_topics
from engine.worker.gctuning import tune_gc
from engine.worker.runtime import EngineRuntime, EngineTopics
from schemas.settings import Settings

ROLES = frozenset({"engine", "whatsapp", "http"})


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
            whatsapp.WhatsAppConnector(
                app,
                shell=FaustShell(app),
                requests_topic=topics.whatsapp_requests,
                delivery_topic=topics.delivery_events,
                dead_letter_topic=topics.dead_letter,
                settings=settings,
            )
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
