"""The Compare tab in Chromium: a study queued on the server fills its frontier in live, point by point, and a later
study of the same experiment is analysed together with it."""

import pytest

from app_server import serving
from browser import launch, missing, tab
from curlora.experiment import ExperimentConfig
from curlora.run import study as S
from tiny_experiment import make_experiment

REASON = missing()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


def test_the_frontier_fills_in_live_and_a_point_opens_in_results(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    d = make_experiment(tmp_path / "exp", steps=2)
    d["methods"] = [m for m in d["methods"] if m["kind"] == "lora"]
    d["evaluation"].update(probe_every=0, self_probe_texts=2, self_probe_tokens=8)
    cfg = ExperimentConfig.from_dict(d)
    with serving(tmp_path / "runs") as (url, jobs):
        sid = jobs.submit_study(cfg, S.StudySettings(lrs={"lora": [0.001, 0.01, 0.05]}, seeds=[0]))
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(120_000)
            page.goto(url)
            tab(page, "Compare")  # opening the tab lists this browser's studies and picks the newest
            expect(page.locator("#study-pick input")).to_have_value(sid)
            frontier = page.locator("#study-frontier")
            expect(frontier).to_contain_text("runs finished")
            expect(frontier).to_contain_text("3 of 3 runs finished")  # redrawn by the timer as runs finished
            expect(page.locator("#study-summary")).to_contain_text("completed")
            assert frontier.locator(".scatterlayer .trace").count() >= 2
            # a rate past the grid's edge, run later as a study of its own, analysed together with the first
            later = jobs.submit_study(cfg, S.StudySettings(lrs={"lora": [0.1]}, seeds=[0]))
            assert jobs.wait(later, timeout=300)
            tab(page, "Runs")
            tab(page, "Compare")  # opening the tab again offers the new study to analyse with the picked one
            expect(page.locator("#study-pick input")).to_have_value(sid)
            field = page.locator("#study-with input")
            field.click()
            page.get_by_role("option", name=later).click()
            page.keyboard.press("Escape")
            expect(page.locator("#study-summary")).to_contain_text(f"Analysed together with {later}")
            expect(frontier).to_contain_text("4 of 4 runs finished")
            page.get_by_role("button", name="Open in Results").click()
            expect(page.get_by_role("tab", name="Results", selected=True)).to_be_visible()
            browser.close()
    assert jobs.wait(sid, timeout=1)
