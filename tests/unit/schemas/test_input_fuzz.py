"""Fuzz the loaders and the event decoder: any input gives a valid model or a clear error.

Never a hang (each example has a deadline), a crash (any other exception fails the
test) or unbounded memory (inputs are bounded, and the bounded parsers refuse growth).
"""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.whatsapp.sandbox import TemplateFileError, load_templates
from engine.core.loader import JourneyValidationError, parse_campaign, parse_journey
from engine.worker.records import BadRecord, decode_profile_event
from schemas.events import ProfileEvent

ROOT = Path(__file__).resolve().parents[3]
FUZZ = settings(
    max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow], database=None
)
SEED_JOURNEY = (ROOT / "examples/journeys/cart-recovery.yaml").read_text()

# Text made of YAML's structural characters, so the parser goes down its odd paths.
yaml_ish = st.text(
    alphabet=st.sampled_from(list("abc01:-[]{},&*!|>'\"#%@`?\n\t  .<=")), max_size=400
)


def mutated(seed: str) -> st.SearchStrategy[str]:
    """The seed with a slice replaced by fuzz: mostly-valid files reach the validators."""
    return st.tuples(st.integers(0, len(seed)), st.integers(0, 40), yaml_ish).map(
        lambda t: seed[: t[0]] + t[2] + seed[t[0] + t[1] :]
    )


@FUZZ
@given(st.one_of(yaml_ish, st.text(max_size=300), mutated(SEED_JOURNEY)))
def test_the_journey_loader_gives_a_journey_or_located_problems(text: str) -> None:
    try:
        parse_journey(text, "j.yaml")
    except JourneyValidationError as exc:
        assert exc.problems
        assert all(p.file == "j.yaml" and p.line >= 1 and p.column >= 1 for p in exc.problems)


@FUZZ
@given(st.one_of(yaml_ish, mutated("kind: campaign\nid: c\nname: C\n")))
def test_the_campaign_loader_gives_a_campaign_or_located_problems(text: str) -> None:
    try:
        parse_campaign(text, "c.yaml")
    except JourneyValidationError as exc:
        assert all(p.line >= 1 for p in exc.problems)


TEMPLATES = (ROOT / "deploy/sandbox/templates.yaml").read_text()


@settings(FUZZ, max_examples=60)
@given(st.one_of(yaml_ish, mutated(TEMPLATES)))
def test_the_template_loader_gives_templates_or_a_clear_error(text: str) -> None:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        try:
            load_templates(fh.name)
        except TemplateFileError as exc:
            assert str(exc).startswith(fh.name)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "event_id": st.text(max_size=10),
        "type": st.sampled_from(["user.signed_up", "x", "", "Bad Type"]),
        "profile_id": st.text(max_size=10),
        "occurred_at": st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T00:00:00", "soon", 5]),
        "attributes": json_values,
        "data": json_values,
    },
)

valid_event = st.fixed_dictionaries(
    {
        "event_id": st.text(min_size=1, max_size=10),
        "type": st.just("user.signed_up"),
        "profile_id": st.text(min_size=1, max_size=10),
        "occurred_at": st.just("2026-01-01T00:00:00Z"),
    },
    optional={"data": st.dictionaries(st.text(max_size=8), json_values, max_size=4)},
)


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=300),
        event_like.map(lambda d: json.dumps(d).encode()),
        valid_event.map(lambda d: json.dumps(d).encode()),
        st.integers(1, 100_000).map(lambda n: b'{"data":' + b"[" * n),
        st.integers(1, 70_000).map(lambda n: b"1" * n),
    )
)
def test_the_event_decoder_gives_an_event_or_a_reason(value: bytes) -> None:
    try:
        event = decode_profile_event(value)
    except BadRecord as bad:
        assert bad.reason and len(bad.reason) < 2000
    else:
        assert isinstance(event, ProfileEvent)
