"""The app in a real browser (system Chromium through Playwright): pick the model and the demo tasks, start,
watch the heatmap appear, refresh the page and find the run re-attached (and the task list kept), stop it, resume
it from the Runs tab until it completes, evaluate a stage on new data, and chat with the three panes."""

import re
import time

import pytest

from app_server import serving
from browser import launch, missing, set_model, set_number, tab
from tiny_experiment import make_experiment

REASON = missing()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser")
    make_experiment(folder / "exp")
    with serving(folder / "runs") as (url, jobs):
        yield url, folder, jobs


@pytest.fixture
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(60_000)
        yield page
        browser.close()


def test_start_watch_refresh_reattach_stop(server, page):
    from playwright.sync_api import expect

    url, folder, jobs = server
    page.goto(url)
    set_model(page, str(folder / "exp" / "model"))
    expect(page.locator("#model-info")).to_contain_text("LlamaForCausalLM")
    tab(page, "2 · Tasks")
    page.locator("#add-demo-tasks").click()
    expect(page.locator("#task-list")).to_contain_text("answers")
    tab(page, "3 · Train")
    expect(page.locator("#trainable-counts")).to_contain_text("curlora")
    set_number(page, "steps per task", 150)
    set_number(page, "batch size", 4)
    page.locator("#start").click()
    run_box = page.locator("#run-id textarea")
    expect(run_box).to_have_value(re.compile(r"\d{8}-\d{6}-"))
    run_id = run_box.input_value()
    # The accuracy heatmap appears once the base model is scored and the first method has started.
    expect(page.locator("#heatmap .js-plotly-plot")).to_be_visible(timeout=90_000)
    expect(page.locator("#run-progress")).to_contain_text("running")

    page.reload()
    tab(page, "2 · Tasks")
    expect(page.locator("#task-list")).to_contain_text("answers")  # this browser's task list survives a refresh
    tab(page, "3 · Train")
    expect(page.locator("#run-id textarea")).to_have_value(run_id)  # re-attached from browser state
    expect(page.locator("#run-progress")).to_contain_text("running")
    expect(page.locator("#heatmap .js-plotly-plot")).to_be_visible()
    expect(page.locator("#run-progress")).to_contain_text("step")

    page.locator("#stop").click()
    expect(page.locator("#run-progress")).to_contain_text("cancelled", timeout=60_000)
    assert jobs.status(run_id)["status"] == "cancelled"

    # Resume from the Runs tab: the run continues from its last finished stage and completes.
    tab(page, "Runs")
    pick = page.locator("#runs-run input")
    pick.fill(run_id)
    pick.press("Enter")
    pick.press("Tab")  # the typed value is committed on blur as well as on Enter
    expect(pick).to_have_value(run_id)
    # The dropdown's change reaches the server as its own event: a Resume clicked before it lands sends the old
    # (empty) selection and is refused with "Pick a run first." — click again until the run is queued.
    for _ in range(3):
        page.get_by_role("button", name="Resume", exact=True).click()
        end = time.time() + 10
        while jobs.status(run_id)["status"] == "cancelled" and time.time() < end:  # until the click is served
            time.sleep(0.1)
        if jobs.status(run_id)["status"] != "cancelled":
            break
    assert jobs.status(run_id)["status"] in ("queued", "running", "completed")
    assert jobs.wait(run_id, timeout=300) and jobs.status(run_id)["status"] == "completed"

    # Results: evaluate LoRA after task 3 on a new CSV.
    tab(page, "Results")
    chosen = page.locator("#results-run input")
    chosen.fill(run_id)
    chosen.press("Enter")
    expect(page.locator("#results-summary")).to_contain_text("completed")
    page.locator("#results-evaluate").get_by_text("Evaluate a stage on new data").click()
    page.locator("#eval-file input[type=file]").set_input_files(str(folder / "exp" / "sent.csv"))
    page.locator("#eval-run").click()
    expect(page.locator("#eval-result")).to_contain_text("accuracy", timeout=60_000)

    # Chat: one message, three panes, the fine-tuned panes answer from their own weights.
    tab(page, "Chat")
    chat_run = page.locator("#chat-run input")
    chat_run.fill(run_id)
    chat_run.press("Enter")
    page.locator("#chat-prompt textarea").fill("the king")
    page.locator("#chat-send").click()
    replies = [page.locator(f"#pane-{p} [data-testid='bot']") for p in ("base", "lora", "curlora")]
    for reply in replies:
        expect(reply).to_have_count(1, timeout=60_000)
        expect(reply).not_to_have_text("…", timeout=60_000)  # every pane has finished streaming
    texts = [reply.inner_text() for reply in replies]
    assert texts[0] != texts[1], texts
    assert page.locator("text=Traceback").count() == 0
