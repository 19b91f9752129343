"""Bad input, each with one clear outcome: a dead letter with its reason, a 4xx, a skipped
delivery with its reason, an instance that ends with reason `error`, or a validation error
naming file, line and field. Nothing crashes the worker and nothing good is lost behind it.

Every bad profile event is followed by a good `ping` event with the same key (so on the same
partition, processed after it): all the pings must complete, and a sign-up sent after all
the bad records must still produce its WhatsApp request.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from aiohttp import web

from connectors.whatsapp.signature import sign
from connectors.whatsapp.webhook import build_webhook_app, new_producer
from engine.core.loader import JourneyValidationError, parse_journey
from tests.reliability.support import (
    APP_SECRET,
    TopicTail,
    deploy,
    open_tail,
    reliability_stack,
    signup,
)
from tests.support.builders import phone, profile_event
from tests.support.kafka import ROOT, Stack, Worker, produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PING = """\
id: ping
name: Ping
entry: {event: ping}
reentry: {mode: always}
start: done
activities:
  done: {type: end}
"""
JUMPER = """\
id: jumper
name: Jumps to a journey nobody deployed
entry: {event: jump.requested}
start: hop
activities:
  hop: {type: jump, journey: nowhere}
"""
CEL_MISSING_FIELD = """\
id: cel-missing
name: A condition over a field the event lacks, with an on_error path
entry: {event: cel.missing}
start: check
activities:
  check:
    type: condition
    branches: [{when: 'event.data.cart.total > 3.0', next: done}]
    else: done
    on_error: recover
  recover: {type: end}
  done: {type: end}
"""
CEL_WRONG_TYPE = """\
id: cel-type
name: A condition over a field of the wrong type, no on_error path
entry: {event: cel.type}
start: check
activities:
  check:
    type: condition
    branches: [{when: 'event.data.total > 3.0', next: done}]
    else: done
  done: {type: end}
"""
TEMPLATE_EMPTY = """\
id: tpl-empty
name: A template parameter that renders empty
entry: {event: tpl.empty}
start: send
activities:
  send: {type: whatsapp, template: welcome, language: es, parameters: {body: ['profile.nickname']}, next: done}
  done: {type: end}
"""
WELCOME_NOW = """\
id: welcome
name: Welcome
entry: {event: user.signed_up}
start: send
activities:
  send: {type: whatsapp, template: welcome, language: es, parameters: {body: ['profile.first_name']}, next: done}
  done: {type: end}
"""


@dataclass(frozen=True)
class Case:
    """One bad profile event: its key and bytes, and the outcome it must have.

    `outcome` is where to look (dead_letter, ignored, step, skipped); `reason` is a regular
    expression the whole reason (dead letter), detail (step) or title (skip) must match.
    """

    name: str
    key: str
    value: bytes
    outcome: str
    reason: str
    extra: dict[str, Any] = field(default_factory=dict)


def _json(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload)


def _at(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat().replace("+00:00", "Z")


def _exact(text: str) -> str:
    return re.escape(text)


LARGE = _json(profile_event("e-large", "ping", "p-large", data={"blob": "x" * 70_000}))

CASES = [
    Case(
        "malformed_json",
        "p-bad-json",
        b'{"event_id": "bad-1", "type": ',
        "dead_letter",
        _exact("malformed JSON"),
    ),
    Case(
        "wrong_types",
        "p-wrong-types",
        _json(
            {
                "event_id": 7,
                "type": "user.signed_up",
                "profile_id": "p-wrong-types",
                "occurred_at": _at(timedelta(0)),
                "data": [1, 2],
            }
        ),
        "dead_letter",
        _exact(
            "invalid profile event: event_id: Input should be a valid string; "
            "data: Input should be an object"
        ),
    ),
    Case(
        "missing_profile_id",
        "p-missing",
        _json({"event_id": "e-missing", "type": "ping", "occurred_at": _at(timedelta(0))}),
        "dead_letter",
        _exact("invalid profile event: profile_id: Field required"),
    ),
    Case(
        "too_large",
        "p-large",
        LARGE,
        "dead_letter",
        _exact(f"event too large: {len(LARGE)} bytes (limit 65536)"),
    ),
    Case(
        "far_future",
        "p-future",
        _json(profile_event("e-future", "ping", "p-future", occurred_at=_at(timedelta(days=2)))),
        "dead_letter",
        r"event 'e-future' occurred at \S+, more than 1h after \S+: check the sender's clock",
    ),
    Case(
        "far_past",
        "p-past",
        _json(profile_event("e-past", "ping", "p-past", occurred_at="2020-01-01T00:00:00Z")),
        "dead_letter",
        r"event 'e-past' occurred at 2020-01-01T00:00:00\+00:00, more than 91d before \S+",
    ),
    Case(
        "phone_not_e164",
        "p-phone",
        _json(profile_event("e-phone", "ping", "p-phone", attributes={"phone": "600111222"})),
        "dead_letter",
        _exact(
            "invalid profile event: attributes.phone: Value error, phone numbers must be in "
            "E.164 form: '+' then country code and number"
        ),
    ),
    Case(
        "unknown_event_type",
        "p-unknown",
        _json(profile_event("e-unknown", "nobody.listens", "p-unknown")),
        "ignored",
        "",
    ),
    Case(
        "jump_to_unknown_journey",
        "p-jump",
        _json(profile_event("e-jump", "jump.requested", "p-jump")),
        "step",
        _exact("jump target 'nowhere' not found"),
        {"journey": "jumper", "activity": "hop", "outcome": "target_not_found", "exit": "error"},
    ),
    Case(
        "cel_missing_field_takes_on_error",
        "p-cel-missing",
        _json(profile_event("e-cel-missing", "cel.missing", "p-cel-missing", data={"items": 3})),
        "step",
        _exact(
            "expression 'event.data.cart.total > 3.0' failed: no such key 'cart' "
            "(guard it with has())"
        ),
        {"journey": "cel-missing", "activity": "check", "outcome": "error", "exit": "completed"},
    ),
    Case(
        "cel_wrong_type_ends_with_error",
        "p-cel-type",
        _json(profile_event("e-cel-type", "cel.type", "p-cel-type", data={"total": "a lot"})),
        "step",
        r"expression 'event\.data\.total > 3\.0' failed: No such overload: .*",
        {"journey": "cel-type", "activity": "check", "outcome": "error", "exit": "error"},
    ),
    Case(
        "template_parameter_renders_empty",
        "p-tpl",
        _json(
            profile_event(
                "e-tpl",
                "tpl.empty",
                "p-tpl",
                attributes={"phone": phone(1), "whatsapp_consent": "opted_in", "nickname": " "},
            )
        ),
        "skipped",
        _exact("body parameter 1 (profile.nickname): rendered empty"),
        {"skip_reason": "template_error"},
    ),
]
DEAD = [c for c in CASES if c.outcome == "dead_letter"]


def ping(key: str, n: int) -> tuple[str, bytes]:
    return key, _json(profile_event(f"ping-{key}-{n}", "ping", key))


@dataclass
class EngineRun:
    stack: Stack
    worker: Worker
    dead: TopicTail
    steps: TopicTail
    deliveries: TopicTail
    requests: TopicTail
    changelog: dict[str, dict[str, Any]]
    receiver_url: str
    http: httpx.AsyncClient
    alive_after: bool

    def steps_of(self, profile_id: str) -> list[dict[str, Any]]:
        return [s for s in self.steps.values() if s["profile_id"] == profile_id]


async def _read_changelog(stack: Stack) -> dict[str, dict[str, Any]]:
    """The engine's profiles table as its changelog holds it: profile id -> stored state."""
    reader = await open_tail(stack.bootstrap, f"{stack.env['APP_ID']}-profiles-changelog")
    try:
        await reader.settle(1.0)
        return {r.key: r.value["state"] for r in reader.records if r.key is not None}
    finally:
        await reader.consumer.stop()


@pytest_asyncio.fixture(scope="module")
async def run(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[EngineRun]:
    """One engine worker fed every bad event (each followed by a good ping), then a sign-up."""
    stack = reliability_stack(kafka_bootstrap, uuid.uuid4().hex[:10], {})
    await deploy(
        stack, PING, JUMPER, CEL_MISSING_FIELD, CEL_WRONG_TYPE, TEMPLATE_EMPTY, WELCOME_NOW
    )
    worker = Worker(stack, tmp_path_factory.mktemp("bad-input"), role="engine").start()
    producer_settings = stack.settings
    producer = new_producer(producer_settings)
    await producer.start()
    runner = web.AppRunner(
        build_webhook_app(producer_settings, producer, unknown_wamid_grace=0.2), access_log=None
    )
    try:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        receiver_url = f"http://127.0.0.1:{runner.addresses[0][1]}/webhooks/whatsapp"
        tails = [
            await open_tail(stack.bootstrap, stack.env[name])
            for name in (
                "TOPIC_DEAD_LETTER",
                "TOPIC_JOURNEY_STEPS",
                "TOPIC_DELIVERY_EVENTS",
                "TOPIC_WHATSAPP_REQUESTS",
            )
        ]
        dead, steps, deliveries, requests = tails
        records: list[tuple[str, bytes]] = []
        for n, case in enumerate(CASES):
            records += [(case.key, case.value), ping(case.key, n)]
        last_pid, last = signup(1, prefix="p-after-all")
        records.append((last_pid, _json(last)))
        await produce(stack.bootstrap, stack.env["TOPIC_PROFILE_EVENTS"], records)

        await requests.until(lambda t: len(t.records) >= 1, seconds=90, watch=[worker])
        await steps.until(
            lambda t: (
                sum(1 for s in t.values() if s["journey_id"] == "ping" and s["kind"] == "exited")
                >= len(CASES)
            ),
            seconds=30,
            watch=[worker],
        )
        await dead.until(lambda t: len(t.records) >= len(DEAD), seconds=30, watch=[worker])
        for reader in tails:
            await reader.settle(0.5)
        changelog = await _read_changelog(stack)
        async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
            yield EngineRun(
                stack,
                worker,
                dead,
                steps,
                deliveries,
                requests,
                changelog,
                receiver_url,
                http,
                worker.alive(),
            )
    finally:
        for reader in tails:
            await reader.consumer.stop()
        await runner.cleanup()
        await producer.stop()
        worker.kill()


# --- profile events ------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
async def test_a_bad_profile_event_has_one_clear_outcome(run: EngineRun, case: Case) -> None:
    letters = [d for d in run.dead.values() if d["key"] == case.key]
    steps = run.steps_of(case.key)
    if case.outcome == "dead_letter":
        [letter] = letters
        assert re.fullmatch(case.reason, letter["reason"]), letter["reason"]
        assert letter["component"] == "engine"
        assert letter["source_topic"] == run.stack.env["TOPIC_PROFILE_EVENTS"]
        assert base64.b64decode(letter["value_base64"]) == case.value  # kept whole
        assert [s["journey_id"] for s in steps if s["kind"] == "entered"] == ["ping"]
    elif case.outcome == "ignored":
        # Processed (the stored state lists the event) and ignored: no journey, no dead letter.
        assert letters == []
        assert "e-unknown" in run.changelog[case.key]["seen_event_ids"]
        assert [s["journey_id"] for s in steps if s["kind"] == "entered"] == ["ping"]
    elif case.outcome == "step":
        assert letters == []
        journey = case.extra["journey"]
        [activity] = [
            s
            for s in steps
            if s["journey_id"] == journey
            and s["kind"] == "activity"
            and s["activity_id"] == case.extra["activity"]
        ]
        assert activity["outcome"] == case.extra["outcome"]
        assert re.fullmatch(case.reason, activity["detail"]), activity["detail"]
        [exited] = [s for s in steps if s["journey_id"] == journey and s["kind"] == "exited"]
        assert exited["reason"] == case.extra["exit"]
        if case.extra["exit"] == "error":
            assert re.fullmatch(case.reason, exited["detail"]), exited["detail"]
    elif case.outcome == "skipped":
        assert letters == []
        [skip] = [d for d in run.deliveries.values() if d["profile_id"] == case.key]
        assert skip["status"] == "skipped"
        assert skip["error"]["reason"] == case.extra["skip_reason"]
        assert re.fullmatch(case.reason, skip["error"]["title"]), skip["error"]["title"]
        assert not [r for r in run.requests.values() if r["profile_id"] == case.key]
    else:  # pragma: no cover - a typo in CASES
        raise AssertionError(case.outcome)


async def test_the_worker_survives_and_nothing_good_is_lost(run: EngineRun) -> None:
    assert run.alive_after and run.worker.alive(), run.worker.log_text()[-3000:]
    completed = {
        s["profile_id"]
        for s in run.steps.values()
        if s["journey_id"] == "ping" and s["kind"] == "exited" and s["reason"] == "completed"
    }
    assert completed == {c.key for c in CASES}, "a good event behind a bad one was lost"
    [request] = run.requests.values()
    assert request["message_id"] == "welcome:1:p-after-all-1:send:1"
    assert len(run.dead.records) == len(DEAD)


# --- webhooks ------------------------------------------------------------------------


def _status(wamid: str, status: str, callback: dict[str, Any] | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": wamid,
        "status": status,
        "timestamp": str(int(time.time())),
        "recipient_id": "34610000001",
    }
    if callback is not None:
        entry["biz_opaque_callback_data"] = orjson.dumps(callback).decode()
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "200000000000001",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"phone_number_id": "100000000000001"},
                            "statuses": [entry],
                        },
                    }
                ],
            }
        ],
    }


CALLBACK = {
    "message_id": "hooks:1:p-hook:send:1",
    "journey_id": "hooks",
    "journey_version": 1,
    "activity_id": "send",
    "profile_id": "p-hook",
}


@dataclass(frozen=True)
class Hook:
    name: str
    body: bytes
    secret: str
    status: int
    text: str


def _hook(name: str, payload: bytes, status: int, text: str, secret: str = APP_SECRET) -> Hook:
    return Hook(name, payload, secret, status, text)


HOOKS = [
    _hook(
        "bad_signature", _json(_status("wamid.FORGED", "read", CALLBACK)), 401, "bad signature", "x"
    ),
    _hook("bad_json", b'{"entry": [', 400, "body is not JSON"),
    _hook("unknown_wamid", _json(_status("wamid.NOBODY-KNOWS", "delivered", None)), 200, "OK"),
]


async def _post(run: EngineRun, body: bytes, secret: str) -> httpx.Response:
    headers = {"X-Hub-Signature-256": sign(secret, body), "Content-Type": "application/json"}
    return await run.http.post(run.receiver_url, content=body, headers=headers)


@pytest.mark.parametrize("hook", HOOKS, ids=lambda h: h.name)
async def test_a_bad_webhook_has_one_clear_answer(run: EngineRun, hook: Hook) -> None:
    before = len(run.deliveries.records)
    response = await _post(run, hook.body, hook.secret)
    assert (response.status_code, response.text) == (hook.status, hook.text)
    await run.deliveries.settle(0.5)
    assert len(run.deliveries.records) == before, "a refused webhook produced a delivery event"
    if hook.name == "unknown_wamid":
        await run.dead.until(
            lambda t: any(d["key"] == "wamid.NOBODY-KNOWS" for d in t.values()), seconds=10
        )
        [letter] = [d for d in run.dead.values() if d["key"] == "wamid.NOBODY-KNOWS"]
        assert (letter["reason"], letter["component"]) == ("unknown wamid", "whatsapp-webhook")
        assert orjson.loads(letter["value_text"])["status"] == "delivered"


async def test_a_replayed_webhook_is_not_emitted_again(run: EngineRun) -> None:
    body = _json(_status("wamid.REPLAYED", "delivered", CALLBACK))
    for _ in range(3):
        response = await _post(run, body, APP_SECRET)
        assert (response.status_code, response.text) == (200, "OK")
    await run.deliveries.until(
        lambda t: any(d["wamid"] == "wamid.REPLAYED" for d in t.values()), seconds=10
    )
    await run.deliveries.settle(1.0)
    emitted = [d for d in run.deliveries.values() if d["wamid"] == "wamid.REPLAYED"]
    assert [(d["message_id"], d["status"]) for d in emitted] == [
        ("hooks:1:p-hook:send:1", "delivered")
    ]


# --- journey YAML --------------------------------------------------------------------

BASE = """\
id: promo
name: Promo
entry: {event: promo.targeted}
start: send
activities:
  send: {type: whatsapp, template: welcome, language: es, next: done}
  done: {type: end}
"""


def _edit(old: str, new: str) -> Callable[[str], str]:
    def apply(text: str) -> str:
        assert old in text
        return text.replace(old, new)

    return apply


def _chain(*edits: Callable[[str], str]) -> str:
    text = BASE
    for edit in edits:
        text = edit(text)
    return text


LONG_CHAIN = "".join(f"  s{i}: {{type: wait, duration: 1s, next: s{i + 1}}}\n" for i in range(50))

# name -> (YAML text, every problem as `FILE:LINE:COLUMN: field: message`)
YAML_CASES: dict[str, tuple[str, list[str]]] = {
    "invalid_yaml": (
        "id: promo\nname: [unclosed\n",
        ["{f}:3:1: <journey>: invalid YAML: expected ',' or ']', but got '<stream end>'"],
    ),
    "not_a_mapping": (
        "- just\n- a list\n",
        ["{f}:1:1: <journey>: a journey file holds one YAML mapping (id, name, entry, ...)"],
    ),
    "empty_file": (
        "",
        ["{f}:1:1: <journey>: a journey file holds one YAML mapping (id, name, entry, ...)"],
    ),
    "duplicate_key": (
        _chain(_edit("name: Promo\n", "name: Promo\nname: Again\n")),
        ["{f}:3:1: name: duplicate key: the later value would hide the earlier"],
    ),
    "unknown_field": (
        _chain(_edit("start: send", "start: send\ncolour: blue")),
        ["{f}:5:1: colour: unknown field"],
    ),
    "missing_field": (
        _chain(_edit("name: Promo\n", "")),
        ["{f}:1:1: name: required field is missing"],
    ),
    "bad_id": (
        _chain(_edit("id: promo", "id: Promo_1")),
        ["{f}:1:5: id: String should match pattern '^[a-z0-9][a-z0-9-]*$'"],
    ),
    "unknown_activity_type": (
        _chain(_edit("type: end", "type: sms")),
        [
            "{f}:7:16: activities.done.type: unknown activity type 'sms'; expected one of "
            "'wait', 'condition', 'wait_for_event', 'split', 'whatsapp', 'http', 'jump', 'end'"
        ],
    ),
    "activity_without_type": (
        _chain(_edit("{type: end}", "{next: send}")),
        ["{f}:7:9: activities.done: activity has no 'type'"],
    ),
    "bad_duration": (
        _chain(
            _edit("start: send", "start: pause"),
            _edit(
                "activities:\n", "activities:\n  pause: {type: wait, duration: soon, next: send}\n"
            ),
        ),
        [
            "{f}:6:33: activities.pause.duration: invalid duration 'soon': use a whole number "
            "and a unit, like 30s, 15m, 1h or 7d"
        ],
    ),
    "bad_language": (
        _chain(_edit("language: es", "language: Spanish")),
        [
            "{f}:6:55: activities.send.language: String should match pattern '^[a-z]{{2,3}}(_[A-Z]{{2}})?$'"
        ],
    ),
    "bad_cel": (
        _chain(
            _edit(
                "{event: promo.targeted}",
                "{event: promo.targeted, condition: 'event.data.total >'}",
            )
        ),
        [
            "{f}:3:43: entry.condition: invalid CEL expression 'event.data.total >': Syntax error: "
            "mismatched input '<EOF>' expecting {{'[', '{{', '(', '.', '-', '!', 'true', 'false', "
            "'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}} (at column 19)"
        ],
    ),
    "missing_start": (
        _chain(_edit("start: send", "start: nope")),
        ["{f}:4:8: start: start activity 'nope' is not defined in activities"],
    ),
    "transition_to_missing_activity": (
        _chain(_edit("next: done}", "next: nowhere}")),
        [
            "{f}:6:65: activities.send.next: transition to missing activity 'nowhere'",
            "{f}:7:9: activities.done: activity 'done' is unreachable from start",
        ],
    ),
    "unreachable_activity": (
        BASE + "  orphan: {type: end}\n",
        ["{f}:8:11: activities.orphan: activity 'orphan' is unreachable from start"],
    ),
    "cycle_without_wait": (
        _chain(
            _edit("start: send", "start: a"),
            _edit(
                "activities:\n",
                "activities:\n"
                "  a: {type: condition, branches: [{when: 'true', next: b}], else: send}\n"
                "  b: {type: condition, branches: [{when: 'true', next: a}], else: send}\n",
            ),
        ),
        ["{f}:6:6: activities.a: cycle passes no wait: a -> b -> a"],
    ),
    "too_many_activities": (
        _chain(
            _edit("  done: {type: end}\n", LONG_CHAIN + "  s50: {type: end}\n"),
            _edit("next: done}", "next: s0}"),
        ),
        ["{f}:6:3: activities: a journey has at most 50 activities; this one has 52"],
    ),
    "timeout_over_91_days": (
        _chain(_edit("start: send", "start: send\ntimeout: 92d")),
        ["{f}:5:10: timeout: the journey timeout cannot exceed 91d"],
    ),
    "reentry_after_without_wait": (
        _chain(_edit("start: send", "start: send\nreentry: {mode: after}")),
        [
            "{f}:5:10: reentry: reentry mode 'after' needs a wait, for example "
            "{{mode: after, wait: 7d}}"
        ],
    ),
    "bad_quiet_hours": (
        _chain(_edit("start: send", "start: send\nquiet_hours: {start: '25:00', end: '09:00'}")),
        ["{f}:5:22: quiet_hours.start: invalid time '25:00': use 24-hour HH:MM, like '21:00'"],
    ),
}


@pytest.mark.parametrize("name", list(YAML_CASES))
def test_a_bad_journey_names_file_line_and_field(name: str) -> None:
    text, expected = YAML_CASES[name]
    filename = f"journeys/{name}.yaml"
    with pytest.raises(JourneyValidationError) as caught:
        parse_journey(text, filename)
    assert [str(p) for p in caught.value.problems] == [e.format(f=filename) for e in expected]


def test_journeyctl_validate_prints_every_problem_and_exits_1(tmp_path: Path) -> None:
    for name, (text, _) in YAML_CASES.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    files = sorted(str(p) for p in tmp_path.glob("*.yaml"))
    out = subprocess.run(
        [sys.executable, "-m", "engine.cli", "validate", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    expected = sorted(
        e.format(f=str(tmp_path / f"{name}.yaml"))
        for name, (_, problems) in YAML_CASES.items()
        for e in problems
    )
    assert sorted(lines[:-1]) == expected
    assert lines[-1] == f"error: {len(expected)} problem(s) in {len(YAML_CASES)} file(s)"
