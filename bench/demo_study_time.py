"""Wall time and frontier of the demo study — goal <= 12 min on 2 CPU cores; writes docs/demo-study.md.

    python bench/demo_study_time.py                     # run presets/experiments/demo-study.yaml as a user would
    python bench/demo_study_time.py --study DIR --wall S # write the document from a study folder timed elsewhere

Runs `python -m curlora study presets/experiments/demo-study.yaml` in a child process (CURLORA_DATA_DIR in a
temporary folder), then writes its time, the per-run times from the runs' status files, each method's best
learning rate with intervals, every (method, lr) group and the comparison sentences into docs/demo-study.md.
Machine load from other processes counts against wall time: say what else ran (`--note`).
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
sys.path.insert(0, str(REPO))

from curlora.measure.study_analysis import interval_text  # noqa: E402

PRESET = REPO / "presets" / "experiments" / "demo-study.yaml"
DOC = REPO / "docs" / "demo-study.md"
GOAL_S = 720.0


def run_study(data_dir: Path) -> tuple[float, Path]:
    env = {**os.environ, "CURLORA_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "curlora", "study", str(PRESET)], cwd=REPO, env=env, check=True)
    wall = time.perf_counter() - t0
    (study,) = [p for p in data_dir.iterdir() if (p / "study.json").is_file()]
    return wall, study


def fmt(s: dict, digits: int = 2) -> str:
    return interval_text(s, digits, single=" (n=1)")


def document(study: Path, wall: float, note: str) -> str:
    body = json.loads((study / "study.json").read_text())
    plan = body["plan"]
    lines = ["# The demo study: learning against forgetting on the bundled model", "",
             f"`python -m curlora study presets/experiments/demo-study.yaml` — {len(plan)} runs "
             f"({', '.join(f'{k}: {len(v)} lrs' for k, v in body['settings']['lrs'].items())}; seeds "
             f"{body['settings']['seeds']}), r = 8 on all seven projection matrices for both methods, the bundled "
             "kjv-llama-5m, the three demo tasks (64 eval rows each, so each accuracy cell has n = 64), 30 steps "
             "per task.", "",
             f"**Wall time: {wall:.0f} s ({wall / 60:.1f} min)** against a goal of {GOAL_S / 60:.0f} min on 2 CPU "
             f"cores — {'within' if wall <= GOAL_S else 'over'} the goal. {note}", "",
             "Every number below is a mean over seeds with its 95 % Student-t interval (2 seeds: t = 12.7, so the "
             "intervals are wide — they say how little two seeds settle). Learning = accuracy right after training "
             "each task minus the better of the majority-class share and the base model, in points; forgetting: "
             "Chaudhry et al., points; KL: mean per-token KL(base ‖ model) on texts the base model sampled itself "
             "(its own domain); probe-ppl ratio: perplexity on the bundled held-out text / the base's.", "",
             "| method · lr | learning | forgetting | ACC | KL to base | self-ppl ratio | probe-ppl ratio | "
             "constant predictions |", "|---|---|---|---|---|---|---|---|"]
    for k, g in sorted(body["groups"].items(), key=lambda kv: (kv[1]["method"], kv[1]["lr"])):
        front = " (frontier)" if k in body["frontier"].get(g["method"], []) else ""
        lines.append(f"| {k}{front} | {fmt(g['learning'])} | {fmt(g['forgetting'])} | {fmt(g['acc'])} | "
                     f"{fmt(g['kl_to_base'], 4)} | {fmt(g['self_ppl_ratio'], 3)} | {fmt(g['probe_ppl_ratio'], 3)} | "
                     f"{', '.join(g['constant_predictions']) or '–'} |")
    lines += ["", "## Each at its own best learning rate", "", f"Rule: {body['settings']['best_rule']}.", ""]
    for label, best in body["best"].items():
        if best:
            g = body["groups"][best["key"]]
            lines.append(f"- **{best['key']}** ({best['chosen']}): learning {fmt(g['learning'])}, forgetting "
                         f"{fmt(g['forgetting'])}, KL {fmt(g['kl_to_base'], 4)}")
    lines += ["", "## At matched learning", ""] + [f"- {c['sentence']}" for c in body["comparison"]]
    lines += ["", f"Study folder: `{study.name}`; its study.json has every point, group and test."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--study", type=Path, default=None, help="a study folder already run (with --wall)")
    ap.add_argument("--wall", type=float, default=None, help="its measured wall time in seconds")
    ap.add_argument("--note", default="", help="what else ran on the machine meanwhile")
    args = ap.parse_args()
    if args.study:
        study, wall = args.study, args.wall
    else:
        wall, study = run_study(Path(tempfile.mkdtemp(prefix="demo-study-")))
    DOC.write_text(document(study, wall, args.note), encoding="utf-8")
    print(json.dumps({"wall_s": round(wall, 1), "goal_s": GOAL_S, "ratio_to_goal": round(wall / GOAL_S, 3),
                      "doc": str(DOC)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
