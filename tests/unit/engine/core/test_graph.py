"""Journeys drawn as Mermaid: every activity type, edge labels, counts and escaping."""

from __future__ import annotations

from engine.core.graph import to_mermaid
from engine.core.loader import parse_journey

EVERY_KIND = """
id: all-kinds
name: All kinds
entry: {event: signup, condition: 'event.data.plan == "pro"'}
start: end
activities:
  end: {type: wait, duration: 90m, next: check}
  check:
    type: condition
    branches:
      - {when: 'profile.language == "es" && has(profile.first_name) && profile.first_name != ""',
         next: ab}
    else: until
    on_error: stop
  ab: {type: split, paths: [{weight: 1, next: send, name: "A<b>"}, {weight: 2, next: until}]}
  send: {type: whatsapp, template: welcome, language: es, next: listen, on_error: stop}
  until: {type: wait, until: 'now + duration("1h")', next: listen}
  listen: {type: wait_for_event, event: whatsapp.read, timeout: 2d, next: call, on_timeout: go}
  call: {type: http, url: 'https://api.example.com/v1/hooks/a#b', next: stop, on_error: go}
  go: {type: jump, journey: other}
  stop: {type: end}
"""


def test_every_activity_type_is_drawn_with_its_shape_and_labelled_edges():
    assert to_mermaid(parse_journey(EVERY_KIND)) == (
        "flowchart TD\n"
        '    entry(("on signup if event.data.plan == #quot;pro#quot;"))\n'
        '    a_end(["wait 90m"])\n'
        '    a_check{"check?"}\n'
        '    a_ab[/"split ab"\\]\n'
        '    a_send("WhatsApp welcome/es")\n'
        '    a_until(["wait until now + duration(#quot;1h#quot;)"])\n'
        '    a_listen{{"wait for whatsapp.read ≤ 2d"}}\n'
        '    a_call[["POST api.example.com/v1/hooks/a#35;b"]]\n'
        '    a_go>"jump to other"]\n'
        '    a_stop((("end")))\n'
        "    entry --> a_end\n"
        "    a_end --> a_check\n"
        '    a_check -->|"profile.language == #quot;es#quot; #amp;#amp; has(profile…"| a_ab\n'
        '    a_check -->|"else"| a_until\n'
        '    a_check -->|"on error"| a_stop\n'
        '    a_ab -->|"A#lt;b#gt;: 33.33%"| a_send\n'
        '    a_ab -->|"66.67%"| a_until\n'
        "    a_send --> a_listen\n"
        '    a_send -->|"on error"| a_stop\n'
        "    a_until --> a_listen\n"
        '    a_listen -->|"whatsapp.read"| a_call\n'
        '    a_listen -->|"timeout"| a_go\n'
        '    a_call -->|"ok"| a_stop\n'
        '    a_call -->|"on error"| a_go\n'
    )


def test_counts_are_appended_to_the_labels_of_the_activities_that_have_them():
    text = to_mermaid(parse_journey(EVERY_KIND), {"end": 1200, "stop": 3, "unknown": 9})
    assert '    a_end(["wait 90m (1,200)"])\n' in text
    assert '    a_stop((("end (3)")))\n' in text
    assert '    a_send("WhatsApp welcome/es")\n' in text
    assert "unknown" not in text


def test_ids_that_differ_only_in_punctuation_get_distinct_nodes():
    journey = parse_journey(
        """
id: twins
name: Twins
entry: {event: go}
start: wait-1h
activities:
  wait-1h: {type: wait, duration: 1h, next: wait_1h}
  wait_1h: {type: wait, duration: 2h, next: done}
  done: {type: end}
"""
    )
    assert to_mermaid(journey).splitlines() == [
        "flowchart TD",
        '    entry(("on go"))',
        '    a_wait_1h(["wait 1h"])',
        '    a_wait_1h_2(["wait 2h"])',
        '    a_done((("end")))',
        "    entry --> a_wait_1h",
        "    a_wait_1h --> a_wait_1h_2",
        "    a_wait_1h_2 --> a_done",
    ]
