"""The Chat tab in a real browser with a chat model: two turns in each pane's conversation, then Clear empties all
three panes."""

import pytest

from app_server import serving
from browser import launch, missing, tab
from chat_models import with_template
from curlora.experiment import ExperimentConfig
from tiny_experiment import make_experiment

REASON = missing()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")
PANES = ("base", "lora", "curlora")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chat-browser")
    d = make_experiment(folder / "exp", steps=2)
    d["model"] = {"name": str(with_template(folder / "exp" / "model", folder / "chat-model"))}
    with serving(folder / "runs") as (url, jobs):
        run_id = jobs.submit(ExperimentConfig.from_dict(d))
        assert jobs.wait(run_id, timeout=300) and jobs.status(run_id)["status"] == "completed"
        yield url, run_id


def messages(page, pane: str, role: str):
    return page.locator(f"#pane-{pane} [data-testid='{role}']")


def test_each_pane_keeps_its_conversation_and_clear_resets_all_three(served):
    from playwright.sync_api import expect, sync_playwright

    url, run_id = served
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(60_000)
        page.goto(url)
        tab(page, "Chat")
        pick = page.locator("#chat-run input")
        pick.fill(run_id)
        pick.press("Enter")
        expect(page.locator("#chat-mode")).to_contain_text("chat template")
        page.locator("#chat-system textarea").fill("Answer briefly.")
        for n, text in enumerate(["the king", "and the people"], start=1):
            page.locator("#chat-prompt textarea").fill(text)
            page.locator("#chat-send").click()
            for pane in PANES:  # a busy machine (a study beside the suite) takes seconds to start a turn
                expect(messages(page, pane, "user")).to_have_count(n, timeout=60_000)
                expect(messages(page, pane, "bot")).to_have_count(n, timeout=60_000)
                expect(messages(page, pane, "user").nth(n - 1)).to_contain_text(text)
            expect(page.locator("#chat-prompt textarea")).to_have_value("")  # the box is emptied for the next turn
            for pane in PANES:  # every pane has finished its reply (the last pane streams last)
                expect(messages(page, pane, "bot").nth(n - 1)).not_to_have_text("…", timeout=60_000)
        page.locator("#chat-clear").click()
        for pane in PANES:
            expect(messages(page, pane, "user")).to_have_count(0)
            expect(messages(page, pane, "bot")).to_have_count(0)
        assert page.locator("text=Traceback").count() == 0
        browser.close()
