"""Plotly figures of a study (study.json, curlora/run/study.py): drawing only, every number comes from the file.

Redrawn while a study runs: one uirevision keeps the reader's zoom and legend, and each trace has a stable uid
(a method's seed dots appear only once it has points, and must not take another trace's place).

The frontier: learning (x) against forgetting (over every earlier task, and over those each run knew) and against
drift (y), one colour per method (the run charts' colour of
its kind), each learning rate a point with 95 % error bars over its runs (seeds, times task orders where a study
has several) on both axes, the runs themselves as faint dots, the frontier as a line. Learning here is on every eval
row, as the forgetting it is set against and the frontier's fits are; the tables' chosen settings report test rows.
Drift is the KL to base on the model's own samples; where the study ran the chat probe (a chat model), it is the
chat-retention frontier instead: the KL to base on the base's replies to held-out instructions (its own domain,
through the template) and the factual questions still answered.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from curlora.measure.study_record import StudyRecord, Summary
from curlora.methods.registry import lr_text
from curlora.run.study_data import base_method
from curlora.ui.charts import EXTRA, KIND_COLOURS


def _err(s: Summary, measure: str | None = None) -> tuple[float | None, float | None]:
    """Error-bar lengths above and below the mean, the interval clipped to the measure's range (Summary.within)."""
    if s.mean is None or not s.ci95:
        return None, None
    lo, hi = s.within(measure)
    return hi - s.mean, s.mean - lo


# beyond the run charts' extra colours: a study may draw ten methods and more, each its own colour
MORE = ["#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#31a354", "#756bb1"]


def styles(labels: list[str]) -> dict[str, tuple[str, str]]:
    """label -> (colour, marker symbol): a kind keeps the run charts' colour; a variant of a kind that has one
    (`curlora-replay25`) takes its kind's colour with a diamond; every other label the next colour no label uses."""
    out, used = {}, set()
    for label in labels:
        if label in KIND_COLOURS:
            out[label] = (KIND_COLOURS[label], "circle")
            used.add(KIND_COLOURS[label])
    spare = (c for c in EXTRA + MORE if c not in used and c not in KIND_COLOURS.values())
    for label in labels:
        base = base_method(label)
        if label in out:
            continue
        if base != label and base in KIND_COLOURS:
            out[label] = (KIND_COLOURS[base], "diamond")
        else:
            out[label] = (next(spare, "#444444"), "circle")
    return out


def _span(values: list[float], pad: float = 0.08) -> list[float] | None:
    """An axis range around the points (the means and each run), padded: an interval from two runs (Student t with
    one degree of freedom, 12.7 × its spread) would otherwise set the scale and squash every point; such a bar runs
    off the panel instead, and its hover still gives n."""
    xs = [v for v in values if v is not None]
    if not xs:
        return None
    lo, hi = min(xs), max(xs)
    width = hi - lo
    if width <= 1e-9 * max(abs(hi), 1.0):  # one value, or one value computed two ways (26/36 × 100 ≠ 72.2…2)
        width = max(abs(hi), 1.0)
    return [lo - pad * width, hi + pad * width]


LOG_SPREAD = 100.0  # a KL panel whose positive values span this factor or more is drawn on a log axis
LOGGABLE = {"kl_to_base", "chat_kl"}  # the measures that can span decades (a run that breaks the model: KL ×100)


def _y_axis(name: str, values: list[float]) -> dict:
    """The y axis of one panel: a KL whose values are all above 0 and span LOG_SPREAD or more goes on a log axis
    (the edge of a grid, where training broke the model, would squash every other point flat against 0), its range
    padded in decades; else a linear range around the points (_span)."""
    xs = [v for v in values if v is not None]
    if name in LOGGABLE and xs and min(xs) > 0 and max(xs) / min(xs) >= LOG_SPREAD:
        lo, hi = math.log10(min(xs)), math.log10(max(xs))
        pad = 0.08 * (hi - lo)
        return {"type": "log", "range": [lo - pad, hi + pad], "title_text": f"{PANELS[name][1]} (log scale)"}
    return {"type": "linear", "range": _span(xs), "title_text": PANELS[name][1]}


# (measure, panel title, y-axis title, which frontier draws its line)
PANELS = {"forgetting": ("Forgetting (Chaudhry) — lower is better", "forgetting (points)", "frontier"),
          # over the earlier tasks each run knew (above the majority class after training them; a base's abilities)
          "forgetting_known": ("Forgetting of what each run knew — lower is better", "forgetting of known tasks "
                               "(points)", None),
          "kl_to_base": ("KL to base on the model's own samples — lower is less drift", "KL(base ‖ model) per token",
                         "frontier"),
          "chat_kl": ("Chat KL to base on its replies — lower keeps more",
                      "KL(base ‖ model) per reply token", "chat_frontier"),
          "facts": ("Facts still answered — higher keeps more", "facts right (%)", None)}  # no fit along facts: the points only


def panels(rec: StudyRecord) -> list[str]:
    """The measures drawn against learning: forgetting, forgetting of what each run knew where any run knew an
    earlier task, then the chat probe's KL and facts where any run has them, else the self-probe KL."""
    chat = any(p.chat_kl is not None for p in rec.points)
    known = ["forgetting_known"] if any(p.forgetting_known is not None for p in rec.points) else []
    return ["forgetting", *known, *(["chat_kl", "facts"] if chat else ["kl_to_base"])]


def frontier_figure(rec: StudyRecord | dict) -> go.Figure:
    rec = StudyRecord.of(rec)
    shown = panels(rec)
    # one row of panels; four go two by two, so each keeps a readable width in the tab
    cols = 2 if len(shown) == 4 else len(shown)
    rows = -(-len(shown) // cols)
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.3 / cols, vertical_spacing=0.16,
                        subplot_titles=[PANELS[n][0] for n in shown])

    def at(name: str) -> dict:
        i = shown.index(name)
        return {"row": i // cols + 1, "col": i % cols + 1}
    groups = rec.groups
    look = styles(list(rec.labels))
    spans: dict[str, list[float]] = {"learning": []}
    for label in rec.labels:
        colour, symbol = look[label]
        mine = sorted((g for g in groups.values() if g.method == label), key=lambda g: g.lr)
        pts = [p for p in rec.points if p.method == label]
        spans["learning"] += [p.learning for p in pts]
        for name in shown:
            if pts:
                spans.setdefault(name, []).extend(getattr(p, name) for p in pts)
                fig.add_trace(go.Scatter(
                    x=[p.learning for p in pts], y=[getattr(p, name) for p in pts], mode="markers",
                    marker={"color": colour, "size": 5, "opacity": 0.3, "symbol": symbol}, showlegend=False,
                    hoverinfo="text",
                    uid=f"{label}:{name}:seeds",
                    hovertext=[f"{label} lr {lr_text(p.lr)} seed {p.seed}<br>run {p.run_id}" for p in pts]),
                    **at(name))
            good = [g for g in mine if g.mean("learning") is not None and g.mean(name) is not None]
            if not good:
                continue
            ex = [_err(g.learning) for g in good]
            ey = [_err(g.measure(name), name) for g in good]
            fig.add_trace(go.Scatter(
                x=[g.mean("learning") for g in good], y=[g.mean(name) for g in good], mode="markers+text",
                text=[lr_text(g.lr) for g in good], textposition="top center", textfont={"size": 10},
                marker={"color": colour, "size": 10, "symbol": symbol},
                name=f"{label} (r {good[0].setting.get('r', '–')})",
                uid=f"{label}:{name}:groups",
                legendgroup=label, showlegend=name == shown[0],
                error_x={"type": "data", "array": [e[0] for e in ex], "arrayminus": [e[1] for e in ex],
                         "visible": True, "thickness": 1},
                error_y={"type": "data", "array": [e[0] for e in ey], "arrayminus": [e[1] for e in ey],
                         "visible": True, "thickness": 1},
                hovertemplate=[f"<b>{label} lr {lr_text(g.lr)}</b><br>learning %{{x:.2f}} pts<br>{name} %{{y:.4g}}"
                               f"<br>n = {g.learning.n} runs<extra></extra>" for g in good]),
                **at(name))
            line = PANELS[name][2]
            front = [groups[k] for k in (getattr(rec, line).get(label, []) if line else []) if k in groups]
            front = [g for g in front if g.mean(name) is not None]
            if len(front) > 1:
                fig.add_trace(go.Scatter(x=[g.mean("learning") for g in front], y=[g.mean(name) for g in front],
                                         mode="lines", line={"color": colour, "width": 2, "dash": "dot"},
                                         uid=f"{label}:{name}:frontier",
                                         showlegend=False, hoverinfo="skip", legendgroup=label), **at(name))
    if "facts" in shown:  # the base's own share, each seed's base row where rows are drawn per seed
        rows = list(rec.bases.values()) or ([rec.base] if rec.base is not None else [])
        shares = [100 * r.facts / r.facts_n for r in rows if r.facts is not None and r.facts_n]
        if shares:
            base = sum(shares) / len(shares)
            spans.setdefault("facts", []).append(base)  # the base's line stays on the panel
            fig.add_hline(y=base, line={"color": "#888", "dash": "dash", "width": 1}, **at("facts"),
                          annotation_text=f"base {base:.0f} %", annotation_position="bottom right")
    done, total = rec.done, len(rec.plan)
    fig.update_xaxes(title_text="learning on every eval row: points above the better of majority class and base",
                     zeroline=True, range=_span(spans["learning"]))
    for name in shown:
        fig.update_yaxes(**_y_axis(name, spans.get(name, [])), **at(name))
    against = "forgetting and chat retention" if "chat_kl" in shown else "forgetting"
    fig.update_layout(title={"text": f"Learning against {against}, each learning rate a point ({done} of {total} "
                                     "runs finished; bars: 95 % over runs)", "x": 0.01, "font": {"size": 15}},
                      height=430 if rows == 1 else 800, template="plotly_white", uirevision="frontier",
                      margin={"l": 50, "r": 20, "t": 70, "b": 50},
                      legend={"orientation": "h", "y": -0.2 if rows == 1 else -0.1, "yanchor": "top"})
    return fig
