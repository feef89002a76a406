"""Screenshots of the methods PEFT ships beside CURLoRA and LoRA: the Train tab's grouped methods with the memory
estimate, the Results tab on a finished run of presets/experiments/peers-demo.yaml, and the Model tab's CURLoRA
sampling panel.

    .venv/bin/python docs/screenshots/methods.py RUN_STORE     # a CURLORA_DATA_DIR holding a peers-demo run

Saves docs/screenshots/train-methods.png, results-methods.png and model-sampling.png (1280 wide).
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
    os.environ["CURLORA_DATA_DIR"] = str(store)
    from app_server import serve
    from browser import launch, missing, tab

    if missing():
        print(missing())
        return 1
    from playwright.sync_api import expect, sync_playwright

    run_id = sorted(p.name for p in store.iterdir() if "peers-demo" in p.name)[-1]
    demo, url, _ = serve(store)
    try:
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(90_000)
            page.goto(url)
            tab(page, "Tasks")
            page.get_by_role("button", name="Use the 3 demo tasks").click()
            page.wait_for_timeout(1500)
            tab(page, "Train")
            methods = page.locator("#methods")
            from curlora.methods.registry import method

            for kind in ("mica", "pissa", "corda", "osf", "dora"):
                methods.get_by_label(method(kind).title, exact=True).check()
            expect(page.locator("#memory-estimate")).to_contain_text("at the peak")
            page.wait_for_timeout(1000)
            methods.scroll_into_view_if_needed()
            page.screenshot(path=HERE / "train-methods.png")
            tab(page, "Results")
            page.locator("#results-run input").fill(run_id)
            page.locator("#results-run input").press("Enter")
            expect(page.locator("#results-summary")).to_contain_text("corda")
            page.wait_for_timeout(2000)
            page.screenshot(path=HERE / "results-methods.png", full_page=True)
            tab(page, "Model")
            page.locator("#sampling-panel").click()
            page.get_by_role("button", name="Inspect sampling").click()
            expect(page.locator("#sampling-summary")).to_contain_text("matrices", timeout=120_000)
            page.wait_for_timeout(2000)
            page.locator("#sampling-panel").scroll_into_view_if_needed()
            page.screenshot(path=HERE / "model-sampling.png")
            browser.close()
    finally:
        demo.close()
    for name in ("train-methods", "results-methods", "model-sampling"):
        print(HERE / f"{name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
