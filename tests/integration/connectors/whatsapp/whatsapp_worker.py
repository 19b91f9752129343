"""A faust worker running only the WhatsApp connector, for integration tests (run as a subprocess).

Configured by the environment: Settings' own variables (KAFKA_BOOTSTRAP_SERVERS, TOPIC_*,
WHATSAPP_*) plus WA_WORKER_APP_ID (unique per test) and WA_WORKER_DATADIR.
"""

from __future__ import annotations

import logging
import os

import faust
import structlog

from connectors.whatsapp import WhatsAppConnector, register
from engine.streaming.internals import FaustShell
from schemas.settings import Settings


def build_app(settings: Settings) -> faust.App:
    app = faust.App(
        os.environ["WA_WORKER_APP_ID"],
        broker=f"kafka://{settings.kafka_bootstrap_servers}",
        store="memory://",
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        topic_partitions=settings.topic_partitions,
        datadir=os.environ.get("WA_WORKER_DATADIR", ".faust-data"),
    )

    def topic(name: str) -> faust.TopicT:
        return app.topic(
            name, key_type=bytes, value_type=bytes, partitions=settings.topic_partitions
        )

    register(
        WhatsAppConnector(
            app,
            shell=FaustShell(app),
            requests_topic=topic(settings.topic_whatsapp_requests),
            delivery_topic=topic(settings.topic_delivery_events),
            dead_letter_topic=topic(settings.topic_dead_letter),
            settings=settings,
        )
    )
    return app


def main() -> None:
    structlog.configure(
        processors=[
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        logger_factory=structlog.PrintLoggerFactory(),
    )
    app = build_app(Settings())
    worker = faust.Worker(app, loglevel="INFO", redirect_stdouts=False)
    # httpx logs every request at INFO: at 1,000 calls/s that is a real share of the CPU.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
