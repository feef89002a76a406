"""Peak memory of a side-by-side run (CURLoRA and LoRA in one run) against a single-method run — goal <= 1.1x.

    python bench/run_memory.py --quick                 # 1 task, 10 steps per run: about a minute; last line JSON
    python bench/run_memory.py --out docs/run-memory.json

Each run is `python -m curlora run EXPERIMENT.yaml` in its own child process, on the quick demo's experiment
(presets/experiments/quick-demo.yaml: the bundled model, its three tasks, r = 8 on all seven projections) with
fewer steps and eval rows, and a fresh data directory. Runs: CURLoRA alone, LoRA alone, both side by side (the
app's default), and `base` alone (load + evaluation, no training: the floor every run pays). One run at a time.

Measured per run: peak resident set size of the child (os.wait4's ru_maxrss; on a GPU the runner's own
torch.cuda.max_memory_allocated, read from metrics.json, is the number that matters), wall and CPU time, and
the runner's `peak_memory_bytes` of each method (RSS peak of the process so far, read at each stage's end).
The ratio is side-by-side peak / the larger single-method peak.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cli_run import experiment, run_cli, write_experiment  # noqa: E402

GOAL = 1.10
RUNS = {"curlora": ["curlora"], "lora": ["lora"], "both": ["curlora", "lora"], "base": ["base"]}


def measure(workdir: Path, steps: int, tasks: int, eval_rows: int, ppl_tokens: int, threads: int,
            which: list[str]) -> dict:
    out = {}
    for name in which:
        cfg = experiment(max_steps=steps, max_eval_rows=eval_rows, ppl_max_tokens=ppl_tokens, name=f"mem-{name}",
                         methods=[k for k in RUNS[name] if k != "base"] or None)
        cfg["tasks"] = cfg["tasks"][:tasks]
        if name == "base":
            cfg["methods"] = [{"kind": "base"}]
        path = write_experiment(cfg, workdir / name / "experiment.yaml")
        res = run_cli(path, workdir / name / "runs", threads=threads)
        if res["rc"] != 0:
            tail = Path(res["log"]).read_text(encoding="utf-8", errors="replace")[-2000:]
            raise SystemExit(f"run '{name}' exited {res['rc']}:\n{tail}")
        methods = (res["metrics"] or {}).get("methods", {})
        out[name] = {
            "methods": RUNS[name], "max_rss_bytes": res["max_rss_bytes"], "wall_s": res["wall_s"], "cpu_s": res["cpu_s"],
            "runner_peak_memory_bytes": {k: v.get("peak_memory_bytes") for k, v in methods.items()},
        }
        print(f"{name:8s} peak RSS {res['max_rss_bytes'] / 2**20:7.1f} MiB  wall {res['wall_s']:6.1f} s  "
              f"cpu {res['cpu_s']:6.1f} s", flush=True)
    return out


def summarize(runs: dict) -> dict:
    singles = [runs[k]["max_rss_bytes"] for k in ("curlora", "lora") if k in runs]
    summary = {}
    if "both" in runs and singles:
        summary["side_by_side_ratio"] = round(runs["both"]["max_rss_bytes"] / max(singles), 3)
        summary["goal"] = GOAL
        summary["met"] = summary["side_by_side_ratio"] <= GOAL
        for k in ("curlora", "lora"):
            if k in runs:
                summary[f"side_by_side_over_{k}"] = round(runs["both"]["max_rss_bytes"] / runs[k]["max_rss_bytes"], 3)
    if "base" in runs and singles:
        summary["training_over_base_floor_mib"] = round((max(singles) - runs["base"]["max_rss_bytes"]) / 2**20, 1)
    summary["peak_rss_mib"] = {k: round(v["max_rss_bytes"] / 2**20, 1) for k, v in runs.items()}
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 task, 10 steps, 32 eval rows, 1,024 probe tokens")
    ap.add_argument("--steps", type=int, default=None, help="steps per task (default 30; quick: 10)")
    ap.add_argument("--tasks", type=int, default=None, help="first N tasks of the quick demo (default 3; quick: 1)")
    ap.add_argument("--eval-rows", type=int, default=None, help="eval rows per task (default 48; quick: 32)")
    ap.add_argument("--ppl-tokens", type=int, default=None, help="perplexity probe tokens (default 4096; quick: 1024)")
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each child (default 1)")
    ap.add_argument("--runs", default="base,curlora,lora,both", help="which runs, in order")
    ap.add_argument("--workdir", default=None, help="keep the run folders here (default: a temporary folder)")
    ap.add_argument("--out", default=None, help="write the full result as JSON here")
    args = ap.parse_args(argv)
    steps = args.steps or (10 if args.quick else 30)
    tasks = args.tasks or (1 if args.quick else 3)
    eval_rows = args.eval_rows or (32 if args.quick else 48)
    ppl_tokens = args.ppl_tokens or (1024 if args.quick else 4096)
    which = [w.strip() for w in args.runs.split(",") if w.strip()]
    bad = [w for w in which if w not in RUNS]
    if bad:
        ap.error(f"unknown run(s) {bad}; pick from {list(RUNS)}")
    with tempfile.TemporaryDirectory(prefix="curlora-mem-") as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        runs = measure(workdir, steps, tasks, eval_rows, ppl_tokens, args.threads, which)
    result = {
        "command": "python " + " ".join([sys.argv[0], *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, {args.threads} thread(s) per run",
        "settings": {"steps": steps, "tasks": tasks, "eval_rows": eval_rows, "ppl_tokens": ppl_tokens},
        "runs": runs, "summary": summarize(runs),
    }
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
