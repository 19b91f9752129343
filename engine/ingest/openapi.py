"""The ingestion API's OpenAPI 3.1 document, its schemas generated from the pydantic models."""

from __future__ import annotations

import functools
from typing import Any

from pydantic.json_schema import models_json_schema

from schemas.ingest import (
    MAX_EVENTS_PER_REQUEST,
    MAX_REQUEST_BYTES,
    ApiError,
    EventsAccepted,
    EventsRequest,
)

_REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref("ApiError")}},
    }


@functools.cache
def openapi_document() -> dict[str, Any]:
    """`GET /openapi.json`: POST /v1/events, GET /healthz, GET /metrics."""
    _, schemas = models_json_schema(
        [(m, "validation") for m in (EventsRequest, EventsAccepted, ApiError)],
        ref_template=_REF,
    )
    post = {
        "summary": "Publish profile events",
        "description": (
            f"At most {MAX_EVENTS_PER_REQUEST} events and {MAX_REQUEST_BYTES} bytes. Each "
            "event is validated as the engine validates it; a bad one is rejected by its "
            "index while the rest are accepted. A 202 is sent once Kafka has acknowledged "
            "every accepted event (acks=all). Without a 202, send the batch again: the "
            "engine drops duplicates by event_id."
        ),
        "security": [{"bearer": []}],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _ref("EventsRequest")},
                "application/x-ndjson": {
                    "schema": {"type": "string", "description": "one ProfileEvent per line"}
                },
            },
        },
        "responses": {
            "202": {
                "description": "accepted events are durable in Kafka",
                "content": {"application/json": {"schema": _ref("EventsAccepted")}},
            },
            "400": _error('the body is not JSON, or not {"events": [...]}'),
            "401": _error("missing or wrong bearer token"),
            "413": _error(f"over {MAX_EVENTS_PER_REQUEST} events or {MAX_REQUEST_BYTES} bytes"),
            "503": {
                **_error("Kafka did not acknowledge in time: retry after Retry-After seconds"),
                "headers": {"Retry-After": {"schema": {"type": "integer"}}},
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Journey engine ingestion API", "version": "1"},
        "paths": {
            "/v1/events": {"post": post},
            "/healthz": {
                "get": {"summary": "Liveness", "responses": {"200": {"description": "ok"}}}
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "text exposition format"}},
                }
            },
        },
        "components": {
            "schemas": schemas["$defs"],
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
