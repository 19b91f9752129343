"""The journey test runner: expectations that hold and fail, bad files, the example suites."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.core.loader import JourneyValidationError
from engine.testing.expect import CaseResult, run_suite
from engine.testing.suite import find_test_files, load_suite

ROOT = Path(__file__).resolve().parents[4]

# A journey with every effect kind: an HTTP call, a message, a wait on its status, a jump.
ORDERS = """
id: orders
name: Order follow-up
entry: {event: order.placed}
reentry: {mode: always}
exit_on: [{event: order.cancelled}]
timeout: 3d
frequency_cap: {channel: whatsapp, max: 1, per: 1d}
quiet_hours: {start: '21:00', end: '09:00', timezone: profile, action: skip}
start: notify-crm
activities:
  notify-crm:
    type: http
    method: POST
    url: https://crm.example.com/orders
    body: {order: 'event.data.order_id'}
    timeout: 10s
    next: thank
    on_error: done
  thank:
    type: whatsapp
    template: welcome
    language: en
    parameters: {body: ['profile.first_name']}
    next: wait-read
  wait-read: {type: wait_for_event, event: whatsapp.read, timeout: 1h, next: done,
              on_timeout: hand-over}
  hand-over: {type: jump, journey: survey}
  done: {type: end}
"""
SURVEY = """
id: survey
name: Survey
entry: {event: survey.requested}
start: linger
activities:
  linger: {type: wait, duration: 5d, next: bye}
  bye: {type: end}
"""
TEMPLATES = """
- {name: welcome, language: en, category: utility, body: 'Hi {{1}}!'}
"""
HEAD = """journey: orders.yaml
also: [survey.yaml]
templates: templates.yaml
now: "2026-03-02T10:00:00Z"
cases:
"""
ANA = """    profile: {id: ana, attributes: {phone: "+34600111222", first_name: Ana,
                                     timezone: Europe/Madrid, whatsapp_consent: opted_in}}
"""
READ = (
    """  - name: read
"""
    + ANA
    + """    events: [{type: order.placed, data: {order_id: o-1}}]
    deliveries: [{activity: thank, status: read, after: 2m}]
    expect:
"""
)


def write(tmp_path: Path, cases: str, journey: str = ORDERS) -> Path:
    (tmp_path / "orders.yaml").write_text(journey)
    (tmp_path / "survey.yaml").write_text(SURVEY)
    (tmp_path / "templates.yaml").write_text(TEMPLATES)
    path = tmp_path / "orders.test.yaml"
    path.write_text(HEAD + cases)
    return path


def run_one(tmp_path: Path, cases: str, journey: str = ORDERS) -> CaseResult:
    (result,) = run_suite(load_suite(write(tmp_path, cases, journey)))
    return result


PASSING = {
    "messages": """      messages: [{activity: thank, template: welcome, language: en,
                  at: "2026-03-02T10:00:00Z", body: [Ana]}]""",
    "path": "      path: [notify-crm, thank, wait-read, done]",
    "exit": "      exit: completed",
    "skipped": "      skipped: []",
    "http": """      http: [{activity: notify-crm, method: POST, url: "https://crm.example.com/orders",
              body: {order: o-1}}]""",
}
FAILING = {
    "messages": "      messages: [{activity: thank, body: [Eva]}]",
    "path": "      path: [notify-crm, thank, done]",
    "exit": "      exit: timeout",
    "skipped": "      skipped: [{activity: thank, reason: quiet_hours}]",
    "http": "      http: [{activity: notify-crm, method: GET}]",
}


@pytest.mark.parametrize("kind", sorted(PASSING))
def test_each_expectation_kind_passes(tmp_path: Path, kind: str) -> None:
    result = run_one(tmp_path, READ + PASSING[kind] + "\n")
    assert result.passed, [m.lines() for m in result.mismatches]


@pytest.mark.parametrize("kind", sorted(FAILING))
def test_each_expectation_kind_fails_showing_both_sides(tmp_path: Path, kind: str) -> None:
    result = run_one(tmp_path, READ + FAILING[kind] + "\n")
    assert [m.key for m in result.mismatches] == [kind]
    text = "\n".join(result.mismatches[0].lines())
    assert text.startswith(f"{kind}:\n  expected: ")
    assert "\n  actual:   " in text


def test_a_failure_reads_in_one_go(tmp_path: Path) -> None:
    result = run_one(tmp_path, READ + FAILING["messages"] + "\n" + FAILING["path"] + "\n")
    lines = [line for m in result.mismatches for line in m.lines()]
    assert lines == [
        "path:",
        "  expected: notify-crm > thank > done",
        "  actual:   notify-crm > thank > wait-read > done",
        "messages:",
        "  expected: thank  body ['Eva']",
        "  actual:   thank  welcome/en  at 2026-03-02T10:00:00Z  body ['Ana']  (read)",
    ]


def test_no_read_times_out_and_the_jump_is_followed_in_the_path(tmp_path: Path) -> None:
    cases = (
        "  - name: unread\n"
        + ANA
        + """    events: [{type: order.placed, data: {order_id: o-1}}]
    expect:
      path: [notify-crm, thank, wait-read, hand-over, "survey:linger", "survey:bye"]
      exit: jumped
"""
    )
    result = run_one(tmp_path, cases)
    assert result.passed, [m.lines() for m in result.mismatches]
    assert result.trace.exits("survey") == ["completed"]


def test_http_error_and_timeout_take_on_error(tmp_path: Path) -> None:
    cases = ""
    for status in ("503", "timeout"):
        cases += (
            f"  - name: crm {status}\n"
            + ANA
            + f"""    events: [{{type: order.placed, data: {{order_id: o-1}}}}]
    responses: [{{activity: notify-crm, status: {status}, after: 1s}}]
    expect: {{path: [notify-crm, done], messages: [], exit: completed}}
"""
        )
    results = run_suite(load_suite(write(tmp_path, cases)))
    assert [r.passed for r in results] == [True, True]
    assert [s.occurred_at.second for s in results[1].trace.steps if s.kind == "exited"] == [10]


def test_quiet_hours_skip_frequency_cap_and_reentry(tmp_path: Path) -> None:
    cases = (
        "  - name: policies\n"
        + ANA
        + """    events:
      - {at: "2026-03-02T10:00:00Z", type: order.placed, data: {order_id: o-1}}
      - {after: 1h, type: order.placed, data: {order_id: o-2}}        # capped: 1 a day
      - {at: "2026-03-03T21:30:00Z", type: order.placed, data: {order_id: o-3}}  # 22:30 Madrid
    deliveries: [{activity: thank, status: read, after: 1m}]
    expect:
      messages: [{activity: thank, at: "2026-03-02T10:00:00Z"}]
      skipped: [{activity: thank, reason: frequency_capped}, {activity: thank, reason: quiet_hours}]
"""
    )
    result = run_one(tmp_path, cases)
    assert result.passed, [m.lines() for m in result.mismatches]
    assert result.trace.entries("orders") == 3  # reentry: always


def test_exit_criteria_consent_and_journey_timeout(tmp_path: Path) -> None:
    waiting = ORDERS.replace("timeout: 1h, next: done", "timeout: 5d, next: done")
    cases = """  - name: cancelled
    profile: {id: bo, attributes: {phone: "+34600111223", first_name: Bo,
                                   whatsapp_consent: opted_out}}
    events:
      - {type: order.placed, data: {order_id: o-1}}
      - {after: 1h, type: order.cancelled}
    expect: {exit: exit_event, messages: [], skipped: [{activity: thank, reason: opted_out}]}
  - name: the 3-day journey timeout ends a 5-day wait
    profile: {id: cy, attributes: {phone: "+34600111224", first_name: Cy}}
    events: [{type: order.placed, data: {order_id: o-1}}]
    expect: {exit: timeout, skipped: [{activity: thank, reason: no_consent}]}
"""
    results = run_suite(load_suite(write(tmp_path, cases, waiting)))
    assert [[m.lines() for m in r.mismatches] for r in results] == [[], []]


def test_template_check_fails_a_send_the_sandbox_would_refuse(tmp_path: Path) -> None:
    journey = ORDERS.replace("parameters: {body: ['profile.first_name']}", "parameters: {}")
    result = run_one(tmp_path, READ + PASSING["skipped"] + "\n", journey)
    assert [m.key for m in result.mismatches] == ["templates"]
    assert "132000" in result.mismatches[0].actual[0]
    assert result.trace.messages[0].status == "failed"


BAD = [
    (
        "cases:\n  - name: x\n    expect: {exist: completed}\n",
        "orders.test.yaml:7:14",
        "unknown field",
    ),
    (
        "cases:\n  - name: x\n    events: [{type: a.b, after: soon}]\n",
        "orders.test.yaml:7:33",
        "invalid duration",
    ),
    (
        "cases:\n  - name: x\n    expect: {path: [notify-crm, thnak]}\n",
        "orders.test.yaml:7:33",
        "no activity 'thnak'",
    ),
    (
        'cases:\n  - name: x\n    events:\n      - {at: "2026-03-02T11:00:00Z", type: a.b}\n'
        '      - {at: "2026-03-02T10:00:00Z", type: a.b}\n',
        "orders.test.yaml:9:14",
        "before the previous event",
    ),
    ("cases: [{name: x}\n", "orders.test.yaml:6:1", "invalid YAML"),
]


@pytest.mark.parametrize(("cases", "where", "message"), BAD)
def test_bad_test_files_say_where(tmp_path: Path, cases: str, where: str, message: str) -> None:
    path = write(tmp_path, "")
    path.write_text(HEAD.replace("cases:\n", "") + cases)
    with pytest.raises(JourneyValidationError) as caught:
        load_suite(path)
    (problem,) = caught.value.problems
    assert str(problem).startswith(f"{tmp_path}/{where}: "), str(problem)
    assert message in str(problem)


def test_a_missing_journey_file_points_at_its_key(tmp_path: Path) -> None:
    path = write(tmp_path, READ + PASSING["exit"] + "\n")
    path.write_text(path.read_text().replace("journey: orders.yaml", "journey: order.yaml"))
    with pytest.raises(JourneyValidationError) as caught:
        load_suite(path)
    assert str(caught.value).startswith(f"{path}:1:10: journey: no journey file at ")


def test_every_example_test_passes() -> None:
    files = find_test_files([str(ROOT / "examples")])
    assert len(files) >= 3
    for file in files:
        for result in run_suite(load_suite(file)):
            assert result.passed, (file, result.name, [m.lines() for m in result.mismatches])


def test_a_text_reply_outside_the_24_hour_window_is_skipped(tmp_path: Path) -> None:
    """The runner sends every request through the connector's policy, window included."""
    from datetime import timedelta

    from engine.testing.runner import _Run
    from schemas.messages import SendRequest

    suite = load_suite(write(tmp_path, READ + PASSING["exit"] + "\n"))
    now = suite.start
    run = _Run(suite.simulator, "ana", {"phone": "+34600111222"}, (), ())
    for hours in (23, 25):
        run.send(
            SendRequest(
                message_id=f"reply-{hours}",
                journey_id="whatsapp-keywords",
                journey_version=0,
                activity_id="help",
                profile_id="ana",
                kind="text",
                to="+34600111222",
                text="Reply STOP to unsubscribe.",
                requested_at=now,
                trigger_at=now - timedelta(hours=hours),
            ),
            now,
        )
    assert [m.message_id for m in run.trace.messages] == ["reply-23"]
    assert [(s.activity_id, s.reason) for s in run.trace.skips] == [("help", "outside_window")]
