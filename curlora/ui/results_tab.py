"""Results tab: any run's summary table (ACC, BWT, FWT, forgetting, perplexity, parameters, time, memory), its
charts, and exports built by the CLI's own functions (cli_runs), so the app and `curlora export` agree."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import gradio as gr

from curlora.cli_runs import metrics_csv, table
from curlora.errors import CurloraError
from curlora.store import Run
from curlora.ui import live
from curlora.ui.common import Engine, friendly, run_ids

SUMMARY_HEADERS = ["method", "status", "ACC %", "BWT", "FWT", "forgetting", "plasticity %", "ppl base → final",
                   "self-ppl base → final", "KL to base", "weight drift", "trainable", "train s", "peak memory"]


def _pct(v, signed=False) -> str:
    if v is None:
        return "–"
    return f"{100 * v:+.1f}" if signed else f"{100 * v:.1f}"


def summary_rows(metrics: dict) -> list[list]:
    """The stored numbers, formatted (metrics.json's `summary`, computed by curlora.metrics)."""
    rows = []
    base_ppl = (metrics.get("base") or {}).get("ppl")
    for label, rec in (metrics.get("methods") or {}).items():
        s = rec.get("summary") or {}
        ppl = rec.get("ppl") or []
        seconds = sum(t.get("seconds", 0) for t in rec.get("train", []))
        mem = rec.get("peak_memory_bytes")
        self_ppl = [x for x in rec.get("self_ppl") or [] if x is not None]
        kl = [x for x in rec.get("kl_to_base") or [] if x is not None]
        drift = [d.get("total") for d in rec.get("drift") or [] if d and d.get("total") is not None]
        rows.append([label, rec.get("status"), _pct(s.get("acc")), _pct(s.get("bwt"), True), _pct(s.get("fwt"), True),
                     _pct(s.get("forgetting"), True), _pct(s.get("plasticity")),
                     f"{base_ppl:.2f} → {ppl[-1]:.2f}" if base_ppl and ppl else "–",
                     f"{self_ppl[0]:.2f} → {self_ppl[-1]:.2f}" if self_ppl else "–",
                     f"{kl[-1]:.4f}" if kl else "–", f"{drift[-1]:.4f}" if drift else "–",
                     f"{rec.get('trainable', 0):,}",
                     f"{seconds:.0f}", f"{mem / 2**20:.0f} MiB" if mem else "–"])
    return rows


def notes(metrics: dict) -> str:
    if not metrics:
        return ""
    maj = ", ".join(f"{t} {_pct(a)}%" for t, a in zip(metrics["tasks"], metrics.get("majority", [])))
    return (f"**Scoring:** {metrics['scoring']} · **Forgetting:** {metrics['forgetting_definition']} · "
            f"**BWT** negative = forgot, **FWT** = gain on a task before training it (points) · "
            f"**Majority-class accuracy:** {maj} · **Perplexity probe:** {Path(metrics['probe']['source']).name}, "
            f"{metrics['probe']['tokens']:,} tokens, window {metrics['probe']['window']} · **self-ppl / KL:** on "
            f"text sampled from the base model itself; **weight drift:** ‖ΔW‖/‖W‖ over adapted matrices"
            + "".join(f"\n\n- {v['verdict']}" for v in metrics.get("learnability") or [] if v.get("verdict")))


def export(root: Path, run_id: str, what: str) -> str:
    """A file for the browser to download: metrics.json | metrics.csv | results.md | adapters.zip."""
    run = Run.open(run_id, root)
    m = run.metrics()
    if not m:
        raise CurloraError(f"Run {run_id} has no finished stage to export yet.")
    out = Path(tempfile.mkdtemp(prefix="curlora-export-"))
    if what == "metrics.json":
        (out / what).write_text(json.dumps(m, indent=1) + "\n", encoding="utf-8")
    elif what == "metrics.csv":
        (out / what).write_text(metrics_csv(m), encoding="utf-8")
    elif what == "results.md":
        (out / what).write_text(table(run) + "\n", encoding="utf-8")
    elif what == "adapters.zip":
        if not (run.path / "adapters").is_dir():
            raise CurloraError(f"Run {run_id} has no saved adapters yet.")
        staging = out / run_id
        shutil.copytree(run.path / "adapters", staging / "adapters")
        shutil.copy(run.path / "config.yaml", staging / "config.yaml")
        return shutil.make_archive(str(out / f"{run_id}-adapters"), "zip", out, run_id)
    else:
        raise CurloraError(f"Unknown export {what!r}.")
    return str(out / what)


def build(engine: Engine) -> dict:
    jobs = engine.jobs

    @friendly
    def show(rid: str):
        if not rid:
            return ("_Pick a run._", [], "", *live.figures({}, []))
        status, metrics, events = live.snapshot(jobs, rid)
        head = live.progress_html(rid, status, metrics, events)
        return (head + "\n\n" + notes(metrics), summary_rows(metrics), table(Run.open(rid, jobs.root)),
                *live.figures(metrics, events))

    @friendly
    def refresh(current: str):
        ids = run_ids(jobs)
        return gr.update(choices=ids, value=current if current in ids else (ids[0] if ids else None))

    def exporter(what):
        @friendly
        def handler(rid: str):
            if not rid:
                raise CurloraError("Pick a run first.")
            return export(jobs.root, rid, what)
        return handler

    with gr.Row():
        run = gr.Dropdown(run_ids(jobs), label="Run", allow_custom_value=True, scale=4, elem_id="results-run")
        reload = gr.Button("Refresh", scale=1)
    header = gr.Markdown()
    summary = gr.Dataframe(headers=SUMMARY_HEADERS, value=[], interactive=False, label="Summary per method",
                           elem_id="results-summary")
    with gr.Row():
        loss_plot, ppl_plot = gr.Plot(label="Loss"), gr.Plot(label="Perplexity")
    heatmap = gr.Plot(label="Accuracy")
    forget_plot = gr.Plot(label="Forgetting")
    with gr.Accordion("Accuracy matrices as text (also the Markdown export)", open=False):
        text = gr.Textbox(lines=14, show_label=False, elem_id="results-text")
    with gr.Row():
        files = gr.File(label="Export", scale=2, height=90)
        with gr.Column(scale=3):
            with gr.Row():
                buttons = {what: gr.Button(label, size="sm") for what, label in
                           [("metrics.csv", "Metrics CSV"), ("metrics.json", "Metrics JSON"),
                            ("results.md", "Markdown table"), ("adapters.zip", "Adapters (zip)")]}
    outputs = [header, summary, text, loss_plot, heatmap, ppl_plot, forget_plot]
    run.change(show, run, outputs, api_name="results", concurrency_limit=None)
    reload.click(refresh, run, run, api_name=False, concurrency_limit=None).then(
        show, run, outputs, api_name=False, concurrency_limit=None)
    for what, btn in buttons.items():
        btn.click(exporter(what), run, files, api_name=f"export_{what.replace('.', '_')}", concurrency_limit=None)
    return {"run": run, "show": show, "outputs": outputs, "refresh": refresh}
