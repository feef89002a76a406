"""Run `python -m curlora run EXPERIMENT.yaml` as a child process and measure it: wall time, CPU time and peak
resident memory of that one child (os.wait4 gives each child's own rusage), plus the run folder's metrics.json
and the per-stage times read from its events.jsonl. Shared by bench/run_memory.py and bench/quick_demo_time.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
QUICK_DEMO = REPO / "presets" / "experiments" / "quick-demo.yaml"


def child_env(data_dir: Path, threads: int | None) -> dict:
    env = dict(os.environ, CURLORA_DATA_DIR=str(data_dir), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
               PYTHONUNBUFFERED="1")
    if threads:  # torch reads these at start-up: the child runs with this many intra-op threads
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def experiment(source: Path = QUICK_DEMO, **changes) -> dict:
    """The experiment at `source` as a dict, task files made absolute, with `changes` applied:
    methods=[kinds] keeps those methods, max_steps / max_train_rows / max_eval_rows / ppl_max_tokens / name set
    those values."""
    cfg = yaml.safe_load(source.read_text(encoding="utf-8"))
    for t in cfg["tasks"]:
        for key in ("train_file", "eval_file"):
            if t.get(key) and not Path(t[key]).is_absolute():
                t[key] = str((source.parent / t[key]).resolve())
        for key in ("max_train_rows", "max_eval_rows"):
            if changes.get(key):
                t[key] = changes[key]
    if changes.get("methods"):
        cfg["methods"] = [m for m in cfg["methods"] if m["kind"] in changes["methods"]]
    if changes.get("max_steps"):
        cfg["training"]["max_steps"] = changes["max_steps"]
    if changes.get("ppl_max_tokens"):
        cfg["evaluation"]["ppl_max_tokens"] = changes["ppl_max_tokens"]
    if changes.get("name"):
        cfg["run"]["name"] = changes["name"]
    return cfg


def run_cli(yaml_path: Path, data_dir: Path, threads: int | None = 1, log: Path | None = None) -> dict:
    """Run the experiment in a child process; {rc, wall_s, cpu_s, max_rss_bytes, run_dir, metrics, log}."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log = log or data_dir / "cli.log"
    t0, epoch = time.perf_counter(), time.time()
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen([sys.executable, "-m", "curlora", "run", str(yaml_path)], cwd=REPO,
                                env=child_env(data_dir, threads), stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait for it again
    runs = sorted(p for p in data_dir.iterdir() if p.is_dir() and (p / "status.json").is_file())
    run_dir = runs[-1] if runs else None
    metrics = json.loads((run_dir / "metrics.json").read_text()) if run_dir and (run_dir / "metrics.json").is_file() else None
    return {
        "rc": proc.returncode, "wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "max_rss_bytes": int(usage.ru_maxrss) * 1024,  # Linux reports kilobytes
        "run_dir": str(run_dir) if run_dir else None, "metrics": metrics, "log": str(log), "start_epoch": epoch,
    }


def write_experiment(cfg: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def stage_times(run_dir: str | Path) -> list[dict]:
    """Per stage, from events.jsonl: wall seconds from stage_start to its stage event, and of those the training
    seconds (the rest is saving and evaluation); stage 0 is the base model's evaluation."""
    events = [json.loads(line) for line in (Path(run_dir) / "events.jsonl").read_text().splitlines() if line.strip()]
    out, open_at = [], {}
    for e in events:
        key = (e.get("method"), e.get("stage"))
        if e["kind"] == "stage_start":
            open_at[key] = e["t"]
        elif e["kind"] == "stage" and key in open_at:
            wall = e["t"] - open_at.pop(key)
            train = e.get("seconds") or 0.0
            out.append({"method": e["method"], "stage": e["stage"], "task": e.get("task"), "wall_s": round(wall, 2),
                        "train_s": round(train, 2), "eval_s": round(wall - train, 2), "steps": e.get("steps")})
    return out


def run_span(run_dir: str | Path) -> dict:
    """Seconds between the first and last event (run_start .. run_end) and the first event's time."""
    events = [json.loads(line) for line in (Path(run_dir) / "events.jsonl").read_text().splitlines() if line.strip()]
    return {"first_t": events[0]["t"], "last_t": events[-1]["t"], "events_s": round(events[-1]["t"] - events[0]["t"], 2)}
