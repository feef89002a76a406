"""Reading a run for display: its status line, a progress bar from the last events, and the four charts.

Shared by the Train tab (polled by a timer while a run trains: `redraw` sends the heatmaps and the perplexity chart
again only at stage ends) and the Results tab (any run, on demand: `figures`)."""

from __future__ import annotations

import html

import gradio as gr

from curlora.measure.record import RunMetrics
from curlora.run import events as ev
from curlora.serve.jobs import JobManager
from curlora.ui import charts

STATUS_COLOURS = {"running": "#1f6fb4", "queued": "#8e44ad", "completed": "#2e7d32", "cancelled": "#9e6a00",
                  "failed": "#c0392b", "interrupted": "#9e6a00"}


def snapshot(jobs: JobManager, run_id: str, owner: str | None = None) -> tuple[dict, RunMetrics, list[dict]]:
    """(status, metrics, events) of a run `owner` may see, all from the run store (and the queue, for `queued`)."""
    run = jobs.open(run_id, owner)
    return jobs.status(run_id, owner), run.record(), jobs.events(run_id, owner)


def signature(status: dict, events: list[dict]) -> tuple:
    return status.get("status"), status.get("position"), len(events)


def progress_html(run_id: str, status: dict, m: RunMetrics, events: list[dict]) -> str:
    """A status badge, what is training now (method, task, step, ETA of the task) and a bar over the whole run."""
    st = status.get("status", "?")
    colour = STATUS_COLOURS.get(st, "#555")
    badge = (f"<span style='background:{colour};color:white;border-radius:4px;padding:2px 8px;"
             f"font-weight:600'>{html.escape(st)}</span>")
    start = ev.first(events, ev.RUN_START)
    methods = start.get("methods", []) if start else list(m.methods)
    tasks = start.get("tasks", []) if start else m.tasks
    last_step = ev.last(events, ev.STEP)
    stages_done = len([e for e in ev.of_kind(events, ev.STAGE) if e["stage"] > 0])
    total_stages = max(1, len(methods) * len(tasks))
    done = stages_done
    now = ""
    if last_step and st == "running":
        frac = last_step["step"] / max(1, last_step["steps"])
        done += frac
        rate = last_step["elapsed"] / max(1, last_step["step"])
        eta = rate * (last_step["steps"] - last_step["step"])
        now = (f"<b>{html.escape(last_step['method'])}</b> · task {last_step['stage']}/{len(tasks)} "
               f"<i>{html.escape(str(last_step['task']))}</i> · step {last_step['step']}/{last_step['steps']} · "
               f"loss {last_step['smoothed_loss']:.3f} · this task ≈ {eta:.0f} s left")
    elif st == "running":
        kind = events[-1].get("kind") if events else None
        now = "evaluating…" if kind in (ev.STAGE_START, ev.STAGE, ev.RUN_START) else "loading the model and tasks…"
    pct = min(100.0, 100.0 * done / total_stages) if st != "completed" else 100.0
    message = html.escape(status.get("message") or "")
    return (f"<div id='run-progress' style='font-size:14px'>{badge} <code>{html.escape(run_id)}</code> "
            f"<span style='color:#666'>{message}</span><br>{now}"
            f"<div style='background:#e8eef5;border-radius:4px;height:10px;margin-top:6px'>"
            f"<div style='background:{colour};width:{pct:.1f}%;height:10px;border-radius:4px'></div></div>"
            f"<span style='color:#666;font-size:12px'>{stages_done} of {total_stages} method × task stages "
            f"finished</span></div>")


def figures(metrics: RunMetrics, events: list[dict]) -> tuple:
    """(loss, accuracy heatmaps, perplexity, forgetting) figures."""
    return (charts.loss_figure(metrics, events), charts.accuracy_heatmaps(metrics),
            charts.perplexity_figure(metrics), charts.forgetting_figure(metrics, events))


STAGE_VIEW = "train:stage-figures"  # in SessionState.drawn: what the heatmaps and the perplexity chart show


def stage_key(run_id: str, events: list[dict]) -> tuple:
    """What the heatmaps and the perplexity chart are drawn from: they change only when a stage is stored (a stage
    event), a method stops with an error, or the run ends — never with a training step."""
    return run_id, len(ev.of_kind(events, ev.STAGE, ev.ERROR, ev.RUN_END))


LOSS_VIEW, PROBE_VIEW = "train:loss", "train:probes"


def curve_changed(drawn: dict, view: str, run_id: str, events: list[dict], kind: str) -> bool:
    """Has the curve of `kind` events (steps, probes) moved enough to be drawn again? It is, once it has grown by a
    hundredth of what is drawn (at least one event): at 300k steps a poll sends the chart every 3,000 steps, not
    every second."""
    n = len(ev.of_kind(events, kind))
    last = drawn.get(view)
    if last is not None and last[0] == run_id and n - last[1] < max(1, last[1] // 100):
        return False
    drawn[view] = (run_id, n)
    return True


def redraw(drawn: dict, run_id: str, metrics: RunMetrics, events: list[dict]) -> tuple:
    """The four figures for a live poll: the loss and forgetting charts when their curves have grown (downsampled
    to charts.LOSS_POINTS points); the heatmaps and the perplexity chart only at a stage end (gr.skip() otherwise:
    nothing is sent, the chart the reader is hovering stays as it is)."""
    key = stage_key(run_id, events)
    if drawn.get(STAGE_VIEW) == key:
        loss = charts.loss_figure(metrics, events) if curve_changed(drawn, LOSS_VIEW, run_id, events, ev.STEP) \
            else gr.skip()
        probes = charts.forgetting_figure(metrics, events) if curve_changed(drawn, PROBE_VIEW, run_id, events,
                                                                             ev.PROBE) else gr.skip()
        return loss, gr.skip(), gr.skip(), probes
    drawn[STAGE_VIEW] = key
    for view, kind in ((LOSS_VIEW, ev.STEP), (PROBE_VIEW, ev.PROBE)):
        drawn[view] = (run_id, len(ev.of_kind(events, kind)))
    return figures(metrics, events)


def forget(drawn: dict) -> None:
    """A page (re)attaches: draw everything again at the next poll."""
    for view in ("train", STAGE_VIEW, LOSS_VIEW, PROBE_VIEW):
        drawn.pop(view, None)
