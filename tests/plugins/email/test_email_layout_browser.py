"""The built-in templates in a real headless Chromium at 375 px and 600 px: no horizontal scrolling.

Screenshots are written to tmp_path (kept by pytest for inspection).
"""

from __future__ import annotations

import pytest
from email_testkit import VARIABLES

from plugboard.plugins.email.keys import EMAIL

WIDTHS = (375, 600)


@pytest.fixture
async def browser():
    import os
    import shutil

    from playwright.async_api import async_playwright

    for candidate in (os.environ.get("PLUGBOARD_CHROMIUM"), "/usr/bin/chromium", "chromium", "chromium-browser"):
        if candidate and (executable := shutil.which(candidate)):
            break
    else:
        pytest.fail("chromium is not installed (apt-get install -y chromium); the layout test needs it")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
        )
        try:
            yield browser
        finally:
            await browser.close()


async def test_builtin_templates_fit_375_and_600_px(make_email_app, start_app, browser, tmp_path):
    app = await start_app(make_email_app())
    long_word = {"username": "Maximilian-Alexander Featherstonehaugh-Worthington"}
    for name, variables in VARIABLES.items():
        rendered = await app[EMAIL].preview(name, {**variables, **({} if name == "newsletter" else long_word)})
        for width in WIDTHS:
            page = await browser.new_page(viewport={"width": width, "height": 800})
            try:
                await page.set_content(rendered.html, wait_until="load")
                scroll_width = await page.evaluate("document.documentElement.scrollWidth")
                await page.screenshot(path=str(tmp_path / f"{name}-{width}.png"), full_page=True)
            finally:
                await page.close()
            assert scroll_width <= width, f"{name} scrolls horizontally at {width}px ({scroll_width}px wide)"
    assert len(list(tmp_path.glob("*.png"))) == len(VARIABLES) * len(WIDTHS)
