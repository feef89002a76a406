"""The paper's forgetting experiment on real data, with the controls it lacked.

    python bench/forgetting_study.py                    # the full study (about 30 min on 2 CPU cores)
    python bench/forgetting_study.py --quick            # one seed, fewer methods: a few minutes

Protocol (PAPER.md): MRPC -> SST-2 -> Sentiment140 from ../shared/data, on a real pretrained model available
offline (default: ../shared/data/models/stories260K/hf). What it adds to the paper:
  - controls: base (no training), head-only (head scoring), full fine-tuning;
  - both scoring modes: head (the paper's) and likelihood;
  - seeded stratified eval samples (never the first rows of a sorted file);
  - WikiText-2 perplexity by strided sliding window beside the paper's single window;
  - CURLoRA sampling: inverted (paper), inverted_offset (reference code), uniform (control);
  - several seeds, mean ± std;
  - a learnability check: does any method beat the majority class and head-only at a task's own stage?
Every run goes through the product's own runner and run store (`--data-dir`), so each number can be re-read with
`python -m curlora show RUN_ID`. Aggregates go to docs/forgetting-study-results.md (+ .json, + a plotly figure).

One setting per method: these are the "earlier runs" of docs/forgetting-study-toys.md, which leads with the
learning-rate frontier and the matched-loss comparison (bench/forgetting_frontier.py, docs/studies/stories260k-*).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED = REPO.parent / "shared" / "data"


def tasks(args) -> list[dict]:
    n, e = args.train_rows, args.eval_rows
    out = [
        {"name": "mrpc", "preset": "mrpc", "train_file": str(SHARED / "mrpc/train.csv"),
         "eval_file": str(SHARED / "mrpc/validation.csv"), "max_train_rows": n, "max_eval_rows": e},
        {"name": "sst2", "preset": "sst2", "train_file": str(SHARED / "sst2/train.csv"),
         "eval_file": str(SHARED / "sst2/validation.csv"), "max_train_rows": n, "max_eval_rows": e},
        {"name": "sentiment140", "preset": "sentiment140", "train_file": str(SHARED / "sentiment140/train_sample.csv"),
         "eval_file": str(SHARED / "sentiment140/test.csv"), "max_train_rows": n, "max_eval_rows": e},
    ]
    if args.extra_task:  # a task a tiny model can learn, so forgetting has something to show
        demo = REPO / "assets" / "tasks" / args.extra_task
        out.append({"name": args.extra_task, "train_file": str(demo / "train.csv"), "eval_file": str(demo / "eval.csv"),
                    "max_train_rows": n, "max_eval_rows": e})
    return out


def methods(args, scoring: str) -> list[dict]:
    out = []
    for r in args.ranks:
        out.append({"kind": "curlora", "name": f"curlora-r{r}", "r": r, "sampling": "inverted"})
        out.append({"kind": "lora", "name": f"lora-r{r}", "r": r})
    r = args.ranks[0]
    for lr in args.curlora_lr:  # CURLoRA at its own learning rate, beside the shared one
        out.append({"kind": "curlora", "name": f"curlora-lr{lr:g}-r{r}".replace(".", "p"), "r": r, "sampling": "inverted", "lr": lr})
    if not args.quick:
        if not args.no_sampling_controls:
            out.append({"kind": "curlora", "name": f"curlora-offset-r{r}", "r": r, "sampling": "inverted_offset"})
            out.append({"kind": "curlora", "name": f"curlora-uniform-r{r}", "r": r, "sampling": "uniform"})
        out.append({"kind": "full", "name": "full"})
    if scoring == "head":
        out.append({"kind": "head-only", "name": "head-only"})  # the control; "base" has no heads to score with
    else:
        out.append({"kind": "base", "name": "base"})
    return out


def experiment(args, scoring: str, seed: int) -> dict:
    return {
        "model": {"name": args.model},
        "tasks": [dict(t, seed=seed) for t in tasks(args)],
        "methods": [dict(m, seed=seed) if m["kind"] == "curlora" else m for m in methods(args, scoring)],
        "training": {"max_steps": args.steps, "lr": args.lr, "batch_size": args.batch, "max_length": 128,
                     "scheduler": "cosine", "warmup_steps": max(1, args.steps // 10), "seed": seed},
        "evaluation": {"scoring": scoring, "probe_text": str(SHARED / "wikitext2/test.txt"),
                       "ppl_window": args.window, "ppl_stride": args.window // 2, "ppl_max_tokens": args.ppl_tokens},
        "run": {"name": f"study-{scoring}-s{seed}"},
    }


def mean_std(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if x is not None]
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def fmt(xs, pct=True) -> str:
    m, s = mean_std(xs)
    if m != m:
        return "–"
    return f"{100 * m:.1f} ± {100 * s:.1f}" if pct else f"{m:.2f} ± {s:.2f}"


def aggregate(results: dict) -> dict:
    """results[scoring][seed] = metrics.json → per scoring, per method: lists over seeds."""
    agg = {}
    for scoring, by_seed in results.items():
        agg[scoring] = {}
        for seed, m in by_seed.items():
            for name, rec in m["methods"].items():
                a = agg[scoring].setdefault(name, {"matrix": [], "summary": [], "ppl": [], "ppl1": [], "kind": rec["kind"],
                                                   "trainable": rec["trainable"], "status": []})
                a["matrix"].append(rec["matrix"])
                a["summary"].append(rec["summary"])
                a["ppl"].append(rec["ppl"])
                a["ppl1"].append(rec["ppl_single_window"])
                a["status"].append(rec["status"])
        agg[scoring]["_majority"] = [m["majority"] for m in by_seed.values()]
        agg[scoring]["_tasks"] = next(iter(by_seed.values()))["tasks"]
    return agg


def learnability(agg_s: dict) -> list[str]:
    tasks_ = agg_s["_tasks"]
    lines = []
    majority = [statistics.fmean(col) for col in zip(*agg_s["_majority"])]
    control = agg_s.get("head-only") or agg_s.get("base")
    for j, t in enumerate(tasks_):
        own_ctrl = [mat[j + 1][j] for mat in control["matrix"] if mat[j + 1][j] is not None] if control else []
        ctrl = statistics.fmean(own_ctrl) if own_ctrl else None
        winners = []
        for name, a in agg_s.items():
            if name.startswith("_") or a["kind"] in ("base", "head-only"):
                continue
            own = [mat[j + 1][j] for mat in a["matrix"] if len(mat) > j + 1 and mat[j + 1][j] is not None]
            if own and statistics.fmean(own) > majority[j] + 0.02 and (ctrl is None or statistics.fmean(own) > ctrl + 0.02):
                winners.append(f"{name} ({100 * statistics.fmean(own):.1f})")
        ref = f"majority {100 * majority[j]:.1f}" + (f", control {100 * ctrl:.1f}" if ctrl is not None else "")
        if winners:
            lines.append(f"- **{t}** ({ref}): learned by {', '.join(winners)}.")
        else:
            lines.append(f"- **{t}** ({ref}): **no method beat the majority class and the control by 2 points** — "
                         "the model cannot learn this task at this budget; its forgetting numbers are chance-level noise.")
    return lines


def markdown(agg: dict, args, seconds: float) -> str:
    lines = ["# Forgetting study — generated results", "",
             f"Command: `python bench/{Path(__file__).name} {' '.join(sys.argv[1:])}`  ",
             f"Model: `{args.model}`; seeds {args.seeds}; ranks {args.ranks}; {args.steps} steps per task, lr {args.lr}, "
             f"batch {args.batch}; {args.train_rows} training / {args.eval_rows} eval rows per task (seeded, stratified).  ",
             f"Perplexity: WikiText-2 test, first {args.ppl_tokens} tokens, window {args.window}, stride {args.window // 2} "
             f"(strided) and the paper's single window of {args.window}.  ",
             f"Wall time: {seconds / 60:.1f} min. Entries are mean ± std over seeds, in %.", ""]
    for scoring, agg_s in agg.items():
        tasks_ = agg_s["_tasks"]
        lines += [f"## Scoring: {scoring}", "", "### Learnability", ""] + learnability(agg_s) + [""]
        lines += ["### Final accuracies and continual-learning metrics", "",
                  "| method | trainable | " + " | ".join(f"{t} (final)" for t in tasks_) +
                  " | ACC | BWT | FWT | forgetting | ppl before → after (strided) | ppl after (1 window) |",
                  "|---" * (len(tasks_) + 8) + "|"]
        for name, a in agg_s.items():
            if name.startswith("_"):
                continue
            finals = [fmt([mat[-1][j] for mat in a["matrix"]]) for j in range(len(tasks_))]
            sm = {k: [s.get(k) for s in a["summary"]] for k in ("acc", "bwt", "fwt", "forgetting")}
            ppl0, pplN = mean_std([p[0] for p in a["ppl"]])[0], [p[-1] for p in a["ppl"]]
            lines.append(f"| {name} | {a['trainable']:,} | " + " | ".join(finals) +
                         f" | {fmt(sm['acc'])} | {fmt(sm['bwt'])} | {fmt(sm['fwt'])} | {fmt(sm['forgetting'])} | "
                         f"{ppl0:.2f} → {fmt(pplN, pct=False)} | {fmt([p[-1] for p in a['ppl1']], pct=False)} |")
        lines += ["", "### Accuracy matrices (rows: after task; columns: task), mean over seeds", ""]
        for name, a in agg_s.items():
            if name.startswith("_"):
                continue
            lines += [f"**{name}**", "", "| after | " + " | ".join(tasks_) + " | ppl |", "|---" * (len(tasks_) + 2) + "|"]
            for i in range(len(a["matrix"][0])):
                cells = [fmt([mat[i][j] for mat in a["matrix"]]) for j in range(len(tasks_))]
                lines.append(f"| {'base' if i == 0 else tasks_[i - 1]} | " + " | ".join(cells) +
                             f" | {fmt([p[i] for p in a['ppl']], pct=False)} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def dash(name: str) -> str:
    """One colour per method kind; the line style tells the variants apart (rank, sampling rule, own lr)."""
    for key, style in (("offset", "dashdot"), ("uniform", "dot"), ("-lr", "longdash"), ("r16", "dash")):
        if key in name:
            return style
    return "solid"


def figure(agg: dict, path_html: Path) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    scorings = list(agg)
    fig = make_subplots(rows=1, cols=1 + len(scorings), subplot_titles=["WikiText-2 perplexity (strided) per stage"] +
                        [f"ACC per stage ({s} scoring)" for s in scorings])
    palette = {"curlora": "#2563eb", "lora": "#dc2626", "full": "#7c3aed", "base": "#6b7280", "head-only": "#059669"}
    first = agg[scorings[0]]
    for name, a in first.items():
        if name.startswith("_"):
            continue
        stages = list(range(len(a["ppl"][0])))
        fig.add_trace(go.Scatter(x=stages, y=[mean_std([p[i] for p in a["ppl"]])[0] for i in stages], name=name,
                                 line={"color": palette.get(a["kind"]), "dash": dash(name)}, legendgroup=name),
                      row=1, col=1)
    for c, s in enumerate(scorings, start=2):
        for name, a in agg[s].items():
            if name.startswith("_"):
                continue
            accs = []
            for i in range(1, len(a["matrix"][0])):
                vals = []
                for mat in a["matrix"]:
                    row = [x for x in mat[i][:i] if x is not None]
                    if row:
                        vals.append(statistics.fmean(row))
                accs.append(mean_std(vals)[0])
            fig.add_trace(go.Scatter(x=list(range(1, len(accs) + 1)), y=accs, name=name, showlegend=False,
                                     line={"color": palette.get(a["kind"]), "dash": dash(name)}, legendgroup=name),
                          row=1, col=c)
    fig.update_yaxes(type="log", title_text="perplexity (log scale)", row=1, col=1)  # full FT: 10⁴, base: 10²
    fig.update_xaxes(dtick=1, title_text="after task")
    fig.update_layout(width=1400, height=480, template="plotly_white", title="CURLoRA vs LoRA: forgetting study")
    fig.write_html(path_html, include_plotlyjs="cdn")
    try:  # a PNG beside it, through the same headless Chromium the browser tests use
        import subprocess
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            html = Path(d) / "fig.html"
            fig.write_html(html, include_plotlyjs=True)
            subprocess.run(["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                            "--no-first-run", "--disable-background-networking", "--disable-component-update",
                            "--disable-sync", "--hide-scrollbars", "--virtual-time-budget=8000",
                            f"--screenshot={path_html.with_suffix('.png')}", "--window-size=1420,500", html.as_uri()],
                           check=True, capture_output=True, timeout=120)
    except Exception as err:  # no Chromium here: the HTML is still written
        print(f"PNG skipped ({err})", file=sys.stderr)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one seed, r=8, fewer methods")
    ap.add_argument("--model", default=str(SHARED / "models/stories260K/hf"))
    ap.add_argument("--seeds", default=None, help="comma-separated (default 0,1,2; quick: 0)")
    ap.add_argument("--ranks", default=None, help="comma-separated (default 8,16; quick: 8)")
    ap.add_argument("--scorings", default="likelihood,head")
    ap.add_argument("--steps", type=int, default=None, help="optimiser steps per task (default 150; quick 60)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--train-rows", type=int, default=2000)
    ap.add_argument("--eval-rows", type=int, default=300)
    ap.add_argument("--ppl-tokens", type=int, default=16384)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--curlora-lr", default="", help="comma-separated learning rates for extra CURLoRA runs at r=ranks[0]")
    ap.add_argument("--no-sampling-controls", action="store_true", help="skip the inverted_offset and uniform runs")
    ap.add_argument("--extra-task", default="reviews", help="bundled demo task appended to the sequence ('' for none)")
    ap.add_argument("--data-dir", default=str(REPO / "runs" / "forgetting-study"))
    ap.add_argument("--out", default=str(REPO / "docs" / "forgetting-study-results.md"))
    ap.add_argument("--replot", action="store_true", help="redraw the figure from the --out JSON, run nothing")
    args = ap.parse_args(argv)
    if args.replot:
        out = Path(args.out)
        results = json.loads(out.with_suffix(".json").read_text())
        figure(aggregate(results), out.with_name(out.stem.replace("-results", "") + ".html"))
        return 0
    if not SHARED.is_dir():
        print(f"{SHARED} is absent: the study needs the shared evaluation data beside the repo", file=sys.stderr)
        return 2
    args.seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1,2")).split(",")]
    args.ranks = [int(r) for r in (args.ranks or ("8" if args.quick else "8,16")).split(",")]
    args.steps = args.steps or (60 if args.quick else 150)
    args.curlora_lr = [float(x) for x in args.curlora_lr.split(",") if x.strip()]

    import torch

    from curlora.experiment import ExperimentConfig
    from curlora.run.runner import Executor, load_everything, start

    torch.manual_seed(0)
    root = Path(args.data_dir)
    results: dict = {}
    t0 = time.time()
    for scoring in args.scorings.split(","):
        for seed in args.seeds:
            cfg = ExperimentConfig.from_dict(experiment(args, scoring, seed))
            run, loaded = start(cfg, root)
            Executor(run, cfg, loaded).execute()
            results.setdefault(scoring, {})[seed] = run.metrics()
            print(f"{scoring} seed {seed}: {run.id} ({(time.time() - t0) / 60:.1f} min)", flush=True)
    agg = aggregate(results)
    out = Path(args.out)
    out.write_text(markdown(agg, args, time.time() - t0))
    out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=float))
    figure(agg, out.with_name(out.stem.replace("-results", "") + ".html"))
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
