"""Wall time and frontier of the demo study — goal <= 12 min on 2 CPU cores; writes docs/demo-study.md.

    python bench/demo_study_time.py                     # run presets/experiments/demo-study.yaml as a user would
    python bench/demo_study_time.py --study DIR --wall S # write the document from a study folder timed elsewhere
    python bench/demo_study_time.py --committed          # refill docs/demo-study.md's tables from the committed
                                                         # study.json files, analysed again (nothing is run)

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

sys.path.insert(0, str(REPO / "bench"))

from doc_blocks import splice  # noqa: E402
from forgetting_frontier import study_tables  # noqa: E402

from curlora.measure.study_analysis import reanalyse  # noqa: E402
from curlora.measure.study_record import StudyRecord  # noqa: E402

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


def tasks_of(preset: Path = PRESET) -> list[str]:
    """The preset's task names in training order (study.json files from before tasks were stored lack them)."""
    import yaml

    return [t["name"] for t in yaml.safe_load(preset.read_text(encoding="utf-8"))["tasks"]]


def study_block(rec: StudyRecord, command: str = "") -> list[str]:
    """A demo study's tables and sentences (bench/forgetting_frontier.py's, with the bundled held-out text as the
    probe text), from its typed record."""
    return study_tables(rec, probe="probe-text ppl", command=command)


# the committed demo studies and the blocks of docs/demo-study.md they fill (bench/doc_blocks.py)
COMMITTED = {"demo-study-30-steps": "docs/studies/demo-study.json",
             "demo-study-60-steps": "docs/studies/study60-3seeds.json"}


def blocks() -> dict[str, list[str]]:
    """docs/demo-study.md's generated blocks from the committed study.json files, analysed again with today's
    code (`curlora study --analyse`): nothing is re-run."""
    out = {}
    tasks = tasks_of()
    for name, path in COMMITTED.items():
        rec = reanalyse(StudyRecord.of(json.loads((REPO / path).read_text())), tasks, source=path)
        out[name] = study_block(rec, f"python -m curlora study --analyse {path} --tasks {','.join(tasks)}")
    return out


def document(study: Path, wall: float, note: str) -> str:
    rec = StudyRecord.of(json.loads((study / "study.json").read_text()))
    lines = ["# The demo study: learning against forgetting on the bundled model", "",
             f"`python -m curlora study presets/experiments/demo-study.yaml` — {len(rec.plan)} runs "
             f"({', '.join(f'{k}: {len(v)} lrs' for k, v in rec.settings.lrs.items())}; seeds "
             f"{rec.settings.seeds}), r = 8 on all seven projection matrices for both methods, the bundled "
             "kjv-llama-5m, the three demo tasks (64 eval rows each, so each accuracy cell has n = 64), 30 steps "
             "per task.", "",
             f"**Wall time: {wall:.0f} s ({wall / 60:.1f} min)** against a goal of {GOAL_S / 60:.0f} min on 2 CPU "
             f"cores — {'within' if wall <= GOAL_S else 'over'} the goal. {note}", ""]
    lines += study_block(rec)
    lines += ["", f"Study folder: `{study.name}`; its study.json has every point, group and test."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--study", type=Path, default=None, help="a study folder already run (with --wall)")
    ap.add_argument("--wall", type=float, default=None, help="its measured wall time in seconds")
    ap.add_argument("--note", default="", help="what else ran on the machine meanwhile")
    ap.add_argument("--committed", action="store_true",
                    help="run nothing: refill docs/demo-study.md's generated blocks from the committed study.json "
                         "files, analysed again with today's code")
    args = ap.parse_args()
    if args.committed:
        for name, lines in blocks().items():
            splice(DOC, name, lines)
        print(f"refilled {', '.join(COMMITTED)} in {DOC}")
        return 0
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
