"""Charts draw the stored numbers (nothing recomputed) with one colour per method across every figure."""

from curlora.measure.record import RunMetrics
from curlora.ui import charts

METRICS = RunMetrics.of({
    "tasks": ["a", "b"], "scoring": "likelihood", "majority": [0.5, 0.6],
    "base": {"accuracy": [0.5, 0.4], "ppl": 10.0, "ppl_single_window": 11.0},
    "methods": {
        "curlora": {"kind": "curlora", "status": "completed", "matrix": [[0.5, 0.4], [0.8, 0.5], [0.75, 0.9]],
                    "ppl": [10.0, 10.1, 10.2]},
        "lora": {"kind": "lora", "status": "running", "matrix": [[0.5, 0.4], [0.9, 0.45]], "ppl": [10.0, 30.0]},
    },
})
EVENTS = ([{"kind": "run_start", "methods": ["curlora", "lora"], "tasks": ["a", "b"]}]
          + [{"kind": "step", "method": m, "stage": s, "task": "ab"[s - 1], "step": i, "steps": 3, "loss": 1.0 / i,
              "smoothed_loss": 1.0 / i, "lr": 0.1, "elapsed": i} for m in ("curlora", "lora") for s in (1, 2)
             for i in (1, 2, 3)]
          + [{"kind": "probe", "method": "curlora", "stage": 2, "step": 2, "accuracy": [0.7]}])


def colours_by_name(fig) -> dict:
    out = {}
    for trace in fig.data:
        if getattr(trace, "line", None) is not None and trace.line.color:
            out[trace.name.split(":")[0]] = trace.line.color
    return out


def test_one_colour_per_method_in_every_chart():
    loss = colours_by_name(charts.loss_figure(METRICS, EVENTS))
    ppl = colours_by_name(charts.perplexity_figure(METRICS))
    forgetting = colours_by_name(charts.forgetting_figure(METRICS, EVENTS))
    assert loss["curlora"] == ppl["curlora"] == forgetting["curlora"] == charts.KIND_COLOURS["curlora"]
    assert loss["lora"] == ppl["lora"] == charts.KIND_COLOURS["lora"]


def test_heatmaps_show_the_matrix_and_the_difference_of_finished_rows():
    fig = charts.accuracy_heatmaps(METRICS)
    cur, lora, diff = fig.data
    assert list(cur.z[2]) == [75.0, 90.0] and list(lora.z[2]) == [None, None]  # lora's last row isn't there yet
    assert [round(v, 6) for v in diff.z[1]] == [-10.0, 5.0] and list(diff.z[2]) == [None, None]


def test_loss_runs_across_tasks_and_probes_use_global_steps():
    fig = charts.loss_figure(METRICS, EVENTS)
    assert list(fig.data[0].x) == [1, 2, 3, 4, 5, 6]
    probe = charts.forgetting_figure(METRICS, EVENTS)
    assert list(probe.data[0].x) == [5] and list(probe.data[0].y) == [70.0]


def test_empty_runs_draw_a_placeholder():
    assert charts.accuracy_heatmaps(RunMetrics()).layout.annotations[0].text.startswith("waiting")
    assert "probe" in charts.forgetting_figure(METRICS, []).layout.annotations[0].text
