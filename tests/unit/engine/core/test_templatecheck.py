"""Journeys and campaigns checked against the account's templates, each problem located."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli.main import main as journeyctl
from engine.core.loader import parse_campaign, parse_journey
from engine.core.templatecheck import check_templates, index
from schemas.templates import Template, TemplateButton, TemplateHeader

TEMPLATES = index(
    [
        Template(name="welcome", language="es", category="utility", body="Hola {{1}}"),
        Template(name="welcome", language="en", category="utility", body="Hi {{1}}"),
        Template(
            name="promo",
            language="es",
            category="marketing",
            header=TemplateHeader(type="text", text="Oferta {{1}}"),
            body="{{1}}, {{2}} de descuento",
            buttons=(
                TemplateButton(type="quick_reply", text="No"),
                TemplateButton(type="url", text="Ver", url="https://x.example/{{1}}"),
            ),
        ),
        Template(name="paused", language="es", category="utility", body="x", status="PAUSED"),
        Template(
            name="photo",
            language="es",
            category="utility",
            header=TemplateHeader(type="image"),
            body="ok",
        ),
    ]
)

JOURNEY = """\
id: j
name: J
entry: {{event: signup}}
start: hello
activities:
  hello:
    type: whatsapp
    template: {template}
    language: {language}
    parameters:
      body: {body}
    next: done
  done: {{type: end}}
"""


def journey(template: str = "welcome", language: str = "es", body: str = "['x']") -> str:
    return JOURNEY.format(template=template, language=language, body=body)


def problems(text: str) -> list[str]:
    return [
        str(p) for p in check_templates(parse_journey(text, "j.yaml"), text, "j.yaml", TEMPLATES)
    ]


def test_a_step_that_matches_its_template_has_no_problem() -> None:
    assert problems(journey()) == []


def test_an_unknown_template_name_is_located_at_the_template_field() -> None:
    assert problems(journey(template="welcom")) == [
        "j.yaml:8:15: activities.hello.template: template 'welcom' does not exist in the "
        "templates file"
    ]


def test_a_missing_language_names_the_languages_there_are() -> None:
    assert problems(journey(language="fr")) == [
        "j.yaml:9:15: activities.hello.language: template 'welcome' has no 'fr' translation "
        "(en, es)"
    ]


def test_a_wrong_body_count_is_located_at_the_body_parameters() -> None:
    assert problems(journey(body="['a', 'b']")) == [
        "j.yaml:11:13: activities.hello.parameters.body: template 'welcome' (es) takes 1 body "
        "parameter; the step gives 2"
    ]


def test_a_template_not_approved_is_a_problem() -> None:
    found = problems(journey(template="paused", body="[]"))
    assert found == [
        "j.yaml:8:15: activities.hello.template: template 'paused' (es) is PAUSED, not APPROVED"
    ]


def test_header_and_button_counts_are_checked() -> None:
    found = problems(journey(template="promo", body="['a', 'b']"))
    assert any("takes 1 header parameter; the step gives 0" in p for p in found)
    assert any("url button 1 needs a parameter" in p for p in found)
    text = journey(template="promo", body="['a', 'b']").replace(
        "      body: ['a', 'b']",
        "      header: ['h']\n      body: ['a', 'b']\n      buttons: ['p', 'c', 'd']",
    )
    assert problems(text) == [
        "j.yaml:13:16: activities.hello.parameters.buttons: template 'promo' (es) has 2 "
        "button(s); the step gives 3 button parameters"
    ]


def test_a_media_header_needs_media() -> None:
    found = problems(journey(template="photo", body="[]"))
    assert found == [
        "j.yaml:7:5: activities.hello.media: template 'photo' (es) has a image header: give media"
    ]


def test_a_campaign_message_is_checked_too() -> None:
    text = """\
kind: campaign
id: c
name: C
audience: {condition: 'true'}
message:
  template: welcome
  language: es
  parameters: {body: []}
"""
    definition = parse_campaign(text, "c.yaml")
    found = [str(p) for p in check_templates(definition, text, "c.yaml", TEMPLATES)]
    assert found == [
        "c.yaml:8:22: message.parameters.body: template 'welcome' (es) takes 1 body "
        "parameter; the step gives 0"
    ]


@pytest.mark.parametrize(
    "command", [["validate"], ["campaign", "validate"], ["deploy"], ["campaign", "deploy"]]
)
def test_validate_and_deploy_with_templates_exit_1_listing_problems(
    tmp_path: Path, command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # deploy never gets there
    templates = tmp_path / "templates.yaml"
    templates.write_text("- {name: welcome, language: es, category: utility, body: 'Hola {{1}}'}\n")
    if command[0] != "campaign":
        source = journey(body="[]")
    else:
        source = (
            "kind: campaign\nid: c\nname: C\naudience: {condition: 'true'}\n"
            "message: {template: welcome, language: en}\n"
        )
    path = tmp_path / "x.yaml"
    path.write_text(source)
    runner = CliRunner()
    if command[-1] == "validate":
        plain = runner.invoke(journeyctl, [*command, str(path)])
        assert plain.exit_code == 0, plain.output
    checked = runner.invoke(journeyctl, [*command, "--templates", str(templates), str(path)])
    assert checked.exit_code == 1
    assert f"{path}:" in checked.output
    assert "template problem(s) in 1 file(s)" in checked.output
