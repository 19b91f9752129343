"""One Settings object, read from the environment (names as in DESIGN.md).

Secrets come from the environment or from a file named by `<NAME>_FILE`; never from YAML.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_SECRET_FIELDS = (
    "whatsapp_token",
    "whatsapp_app_secret",
    "whatsapp_verify_token",
    "kafka_sasl_password",
    "campaign_api_token",
    "ingest_api_token",
    "console_token",
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    # Kafka
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None

    # Topics (names are configurable; these are the defaults of DESIGN.md)
    topic_profile_events: str = "profile-events"
    topic_journey_definitions: str = "journey-definitions"
    topic_whatsapp_requests: str = "whatsapp-requests"
    topic_delivery_events: str = "delivery-events"
    topic_journey_steps: str = "journey-steps"
    topic_dead_letter: str = "dead-letter"
    topic_timers: str = "journey-timers"
    topic_profile_phones: str = "profile-phones"
    topic_http_requests: str = "http-requests"
    topic_campaign_runs: str = "campaign-runs"
    topic_profile_events_repartition: str = Field(
        default="",
        description="the engine's internal topic for profile events produced on another "
        "partition than their key's murmur2 one; default: TOPIC_PROFILE_EVENTS + '-repartition'",
    )
    topic_whatsapp_controls: str = "whatsapp-controls"
    topic_partitions: int = Field(default=8, ge=1)

    # Engine runtime
    app_id: str = "journey-engine"
    store: str = Field(
        default="memory://", description="memory:// or rocksdb:// (needs the rocksdb extra)"
    )
    data_dir: Path = Path(".journey-data")
    worker_web_port: int = 6066
    worker_web_host: str = "127.0.0.1"
    worker_web_url: str | None = Field(
        default=None,
        description="how the other workers reach this one's web port (profile lookups are "
        "routed to the worker that owns the profile); default http://WORKER_WEB_HOST:PORT",
    )
    console_token: SecretStr | None = Field(
        default=None,
        description="bearer token of the console and its /api/ (secret); needed to serve them "
        "on a non-loopback WORKER_WEB_HOST",
    )
    topic_replication_factor: int = Field(default=1, ge=1)
    kafka_session_timeout_seconds: float = Field(
        default=10.0, ge=6, description="how soon a dead worker's partitions move to another"
    )
    # For steady processing; while a new assignment's tables recover, the worker fetches
    # with faust's own 1,500 ms (engine/streaming/app.py, SeekingConsumer).
    kafka_fetch_max_wait_ms: int = Field(
        default=50,
        ge=1,
        le=1500,
        description="how long a worker's fetch may wait at the broker for new records",
    )
    # Kafka's default, 1, answers a fetch as soon as any record is there, so under steady
    # load every few records cost a fetch round trip and a hand-over from the consumer
    # thread. 16 KB makes the broker gather that much, or wait KAFKA_FETCH_MAX_WAIT_MS, per
    # fetch: less CPU per record under load, up to that wait per hop at low traffic.
    kafka_fetch_min_bytes: int = Field(
        default=16 * 1024,
        ge=1,
        le=1024 * 1024,
        description="how many bytes a worker's fetch waits for at the broker (up to the wait)",
    )
    # Records sent one at a time (the WhatsApp connector's markers, accepted ids and delivery
    # events) wait this long for company before going out; the engine's record batches are
    # sent whole at once (engine/streaming/produce.py).
    kafka_producer_linger_ms: int = Field(
        default=5,
        ge=0,
        le=1000,
        description="how long a single produced record may wait to share a produce request",
    )
    # A batch is committed when it holds BATCH_MAX records or this long after its first.
    # Each commit costs two acknowledged round trips and a produce request per partition,
    # so a batch holds about rate x window records: too short a window and the commits,
    # not the journeys, take the CPU; too long and every record waits for it.
    engine_batch_window_ms: int = Field(
        default=25,
        ge=1,
        le=1000,
        description="longest the engine holds a record before committing its batch",
    )
    timer_scan_interval_seconds: float = Field(default=0.25, gt=0)
    # About 5 KB of memory each; a state read again within this many commits is not parsed.
    engine_decoded_states: int = Field(
        default=10_000,
        ge=0,
        description="committed profile states the engine keeps decoded (0: none)",
    )
    dedupe_window: int = Field(
        default=64, ge=1, description="recent event ids remembered per profile"
    )
    max_event_age_days: int = 91
    max_event_future_seconds: int = 3600

    # WhatsApp Cloud API
    whatsapp_api_url: str = "http://127.0.0.1:8070"
    whatsapp_api_version: str = "v21.0"
    whatsapp_token: SecretStr | None = None
    whatsapp_phone_number_id: str = "100000000000001"
    whatsapp_waba_id: str | None = Field(
        default=None, description="the WhatsApp Business Account whose templates are synced"
    )
    whatsapp_messaging_limit: int | None = Field(
        default=None,
        ge=1,
        description="unique users reached with templates per moving window (Meta's tier: "
        "250, 2000, 10000, 100000); unset: the tier from business_capability_update, if any",
    )
    whatsapp_messaging_window_seconds: float = Field(
        default=24 * 3600, gt=0, description="the messaging limit's moving window"
    )
    whatsapp_pair_backoff_seconds: float = Field(
        default=6.0, ge=0, description="wait before sending again to a user after 131056"
    )
    whatsapp_app_secret: SecretStr | None = None
    whatsapp_verify_token: SecretStr | None = None
    whatsapp_rate_per_second: float = Field(default=80.0, gt=0, le=1000)
    whatsapp_number_cap_per_second: float | None = Field(
        default=None,
        gt=0,
        le=1000,
        description="a number's cap shared by all connector workers: each paces at it times "
        "its share of the requests topic's partitions, again after every rebalance; when "
        "set, WHATSAPP_RATE_PER_SECOND is not used",
    )
    whatsapp_max_in_flight: int | None = Field(
        default=None,
        ge=1,
        description="Cloud API calls open at once; default: a quarter second of traffic at "
        "the cap, at least 64 (see in_flight_limit)",
    )
    whatsapp_timeout_seconds: float = Field(default=10.0, gt=0)
    whatsapp_max_retries: int = Field(default=6, ge=0)
    whatsapp_in_doubt_seconds: float = Field(
        default=30.0,
        ge=0,
        description="after a crash, how long to look for Meta's status of a call in doubt",
    )
    whatsapp_opt_out_words: str = "STOP,UNSUBSCRIBE,BAJA,CANCELAR,PARAR"
    whatsapp_opt_in_words: str = "START,ALTA,SUBSCRIBE"
    whatsapp_help_words: str = "HELP,AYUDA"
    whatsapp_opt_out_reply: str = (
        "You will no longer receive messages. Reply START to subscribe again."
    )
    whatsapp_opt_in_reply: str = "You are subscribed again. Reply STOP to unsubscribe."
    whatsapp_help_reply: str = "Reply STOP to unsubscribe or START to subscribe."

    # Webhook receiver
    webhook_host: str = "127.0.0.1"
    webhook_port: int = 8080
    webhook_max_body_bytes: int = 1024 * 1024

    # Campaigns and audience entry
    campaign_api_token: SecretStr | None = Field(
        default=None, description="bearer token of POST /campaigns/{id}/trigger (secret)"
    )
    campaign_rate_per_second: float = Field(
        default=500.0,
        gt=0,
        le=20_000,
        description="profiles per second each worker admits into audience runs",
    )
    campaign_catch_up_seconds: float = Field(
        default=3600.0,
        ge=0,
        description="a scheduled run missed (workers down) by less than this still starts",
    )

    # HTTP ingestion API (journeyctl ingest)
    ingest_host: str = "127.0.0.1"
    ingest_port: int = Field(default=8090, ge=0, le=65535)
    ingest_api_token: SecretStr | None = Field(
        default=None, description="bearer token of POST /v1/events (secret); required"
    )
    ingest_produce_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=120,
        description="how long a request waits for Kafka's acknowledgement before a 503",
    )

    # Logging
    log_format: Literal["json", "console"] = "console"
    log_level: str = "INFO"

    @model_validator(mode="before")
    @classmethod
    def _secret_files(cls, values: Any) -> Any:
        # Kubernetes and Docker mount secrets as files: WHATSAPP_TOKEN_FILE=/run/secrets/token.
        if not isinstance(values, dict):
            return values
        for name in _SECRET_FIELDS:
            path = os.environ.get(f"{name.upper()}_FILE")
            if path and not values.get(name) and not os.environ.get(name.upper()):
                values[name] = Path(path).read_text(encoding="utf-8").strip()
        return values

    def worker_url(self) -> str:
        """This worker's web address as other workers and `journeyctl inspect` use it."""
        return self.worker_web_url or f"http://{self.worker_web_host}:{self.worker_web_port}"

    @model_validator(mode="after")
    def _repartition_topic(self) -> Settings:
        if not self.topic_profile_events_repartition:
            self.topic_profile_events_repartition = f"{self.topic_profile_events}-repartition"
        return self

    def in_flight_limit(self) -> int:
        """Calls the connector keeps open at once (WHATSAPP_MAX_IN_FLIGHT, else derived).

        A call holds its place from its pacing slot until Meta answers, so the cap is
        reached only while limit > rate x answer time (Little's law). Meta answers in
        hundreds of milliseconds, so the default is a quarter second of traffic at the
        cap, at least 64.
        """
        if self.whatsapp_max_in_flight is not None:
            return self.whatsapp_max_in_flight
        return max(64, math.ceil(self.whatsapp_max_rate() / 4))

    def whatsapp_max_rate(self) -> float:
        """The fastest one connector worker paces a number: the shared cap when it is set
        (a worker that owns every partition), else its own rate."""
        return self.whatsapp_number_cap_per_second or self.whatsapp_rate_per_second

    def words(self, kind: Literal["opt_out", "opt_in", "help"]) -> frozenset[str]:
        raw = {"opt_out": self.whatsapp_opt_out_words, "opt_in": self.whatsapp_opt_in_words}.get(
            kind, self.whatsapp_help_words
        )
        return frozenset(w.strip().upper() for w in raw.split(",") if w.strip())

    def aiokafka_security(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka clients; empty for a plain local broker."""
        if self.kafka_security_protocol == "PLAINTEXT":
            return {}
        import ssl

        opts: dict[str, Any] = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            ctx = ssl.create_default_context(
                cafile=str(self.kafka_ssl_cafile) if self.kafka_ssl_cafile else None
            )
            if self.kafka_ssl_certfile:
                ctx.load_cert_chain(str(self.kafka_ssl_certfile), str(self.kafka_ssl_keyfile or ""))
            opts["ssl_context"] = ctx
        if self.kafka_sasl_mechanism:
            opts["sasl_mechanism"] = self.kafka_sasl_mechanism
            opts["sasl_plain_username"] = self.kafka_sasl_username
            opts["sasl_plain_password"] = (
                self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else None
            )
        return opts
