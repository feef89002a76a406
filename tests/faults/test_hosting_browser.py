"""Hosted mode in two real browsers (system Chromium, two contexts = two visitors with their own local storage):
Alice starts the demo; Bob's page neither re-attaches to her run nor lists it anywhere, and his Stop has nothing
to stop. Alice's refreshed page finds her run and her task list again."""

import re

import pytest

from app_server import serving
from browser import launch, missing, set_number, tab

REASON = missing()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


@pytest.fixture(scope="module")
def hosted(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("CURLORA_MULTI_USER", "1")
    try:
        with serving(tmp_path_factory.mktemp("hosted-browser") / "runs") as (url, jobs):
            yield url, jobs
    finally:
        mp.undo()


def test_a_second_visitor_sees_nothing_of_the_first(hosted, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, jobs = hosted
    with sync_playwright() as p:
        browser = launch(p)
        alice = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        bob = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        for page in (alice, bob):
            page.set_default_timeout(60_000)
        alice.goto(url)
        tab(alice, "2 · Tasks")
        alice.locator("#add-demo-tasks").click()
        expect(alice.locator("#task-list")).to_contain_text("answers")
        tab(alice, "3 · Train")
        set_number(alice, "steps per task", 400)
        alice.locator("#start").click()
        run_box = alice.locator("#run-id textarea")
        expect(run_box).to_have_value(re.compile(r"\d{8}-\d{6}-"))
        run_id = run_box.input_value()
        expect(alice.locator("#run-progress")).to_contain_text("running")

        bob.goto(url)
        tab(bob, "3 · Train")
        bob.wait_for_timeout(1500)  # the load event has run: a fresh page would have re-attached by now
        assert bob.locator("#run-id textarea").input_value() == ""
        bob.locator("#stop").click()
        expect(bob.get_by_text("No run to stop: start one first.")).to_be_visible()
        tab(bob, "Runs")
        expect(bob.locator("#runs-table")).not_to_contain_text(run_id)
        tab(bob, "Results")
        bob.locator("#results-run input").fill(run_id)
        bob.locator("#results-run input").press("Enter")
        expect(bob.get_by_text(f"No run '{run_id}' here; the Runs tab lists your runs.").first).to_be_visible()
        tab(bob, "2 · Tasks")
        expect(bob.locator("#task-list")).not_to_contain_text("answers")
        # Bob's own upload: kept in his area, named in his YAML as upload:NAME, no server path anywhere.
        csv = tmp_path / "my-reviews.csv"
        csv.write_text("text,label\n" + "".join(f"this one is {'good' if i % 2 else 'bad'} {i},{i % 2}\n"
                                                for i in range(40)))
        bob.locator("#task-upload input[type=file]").set_input_files(str(csv))
        expect(bob.get_by_text("40 rows; columns text, label")).to_be_visible()
        bob.get_by_role("button", name="Add task").click()
        expect(bob.locator("#task-list")).to_contain_text("my-reviews")
        tab(bob, "3 · Train")
        bob.get_by_text("The same experiment as YAML and a CLI command").click()
        expect(bob.locator("#config-yaml")).to_contain_text("upload:my-reviews.csv")
        assert str(jobs.root) not in bob.locator("#config-yaml").inner_text()
        assert jobs.status(run_id, _owner(jobs, run_id))["status"] in ("running", "queued")

        alice.reload()
        tab(alice, "3 · Train")
        expect(alice.locator("#run-id textarea")).to_have_value(run_id)  # her own run, re-attached
        tab(alice, "2 · Tasks")
        expect(alice.locator("#task-list")).to_contain_text("answers")
        tab(alice, "3 · Train")
        alice.locator("#stop").click()
        assert jobs.wait(run_id, timeout=120)
        browser.close()
    assert jobs.status(run_id, _owner(jobs, run_id))["status"] == "cancelled"


def _owner(jobs, run_id):
    from curlora.serve.hosting import read_owner

    return read_owner(jobs.root / run_id)
