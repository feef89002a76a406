"""Playwright on the system Chromium (never a downloaded browser): launch options and small page helpers shared by
the browser test and docs/screenshots/take.py."""

import shutil
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -r requirements-dev.txt)"
    if not CHROMIUM.exists() and not shutil.which("chromium"):
        return "no system Chromium at /usr/bin/chromium (apt-get install chromium)"
    return None


# how long an assertion waits for the page to get there: Playwright's 5 s default failed in CI when the suite's four
# workers shared 2 cores (a run's id took longer than 5 s to appear after Start); an assertion that holds returns at
# once, so only a failing one waits this long
EXPECT_TIMEOUT_MS = 45_000


def launch(playwright):
    from playwright.sync_api import expect

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)


def tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def set_number(page, label: str, value) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Tab")


def set_model(page, name: str) -> None:
    tab(page, "1 · Model")
    box = page.locator("#model-name input")
    box.fill(name)
    box.press("Enter")
    page.wait_for_timeout(300)
