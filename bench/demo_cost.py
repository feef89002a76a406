"""The two demos end to end, beside the time the dry run predicted for them: the quick demo (bundled model, goal
<= 3 min) and the real demo (SmolLM2-135M-Instruct, goal <= 15 min), each run exactly as a user would
(`python -m curlora run PRESET`, a fresh child process), after `python -m curlora run PRESET --dry-run --json` in
another child under the same thread setting.

    python bench/demo_cost.py                      # both demos; writes docs/demo-cost.md
    python bench/demo_cost.py --demos real

Reports per demo: wall time against its goal, the share of wall time not spent in training steps (issue 29's goal
<= 0.35 for the real demo, from the run's events.jsonl), the training and evaluation split per stage, and the
estimate's error (estimate / measured - 1, goal within +-30 %). Other work on the machine counts against wall time
and against the calibration alike: say what else ran.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from cli_run import child_env, run_cli, run_span, stage_times  # noqa: E402
from timing import cpu_name  # noqa: E402

DEMOS = {"quick": (REPO / "presets/experiments/quick-demo.yaml", 180.0),
         "real": (REPO / "presets/experiments/real-demo.yaml", 900.0)}


def dry_run(preset: Path, data_dir: Path, threads: int | None) -> dict:
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "curlora", "run", str(preset), "--dry-run", "--json"], cwd=REPO,
                         env=child_env(data_dir, threads), capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"the dry run of {preset.name} failed:\n{out.stderr[-2000:]}")
    est = json.loads(out.stdout.strip().splitlines()[-1])
    est["dry_run_wall_s"] = round(time.perf_counter() - started, 1)
    return est


def measure(name: str, threads: int | None, tmp: Path) -> dict:
    preset, goal = DEMOS[name]
    est = dry_run(preset, tmp / f"{name}-dry", threads)
    res = run_cli(preset, tmp / name, threads=threads)
    if res["rc"] != 0:
        raise SystemExit(f"{name} demo exited {res['rc']}:\n{Path(res['log']).read_text()[-2000:]}")
    stages = stage_times(res["run_dir"])
    span = run_span(res["run_dir"])
    train = sum(s["train_s"] for s in stages)
    ev = sum(s["eval_s"] for s in stages)
    return {"demo": name, "preset": str(preset.relative_to(REPO)), "goal_s": goal, "wall_s": res["wall_s"],
            "cpu_s": res["cpu_s"], "startup_s": round(span["first_t"] - res["start_epoch"], 1),
            "train_s": round(train, 1), "eval_s": round(ev, 1),
            "not_training_share": round(1 - train / res["wall_s"], 3),
            "estimate_total_s": round(est["total_s"], 1), "estimate_train_s": round(est["train_s"], 1),
            "estimate_eval_s": round(est["eval_s"], 1),
            "estimate_error": round(est["total_s"] / res["wall_s"] - 1, 3),
            "estimate_warning": est.get("warning"), "dry_run_wall_s": est["dry_run_wall_s"], "stages": stages,
            "metrics_summary": {k: v.get("summary") for k, v in (res["metrics"] or {}).get("methods", {}).items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demos", nargs="+", default=list(DEMOS), choices=list(DEMOS))
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the children (default: torch's)")
    ap.add_argument("--out", default=str(REPO / "docs" / "demo-cost.md"))
    ap.add_argument("--note", default="", help="a sentence on what else the machine ran, for the document")
    args = ap.parse_args(argv)
    results, loads = [], [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="curlora-demos-") as tmp:
        for name in args.demos:
            r = measure(name, args.threads, Path(tmp))
            results.append(r)
            print(f"{name}: wall {r['wall_s']:.0f} s (goal {r['goal_s']:.0f}), not training {r['not_training_share']:.2f}"
                  f", estimate {r['estimate_total_s']:.0f} s ({100 * r['estimate_error']:+.0f} %)", flush=True)
    loads.append(os.getloadavg()[0])
    doc = ["# The demos' time, and the estimate told before Start", "",
           "Measured by `python bench/demo_cost.py" + (f" --threads {args.threads}" if args.threads else "")
           + (f" --demos {' '.join(args.demos)}" if args.demos != list(DEMOS) else "")
           + f"` on {cpu_name()}, threads: {args.threads or 'torch default'}; one "
           "run each. Each demo ran as `python -m curlora run PRESET` in a fresh process, after its "
           f"`--dry-run --json` in another. Machine load: load average {loads[0]:.1f} at the start and "
           f"{loads[1]:.1f} at the end, on 2 cores" + (f". {args.note}" if args.note else
           " (other work may have run beside it: wall times are longer than on an idle machine, the share not "
           "spent training less affected since training and evaluation slow alike).") + "", "",
           "| demo | wall (goal) | training | evaluation | start-up | not training (goal ≤ 0.35, real demo) | "
           "estimate | estimate error (goal ±30 %) |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        doc.append(f"| {r['demo']} (`{r['preset']}`) | {r['wall_s']:.0f} s ({r['goal_s']:.0f} s) | {r['train_s']:.0f} s "
                   f"| {r['eval_s']:.0f} s | {r['startup_s']:.0f} s | {r['not_training_share']:.2f} | "
                   f"{r['estimate_total_s']:.0f} s | {100 * r['estimate_error']:+.0f} % |")
    doc += ["", "Per stage (seconds, from each run's events.jsonl):", ""]
    for r in results:
        doc += [f"**{r['demo']}**", "", "| method | stage | task | wall | train | eval |", "|---|---|---|---|---|---|"]
        doc += [f"| {s['method']} | {s['stage']} | {s['task'] or '(base)'} | {s['wall_s']:.1f} | {s['train_s']:.1f} | "
                f"{s['eval_s']:.1f} |" for s in r["stages"]]
        doc.append("")
    doc += ["```json", json.dumps([{k: v for k, v in r.items() if k != "stages"} for r in results], indent=1), "```", ""]
    Path(args.out).write_text("\n".join(doc), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
