"""Wall time of the quick demo end to end — goal <= 3 min on 2 cores.

    python bench/quick_demo_time.py                       # the preset as shipped; last line JSON
    python bench/quick_demo_time.py --threads 1           # one torch thread (OMP_NUM_THREADS=1)

Runs `python -m curlora run presets/experiments/quick-demo.yaml` exactly as a user would (a fresh child process,
CURLORA_DATA_DIR in a temporary folder, nothing cached but the OS file cache) and reports its wall and CPU time,
the time before the run starts (imports, loading model and tasks), and per stage, from the run's events.jsonl,
the wall time split into training and evaluation (scoring every task, perplexity probe, self-probe, saving).
Machine load from other processes counts against wall time: say what else ran.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cli_run import QUICK_DEMO, run_cli, run_span, stage_times  # noqa: E402

GOAL_S = 180.0


def measure(experiment: Path, threads: int | None, workdir: Path) -> dict:
    res = run_cli(experiment, workdir / "runs", threads=threads)
    if res["rc"] != 0:
        tail = Path(res["log"]).read_text(encoding="utf-8", errors="replace")[-2000:]
        raise SystemExit(f"the run exited {res['rc']}:\n{tail}")
    span = run_span(res["run_dir"])
    stages = stage_times(res["run_dir"])
    per_method = {}
    for s in stages:
        m = per_method.setdefault(s["method"], {"wall_s": 0.0, "train_s": 0.0, "eval_s": 0.0})
        for k in ("wall_s", "train_s", "eval_s"):
            m[k] = round(m[k] + s[k], 2)
    return {
        "wall_s": res["wall_s"], "cpu_s": res["cpu_s"], "max_rss_bytes": res["max_rss_bytes"],
        "startup_s": round(span["first_t"] - res["start_epoch"], 2),  # imports, tasks, model, probe text
        "events_s": span["events_s"], "stages": stages, "per_method": per_method,
        "goal_s": GOAL_S, "met": res["wall_s"] <= GOAL_S,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", default=str(QUICK_DEMO))
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the run (default: torch's choice)")
    ap.add_argument("--out", default=None, help="write the result as JSON here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="curlora-demo-") as tmp:
        res = measure(Path(args.experiment), args.threads, Path(tmp))
    res["command"] = "python " + " ".join([sys.argv[0], *sys.argv[1:]])
    res["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, threads: {args.threads or 'default'}"
    print(f"wall {res['wall_s']:.1f} s (goal {GOAL_S:.0f} s), cpu {res['cpu_s']:.1f} s, start-up {res['startup_s']:.1f} s")
    for s in res["stages"]:
        print(f"  {s['method']:8s} stage {s['stage']} {s['task'] or '(base)':10s} wall {s['wall_s']:6.1f} s  "
              f"train {s['train_s']:6.1f} s  eval {s['eval_s']:6.1f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k != "stages"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
