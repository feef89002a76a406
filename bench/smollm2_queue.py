"""The SmolLM2 study's work queue: each phase in its order, resumed where it stopped, on this machine or another.

    OMP_NUM_THREADS=1 python bench/smollm2_queue.py run A     # lane A: frontier, control, its edge, matched, sampling
    OMP_NUM_THREADS=1 python bench/smollm2_queue.py run B     # lane B: pilot, pilot2, peers
    python bench/smollm2_queue.py status                      # each phase: where its study is, runs done/planned
    python bench/smollm2_queue.py pack                        # pack every phase into docs/studies/, rewrite the doc
    python bench/smollm2_queue.py run B --executor ray        # the last lane left: its study's runs two at a time
    python bench/smollm2_queue.py eta                         # each lane's runs left and their hours, from medians

Two lanes, one process each (a 2-core machine runs both side by side at one torch thread each; a bigger one can run
more). A phase is a study (`python -m curlora study`) or, for the matched-loss cross-checks, the resumable driver of
bench/forgetting_frontier.py. For each phase in its lane's order:

- its study is in the run store (CURLORA_DATA_DIR; found by its run name, `smollm2-<phase>`) and completed: next;
- it is there, unfinished: `python -m curlora study --resume ID`;
- it is not there but its pack is committed (docs/studies/smollm2-<phase>/): unpacked into the store, then resumed;
- neither: started from bench/studies/smollm2-<phase>.yaml (the peers' YAML is first written from the pilots'
  packs, bench/smollm2_study.py --peers-yaml).

A phase whose command stops unfinished (a signal, an error) stops its lane, so a stopped lane never starts the
next phase on an unfinished one. Each child runs in its own process with HF_HUB_OFFLINE=1 and this process's
OMP_NUM_THREADS (1 unless set).

The lanes are not the same length (the peers are the longest phase), so once lane A is done the other lane's study
can take both cores: stop it (SIGTERM; a run stopped midway is repaired and continued on resume), then run it again
with `--executor ray`, which passes the executor to `curlora study`: its pending runs go to a local Ray instance,
one CPU each (Ray gives each worker one thread). The matched-loss driver has no executor and ignores it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import smollm2_study  # noqa: E402

STUDIES = REPO / "bench" / "studies"
DOCS = REPO / "docs" / "studies"
MATCHED = ("matched-curlora-chases", "matched-lora-chases")
# lane A's frontier-edge (one more rate beyond each grid's top) came after the frontier's chosen rates sat at the top;
# it also evens the lanes (lane B's peers are the longest phase)
# and sampling-low (the other sampling rules one rate lower) came after the sampling phase's first seed learned more
# than the inverted rule at every rate both ran
LANES = {"A": ("frontier", "control", "frontier-edge", *MATCHED, "sampling", "sampling-low"),
         "B": ("pilot", "pilot2", "peers")}


def store() -> Path:
    from curlora.run.store import data_dir

    return data_dir()


def study_of(phase: str, root: Path):
    """The newest study in the store whose run name is this phase's, or None."""
    from curlora.run.store import Study, runs_named

    return next((run for run in runs_named(f"smollm2-{phase}", root) if isinstance(run, Study)), None)


def matched_command(phase: str, root: Path) -> list[str]:
    return [sys.executable, str(REPO / "bench" / "forgetting_frontier.py"), "matched",
            str(STUDIES / f"smollm2-{phase}.yaml"), "--seeds", "0,1,2", "--rows-per-seed",
            "--data-dir", str(root / "matched"), "--out", str(DOCS / f"smollm2-{phase}" / "summary.json"),
            "--pack", str(DOCS / f"smollm2-{phase}")]


def matched_done(phase: str) -> bool:
    summary = DOCS / f"smollm2-{phase}" / "summary.json"
    return summary.is_file() and len(json.loads(summary.read_text()).get("runs", [])) == 3


def plan(phase: str, root: Path, executor: str = "local") -> tuple[str, list[str] | None]:
    """(what this phase needs now, the command that does it or None): done, resume, unpack, start; a study's
    runs go to `executor` (local: one at a time in the child; ray: a local Ray instance's CPUs)."""
    study = [sys.executable, "-m", "curlora", "study"]
    runs_on = [] if executor == "local" else ["--executor", executor]
    if phase in MATCHED:
        return ("done", None) if matched_done(phase) else ("run", matched_command(phase, root))
    found = study_of(phase, root)
    if found is not None:
        if found.status()["status"] == "completed":
            return "done", None
        return "resume", study + ["--resume", found.id, *runs_on]
    if (DOCS / f"smollm2-{phase}" / "pack.json").is_file():
        return "unpack", study + ["--unpack", str(DOCS / f"smollm2-{phase}")]
    return "start", study + [str(STUDIES / f"smollm2-{phase}.yaml"), *runs_on]


def env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
            "GRADIO_ANALYTICS_ENABLED": "False"}


def ensure_peers_yaml() -> None:
    """The peers' YAML, written once from the pilots' packs (refused, naming them, while a pilot is unfinished)."""
    if not smollm2_study.PEERS_YAML.is_file():
        loaded = {p: smollm2_study.load(p) for p in ("pilot", "pilot2")}
        smollm2_study.PEERS_YAML.write_text(smollm2_study.peers_yaml(loaded), encoding="utf-8")


def run_lane(lane: str, root: Path, call=None, executor: str = "local") -> int:
    """Each phase of the lane in order until one stops unfinished; `call(cmd) -> exit code` runs a command;
    `executor` runs each study's runs (local or ray)."""
    call = call or (lambda cmd: subprocess.call(cmd, cwd=REPO, env=env()))
    for phase in LANES[lane]:
        while True:
            if phase == "peers":
                ensure_peers_yaml()
            what, cmd = plan(phase, root, executor)
            print(f"[{lane}] {phase}: {what}", flush=True)
            if what == "done":
                break
            code = call(cmd)
            if what == "unpack" and code == 0:
                continue  # now in the store: resume it
            if code != 0:
                print(f"[{lane}] {phase} stopped unfinished (exit {code}); run the lane again to go on", flush=True)
                return code
            if what in ("run", "start", "resume"):
                continue  # read its state again: done, or (a stopped child that exited 0) resume
        if phase == "pilot2" or phase == "pilot":  # the peers' rates come from the packs
            pack(phase, root)
    return 0


def pack(phase: str, root: Path) -> dict | None:
    from curlora.run.study_data import pack as pack_study

    found = study_of(phase, root)
    return None if found is None else pack_study(found.id, DOCS / f"smollm2-{phase}", root)


def status(root: Path) -> list[str]:
    lines = []
    for lane, phases in LANES.items():
        for phase in phases:
            what, _ = plan(phase, root)
            found = None if phase in MATCHED else study_of(phase, root)
            extra = ""
            if found is not None:
                rec = found.study_record()
                extra = f" ({found.id}: {rec.done} of {len(rec.plan)} runs)"
            lines.append(f"lane {lane} {phase}: {what}{extra}")
    return lines


def pending(phase: str, root: Path) -> dict[str, int] | None:
    """The runs a phase has still to run, by method: from its study in the store, else its committed pack, else its
    YAML (every method × learning rate × seed × order); a matched-loss phase counts its seeds not yet in its summary
    (each run trains both methods: "curlora+lora"). None for the peers before their YAML is written."""
    if phase in MATCHED:
        summary = DOCS / f"smollm2-{phase}" / "summary.json"
        done = len(json.loads(summary.read_text()).get("runs", [])) if summary.is_file() else 0
        return {"curlora+lora": max(0, smollm2_study.MATCHED_SEEDS - done)}
    found = study_of(phase, root)
    rec = found.study_record() if found is not None else None
    if rec is None and (DOCS / f"smollm2-{phase}" / "study" / "study.json").is_file():
        from curlora.measure.study_record import StudyRecord

        rec = StudyRecord.of(json.loads((DOCS / f"smollm2-{phase}" / "study" / "study.json").read_text()))
    if rec is not None:
        out: dict[str, int] = {}
        for e in rec.plan:
            if e.status != "completed":
                out[e.method] = out.get(e.method, 0) + 1
        return out
    spec_file = STUDIES / f"smollm2-{phase}.yaml"
    if not spec_file.is_file():
        return None
    import yaml

    st = yaml.safe_load(spec_file.read_text(encoding="utf-8"))["study"]
    per = len(st["seeds"]) * len(st.get("orders") or [None])
    return {m: len(lrs) * per for m, lrs in st["lrs"].items()}


def eta(root: Path) -> list[str]:
    """Each lane's runs left and about how long they take: each method's median minutes per run over every packed
    run of it, across the phases (a variant with none yet, e.g. curlora-uniform, at its base method's; a method never
    run, at the median of all runs, and the line says so: study_data.minutes_per_run, as a study's own progress; a
    matched-loss run at its two methods' sum, a floor: the chasing method may train up to three times its steps).
    Medians from runs that shared two busy cores, as the lanes do."""
    from curlora.run.study_data import minutes_per_run

    costs = smollm2_study.run_costs(smollm2_study.load_all())
    minutes: dict[str, list[float]] = {}
    for by in costs.values():
        for method, ts in by.items():
            minutes.setdefault(method, []).extend(t.minutes for t in ts)

    def per_run(method: str) -> tuple[float | None, str]:
        if "+" in method:
            parts = [per_run(m) for m in method.split("+")]
            if any(x is None for x, _ in parts):
                return None, ""
            return sum(x for x, _ in parts), " (a floor: the chasing method may train longer)"
        each, priced = minutes_per_run(method, minutes)  # the Compare tab's rule (curlora/run/study_data.py)
        return each, f" ({priced})" if priced else ""

    lines, hours = [], {}
    for lane, phases in LANES.items():
        total = 0.0
        for phase in phases:
            left = pending(phase, root)
            if left is None:
                lines.append(f"lane {lane} {phase}: not planned yet (its YAML is written once the pilots finish)")
                continue
            n = sum(left.values())
            if not n:
                continue
            parts, phase_min = [], 0.0
            for method, k in left.items():
                each, note = per_run(method)
                if each is None:
                    parts.append(f"{k} {method} (no run measured yet)")
                    continue
                phase_min += k * each
                parts.append(f"{k} {method} × {each:.0f} min{note}")
            total += phase_min
            lines.append(f"lane {lane} {phase}: {n} runs left, about {phase_min / 60:.1f} h ({'; '.join(parts)})")
        hours[lane] = total / 60
        lines.append(f"lane {lane}: about {hours[lane]:.1f} h of runs left")
    if len(hours) == 2 and all(hours.values()):
        short, long_ = sorted(hours.values())
        lines.append(f"both lanes side by side: about {long_:.1f} h; about {short + (long_ - short) / 2:.1f} h if the "
                     "longer lane's last study goes on Ray (run LANE --executor ray) once the other lane is done")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a lane's phases in order, resuming each")
    r.add_argument("lane", choices=sorted(LANES))
    r.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="where a study's runs go: one at a time here (local), or a local Ray instance's CPUs (ray)")
    sub.add_parser("status", help="where each phase stands")
    sub.add_parser("eta", help="each lane's runs left and about how long they take, from the packed runs' medians")
    sub.add_parser("pack", help="pack every phase's study into docs/studies/ and rewrite the document's block")
    args = ap.parse_args(argv)
    root = store()
    if args.cmd == "run":
        return run_lane(args.lane, root, executor=args.executor)
    if args.cmd == "status":
        print("\n".join(status(root)))
        return 0
    if args.cmd == "eta":
        print("\n".join(eta(root)))
        return 0
    for phase in LANES["A"] + LANES["B"]:
        if phase not in MATCHED:
            meta = pack(phase, root)
            if meta:
                print(f"{phase}: {meta['points']} runs packed, {meta['pending']} to run")
    smollm2_study.main(["--write", "--figure"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
