"""Plotly figures from a run's metrics.json and events: drawing only, every number comes from the run store.

A method has the same colour in every chart (CURLoRA blue, LoRA orange, base grey, …), so a reader can follow
one method from the loss curve to the heatmap to the perplexity line. Live charts are redrawn while a run trains:
each keeps one `uirevision` per chart and run (the reader's zoom, pan and hidden legend entries survive every
update; another run starts fresh), every trace has a stable `uid`, and methods come in the run's own order.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pathlib import Path

from curlora.measure.record import RunMetrics
from curlora.methods.registry import described, method
from curlora.run import events as ev

KIND_COLOURS = {"curlora": "#1f6fb4", "lora": "#e8710a", "base": "#7f7f7f", "full": "#c0392b", "head-only": "#8e44ad"}
EXTRA = ["#2ca02c", "#17becf", "#bcbd22", "#e377c2", "#8c564b"]
DASHES = ["solid", "dash", "dot", "dashdot", "longdash"]
HEIGHT = 340


def method_colours(m: RunMetrics, events: list[dict] | None = None) -> dict[str, str]:
    """label -> colour: by kind first; a second method of the same kind gets one of the extra colours."""
    kinds = {label: rec.kind or label for label, rec in m.methods.items()}
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


def named(m: RunMetrics, label: str) -> str:
    """A method's label with its setting ('curlora (lr 2e-2, r 8)'); the bare label for a record stored before
    settings were (or for a method the record does not hold yet)."""
    rec = m.methods.get(label)
    return described(label, rec.setting if rec is not None else None)


SAME = "≈"  # the mark of a number that its own 95 % interval cannot tell from the reference it is compared with
NOISE_NOTE = (f"{SAME}: the cell's 95 % interval contains the majority-class share or the base model's accuracy on "
              f"that task (not distinguishable from them)")
DIFF_NOTE = f"{SAME} in the difference: the two cells' 95 % intervals overlap (inside the noise)"


def _contains(ci, value) -> bool:
    return ci is not None and value is not None and len(ci) == 2 and ci[0] <= value <= ci[1]


def _overlap(a, b) -> bool:
    return a is not None and b is not None and len(a) == 2 and len(b) == 2 and a[0] <= b[1] and b[0] <= a[1]


def _interval_text(cell: dict) -> str:
    """'n=64, 95 % CI [60.0, 81.5] %' for a hover, from the stored numbers; what is missing says so."""
    n, ci = cell.get("n"), cell.get("ci95")
    parts = [f"n={n:,}" if n else "n not stored"]
    parts.append(f"95 % CI [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}] %" if ci else "no interval stored")
    return ", ".join(parts)


def _note(fig: go.Figure, text: str, y: float = -0.32) -> None:
    fig.add_annotation(text=text, showarrow=False, xref="paper", yref="paper", x=0, y=y, xanchor="left",
                       yanchor="top", align="left", font={"size": 11, "color": "#666"})


def _layout(fig: go.Figure, title: str, revision: str | None = None, **kw) -> go.Figure:
    """The common layout; `revision` (chart name + run id) keeps the reader's zoom and legend across redraws."""
    fig.update_layout(title={"text": title, "x": 0.01, "font": {"size": 15}}, height=HEIGHT, template="plotly_white",
                      margin={"l": 50, "r": 20, "t": 50, "b": 40},
                      legend={"orientation": "h", "y": -0.25, "yanchor": "top"},
                      **({"uirevision": revision} if revision else {}), **kw)
    return fig


def revision(chart: str, m: RunMetrics, events: list[dict] | None = None) -> str:
    """One uirevision per chart and run: stable while the run trains, new for another run."""
    run_id = m.run_id
    if not run_id:
        start = ev.first(events or [], ev.RUN_START)
        run_id = str(start.get("t", "")) if start else ""
    return f"{chart}:{run_id}"


def method_order(m: RunMetrics, events: list[dict], found) -> list[str]:
    """The labels in `found`, in the run's own order (run_start's methods, then the record's), so a trace never
    changes place when another method starts."""
    start = ev.first(events or [], ev.RUN_START)
    known = list(dict.fromkeys([*(start.get("methods", []) if start else []), *m.methods]))
    found = list(dict.fromkeys(found))
    return [label for label in known if label in found] + [label for label in found if label not in known]


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


LOSS_POINTS = 400  # points per curve at most: a 300k-step log draws (and sends) as fast as a short one


def thin(points: list, limit: int = LOSS_POINTS) -> list:
    """Every k-th point (k fixed by the length) and always the last: at most limit + 1 points, in order."""
    if len(points) <= limit:
        return points
    k = -(-len(points) // limit)
    kept = points[::k]
    return kept if kept[-1] is points[-1] else kept + [points[-1]]


def loss_figure(m: RunMetrics, events: list[dict]) -> go.Figure:
    steps = ev.of_kind(events, ev.STEP)
    if not steps:
        return empty("Training loss")
    colours = method_colours(m, events)
    lengths = _stage_lengths(events)
    fig = go.Figure()
    for label in method_order(m, events, (e["method"] for e in steps)):
        mine = thin([e for e in steps if e["method"] == label])
        fig.add_trace(go.Scatter(x=[_global_step(e, lengths) for e in mine], y=[e["smoothed_loss"] for e in mine],
                                 mode="lines", name=named(m, label), uid=f"loss:{label}",
                                 line={"color": colours.get(label), "width": 2},
                                 customdata=[[e["task"], e["loss"]] for e in mine],
                                 hovertemplate="task %{customdata[0]}<br>step %{x}<br>smoothed %{y:.3f}"
                                               "<br>loss %{customdata[1]:.3f}<extra>" + named(m, label)
                                               + "</extra>"))
    first = steps[0]["method"]
    boundary = 0
    for stage in range(1, max(s for (m, s) in lengths if m == first)):
        boundary += lengths.get((first, stage), 0)
        fig.add_vline(x=boundary + 0.5, line={"color": "#bbb", "dash": "dot", "width": 1})
    title = "Training loss (smoothed; dotted lines: task boundaries)"
    if max(sum(1 for e in steps if e["method"] == m) for m in {e["method"] for e in steps}) > LOSS_POINTS:
        title += f"; every k-th step shown, at most {LOSS_POINTS} points per curve"
    return _layout(fig, title, revision("loss", m, events), xaxis_title="step (across tasks)",
                   yaxis_title="loss")


def _row_labels(m: RunMetrics, n_rows: int) -> list[str]:
    tasks = m.tasks
    return ["base"] + [f"after {t}" for t in tasks[: n_rows - 1]]


def _pct(v) -> str:
    return "" if v is None else f"{100 * v:.0f}"


def _reference(m: RunMetrics, stage: int, task: int) -> list[float]:
    """What a cell is told apart from: the majority-class share of the task and, after training (stage ≥ 1), the
    base model's accuracy on it (row 0 *is* the base model, so it is compared with the majority share only)."""
    refs = [m.majority[task]] if task < len(m.majority) and m.majority[task] is not None else []
    if stage >= 1 and m.base is not None and task < len(m.base.accuracy or []) and m.base.accuracy[task] is not None:
        refs.append(m.base.accuracy[task])
    return refs


def accuracy_heatmaps(m: RunMetrics) -> go.Figure:
    """One heatmap per method (rows: stages, columns: tasks), plus CURLoRA − LoRA where both exist.

    Hover: accuracy, n and the stored 95 % Wilson interval. A cell whose interval contains the majority-class share
    or the base model's accuracy is marked ≈; in the difference, ≈ marks two cells whose intervals overlap. Every
    interval is the stored one (metrics.json's matrix_ci95): nothing is recomputed here."""
    methods = m.methods
    if not m or not methods:
        return empty("Accuracy after each task")
    tasks = m.tasks
    labels = list(methods)
    pair = None
    kinds = {rec.kind: label for label, rec in methods.items()}
    if "curlora" in kinds and "lora" in kinds:
        pair = (kinds["curlora"], kinds["lora"])
    titles = [f"{named(m, label)} ({methods[label].status})" for label in labels]
    if pair:
        titles.append(f"{named(m, pair[0])} − {named(m, pair[1])} (points; {SAME}: intervals overlap)")
    cols = len(titles)
    fig = make_subplots(rows=1, cols=cols, subplot_titles=titles, horizontal_spacing=0.06)
    n = len(tasks) + 1
    any_interval = False
    for c, label in enumerate(labels, start=1):
        rec = methods[label]
        matrix = rec.matrix
        z = [[None if a is None else 100 * a for a in row] for row in matrix] + [[None] * len(tasks)] * (n - len(matrix))
        text, hover = [], []
        for i in range(n):
            trow, hrow = [], []
            for j in range(len(tasks)):
                cell = rec.cell(i, j) if i < len(matrix) else {}
                acc = cell.get("accuracy")
                any_interval = any_interval or cell.get("ci95") is not None
                same = acc is not None and any(_contains(cell.get("ci95"), r) for r in _reference(m, i, j))
                trow.append("" if acc is None else (SAME if same else "") + _pct(acc))
                hrow.append(_interval_text(cell) + (f"<br>{SAME} majority class or base inside the interval"
                                                    if same else "") if acc is not None else "not measured yet")
            text.append(trow)
            hover.append(hrow)
        fig.add_trace(go.Heatmap(z=z, x=tasks, y=_row_labels(m, n), zmin=0, zmax=100, colorscale="Blues",
                                 uid=f"accuracy:{label}",
                                 text=text, texttemplate="%{text}", showscale=c == 1, customdata=hover,
                                 colorbar={"title": "%", "x": 1.0, "len": 0.8, "thickness": 12},
                                 hovertemplate="%{y}<br>task %{x}: %{z:.1f}%<br>%{customdata}<extra>"
                                               + named(m, label) + "</extra>"),
                      row=1, col=c)
    if pair:
        ra, rb = methods[pair[0]], methods[pair[1]]
        a, b = ra.matrix, rb.matrix
        rows = min(len(a), len(b))
        z = [[None if x is None or y is None else 100 * (x - y) for x, y in zip(a[i], b[i])] for i in range(rows)]
        text, hover = [], []
        for i in range(rows):
            trow, hrow = [], []
            for j, v in enumerate(z[i]):
                ca, cb = ra.cell(i, j), rb.cell(i, j)
                noise = v is not None and _overlap(ca.get("ci95"), cb.get("ci95"))
                trow.append("" if v is None else (SAME if noise else "") + f"{v:+.0f}")
                hrow.append(f"{pair[0]}: {_interval_text(ca)}<br>{pair[1]}: {_interval_text(cb)}"
                            + ("<br>intervals overlap: inside the noise" if noise else ""))
            text.append(trow)
            hover.append(hrow)
        z += [[None] * len(tasks)] * (n - rows)
        text += [[""] * len(tasks)] * (n - rows)
        hover += [["not measured yet"] * len(tasks)] * (n - rows)
        fig.add_trace(go.Heatmap(z=z, x=tasks, y=_row_labels(m, n), zmid=0, colorscale="RdBu", uid="accuracy:diff",
                                 text=text, texttemplate="%{text}", showscale=False, customdata=hover,
                                 hovertemplate="%{y}<br>task %{x}: %{z:+.1f} points<br>%{customdata}"
                                               "<extra>difference</extra>"),
                      row=1, col=cols)
    fig.update_yaxes(autorange="reversed")
    for c in range(2, cols + 1):
        fig.update_yaxes(showticklabels=False, row=1, col=c)
    _layout(fig, f"Accuracy (%) on every task after each stage — scoring: {m.scoring}", revision("accuracy", m))
    note = NOISE_NOTE + (f"<br>{DIFF_NOTE}" if pair else "") if any_interval else \
        "no 95 % intervals stored for this run (recorded before they were): no cell can be marked " + SAME
    _note(fig, note, y=-0.15)
    fig.update_layout(margin={"l": 120, "r": 40, "t": 70, "b": 85})
    return fig


def probe_name(m: RunMetrics) -> str:
    source = (m.probe or {}).get("source")
    return Path(source).name if source else "the probe text"


PPL_TITLE = "Perplexity of general text — closer to the base line = less drift"


def perplexity_figure(m: RunMetrics) -> go.Figure:
    """Perplexity on the run's probe text (left) and the KL to the base model on its own self-sampled text (right),
    per stage: the KL is the in-domain drift measure; a probe outside the model's own domain can read better than
    the base while the model drifts."""
    if not m or m.base is None:
        return empty("Perplexity of general text")
    colours = method_colours(m)
    n = len(m.tasks) + 1
    labels = _row_labels(m, n)
    probe = probe_name(m)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=[f"perplexity on {probe}", "KL to base on self-sampled text (nats/token)"])
    fig.add_trace(go.Scatter(x=labels, y=[m.base.ppl] * n, mode="lines", name="base model", uid="ppl:base",
                             line={"color": KIND_COLOURS["base"], "dash": "dash", "width": 1.5}), row=1, col=1)
    any_kl = False
    for label, rec in m.methods.items():
        if not method(rec.kind).trains:
            continue
        name = named(m, label)
        fig.add_trace(go.Scatter(x=labels[: len(rec.ppl)], y=rec.ppl, mode="lines+markers", name=name,
                                 legendgroup=label, uid=f"ppl:{label}", line={"color": colours[label], "width": 2.5},
                                 hovertemplate="%{x}: perplexity %{y:.2f}<extra>" + name + "</extra>"),
                      row=1, col=1)
        kl = list(rec.kl_to_base or [])
        if any(x is not None for x in kl):
            any_kl = True
            fig.add_trace(go.Scatter(x=labels[: len(kl)], y=kl, mode="lines+markers", name=f"{name}: KL to base",
                                     legendgroup=label, showlegend=False, uid=f"kl:{label}",
                                     line={"color": colours[label], "width": 2.5},
                                     hovertemplate="%{x}: KL %{y:.4f}<extra>" + name + "</extra>"),
                          row=1, col=2)
    if any_kl:
        fig.add_trace(go.Scatter(x=labels, y=[0.0] * n, mode="lines", name="base model: KL", showlegend=False,
                                 uid="kl:base",
                                 line={"color": KIND_COLOURS["base"], "dash": "dash", "width": 1.5}), row=1, col=2)
    else:
        fig.add_annotation(text="no KL to base stored for this run (self-probe off or an older run)",
                           showarrow=False, font={"size": 12, "color": "#888"}, x=0.5, y=0.5,
                           xref="x2 domain", yref="y2 domain")
    fig.update_yaxes(title_text="perplexity", row=1, col=1)
    fig.update_yaxes(title_text="KL to base", rangemode="tozero", row=1, col=2)
    _layout(fig, PPL_TITLE, revision("perplexity", m))
    _note(fig, f"Probe text: {probe}. A probe not in the model's own domain can read better than the base<br>"
               f"while the model drifts; the self-probe KL (right) is the in-domain measure.", y=-0.38)
    fig.update_layout(height=HEIGHT + 40, margin={"l": 50, "r": 20, "t": 70, "b": 110})
    return fig


def forgetting_figure(m: RunMetrics, events: list[dict]) -> go.Figure:
    """In-task probes: accuracy on earlier tasks while later ones train; dashed lines: majority-class share."""
    probes = ev.of_kind(events, ev.PROBE)
    if not probes or not m:
        return empty("Forgetting during training", "in-task probes appear from the second task on "
                                                   "(evaluation.probe_every > 0)")
    colours = method_colours(m, events)
    lengths = _stage_lengths(events)
    tasks = m.tasks
    fig = go.Figure()
    for label in method_order(m, events, (e["method"] for e in probes)):
        mine = thin([e for e in probes if e["method"] == label])
        for j, task in enumerate(tasks):
            pts = [(_global_step(e, lengths), e["accuracy"][j]) for e in mine if j < len(e["accuracy"])]
            if not pts:
                continue
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[None if p[1] is None else 100 * p[1] for p in pts],
                                     mode="lines+markers", name=f"{named(m, label)}: {task}",
                                     uid=f"probe:{label}:{task}",
                                     line={"color": colours.get(label), "dash": DASHES[j % len(DASHES)]}))
    for j, (task, share) in enumerate(zip(tasks, m.majority)):
        if share is not None and j < len(tasks) - 1:
            fig.add_hline(y=100 * share, line={"color": "#999", "dash": DASHES[j % len(DASHES)], "width": 1},
                          annotation_text=f"majority class: {task}", annotation_font={"size": 10, "color": "#777"},
                          annotation_position=("top left", "bottom left", "top right", "bottom right")[j % 4])
    return _layout(fig, "Forgetting during training: accuracy on earlier tasks (probe rows)",
                   revision("forgetting", m, events), xaxis_title="step (across tasks)", yaxis_title="accuracy %",
                   yaxis_range=[0, 102])
