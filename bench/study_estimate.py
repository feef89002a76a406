"""A study's time estimated before it starts, against what its runs then took: the SmolLM2 study's phases.

    python bench/study_estimate.py                   # estimate the phases now (`curlora study YAML --dry-run`),
                                                     # write docs/study-estimate.{json,md}
    python bench/study_estimate.py --committed       # the document again from the committed JSON
    python bench/study_estimate.py --remeasure       # the same estimates against the runs packed by now

Each phase's YAML (bench/studies/smollm2-*.yaml) is estimated by `python -m curlora study YAML --dry-run --json` in
a child process at one torch thread, as the study's lanes run (curlora/run/cost.py estimate_study: one calibration
of every method, priced over the plan). The measured side is each method's minutes per run in the phase's committed
pack as it stood then (the sum of its finished stages, from its events: curlora/run/study_data.py run_times),
median and range over its runs, kept in the JSON beside the estimate. The lanes ran two studies side by side, one
thread each, on two cores; pause them (SIGSTOP) while this estimates, so the calibration has a core to itself as
each lane had.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import smollm2_study  # noqa: E402

PHASES = ("frontier", "control", "peers")
OUT = REPO / "docs" / "study-estimate.json"
DOC = REPO / "docs" / "study-estimate.md"


def estimate(phase: str) -> dict:
    """The phase's StudyCost as JSON, from a child process at one thread (nothing written to any store)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    began = time.time()
    out = subprocess.run([sys.executable, "-m", "curlora", "study", str(smollm2_study.STUDIES /
                                                                      f"smollm2-{phase}.yaml"), "--dry-run", "--json"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"{phase}: the dry run failed: {out.stderr.strip().splitlines()[-1:]}")
    body = json.loads(out.stdout.strip().splitlines()[-1])
    return {"wall_s": round(time.time() - began, 1), "load": os.getloadavg()[0], "runs": body["runs"],
            "run_s": body["run_s"], "total_s": body["total_s"], "base_s": body["run"]["base_s"],
            "load_s": body["run"]["load_s"], "threads": body["run"]["threads"]}


def measured() -> dict[str, dict[str, list[float]]]:
    """{phase: {method: [minutes per packed run]}} from the committed packs."""
    costs = smollm2_study.run_costs(smollm2_study.load_all())
    return {phase: {m: [t.minutes for t in ts] for m, ts in by.items()} for phase, by in costs.items()}


def document(data: dict) -> list[str]:
    """docs/study-estimate.md, every number from the JSON."""
    got = data["measured"]
    lines = ["# A study's time, told before it starts", "",
             "`python -m curlora study EXPERIMENT.yaml --dry-run` (and the Compare tab's *Estimate the study's time*) "
             "calibrates every method of the study once — a few training steps, a few scoring rows per task, a slice "
             "of each probe — and prices that over the study's plan: each point a run of one method through every "
             "task, the base row once (once per seed where each seed draws its own rows), the model loaded once. "
             "Here it is checked against the SmolLM2 study's phases as they then ran "
             "(`python bench/study_estimate.py`; the numbers below are docs/study-estimate.json). Once a study runs, "
             "`python -m curlora study --progress ID` prices what is left from its own finished runs instead.", "",
             f"Estimated on {data['machine']} at one torch thread, {data['when']}, with the study's lanes paused; "
             "measured: each method's minutes per run in the phase's committed pack"
             + (f" on {data['measured_when']}" if data.get("measured_when") else "")
             + " (median [fastest, slowest] over its runs, two lanes side by side at one thread each on the same two "
             "cores).", "",
             "| phase | method | runs planned | estimate, min per run | measured, min per run | runs measured | "
             "estimate / measured |", "|---|---|---|---|---|---|---|"]
    for phase, est in data["phases"].items():
        for method, n in est["runs"].items():
            xs = sorted(got.get(phase, {}).get(method, []))
            e = est["run_s"][method] / 60
            if xs:
                med = statistics.median(xs)
                lines.append(f"| {phase} | {method} | {n} | {e:.1f} | {med:.1f} [{xs[0]:.1f}, {xs[-1]:.1f}] | "
                             f"{len(xs)} | {e / med:.2f} |")
            else:
                lines.append(f"| {phase} | {method} | {n} | {e:.1f} | — | 0 | — |")
        lines.append(f"| {phase} | **whole phase** | {sum(est['runs'].values())} | "
                     f"{est['total_s'] / 3600:.1f} h in all | | | |")
    pairs = [(data["phases"][phase]["run_s"][m] / 60, x) for phase in data["phases"]
             for m in data["phases"][phase]["runs"] for x in got.get(phase, {}).get(m, [])]
    many = [(phase, m) for phase in data["phases"] for m in data["phases"][phase]["runs"]
            if len(got.get(phase, {}).get(m, [])) >= 3]
    if pairs:
        est_sum, got_sum = sum(e for e, _ in pairs), sum(x for _, x in pairs)
        lines += ["", f"Over the {len(pairs)} measured runs, the estimates add up to {est_sum / 60:.1f} h against "
                      f"{got_sum / 60:.1f} h measured ({est_sum / got_sum:.2f} of it)"
                  + (f"; for the methods with at least 3 runs ({', '.join(f'{p} {m}' for p, m in many)}) the "
                     "estimate per run is "
                     + ", ".join(f"{data['phases'][p]['run_s'][m] / 60 / statistics.median(got[p][m]):.2f}"
                                 for p, m in many) + " of the measured median" if many else "")
                  + ". A method with one measured run is one draw: runs that shared the machine with tests or "
                    "screenshots took up to three times their median (the maxima above). One difference the estimate "
                    "cannot see: it was calibrated with the machine to itself, while the lanes ran two studies at a "
                    "time (sharing memory bandwidth and caches); that share of the gap was not measured apart."]
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--committed", action="store_true", help="rewrite the block from the committed JSON only")
    ap.add_argument("--remeasure", action="store_true",
                    help="keep the committed estimates; measure them against every run the packs hold now")
    ap.add_argument("--phases", default=",".join(PHASES))
    args = ap.parse_args(argv)
    if args.remeasure:
        data = json.loads(OUT.read_text(encoding="utf-8"))
        data.update(measured=measured(), measured_when=time.strftime("%Y-%m-%d"))
        OUT.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    elif not args.committed:
        import platform

        data = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "when": time.strftime("%Y-%m-%d"),
                "phases": {p: estimate(p) for p in args.phases.split(",")}, "measured": measured()}
        OUT.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    data = json.loads(OUT.read_text(encoding="utf-8"))
    lines = document(data)
    DOC.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
