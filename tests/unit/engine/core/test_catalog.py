"""The journey catalog: versions, status records in any order, and the entry index."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engine.core.catalog import CompiledJourney, DeploymentRejected, JourneyCatalog
from schemas.deployment import JourneyDeployment
from tests.unit import T0, at, deployment

WELCOME = """
id: welcome
name: Welcome
entry: {event: signup, condition: 'has(event.data.plan)'}
exit_on: [{event: account.closed, condition: 'trigger.data.final'}]
frequency_cap: {channel: whatsapp, max: 3, per: 7d}
start: hello
activities:
  hello:
    type: whatsapp
    template: welcome
    language: es
    parameters: {body: ['profile.first_name']}
    next: done
  done: {type: end}
"""
WINBACK = """
id: winback
name: Win back
entry: {event: signup}
frequency_cap: {channel: whatsapp, max: 10, per: 1d}
start: done
activities:
  done: {type: end}
"""
ORDERS = WINBACK.replace("winback", "orders").replace("event: signup", "event: order.placed")


def test_apply_adds_versions_and_current_is_the_newest():
    catalog = JourneyCatalog()
    catalog.apply(deployment(WELCOME, version=1, deployed_at=at("0s")))
    catalog.apply(
        deployment(
            WELCOME.replace("template: welcome\n", "template: welcome_v2\n"),
            version=2,
            deployed_at=at("1h"),
        )
    )
    current = catalog.current("welcome")
    assert isinstance(current, CompiledJourney)
    assert (current.journey_id, current.version, current.status, current.deployed_at) == (
        "welcome",
        2,
        "active",
        at("1h"),
    )
    assert current.definition.activities["hello"].template == "welcome_v2"  # type: ignore[union-attr]
    old = catalog.get("welcome", 1)
    assert old is not None and old.definition.activities["hello"].template == "welcome"  # type: ignore[union-attr]
    assert catalog.get("welcome", 3) is None
    assert (
        catalog.get("nope", 1) is None
        and catalog.current("nope") is None
        and catalog.status("nope") is None
    )
    assert catalog.versions("welcome") == [1, 2]


def test_versions_arriving_out_of_order_still_make_the_highest_current():
    catalog = JourneyCatalog()
    catalog.apply(deployment(WELCOME, version=2, deployed_at=at("1h")))
    catalog.apply(deployment(WELCOME, version=1, deployed_at=at("0s")))
    assert catalog.current("welcome").version == 2  # type: ignore[union-attr]
    assert catalog.status("welcome") == "active"


def test_a_status_record_for_an_older_version_sets_the_journeys_status():
    catalog = JourneyCatalog()
    catalog.apply(deployment(WELCOME, version=1, deployed_at=at("0s")))
    catalog.apply(deployment(WELCOME, version=2, deployed_at=at("1h")))
    catalog.apply(deployment(WELCOME, version=1, status="paused", deployed_at=at("2h")))
    assert catalog.status("welcome") == "paused"
    assert catalog.current("welcome").version == 2  # type: ignore[union-attr]
    assert catalog.current("welcome").status == "paused"  # type: ignore[union-attr]
    assert catalog.get("welcome", 1).status == "paused"  # type: ignore[union-attr]
    assert catalog.entries_for("signup") == []


def test_an_old_record_replayed_late_does_not_bring_back_an_old_status():
    catalog = JourneyCatalog()
    catalog.apply(deployment(WELCOME, version=2, status="archived", deployed_at=at("3h")))
    catalog.apply(deployment(WELCOME, version=1, status="active", deployed_at=at("0s")))
    catalog.apply(deployment(WELCOME, version=2, status="active", deployed_at=at("1h")))
    assert catalog.status("welcome") == "archived"
    assert [catalog.get("welcome", v).status for v in (1, 2)] == ["archived", "archived"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("records", "status"),
    [
        ([("active", "0s"), ("paused", "1h")], "paused"),
        ([("active", "0s"), ("paused", "1h"), ("active", "2h")], "active"),
        ([("active", "0s"), ("archived", "1h")], "archived"),
        ([("paused", "1h"), ("active", "0s")], "paused"),
        ([("active", "1h"), ("paused", "1h")], "paused"),  # same instant: the later record wins
    ],
)
def test_status_follows_the_most_recent_record(records, status):
    catalog = JourneyCatalog()
    for record_status, when in records:
        catalog.apply(deployment(WELCOME, status=record_status, deployed_at=at(when)))
    assert catalog.status("welcome") == status
    assert (catalog.entries_for("signup") != []) is (status == "active")


def test_entries_for_is_an_index_of_active_journeys_by_entry_event():
    catalog = JourneyCatalog()
    for text in (WELCOME, WINBACK, ORDERS):
        catalog.apply(deployment(text))
    assert [j.journey_id for j in catalog.entries_for("signup")] == ["welcome", "winback"]
    assert [j.journey_id for j in catalog.entries_for("order.placed")] == ["orders"]
    assert catalog.entries_for("nothing") == []
    catalog.apply(deployment(WINBACK, status="paused", deployed_at=T0))
    assert [j.journey_id for j in catalog.entries_for("signup")] == ["welcome"]
    # A new version that changes the entry event moves the journey in the index.
    catalog.apply(
        deployment(
            WELCOME.replace("event: signup", "event: trial.started"), version=2, deployed_at=T0
        )
    )
    assert catalog.entries_for("signup") == []
    assert [(j.journey_id, j.version) for j in catalog.entries_for("trial.started")] == [
        ("welcome", 2)
    ]


def test_iterating_lists_each_journeys_current_version():
    catalog = JourneyCatalog()
    catalog.apply(deployment(WINBACK))
    catalog.apply(deployment(WELCOME, version=1))
    catalog.apply(deployment(WELCOME, version=4))
    assert [(j.journey_id, j.version) for j in catalog] == [("welcome", 4), ("winback", 1)]
    assert len(catalog) == 2
    assert "welcome" in catalog and "nope" not in catalog


def test_expressions_are_compiled_when_a_version_is_applied():
    catalog = JourneyCatalog()
    catalog.apply(deployment(WELCOME))
    compiled = catalog.current("welcome")
    assert compiled is not None
    assert set(compiled.programs) == {
        "has(event.data.plan)",
        "trigger.data.final",
        "profile.first_name",
    }
    assert compiled.exit_types == frozenset({"account.closed"})


def test_a_record_whose_definition_belongs_to_another_journey_is_rejected():
    good = deployment(WELCOME)
    bad = JourneyDeployment.model_construct(**{**dict(good), "journey_id": "other"})
    catalog = JourneyCatalog()
    with pytest.raises(
        DeploymentRejected, match="deployment of 'other' carries the definition of 'welcome'"
    ):
        catalog.apply(bad)
    assert len(catalog) == 0


def test_the_catalog_knows_the_longest_and_largest_frequency_caps():
    catalog = JourneyCatalog()
    assert (catalog.longest_cap_window, catalog.largest_cap) == (timedelta(0), 0)
    catalog.apply(deployment(WELCOME))
    catalog.apply(deployment(WINBACK))
    assert (catalog.longest_cap_window, catalog.largest_cap) == (timedelta(days=7), 10)


READ_WAIT = """
id: read-wait
name: Wait for the read
entry: {event: signup}
exit_on: [{event: whatsapp.failed}]
start: hello
activities:
  hello:
    type: whatsapp
    template: welcome
    language: es
    next: read
  read: {type: wait_for_event, event: whatsapp.read, timeout: 1d, next: done, on_timeout: done}
  done: {type: end}
"""


def test_listens_to_the_entries_waits_and_exits_of_every_version():
    catalog = JourneyCatalog()
    assert not catalog.listens_to("signup")
    catalog.apply(deployment(READ_WAIT, version=1, deployed_at=at("0s")))
    assert catalog.listens_to("signup")
    assert catalog.listens_to("whatsapp.read") and catalog.listens_to("whatsapp.failed")
    assert not catalog.listens_to("whatsapp.delivered")
    # Version 2 waits for nothing, but version 1's instances still may: still heard.
    catalog.apply(
        deployment(WINBACK.replace("winback", "read-wait"), version=2, deployed_at=at("1h"))
    )
    assert catalog.listens_to("whatsapp.read") and catalog.listens_to("whatsapp.failed")
    # An entry is heard only while its journey is active; a paused one admits nobody.
    catalog.apply(deployment(ORDERS, version=1, status="paused", deployed_at=at("2h")))
    assert not catalog.listens_to("order.placed")
    catalog.apply(deployment(ORDERS, version=1, status="active", deployed_at=at("3h")))
    assert catalog.listens_to("order.placed")
