"""The app in a real browser (system Chromium through Playwright): pick the model and the demo tasks, start,
watch the heatmap appear, refresh the page and find the run re-attached, stop it."""

import re

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
    set_number(page, "steps per task", 400)
    set_number(page, "batch size", 4)
    page.locator("#start").click()
    run_box = page.locator("#run-id textarea")
    expect(run_box).to_have_value(re.compile(r"\d{8}-\d{6}-"))
    run_id = run_box.input_value()
    # The accuracy heatmap appears once the base model is scored and the first method has started.
    expect(page.locator("#heatmap .js-plotly-plot")).to_be_visible(timeout=90_000)
    expect(page.locator("#run-progress")).to_contain_text("running")

    page.reload()
    tab(page, "3 · Train")
    expect(page.locator("#run-id textarea")).to_have_value(run_id)  # re-attached from browser state
    expect(page.locator("#run-progress")).to_contain_text("running")
    expect(page.locator("#heatmap .js-plotly-plot")).to_be_visible()
    expect(page.locator("#run-progress")).to_contain_text("step")

    page.locator("#stop").click()
    expect(page.locator("#run-progress")).to_contain_text("cancelled", timeout=60_000)
    assert jobs.status(run_id)["status"] == "cancelled"
    assert page.locator("text=Traceback").count() == 0
