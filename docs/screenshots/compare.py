"""A screenshot of the Compare tab drawing a finished study, for the README and docs/demo-study.md.

    .venv/bin/python docs/screenshots/compare.py RUN_STORE      # e.g. the CURLORA_DATA_DIR of a demo study
    .venv/bin/python docs/screenshots/compare.py STORE compare-smollm2.png --width 1560   # a study pack, unpacked
    .venv/bin/python docs/screenshots/compare.py STORE compare-smollm2.png --width 1560 --pick FRONTIER_ID \
        --with EDGE_ID                                   # two studies of one experiment, analysed as one

Serves the app on a free loopback port over that run store, opens Compare (the newest study is picked) and saves
docs/screenshots/compare.png (or the name given) at 1280×1100 (or the width given); `--pick` picks that study,
`--with` (repeatable) adds studies to analyse together with it. For a committed study pack:
`CURLORA_DATA_DIR=STORE python -m curlora study --unpack docs/studies/smollm2-frontier` first.
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def main() -> int:
    store = Path(sys.argv[1]).resolve()
    name = sys.argv[2] if len(sys.argv) > 2 and not sys.argv[2].startswith("--") else "compare.png"
    width = int(sys.argv[sys.argv.index("--width") + 1]) if "--width" in sys.argv else 1280
    pick = sys.argv[sys.argv.index("--pick") + 1] if "--pick" in sys.argv else None
    others = [sys.argv[i + 1] for i, a in enumerate(sys.argv) if a == "--with"]
    os.environ["CURLORA_DATA_DIR"] = str(store)
    from app_server import serve
    from browser import launch, missing, tab

    if missing():
        print(missing())
        return 1
    from playwright.sync_api import expect, sync_playwright

    demo, url, _ = serve(store)
    try:
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(viewport={"width": width, "height": 1100})
            page.set_default_timeout(60_000)
            page.goto(url)
            tab(page, "Compare")
            expect(page.locator("#study-frontier")).to_contain_text("runs finished")
            for box, value in ([("#study-pick", pick)] if pick else []) + [("#study-with", o) for o in others]:
                field = page.locator(f"{box} input")
                field.click()
                field.fill(value)
                page.get_by_role("option", name=value).click()
                page.locator("#study-summary").click()  # away, as a user would: the next box opens afresh
                page.wait_for_timeout(500)
                if box == "#study-with":  # its analysis done before the next study is added
                    expect(page.locator("#study-summary")).to_contain_text(value, timeout=180_000)
            page.wait_for_timeout(1500)
            page.locator("#study-frontier").scroll_into_view_if_needed()
            page.screenshot(path=HERE / name, full_page=False)
            browser.close()
    finally:
        demo.close()
    print(HERE / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
