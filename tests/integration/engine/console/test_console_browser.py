"""The console in headless Chromium (Debian's, driven by Playwright) against a running worker:
it asks for its token, lists the deployed journeys, its live counts move after events, a
journey page draws the diagram with counts, and a profile page shows the why-lines.
Screenshots of each page go to artifacts/.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Locator, Page, async_playwright, expect

from tests.integration.engine.console.conftest import ConsoleStack, attributes
from tests.support.kafka import ROOT

pytestmark = pytest.mark.integration

ARTIFACTS = ROOT / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")  # deploy/browser/install; Playwright downloads nothing
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "console-test-token"
REFRESH_MS = 20_000  # the page refreshes every 5 s; a count may need a few rounds


@pytest.fixture
def console_token() -> str | None:
    return TOKEN


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    assert CHROMIUM.exists(), "chromium is missing: run deploy/browser/install"  # noqa: ASYNC240
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield launched
        await launched.close()


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"console-{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000


def row(page: Page, journey_id: str) -> Locator:
    return page.locator("tr", has=page.get_by_role("link", name=journey_id, exact=True))


async def test_console_pages_in_chromium(console_stack: ConsoleStack, browser: Browser) -> None:
    s = console_stack
    page = await browser.new_page(viewport={"width": 1366, "height": 768})

    # The page holds no data without the token: it asks for it.
    await page.goto(f"{s.url}/console/")
    await expect(page.get_by_role("heading", name="Console token")).to_be_visible()
    await page.get_by_role("textbox", name="Token").fill("wrong")
    await page.get_by_role("button", name="Use token").click()
    await expect(page.get_by_text("That token was refused.")).to_be_visible()
    await page.get_by_role("textbox", name="Token").fill(TOKEN)
    await page.get_by_role("button", name="Use token").click()

    # The journeys list shows the deployed journeys; live counts move after events.
    await expect(page.get_by_role("heading", name="Journeys", exact=True)).to_be_visible()
    cart = row(page, "cart")
    await expect(cart).to_contain_text("Cart reminder")
    await expect(cart.locator("td").nth(4)).to_have_text("0")
    await s.publish(
        s.event("b1", "cart.abandoned", "p-b1", attributes=attributes("Ana")),
        s.event("b2", "cart.abandoned", "p-b2", attributes=attributes("Eva")),
        s.event("b3", "user.signed_up", "p-no", attributes=attributes("Hans", "de")),
    )
    await expect(cart.locator("td").nth(4)).to_have_text("2", timeout=REFRESH_MS)
    await expect(cart.locator("td").nth(5)).to_have_text("2", timeout=REFRESH_MS)  # entered
    await shot(page, "journeys")

    # A journey page: the diagram with live counts on its steps.
    await cart.get_by_role("link", name="cart").click()
    await expect(page.get_by_role("heading", name="Cart reminder (cart)")).to_be_visible()
    pause = page.locator('svg g.node[data-activity="pause"]')
    await expect(pause).to_contain_text("2 now", timeout=REFRESH_MS)
    await expect(page.locator('svg g.node[data-activity="entry"]')).to_contain_text("2 entered")
    await s.publish(s.event("b4", "order.placed", "p-b1"))
    await expect(pause).to_contain_text("1 now", timeout=REFRESH_MS)
    await shot(page, "journey")

    # A profile page: the inspect timeline and why-lines.
    await page.get_by_label("Profile id").fill("p-no")
    await page.get_by_role("button", name="Inspect").click()
    await expect(page.get_by_role("heading", name="Profile p-no")).to_be_visible()
    refused = page.locator('ul.why li[data-journey="greet"]')
    await expect(refused).to_contain_text("refused at entry of greet by the entry condition")
    await expect(refused).to_have_attribute("data-verdict", "refused")
    await expect(page.get_by_text("+34******222")).to_be_visible()
    await shot(page, "profile-refused")

    await page.goto(f"{s.url}/console/profiles/p-b1")
    exited = page.locator('ul.why li[data-journey="cart"]')
    await expect(exited).to_contain_text("exit event order.placed")
    await expect(exited).to_have_attribute("data-verdict", "exited")
    await expect(
        page.get_by_role("table", name="Steps, messages, dead letters and refusals, oldest first")
    ).to_contain_text("entered cart v1 at pause")
    await shot(page, "profile")
    assert "+34600111222" not in await page.content()
