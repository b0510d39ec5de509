"""The web page in a real browser: Debian's chromium (installed by `make browser`) driven by Playwright."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from lookalike.server.run import start_background
from lookalike.server.service import ServerConfig

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
TOKEN = "browser-test-token"
CAPTION = re.compile(r"^(accordion|airplanes|Leopards|pizza|sunflower) · [01]\.\d\d$")


@pytest.fixture(scope="module")
def page_url(five_category_collection):
    """The page of a token-protected server, opened as its printed link: the token becomes a cookie
    that the page's own requests (events, thumbnails) must carry."""
    server = start_background(ServerConfig(str(five_category_collection), token=TOKEN))
    yield f"{server.url}/?token={TOKEN}"
    server.stop()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail("chromium is missing: run `make browser` (part of `make test`)")
    from playwright.sync_api import sync_playwright

    from playwright.sync_api import expect

    expect.set_options(timeout=60_000)  # generous: the machine may be busy
    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        yield chromium
        chromium.close()


def captions(page) -> list[str]:
    return [c.strip() for c in page.locator("#lookalike-results .caption-label").all_inner_texts()]


def test_upload_see_captioned_results_click_one_for_more(page_url, browser, held_back_queries):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)
    page.goto(page_url)
    expect(page.locator("#lookalike-header")).to_contain_text("60 photos")
    expect(page.locator("#lookalike-header")).to_contain_text("efficientnet_lite0")

    page.locator("#lookalike-query input[type=file]").set_input_files(held_back_queries["sunflower"])
    results = page.locator("#lookalike-results img")
    expect(results).to_have_count(12)
    expect(results.first).to_have_js_property("complete", True)
    shown = captions(page)
    assert len(shown) == 12 and all(CAPTION.match(c) for c in shown), shown
    assert shown[0].startswith("sunflower · ")
    scores = [float(c.split(" · ")[1]) for c in shown]
    assert scores == sorted(scores, reverse=True)
    assert page.locator("#lookalike-results img").first.evaluate("img => img.naturalWidth") > 0  # thumbnail loaded
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-search.png"), full_page=True)

    clicked = page.locator("#lookalike-results .caption-label").nth(4)
    clicked_category = clicked.inner_text().split(" · ")[0]
    page.locator("#lookalike-results img").nth(4).click()
    expect(page.locator("#lookalike-status")).to_contain_text("More like")
    expect(page.locator("#lookalike-results .caption-label").first).to_have_text(re.compile(r"· 1\.00$"))
    after = captions(page)
    assert after != shown and after[0] == f"{clicked_category} · 1.00"
    page.screenshot(path=str(ARTIFACTS / "browser-more-like-this.png"), full_page=True)
    page.close()


def test_errors_show_in_the_page(page_url, browser, held_back_queries, tmp_path):
    from playwright.sync_api import expect

    photo = held_back_queries["pizza"].read_bytes()
    broken = tmp_path / "truncated.jpg"
    broken.write_bytes(photo[: len(photo) // 3])
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)
    page.goto(page_url)
    expect(page.locator("#lookalike-header")).to_contain_text("60 photos")
    page.locator("#lookalike-query input[type=file]").set_input_files(broken)
    expect(page.locator("#lookalike-status")).to_contain_text("truncated or corrupt image data")
    expect(page.locator("#lookalike-results img")).to_have_count(0)
    assert "Traceback" not in page.content()
    page.close()
