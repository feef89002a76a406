"""Plotly figures from a run's metrics.json and events: drawing only, every number comes from the run store.

A method has the same colour in every chart (CURLoRA blue, LoRA orange, base grey, …), so a reader can follow
one method from the loss curve to the heatmap to the perplexity line.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from curlora.measure.record import RunMetrics
from curlora.run import events as ev
from curlora.run.methods import method

KIND_COLOURS = {"curlora": "#1f6fb4", "lora": "#e8710a", "base": "#7f7f7f", "full": "#c0392b", "head-only": "#8e44ad"}
EXTRA = ["#2ca02c", "#17becf", "#bcbd22", "#e377c2", "#8c564b"]
DASHES = ["solid", "dash", "dot", "dashdot", "longdash"]
HEIGHT = 340


def method_colours(metrics: RunMetrics | dict, events: list[dict] | None = None) -> dict[str, str]:
    """label -> colour: by kind first; a second method of the same kind gets one of the extra colours."""
    kinds = {label: rec.kind or label for label, rec in RunMetrics.of(metrics).methods.items()}
    for e in ev.of_kind(events or [], ev.RUN_START):
        for label in e["methods"]:
            kinds.setdefault(label, label.split("-")[0] if label not in KIND_COLOURS else label)
    out, used, extra = {}, set(), iter(EXTRA * 4)
    for label, kind in kinds.items():
        colour = KIND_COLOURS.get(kind)
        if colour is None or colour in used:
            colour = next(extra)
        out[label] = colour
        used.add(colour)
    return out


def _layout(fig: go.Figure, title: str, **kw) -> go.Figure:
    fig.update_layout(title={"text": title, "x": 0.01, "font": {"size": 15}}, height=HEIGHT, template="plotly_white",
                      margin={"l": 50, "r": 20, "t": 50, "b": 40},
                      legend={"orientation": "h", "y": -0.25, "yanchor": "top"},
                      **kw)
    return fig


def empty(title: str, note: str = "waiting for the first results…") -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=note, showarrow=False, font={"size": 14, "color": "#888"}, x=0.5, y=0.5,
                       xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title)


def _global_step(e: dict, steps_per_stage: dict) -> int:
    """A step counted across the task sequence, so each method's curve runs left to right through all tasks."""
    before = sum(steps_per_stage.get((e["method"], s), 0) for s in range(1, e["stage"]))
    return before + e["step"]


def _stage_lengths(events: list[dict]) -> dict:
    out = {}
    for e in ev.of_kind(events, ev.STEP):
        out[(e["method"], e["stage"])] = e["steps"]
    return out


def loss_figure(metrics: RunMetrics | dict, events: list[dict]) -> go.Figure:
    steps = ev.of_kind(events, ev.STEP)
    if not steps:
        return empty("Training loss")
    colours = method_colours(metrics, events)
    lengths = _stage_lengths(events)
    fig = go.Figure()
    for label in dict.fromkeys(e["method"] for e in steps):
        mine = [e for e in steps if e["method"] == label]
        fig.add_trace(go.Scatter(x=[_global_step(e, lengths) for e in mine], y=[e["smoothed_loss"] for e in mine],
                                 mode="lines", name=label, line={"color": colours.get(label), "width": 2},
                                 customdata=[[e["task"], e["loss"]] for e in mine],
                                 hovertemplate="task %{customdata[0]}<br>step %{x}<br>smoothed %{y:.3f}"
                                               "<br>loss %{customdata[1]:.3f}<extra>" + label + "</extra>"))
    first = steps[0]["method"]
    boundary = 0
    for stage in range(1, max(s for (m, s) in lengths if m == first)):
        boundary += lengths.get((first, stage), 0)
        fig.add_vline(x=boundary + 0.5, line={"color": "#bbb", "dash": "dot", "width": 1})
    return _layout(fig, "Training loss (smoothed; dotted lines: task boundaries)",
                   xaxis_title="step (across tasks)", yaxis_title="loss")


def _row_labels(m: RunMetrics, n_rows: int) -> list[str]:
    tasks = m.tasks
    return ["base"] + [f"after {t}" for t in tasks[: n_rows - 1]]


def _pct(v) -> str:
    return "" if v is None else f"{100 * v:.0f}"


def accuracy_heatmaps(metrics: RunMetrics | dict) -> go.Figure:
    """One heatmap per method (rows: stages, columns: tasks), plus CURLoRA − LoRA where both exist."""
    m = RunMetrics.of(metrics)
    methods = m.methods
    if not m or not methods:
        return empty("Accuracy after each task")
    tasks = m.tasks
    labels = list(methods)
    pair = None
    kinds = {rec.kind: label for label, rec in methods.items()}
    if "curlora" in kinds and "lora" in kinds:
        pair = (kinds["curlora"], kinds["lora"])
    titles = [f"{label} ({methods[label].status})" for label in labels]
    if pair:
        titles.append(f"{pair[0]} − {pair[1]} (points)")
    cols = len(titles)
    fig = make_subplots(rows=1, cols=cols, subplot_titles=titles, horizontal_spacing=0.06)
    n = len(tasks) + 1
    for c, label in enumerate(labels, start=1):
        matrix = methods[label].matrix
        z = [[None if a is None else 100 * a for a in row] for row in matrix] + [[None] * len(tasks)] * (n - len(matrix))
        fig.add_trace(go.Heatmap(z=z, x=tasks, y=_row_labels(m, n), zmin=0, zmax=100, colorscale="Blues",
                                 text=[[_pct(None if v is None else v / 100) for v in row] for row in z],
                                 texttemplate="%{text}", showscale=c == 1,
                                 colorbar={"title": "%", "x": 1.0, "len": 0.8, "thickness": 12},
                                 hovertemplate="%{y}<br>task %{x}: %{z:.1f}%<extra>" + label + "</extra>"),
                      row=1, col=c)
    if pair:
        a, b = methods[pair[0]].matrix, methods[pair[1]].matrix
        rows = min(len(a), len(b))
        z = [[None if x is None or y is None else 100 * (x - y) for x, y in zip(a[i], b[i])] for i in range(rows)]
        z += [[None] * len(tasks)] * (n - rows)
        fig.add_trace(go.Heatmap(z=z, x=tasks, y=_row_labels(m, n), zmid=0, colorscale="RdBu",
                                 text=[["" if v is None else f"{v:+.0f}" for v in row] for row in z],
                                 texttemplate="%{text}", showscale=False,
                                 hovertemplate="%{y}<br>task %{x}: %{z:+.1f} points<extra>difference</extra>"),
                      row=1, col=cols)
    fig.update_yaxes(autorange="reversed")
    for c in range(2, cols + 1):
        fig.update_yaxes(showticklabels=False, row=1, col=c)
    _layout(fig, f"Accuracy (%) on every task after each stage — scoring: {m.scoring}")
    fig.update_layout(margin={"l": 120, "r": 40, "t": 70, "b": 40})
    return fig


def perplexity_figure(metrics: RunMetrics | dict) -> go.Figure:
    m = RunMetrics.of(metrics)
    if not m or m.base is None:
        return empty("Perplexity of general text")
    colours = method_colours(m)
    n = len(m.tasks) + 1
    labels = _row_labels(m, n)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=labels, y=[m.base.ppl] * n, mode="lines", name="base model",
                             line={"color": KIND_COLOURS["base"], "dash": "dash", "width": 1.5}))
    for label, rec in m.methods.items():
        if not method(rec.kind).trains:
            continue
        fig.add_trace(go.Scatter(x=labels[: len(rec.ppl)], y=rec.ppl, mode="lines+markers", name=label,
                                 line={"color": colours[label], "width": 2.5}))
    return _layout(fig, "Perplexity on held-out general text (lower = less forgetting of the base)",
                   yaxis_title="perplexity")


def forgetting_figure(metrics: RunMetrics | dict, events: list[dict]) -> go.Figure:
    """In-task probes: accuracy on earlier tasks while later ones train; dashed lines: majority-class share."""
    m = RunMetrics.of(metrics)
    probes = ev.of_kind(events, ev.PROBE)
    if not probes or not m:
        return empty("Forgetting during training", "in-task probes appear from the second task on "
                                                   "(evaluation.probe_every > 0)")
    colours = method_colours(m, events)
    lengths = _stage_lengths(events)
    tasks = m.tasks
    fig = go.Figure()
    for label in dict.fromkeys(e["method"] for e in probes):
        mine = [e for e in probes if e["method"] == label]
        for j, task in enumerate(tasks):
            pts = [(_global_step(e, lengths), e["accuracy"][j]) for e in mine if j < len(e["accuracy"])]
            if not pts:
                continue
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[None if p[1] is None else 100 * p[1] for p in pts],
                                     mode="lines+markers", name=f"{label}: {task}",
                                     line={"color": colours.get(label), "dash": DASHES[j % len(DASHES)]}))
    for j, (task, share) in enumerate(zip(tasks, m.majority)):
        if share is not None and j < len(tasks) - 1:
            fig.add_hline(y=100 * share, line={"color": "#999", "dash": DASHES[j % len(DASHES)], "width": 1},
                          annotation_text=f"majority class: {task}", annotation_font={"size": 10, "color": "#777"},
                          annotation_position=("top left", "bottom left", "top right", "bottom right")[j % 4])
    return _layout(fig, "Forgetting during training: accuracy on earlier tasks (probe rows)",
                   xaxis_title="step (across tasks)", yaxis_title="accuracy %", yaxis_range=[0, 102])
