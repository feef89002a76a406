"""Every number shown carries its uncertainty and every label its setting: charts, the Results tab, the chat panes
and the exports, all from the stored record (nothing recomputed), and records stored before these fields render."""

import csv
import dataclasses
import io

from curlora.measure.record import RunMetrics
from curlora.share.export import cell_text, metrics_csv, table
from curlora.ui import charts
from curlora.ui.chat_tab import pane_labels
from curlora.ui.results_tab import FWT_LABEL, SUMMARY_HEADERS, banner, matched_loss_md, notes, summary_rows

CUR, LORA = "curlora (lr 2e-2, r 8)", "lora (lr 1e-3, r 8)"


def ci(*pairs):
    return [list(p) for p in pairs]


METRICS = RunMetrics.of({
    "tasks": ["a", "b", "c"], "scoring": "likelihood", "forgetting_definition": "Chaudhry",
    "majority": [0.5, 0.6, 0.5], "comparison": "matched_loss",
    "probe": {"source": "/data/gutenberg-probe.txt", "tokens": 100, "window": 32},
    "base": {"accuracy": [0.5, 0.4, 0.3], "ppl": 10.0, "n": [64, 64, 64]},
    "methods": {
        "curlora": {
            "kind": "curlora", "setting": {"lr": 0.02, "r": 8}, "status": "completed",
            "matrix": [[0.5, 0.4, 0.3], [0.719, 0.45, 0.3], [0.70, 0.9, 0.3], [0.69, 0.88, 0.8]],
            "matrix_n": [[64, 64, 64]] * 4,
            "matrix_ci95": [ci((0.38, 0.62), (0.29, 0.52), (0.2, 0.42)),
                            ci((0.60, 0.815), (0.33, 0.57), (0.2, 0.42)),   # b: base 0.4 inside -> marked
                            ci((0.58, 0.80), (0.80, 0.95), (0.2, 0.42)),
                            ci((0.57, 0.79), (0.78, 0.94), (0.69, 0.88))],
            "ppl": [10.0, 10.1, 10.2, 10.3], "kl_to_base": [0.0, 0.011, 0.022, 0.033],
            "summary": {"acc": 0.79, "bwt": -0.02, "fwt": 0.01, "forgetting": 0.02, "plasticity": 0.8},
            "train": [{"task": "a", "steps": 40, "final_loss": 0.41, "target_loss": 0.5, "reached": True},
                      {"task": "b", "steps": 100, "final_loss": 0.72, "target_loss": 0.5, "reached": False},
                      {"task": "c", "steps": 100, "final_loss": 0.66, "target_loss": 0.5, "reached": False}],
        },
        "lora": {
            "kind": "lora", "setting": {"lr": 0.001, "r": 8}, "status": "completed",
            "matrix": [[0.5, 0.4, 0.3], [0.95, 0.4, 0.3], [0.60, 0.92, 0.3], [0.55, 0.9, 0.85]],
            "matrix_n": [[64, 64, 64]] * 4,
            "matrix_ci95": [ci((0.38, 0.62), (0.29, 0.52), (0.2, 0.42)),
                            ci((0.87, 0.98), (0.29, 0.52), (0.2, 0.42)),    # a: no overlap with curlora's
                            ci((0.48, 0.71), (0.83, 0.97), (0.2, 0.42)),
                            ci((0.43, 0.67), (0.81, 0.95), (0.75, 0.92))],
            "ppl": [10.0, 12.0, 13.0, 14.0], "kl_to_base": [0.0, 0.05, 0.06, 0.07],
            "summary": {"acc": 0.77, "fwt": 0.0},
            "train": [{"task": "a", "steps": 30, "final_loss": 0.45, "target_loss": 0.5, "reached": True},
                      {"task": "b", "steps": 35, "final_loss": 0.49, "target_loss": 0.5, "reached": True},
                      {"task": "c", "steps": 50, "final_loss": 0.48, "target_loss": 0.5, "reached": True}],
        },
    },
})

# A record stored before settings, intervals, KL and targets existed (the shape of tests/test_charts.py's).
OLD = RunMetrics.of({
    "tasks": ["a", "b"], "scoring": "likelihood", "majority": [0.5, 0.6],
    "probe": {"source": "/x/probe.txt", "tokens": 100, "window": 32},
    "base": {"accuracy": [0.5, 0.4], "ppl": 10.0, "ppl_single_window": 11.0},
    "methods": {
        "curlora": {"kind": "curlora", "status": "completed", "matrix": [[0.5, 0.4], [0.8, 0.5], [0.75, 0.9]],
                    "ppl": [10.0, 10.1, 10.2], "ppl_single_window": [11.0, 11.1, 11.2], "train": [{"seconds": 1}]},
        "lora": {"kind": "lora", "status": "running", "matrix": [[0.5, 0.4], [0.9, 0.45]], "ppl": [10.0, 30.0],
                 "ppl_single_window": [11.0, 31.0]},
    },
})
EVENTS = ([{"kind": "run_start", "methods": ["curlora", "lora"], "tasks": ["a", "b", "c"]}]
          + [{"kind": "step", "method": m, "stage": 1, "task": "a", "step": i, "steps": 2, "loss": 1.0,
              "smoothed_loss": 1.0, "lr": 0.1, "elapsed": i} for m in ("curlora", "lora") for i in (1, 2)]
          + [{"kind": "probe", "method": "curlora", "stage": 2, "step": 1, "accuracy": [0.7]}])


class FakeRun:
    """What export.table reads of a run: its id, status and record."""

    def __init__(self, metrics):
        self.id, self._m = "r1", metrics

    def record(self):
        return RunMetrics.of(self._m)

    def status(self):
        return {"status": "completed", "message": "done"}


def test_labels_carry_the_setting_in_every_chart():
    assert CUR in [t.name for t in charts.loss_figure(METRICS, EVENTS).data]
    titles = [a.text for a in charts.accuracy_heatmaps(METRICS).layout.annotations]
    assert f"{CUR} (completed)" in titles and f"{LORA} (completed)" in titles
    assert any(t.startswith(f"{CUR} − {LORA}") for t in titles)
    assert {CUR, LORA} <= {t.name for t in charts.perplexity_figure(METRICS).data}
    assert f"{CUR}: a" in [t.name for t in charts.forgetting_figure(METRICS, EVENTS).data]


def test_heatmap_hover_has_n_and_the_stored_interval_and_marks_cells_inside_the_noise():
    fig = charts.accuracy_heatmaps(METRICS)
    cur, lora, diff = fig.data
    assert "%{customdata}" in cur.hovertemplate
    assert cur.customdata[1][0] == "n=64, 95 % CI [60.0, 81.5] %"  # the stored interval, as stored
    assert cur.text[1][0] == "72"                # 0.5 and 0.4 lie outside [0.60, 0.815]
    assert cur.text[1][1] == f"{charts.SAME}45"  # the base's 0.4 lies inside [0.33, 0.57]
    assert cur.text[0][0] == f"{charts.SAME}50"  # the majority share 0.5 inside the base row's interval
    assert cur.text[3][2] == "80"
    notes_ = [a.text for a in fig.layout.annotations]
    assert any("majority-class share or the base model's accuracy" in t for t in notes_)
    # The difference: ≈ where the two Wilson intervals overlap, plain where they don't; the title says so.
    assert diff.text[1][0] == "-23" and diff.text[2][0] == f"{charts.SAME}+10"
    assert any("intervals overlap" in t for t in notes_ if t.startswith(CUR + " −"))
    assert "intervals overlap: inside the noise" in diff.customdata[2][0]


def test_perplexity_is_charted_beside_kl_and_names_its_probe():
    fig = charts.perplexity_figure(METRICS)
    assert "closer to the base line = less drift" in fig.layout.title.text
    kl = [t for t in fig.data if t.name == f"{CUR}: KL to base"]
    assert kl and list(kl[0].y) == [0.0, 0.011, 0.022, 0.033] and kl[0].xaxis == "x2"
    texts = " ".join(a.text for a in fig.layout.annotations)
    assert "gutenberg-probe.txt" in texts and "in-domain" in texts and "read better than the base" in texts
    colours = {t.name: t.line.color for t in fig.data}
    assert colours[CUR] == colours[f"{CUR}: KL to base"] == charts.KIND_COLOURS["curlora"]


def test_summary_has_setting_final_loss_beside_acc_and_the_fwt_label():
    assert SUMMARY_HEADERS.index("final loss per task") == SUMMARY_HEADERS.index("ACC %") + 1
    assert FWT_LABEL == "FWT (vs the base model before training)" and FWT_LABEL in SUMMARY_HEADERS
    cur, lora = (dict(zip(SUMMARY_HEADERS, row)) for row in summary_rows(METRICS))
    assert cur["method"] == "curlora" and cur["setting"] == "lr 2e-2, r 8" and lora["setting"] == "lr 1e-3, r 8"
    assert cur["ACC %"] == "79.0" and cur["final loss per task"] == "a 0.410 · b 0.720 · c 0.660"
    assert cur[FWT_LABEL] == "+1.0"
    text = notes(METRICS)
    assert FWT_LABEL in text and CUR in text and "gutenberg-probe.txt" in text


def test_matched_loss_shows_target_reached_steps_and_a_banner_when_missed():
    text = banner(METRICS)
    assert f"{CUR} missed its target loss on 2 of 3 tasks: this is not a matched comparison there" in text
    assert "lora" not in text.replace("curlora", "")
    table_md = matched_loss_md(METRICS)
    assert f"| {CUR} | b | 0.500 | **no** | 100 | 0.720 |" in table_md
    assert f"| {LORA} | a | 0.500 | yes | 30 | 0.450 |" in table_md
    assert notes(METRICS).startswith("> ⚠️")
    equal = dataclasses.replace(METRICS, comparison="equal_lr")
    assert banner(equal) == "" and matched_loss_md(equal) == ""


def test_markdown_export_carries_n_interval_setting_and_fwt_label():
    text = table(FakeRun(METRICS))
    assert f"## {CUR} (curlora, 0 trainable)" in text
    assert "| a | 71.9 % [60.0, 81.5] n=64 |" in text
    assert FWT_LABEL in text and "WARNING: " + CUR + " missed its target loss on 2 of 3 tasks" in text
    assert "b 0.720 (target 0.500 MISSED, 100 steps)" in text
    assert "| after | a | b | c | ppl |" in text
    assert cell_text({"accuracy": 0.5, "n": None, "ci95": None}) == "50.0"


def test_csv_export_keeps_its_columns_and_adds_n_interval_and_setting():
    rows = list(csv.DictReader(io.StringIO(metrics_csv(METRICS))))
    header = metrics_csv(METRICS).splitlines()[0]
    assert header.startswith("method,kind,stage,after_task,acc:a,acc:b,acc:c,ppl,ppl_single_window,n:a")
    row = next(r for r in rows if r["method"] == "curlora" and r["stage"] == "1")
    assert row["acc:a"] == "0.719" and row["n:a"] == "64"
    assert row["ci95_lo:a"] == "0.6" and row["ci95_hi:a"] == "0.815"
    assert row["described"] == CUR and row["setting"] == '{"lr": 0.02, "r": 8}'
    assert row["final_loss"] == "0.41" and row["target_loss"] == "0.5" and row["reached"] == "True"
    assert row["steps"] == "40"


def test_chat_panes_carry_the_setting():
    choices = {"curlora": [1, 2], "lora": [1, 2]}
    assert pane_labels(METRICS, choices, 2) == (f"{LORA} after task 2", f"{CUR} after task 2")
    assert pane_labels(OLD, choices, 1) == ("lora after task 1", "curlora after task 1")
    assert pane_labels(None, {}, 3) == ("LoRA after task 3", "CURLoRA after task 3")


def test_old_records_without_the_new_fields_still_render():
    fig = charts.accuracy_heatmaps(OLD)
    cur = fig.data[0]
    assert [a.text for a in fig.layout.annotations][0] == "curlora (completed)"
    assert all(charts.SAME not in t for row in cur.text for t in row)  # no interval: nothing marked
    assert cur.customdata[1][0] == "n not stored, no interval stored"
    assert any("no 95 % intervals stored" in a.text for a in fig.layout.annotations)
    ppl = charts.perplexity_figure(OLD)
    assert {"curlora", "lora"} <= {t.name for t in ppl.data}
    assert any("no KL to base stored" in a.text for a in ppl.layout.annotations)
    assert "probe.txt" in " ".join(a.text for a in ppl.layout.annotations)
    for f in (fig, ppl, charts.loss_figure(OLD, EVENTS), charts.forgetting_figure(OLD, EVENTS)):
        f.to_json()
    rows = [dict(zip(SUMMARY_HEADERS, r)) for r in summary_rows(OLD)]
    assert rows[0]["method"] == "curlora" and rows[0]["setting"] == "–" and rows[0]["final loss per task"] == "–"
    assert banner(OLD) == "" and FWT_LABEL in notes(OLD)
    text = table(FakeRun(OLD))
    assert "## curlora (curlora, 0 trainable)" in text
    assert "| a | 80.0 | 50.0 |" in text
    out = list(csv.DictReader(io.StringIO(metrics_csv(OLD))))
    assert out[1]["acc:a"] == "0.8" and out[1]["n:a"] == "" and out[1]["ci95_lo:a"] == ""
    assert out[1]["described"] == "curlora" and out[1]["setting"] == ""
