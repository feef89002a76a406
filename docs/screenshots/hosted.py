"""A screenshot of the limits panel of a hosted app, for docs/reliability.md.

    .venv/bin/python docs/screenshots/hosted.py          # writes docs/screenshots/hosted-limits.png

Serves the app as a Space would (CURLORA_MULTI_USER=1: hosted rules and the hosted default limits of
curlora/serve/limits.py) over a throw-away run store, opens "Who sees what, and this server's limits" and saves the
page at 1280 wide, tall enough for the whole table.
"""

import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ["CURLORA_MULTI_USER"] = "1"


def main() -> int:
    from app_server import serve
    from browser import launch, missing

    if missing():
        print(missing())
        return 1
    from playwright.sync_api import expect, sync_playwright

    store = Path(tempfile.mkdtemp(prefix="curlora-hosted-")) / "runs"
    demo, url, _ = serve(store)
    try:
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(url)
            page.get_by_text("Who sees what, and this server's limits").click()
            expect(page.locator("#limits")).to_contain_text("estimates, evaluations, exports")
            page.wait_for_timeout(500)
            box = page.locator("#limits").bounding_box()
            page.set_viewport_size({"width": 1280, "height": int(box["y"] + box["height"] + 40)})
            page.screenshot(path=HERE / "hosted-limits.png", full_page=False)
            browser.close()
    finally:
        demo.close()
    print(HERE / "hosted-limits.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
