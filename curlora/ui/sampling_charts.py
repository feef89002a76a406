"""The Model tab's CURLoRA sampling figure: drawing only, every count comes from the engine's report
(curlora/measure/cur_sampling.py)."""

from __future__ import annotations

import plotly.graph_objects as go

from curlora.ui.charts import KIND_COLOURS

RULE_COLOURS = {"inverted": KIND_COLOURS["curlora"], "inverted_offset": "#e8710a", "uniform": "#7f7f7f",
                "norm": "#2ca02c", "leverage": "#8e44ad"}
RULE_NAMES = {"inverted": "inverted 1/p (paper)", "inverted_offset": "inverted 1/(p + 0.001) (reference code)",
              "uniform": "uniform 1/n", "norm": "norm p", "leverage": "leverage (top-r singular vectors)"}


def sampling_figure(matrix: dict | None, side: str = "columns") -> go.Figure:
    """Histogram of log10 probability per rule for one matrix's columns or rows, one bar trace per rule, with the
    uniform level 1/n marked. Counts are on a log axis: uniform puts every index in one bin."""
    fig = go.Figure()
    if matrix:
        h = matrix["histograms"][side]
        tv = matrix["tv_from_uniform"][side]
        for rule, counts in h["counts"].items():
            zeros = h["zeros"][rule]
            label = f"{RULE_NAMES.get(rule, rule)} — TV {tv[rule]:.3f}" + (f", {zeros} never drawn" if zeros else "")
            fig.add_trace(go.Bar(x=h["log10_centres"], y=counts, name=label, legendgroup=rule, opacity=0.55,
                                 marker={"color": RULE_COLOURS.get(rule)},
                                 hovertemplate=f"{rule}: %{{y}} {side} near 10^%{{x:.2f}}<extra></extra>"))
        fig.add_vline(x=h["log10_uniform"], line={"color": RULE_COLOURS["uniform"], "dash": "dash", "width": 1})
        m, n = matrix["shape"]
        title = f"{matrix['name']} ({m} x {n}): probabilities of its {n if side == 'columns' else m} {side}"
    else:
        title = f"{side}: press Inspect sampling"
    fig.update_layout(barmode="overlay", template="plotly_white", height=360,
                      title={"text": title, "font": {"size": 13}},
                      xaxis={"title": f"log10 probability of a {side[:-1]}"}, yaxis={"title": side, "type": "log"},
                      margin={"l": 50, "r": 20, "t": 50, "b": 40},
                      legend={"orientation": "h", "y": -0.25, "yanchor": "top", "font": {"size": 10}})
    return fig
