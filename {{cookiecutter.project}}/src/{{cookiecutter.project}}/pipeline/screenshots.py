"""Cards as a person sees them: each HTML card rendered in a headless Chromium and saved as PNG,
with what the page measured (its width; tables without a filled row), so a test can tell a card
that looks broken at a laptop's width from one that reads well.

The browser is the system's Chromium (or Chrome): playwright only drives it, it downloads nothing.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ProjectError

BROWSERS = ("chromium", "chromium-browser", "google-chrome")  # Debian, Ubuntu, GitHub's runners
MACOS_CHROME = Path("/Applications/Google Chrome.app/Contents/MacOS/Google Chrome")  # not on PATH
WIDTH = 1400  # px: a laptop's browser window
# No sandbox (root in containers and CI), no GPU, and none of the browser's own network calls.
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
INSTALL_HINT = "install Chromium (Debian/Ubuntu: apt-get install chromium) or Google Chrome"
# How wide the page really is: its scroll width, or further right where a table, image or code
# block runs past it (a card's container may clip it instead of scrolling: the page then looks
# narrow enough, but the table's last columns are cut off).
_CONTENT_WIDTH = """() => Math.max(document.documentElement.scrollWidth,
    ...[...document.querySelectorAll('table, img, pre')]
        .map(element => element.getBoundingClientRect().right))"""
# Per table: does a body row hold a non-empty cell? (Metaflow's cards render with JavaScript.)
_TABLES_FILLED = """() => [...document.querySelectorAll('table')].map(table =>
    [...table.querySelectorAll('tr')].some(row =>
        [...row.querySelectorAll('td')].some(cell => cell.textContent.trim() !== '')))"""


class ScreenshotError(ProjectError, RuntimeError):
    """Cards cannot be screenshotted here; the message says what to install or run."""


@dataclass(frozen=True)
class PageShot:
    """One card as rendered: its PNG and what the page measured."""

    page: Path
    png: Path
    width: int  # px to the right edge of its content: wider than the window scrolls or clips
    tables: int
    empty_tables: int  # tables without a single row of non-empty cells


def find_browser() -> str | None:
    """The path of the first Chromium-family browser on PATH (or macOS' Chrome), or None."""
    on_path = next(filter(None, map(shutil.which, BROWSERS)), None)
    return on_path or (str(MACOS_CHROME) if MACOS_CHROME.is_file() else None)


def screenshot_pages(
    pages: Sequence[Path], out_dir: Path, width: int = WIDTH, max_height: int | None = None
) -> list[PageShot]:
    """Render each HTML file `width` px wide and save `<out_dir>/<name>.png` of the whole page
    (its top `max_height` px when given)."""
    browser_path = find_browser()
    if browser_path is None:
        raise ScreenshotError(f"No browser found ({', '.join(BROWSERS)}): {INSTALL_HINT}.")
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    shots = []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=browser_path, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            for html in pages:
                page.goto(html.resolve().as_uri(), wait_until="load")
                page.wait_for_load_state("networkidle")
                png = out_dir / f"{html.stem}.png"
                height = page.evaluate("document.documentElement.scrollHeight")
                clip = {"x": 0, "y": 0, "width": width, "height": min(height, max_height or height)}
                page.screenshot(path=png, full_page=True, clip=clip)
                filled = page.evaluate(_TABLES_FILLED)
                shots.append(
                    PageShot(
                        page=html,
                        png=png,
                        width=round(page.evaluate(_CONTENT_WIDTH)),
                        tables=len(filled),
                        empty_tables=filled.count(False),
                    )
                )
        finally:
            browser.close()
    return shots
