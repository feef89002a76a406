"""Screenshots of a finished SmolLM2 run in the app: the Model tab (what SmolLM2 is, measured) and the Chat tab
with the same questions to the base model, LoRA and CURLoRA after the last task.

    .venv/bin/python docs/screenshots/real_chat.py RUNS_DIR RUN_ID
    .venv/bin/python docs/screenshots/real_chat.py RUNS_DIR RUN_ID --other RUN_ID2 --prefix chat-study --stage 3

RUNS_DIR is the store holding the run (e.g. the one `python -m curlora run presets/experiments/real-demo.yaml`
wrote to); the app serves it on a free loopback port. Writes docs/screenshots/{model-smollm2,chat-smollm2-*}.png.
--other fills the right pane from another run on the same base (a study's points hold one method each; implies
--chat-only), --prefix names the files ({prefix}-{question}.png), --stage picks the stage (default: the last).
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from app_server import serve  # noqa: E402
from browser import launch, missing, set_model, tab  # noqa: E402

QUESTIONS = [("paris", "What is the capital of France?"),
             ("review", "Is this review positive or negative? \"The toaster broke after two days.\""),
             ("steps", "Give me three tips for learning to cook.")]


def main() -> int:
    if missing():
        print(missing())
        return 1
    from playwright.sync_api import expect, sync_playwright

    root, run_id = Path(sys.argv[1]), sys.argv[2]
    flag = lambda name: sys.argv[sys.argv.index(name) + 1] if name in sys.argv else None  # noqa: E731
    other, prefix, stage = flag("--other"), flag("--prefix") or "chat-smollm2", flag("--stage")
    demo, url, jobs = serve(root)
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(300_000)
        page.goto(url)
        if "--chat-only" not in sys.argv and other is None:
            set_model(page, "smollm2-135m-instruct")
            expect(page.locator("#model-info")).to_contain_text("Measured by this project")
            page.screenshot(path=HERE / "model-smollm2.png", full_page=True)
        for name, text in QUESTIONS:  # a fresh page per question: each pane's conversation starts empty
            page.goto(url)
            tab(page, "Chat")
            pick = page.locator("#chat-run input")
            expect(pick).not_to_have_value("")  # entering the tab picks the newest run: let that finish first
            page.wait_for_timeout(3000)
            pick.fill(run_id)
            pick.press("Enter")
            expect(page.locator("#chat-mode")).to_contain_text("SmolLM")
            if other:
                second = page.locator("#chat-run2 input")
                second.fill(other)
                second.press("Enter")
                expect(page.locator("#pane-curlora")).to_contain_text(f"(run {other})")
            if stage:
                box = page.get_by_role("spinbutton", name="After task k (stage)")
                box.fill(stage)
                box.press("Enter")
            box = page.get_by_role("spinbutton", name="max new tokens")  # the slider's number box
            box.fill("96")
            box.press("Enter")
            page.locator("#chat-prompt textarea").fill(text)
            page.locator("#chat-send").click()
            for pane in ("base", "lora", "curlora"):
                bot = page.locator(f"#pane-{pane} [data-testid='bot']")
                expect(bot).to_have_count(1)
                expect(bot.nth(0)).not_to_have_text("…", timeout=300_000)
            expect(page.locator("#chat-prompt textarea")).to_have_value("")
            last, same = None, 0
            while same < 4:  # the last pane streams last: wait until its text has stopped growing for 4 s
                page.wait_for_timeout(1000)
                now = page.locator("#pane-curlora [data-testid='bot']").nth(0).inner_text()
                same = same + 1 if now == last else 0
                last = now
            page.screenshot(path=HERE / f"{prefix}-{name}.png", full_page=True)
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
