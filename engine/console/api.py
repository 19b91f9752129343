"""The console's routes on the worker's web port: `/api/...` (JSON) and `/console/` (pages).

With CONSOLE_TOKEN set, every route needs `Authorization: Bearer <token>` (the page asks
for the token and keeps it in the tab's sessionStorage). Without it, the routes answer only
when the web server listens on a loopback address; on any other they refuse (403).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import faust
import structlog
from faust.web import Request, Response, View

from engine.cli.report import parse_moment
from engine.console.page import console_page
from engine.console.service import ROUTED_HEADER, ConsoleService
from engine.worker.runtime import EngineRuntime
from schemas.settings import Settings

log = structlog.get_logger(__name__)

INSPECT_SINCE = timedelta(days=7)  # the records an inspect reads when `since` is not given


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Guard:
    """Who may use the console: the bearer token, or anyone on a loopback-only server."""

    def __init__(self, settings: Settings) -> None:
        self.token = settings.console_token
        self.host = settings.worker_web_host
        self.open = self.token is None and is_loopback(self.host)

    def refusal(self, request: Request) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        """(status, body, headers) when the request may not be answered, else None."""
        if self.token is None:
            if self.open:
                return None
            return (
                403,
                {
                    "error": f"the console is off: the web port listens on {self.host}, not on "
                    "loopback; set CONSOLE_TOKEN to serve it there"
                },
                {},
            )
        given = request.headers.get("Authorization", "")
        expected = f"Bearer {self.token.get_secret_value()}"
        if hmac.compare_digest(given.encode(), expected.encode()):
            return None
        return 401, {"error": "missing or wrong bearer token"}, {"WWW-Authenticate": "Bearer"}


def _since(request: Request) -> datetime:
    """`?since=` as an ISO time or a duration back from now (`90m`, `2d`); default 7 days."""
    text = request.query.get("since")
    now = datetime.now(UTC)
    return parse_moment(text, now) if text else now - INSPECT_SINCE


def register_console(app: faust.App, runtime: EngineRuntime, settings: Settings) -> None:
    """The console's pages and API on the worker's web server."""
    guard = Guard(settings)
    service = ConsoleService(app, runtime, settings)
    if guard.token is None and not guard.open:
        log.warning(
            "console and /api/ refused: set CONSOLE_TOKEN to serve them on a non-loopback host",
            host=settings.worker_web_host,
        )

    Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Response]])

    def guarded(handler: Handler) -> Handler:
        async def run(self: View, request: Request, **params: Any) -> Response:
            refused = guard.refusal(request)
            if refused is not None:
                status, body, headers = refused
                return self.json(body, status=status, headers=headers)
            try:
                return await handler(self, request, **params)
            except ValueError as exc:  # a bad query parameter
                return self.json({"error": str(exc)}, status=400)

        return cast(Handler, run)

    def headers_of(request: Request) -> dict[str, str]:
        return {k: v for k, v in request.headers.items()}

    @app.page("/api/profiles/{profile_id}")
    class ProfileState(View):
        @guarded
        async def get(self, request: Request, profile_id: str) -> Response:
            routed = request.headers.get(ROUTED_HEADER) == "1"
            status, body = await service.profile(profile_id, headers_of(request), routed)
            return self.json(body, status=status)

    @app.page("/api/profiles/{profile_id}/inspect")
    class ProfileInspect(View):
        @guarded
        async def get(self, request: Request, profile_id: str) -> Response:
            status, body = await service.inspect(profile_id, _since(request), headers_of(request))
            return self.json(body, status=status)

    @app.page("/api/live")
    class LiveCounts(View):
        @guarded
        async def get(self, request: Request) -> Response:
            live = service.local_live()
            rows = [{"journey_id": j, "activity_id": a, "count": n} for (j, a), n in live.items()]
            return self.json({"live": rows})

    @app.page("/api/journeys")
    class Journeys(View):
        @guarded
        async def get(self, request: Request) -> Response:
            journeys = await service.journeys(headers_of(request))
            return self.json({"journeys": journeys, "window_hours": 24})

    @app.page("/api/journeys/{journey_id}")
    class Journey(View):
        @guarded
        async def get(self, request: Request, journey_id: str) -> Response:
            journey = await service.journey(journey_id, headers_of(request))
            if journey is None:
                return self.json({"error": f"no journey {journey_id!r} is deployed"}, status=404)
            return self.json(journey)

    # The page itself holds no data (it fetches /api/ with the token it asks for), so it is
    # served to anyone the guard lets in, or who has a token to give.
    async def page(self: View, request: Request, **params: Any) -> Response:
        if guard.token is None and not guard.open:
            refused = guard.refusal(request)
            assert refused is not None
            return self.json(refused[1], status=refused[0])
        return self.html(console_page(needs_token=guard.token is not None))

    for path in (
        "/console",
        "/console/",
        "/console/journeys/{journey_id}",
        "/console/profiles/{profile_id}",
    ):
        app.page(path)(type(f"ConsolePage{len(path)}", (View,), {"get": page}))
