"""Whether a template request goes out now, later or not at all, by what Meta has said.

Checked after the policy and before the call (the connector's step 2b), in this order:

1. Template status (from `whatsapp-controls`): DISABLED is skipped (`template_disabled`);
   PAUSED is skipped (`template_paused`) unless the step says `on_paused: wait`, in which
   case the request waits until the template is reinstated or its `wait_until` passes.
2. A marketing template: a user who stopped marketing messages (131050, the
   user_preferences webhook) is skipped (`marketing_opted_out`); a user Meta limited
   (131049) is skipped as `frequency_capped` until the 24-hour hold ends. The category
   comes from the template's state; an unknown template is not treated as marketing.
3. The messaging limit (WHATSAPP_MESSAGING_LIMIT, else the tier Meta announced): a user
   not reached in the moving window is held while the window is full, until it frees;
   users already reached go through. A user admitted is written to the topic before the
   call, so every worker counts them. Without a limit nothing is counted.

A request that waits calls `on_hold` first, so the connector can go on with other batches.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime

import structlog
from prometheus_client import Counter, Gauge

from connectors.whatsapp.controls import Controls, Record, reach_record, recipient_key
from schemas.messages import SendRequest, SkipReason
from schemas.settings import Settings

log = structlog.get_logger("connectors.whatsapp.gate")

HELD = Counter(
    "whatsapp_connector_held_total",
    "Template sends held back: by the messaging limit, or waiting for a paused template",
    ["reason"],
)
HOLDING = Gauge(
    "whatsapp_connector_holding",
    "Template sends waiting right now, by reason",
    ["reason"],
)

Verdict = tuple[SkipReason, str] | None


class HoldAbandoned(Exception):
    """A rebalance began (or the partition moved) while the request waited: its caller puts
    it back on the requests topic, so whoever owns the partition next decides again."""


class _Hold:
    """A request waiting: counted once (metric, log line, the batch let go), undone at exit."""

    def __init__(
        self, reason: str, on_hold: Callable[[], None], still_mine: Callable[[], bool]
    ) -> None:
        self.reason, self.on_hold, self.started = reason, on_hold, False
        self.still_mine = still_mine

    def ensure_owned(self) -> None:
        if not self.still_mine():
            raise HoldAbandoned(self.reason)

    def start(self, event: str, **fields: object) -> None:
        if self.started:
            return
        self.started = True
        self.on_hold()
        HELD.labels(reason=self.reason).inc()
        HOLDING.labels(reason=self.reason).inc()
        log.info(event, **fields)

    def __enter__(self) -> _Hold:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            HOLDING.labels(reason=self.reason).dec()


class SendGate:
    def __init__(
        self,
        controls: Controls,
        settings: Settings,
        write: Callable[[Record], Awaitable[None]],
        clock: Callable[[], datetime],
        wall: Callable[[], float] = time.time,
        ready: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.ready = ready
        self.controls = controls
        self.settings = settings
        self.write = write
        self.clock = clock
        self.wall = wall

    async def check(
        self,
        request: SendRequest,
        on_hold: Callable[[], None],
        still_mine: Callable[[], bool] = lambda: True,
    ) -> Verdict:
        """None to send now; (reason, title) to skip. May wait first (see module doc); a wait
        whose partition was taken away raises HoldAbandoned (its new owner decides)."""
        if request.kind != "template":
            return None
        if self.ready is not None:
            await self.ready()  # just started: what Meta said so far is still being read
        verdict = await self._template_status(request, on_hold, still_mine)
        if verdict is not None:
            return verdict
        state = self.controls.template(request.template, request.language)
        if state is not None and state.category == "marketing":
            if request.profile_id in self.controls.opted_out:
                return SkipReason.MARKETING_OPTED_OUT, "the user stopped marketing messages"
            until = self.controls.marketing_hold(request.profile_id, self.clock())
            if until is not None:
                title = f"Meta limits marketing messages to this user (131049) until {until:%c}"
                return SkipReason.FREQUENCY_CAPPED, title
        if request.to:
            await self._messaging_limit(request, on_hold, still_mine)
        return None

    async def _template_status(
        self, request: SendRequest, on_hold: Callable[[], None], still_mine: Callable[[], bool]
    ) -> Verdict:
        name, language = request.template, request.language
        state = self.controls.template(name, language)
        with _Hold("template_paused", on_hold, still_mine) as hold:
            while state is not None and state.blocked is not None:
                deadline = request.wait_until
                now = self.clock()
                if state.blocked == "disabled" or request.on_paused != "wait":
                    break
                if deadline is not None and now >= deadline:
                    break
                hold.start("whatsapp.template_paused_wait", template=name, language=language)
                left = (deadline - now).total_seconds() if deadline is not None else 1.0
                await self.controls.changed(min(1.0, left))
                hold.ensure_owned()
                state = self.controls.template(name, language)
        if state is None or state.blocked is None:
            return None
        title = f"template {name} ({language}) is {state.status}"
        if state.blocked == "disabled":
            return SkipReason.TEMPLATE_DISABLED, title
        return SkipReason.TEMPLATE_PAUSED, title

    async def _messaging_limit(
        self, request: SendRequest, on_hold: Callable[[], None], still_mine: Callable[[], bool]
    ) -> None:
        assert request.to is not None
        controls = self.controls
        if controls.limit(self.settings.whatsapp_messaging_limit) is None:
            return  # no limit known: nothing to count (a tier announced later counts from then)
        recipient = recipient_key(request.to)
        if controls.reached(recipient, self.wall()):
            return
        with _Hold("messaging_limit", on_hold, still_mine) as hold:
            while True:
                limit = controls.limit(self.settings.whatsapp_messaging_limit)
                now = self.wall()
                if controls.admit(recipient, limit, now):
                    break
                hold.start(
                    "whatsapp.messaging_limit_hold",
                    message_id=request.message_id,
                    limit=limit,
                    frees_in_seconds=round(controls.frees_in(now), 1),
                )
                await controls.changed(min(0.5, max(0.02, controls.frees_in(now))))
                hold.ensure_owned()
        await self.write(reach_record(recipient, now))
