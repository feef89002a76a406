"""Live charts keep the reader's view: one uirevision per chart and run (zoom, pan and legend survive a redraw), a
stable uid per trace in the run's own method order, and heatmaps sent again only at stage ends, not every poll."""

import copy

import gradio as gr

from curlora.measure.record import RunMetrics
from curlora.ui import charts, live

METRICS = {
    "run_id": "r1", "tasks": ["a", "b"], "scoring": "likelihood", "majority": [0.5, 0.6],
    "base": {"accuracy": [0.5, 0.4], "ppl": 10.0, "ppl_single_window": 11.0},
    "methods": {
        "curlora": {"kind": "curlora", "status": "running", "matrix": [[0.5, 0.4], [0.8, 0.5]], "ppl": [10.0, 10.1],
                    "kl_to_base": [0.0, 0.01]},
    },
}


def step(method: str, stage: int, i: int) -> dict:
    return {"kind": "step", "method": method, "stage": stage, "task": "ab"[stage - 1], "step": i, "steps": 3,
            "loss": 1.0 / i, "smoothed_loss": 1.0 / i, "lr": 0.1, "elapsed": i}


START = {"kind": "run_start", "methods": ["lora", "curlora"], "tasks": ["a", "b"]}

RECORD = RunMetrics.of(METRICS)


def figures_of(metrics, events) -> list:
    metrics = RunMetrics.of(metrics)  # the fixture is a dict, grown below
    return [charts.loss_figure(metrics, events), charts.accuracy_heatmaps(metrics), charts.perplexity_figure(metrics),
            charts.forgetting_figure(metrics, events)]


def test_each_chart_keeps_one_uirevision_while_the_run_grows_and_another_for_another_run():
    probe = {"kind": "probe", "method": "curlora", "stage": 2, "step": 2, "accuracy": [0.7]}
    early = [START, step("curlora", 1, 1), probe]
    later = [START] + [step("curlora", 1, i) for i in (1, 2, 3)] + [probe, step("lora", 1, 1)]
    more = copy.deepcopy(METRICS)
    more["methods"]["lora"] = {"kind": "lora", "status": "running", "matrix": [[0.5, 0.4], [0.9, 0.45]],
                               "ppl": [10.0, 30.0], "kl_to_base": [0.0, 0.2]}
    before, after = figures_of(METRICS, early), figures_of(more, later)
    revisions = [f.layout.uirevision for f in before]
    assert all(revisions) and len(set(revisions)) == 4  # one per chart
    assert revisions == [f.layout.uirevision for f in after]  # unchanged as the run goes on
    other = copy.deepcopy(more)
    other["run_id"] = "r2"
    assert all(a != b.layout.uirevision for a, b in zip(revisions, figures_of(other, later)))


def test_traces_have_stable_uids_in_the_runs_method_order():
    early = [START, step("curlora", 1, 1)]
    later = early + [step("lora", 1, 1)]
    assert [t.uid for t in charts.loss_figure(RECORD, early).data] == ["loss:curlora"]
    # lora started second but comes first in the run (run_start's order): it takes its own place, with its uid
    assert [t.uid for t in charts.loss_figure(RECORD, later).data] == ["loss:lora", "loss:curlora"]
    ppl = charts.perplexity_figure(RECORD)
    assert [t.uid for t in ppl.data] == ["ppl:base", "ppl:curlora", "kl:curlora", "kl:base"]


def test_a_poll_resends_the_heatmaps_only_at_a_stage_end():
    drawn = {}
    events = [START, step("curlora", 1, 1)]
    first = live.redraw(drawn, "r1", RECORD, events)
    assert all(not isinstance(f, type(gr.skip())) for f in first)  # the first poll draws everything
    events.append(step("curlora", 1, 2))
    loss, heat, ppl, forgetting = live.redraw(drawn, "r1", RECORD, events)
    assert heat == gr.skip() and ppl == gr.skip()  # a training step: the stage charts are not sent
    assert list(loss.data[0].x) == [1, 2]  # the loss chart follows every step
    events.append({"kind": "stage", "method": "curlora", "stage": 1, "accuracy": [0.8, 0.5], "ppl": 10.1,
                   "ppl_single_window": 10.0})
    _, heat, ppl, _ = live.redraw(drawn, "r1", RECORD, events)
    assert heat != gr.skip() and ppl != gr.skip()
    assert live.redraw(drawn, "r2", RECORD, events)[1] != gr.skip()  # another run: drawn again
    live.forget(drawn)  # a page reload
    assert live.redraw(drawn, "r2", RECORD, events)[1] != gr.skip()
