"""Screenshots of every tab at 1280×800 for the README, from a real run in the system Chromium.

    .venv/bin/python docs/screenshots/take.py [MODEL [--short]]   # default: the bundled model, else a tiny random one

Runs the app on a free loopback port with a throw-away data directory, clicks through the quick demo (the three
demo tasks, CURLoRA and LoRA, the Train tab's defaults = presets/experiments/quick-demo.yaml; --short: 24 steps),
waits for the run to finish, evaluates a stage on new data, then saves docs/screenshots/<tab>.png.
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
DATA = Path(tempfile.mkdtemp(prefix="curlora-shots-"))
os.environ["CURLORA_DATA_DIR"] = str(DATA / "runs")

import torch  # noqa: E402
from app_server import serve  # noqa: E402
from browser import launch, missing, set_model, set_number, tab  # noqa: E402

torch.set_num_threads(1)


def main() -> int:
    if missing():
        print(missing())
        return 1
    from playwright.sync_api import expect, sync_playwright

    from curlora.models.loading import bundled_models

    model = sys.argv[1] if len(sys.argv) > 1 else next(iter(bundled_models()), None)
    if model is None:
        from tiny_models import save_tiny_llama_dir

        model = str(save_tiny_llama_dir(DATA / "tiny-model"))
    demo, url, jobs = serve(DATA / "runs")
    try:
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(120_000)
            page.goto(url)
            set_model(page, model)
            expect(page.locator("#model-info")).to_contain_text("parameters")
            page.screenshot(path=HERE / "model.png")
            tab(page, "2 · Tasks")
            page.locator("#add-demo-tasks").click()
            expect(page.locator("#task-list")).to_contain_text("answers")
            page.screenshot(path=HERE / "tasks.png")
            tab(page, "3 · Train")
            if len(sys.argv) > 2 and sys.argv[2] == "--short":  # a quick look, not the quick demo's own settings
                set_number(page, "steps per task", 24)
                set_number(page, "probe earlier tasks every N steps (0: off)", 8)
            page.locator("#start").click()
            expect(page.locator("#run-progress")).to_contain_text("running")
            run_id = page.locator("#run-id textarea").input_value()
            jobs.wait(run_id)
            expect(page.locator("#run-progress")).to_contain_text("completed")
            page.wait_for_timeout(1500)
            page.locator("#progress").scroll_into_view_if_needed()
            page.screenshot(path=HERE / "train.png")
            page.screenshot(path=HERE / "train-full.png", full_page=True)
            tab(page, "Results")
            expect(page.locator("#results-summary")).to_contain_text("curlora")
            page.wait_for_timeout(1500)
            page.screenshot(path=HERE / "results.png")
            page.screenshot(path=HERE / "results-full.png", full_page=True)
            # Evaluate a finished stage on new data: CURLoRA after task 3 on the reviews eval file.
            page.locator("#results-evaluate").get_by_text("Evaluate a stage on new data").click()
            page.locator("#eval-file input[type=file]").set_input_files(
                str(REPO / "assets" / "tasks" / "reviews" / "eval.csv"))
            page.locator("#eval-run").click()
            expect(page.locator("#eval-result")).to_contain_text("accuracy", timeout=120_000)
            page.locator("#results-evaluate").scroll_into_view_if_needed()
            page.wait_for_timeout(500)
            page.screenshot(path=HERE / "results-evaluate.png")
            tab(page, "Chat")
            page.wait_for_timeout(1000)
            page.locator("#chat-prompt textarea").fill("And the king said")
            page.locator("#chat-send").click()
            page.wait_for_timeout(1000)
            reply = page.locator("#pane-curlora [data-testid='bot']")
            expect(reply).to_have_count(1, timeout=120_000)
            expect(reply).not_to_have_text("…", timeout=120_000)
            page.wait_for_timeout(3000)
            page.screenshot(path=HERE / "chat.png")
            tab(page, "Runs")
            page.wait_for_timeout(500)
            page.screenshot(path=HERE / "runs.png")
            browser.close()
    finally:
        demo.close()
    print("saved", ", ".join(sorted(p.name for p in HERE.glob("*.png"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
