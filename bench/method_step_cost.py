"""What one training step of each method costs on SmolLM2-135M-Instruct, against LoRA's step measured beside it,
and where the time goes (torch.profiler's heaviest operators in one profiled step).

    python bench/method_step_cost.py                         # every training method; writes docs/method-step-cost.md
    python bench/method_step_cost.py --methods dora,osf --steps 3 --threads 2
    python bench/method_step_cost.py --keep --contention 2    # add LoRA and DoRA at 2 threads to the table there

Each method trains through the run's own code (methods.method(kind).attach, train.train_task with the real demo's
schedule: batch 8, max_length 96, length-grouped batches of the bundled `reviews` task, the label-only head, r 8 on
all seven projections, AdamW at lr 0: the work, not the change), `--steps` steps after one that is not counted (it
builds AdamW's state). LoRA runs the same steps right before and right after each method, on the same batches, and
the method's ratio is to the mean of those two LoRA medians, so the machine's load of the moment hits both.
Times are process CPU time (what this process computed), and wall time beside it; torch runs `--threads` threads.
The attach (PEFT's init: MiCA's and PiSSA's SVDs, CorDA's covariance pass, OSF's SVD) is timed apart: it happens
once per run or task, not per step. CorDA's calibration text is capped at --calibration-tokens (a run reads
hidden x 128 = 73,728 tokens): that changes the attach time only, since after its init CorDA is a LoRA of rank r.
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
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from timing import cpu_name  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
METHODS = ("curlora", "mica", "pissa", "corda", "osf", "dora", "full")
PROBE = REPO.parent / "shared" / "data" / "wikitext2" / "test.txt"

# Where each method's step goes, from the profiles this script prints (torch.profiler, one step, 1 thread) and
# PEFT's code (peft 0.21). Written by hand from those; the table beside it is measured on every run.
WHERE = {
    "lora": "The frozen body's forward and backward (aten::mm is most of it); r·(in + out) extra per matrix is small.",
    "curlora": "As LoRA's: the frozen body; C·U·R adds two thin matmuls per matrix (C and R frozen, U r × r).",
    "mica": "A LoRA step (B frozen, only A trains): the same work as LoRA's, a little less in the optimiser.",
    "pissa": "A LoRA step on the residual base: the same work as LoRA's; its SVD is in the attach, once per run.",
    "corda": "A LoRA step on the residual base: the same work as LoRA's; its covariance pass and decomposition "
             "are in the attach, once per run.",
    "osf": "PEFT's OSF trains (d − k) of every matrix's d singular directions: at the first of 3 tasks k = d/4, so "
           "its factors hold as many numbers as the weights (1.0-1.5x per matrix) and every forward runs a rank "
           "2(d − k) = 864 product beside W, larger than W's own (aten::mm, forward and backward), then gradient "
           "hooks project U and V and AdamW updates them all.",
    "dora": "PEFT's DoRA rebuilds W + s·B·A for every adapted matrix at every forward for its column norms (an "
            "identity matrix pushed through A and B gives B·A): aten::add and aten::mul over whole weight matrices.",
    "full": "Every weight gets a gradient: the backward's weight products (aten::mm) are most of the extra; AdamW "
            "over all 135M numbers, the 49,152 x 576 tied embedding included (aten::sqrt, addcdiv_), a few per cent.",
}


def reviews_task():
    from curlora.data.task_config import TaskConfig
    from curlora.data.tasks import load_task

    return load_task(TaskConfig(name="reviews", train_file=str(REPO / "assets/tasks/reviews/train.csv"),
                                eval_file=str(REPO / "assets/tasks/reviews/eval.csv"), max_train_rows=400))


def context(tokenizer, cap: int):
    """The Context a run gives CorDA and OSF: task 1 of 3, calibration text from wikitext-2 (else a task's text)."""
    from curlora.run.methods import Context

    text = PROBE.read_text(encoding="utf-8")[:cap * 8] if PROBE.is_file() else " ".join(reviews_task().train["text"])
    ids = tokenizer(text, return_tensors="pt").input_ids[0][:cap]
    return Context(0, 3, 256, lambda n: (ids[:n], "wikitext-2 test" if PROBE.is_file() else "reviews rows"))


def steps_of(model, tok, task, kind: str, ctx, steps: int, profile: bool = False) -> dict:
    """Attach `kind`, train steps + 1 steps through train_task (the first not counted), give the base back."""
    from curlora.experiment import MethodSettings, TrainingSettings
    from curlora.run.methods import method
    from curlora.run.train import train_task

    m = method(kind)
    settings = MethodSettings(kind=kind, r=8, target_modules=TARGETS)
    c0, w0 = time.process_time(), time.perf_counter()
    attached = m.attach(model, settings, None, **({"context": ctx} if m.needs_context else {}))
    attach_cpu, attach_wall = time.process_time() - c0, time.perf_counter() - w0
    marks, top = [], None
    schedule = TrainingSettings(max_steps=steps + 1, batch_size=8, max_length=96, scheduler="cosine",
                                warmup_steps=4)
    try:
        start = (time.process_time(), time.perf_counter())
        train_task(attached.model, tok, task, schedule, lr=0.0,
                   on_step=lambda e: marks.append((time.process_time(), time.perf_counter())))
        if profile:
            top = profiled_step(attached.model, tok, task)
    finally:
        attached.cleanup()
    marks = [start, *marks]
    cpu = [b[0] - a[0] for a, b in zip(marks[1:], marks[2:])]
    wall = [b[1] - a[1] for a, b in zip(marks[1:], marks[2:])]
    return {"attach_cpu_s": attach_cpu, "attach_wall_s": attach_wall, "first_step_cpu_s": marks[1][0] - marks[0][0],
            "step_cpu_s": statistics.median(cpu), "step_wall_s": statistics.median(wall), "steps_cpu_s": cpu,
            "top_ops": top}


def profiled_step(model, tok, task, n: int = 4) -> list:
    """The n operators with the most self CPU time in one more training step, as [name, share of the step]."""
    from torch.profiler import ProfilerActivity, profile

    from curlora.experiment import TrainingSettings
    from curlora.run.train import train_task

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_task(model, tok, task, TrainingSettings(max_steps=1, batch_size=8, max_length=96), lr=0.0)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events) or 1
    events.sort(key=lambda e: -e.self_cpu_time_total)
    return [[e.key, round(e.self_cpu_time_total / total, 3)] for e in events[:n]]


def measure(methods, steps: int, cap: int, profile: bool) -> dict:
    from curlora.models.gguf import SMOLLM2
    from curlora.models.loading import load_model

    model, tok, _ = load_model(SMOLLM2, device="cpu")
    task, ctx = reviews_task(), context(tok, cap)
    out = {}
    for kind in methods:
        before = steps_of(model, tok, task, "lora", ctx, steps, profile=profile and not out)
        this = steps_of(model, tok, task, kind, ctx, steps, profile=profile)
        after = steps_of(model, tok, task, "lora", ctx, steps)
        lora_cpu = (before["step_cpu_s"] + after["step_cpu_s"]) / 2
        lora_wall = (before["step_wall_s"] + after["step_wall_s"]) / 2
        if profile and "lora" not in out:
            out["lora"] = {**before, "ratio_cpu": 1.0, "ratio_wall": 1.0}
        out[kind] = {**this, "lora_step_cpu_s": lora_cpu, "lora_step_wall_s": lora_wall,
                     "ratio_cpu": this["step_cpu_s"] / lora_cpu, "ratio_wall": this["step_wall_s"] / lora_wall}
        print(json.dumps({kind: out[kind]}), flush=True)
    return out


CONTENTION_STEPS = 1


def contention(threads: int, steps: int) -> dict:
    """LoRA, DoRA, LoRA again at `threads` torch threads: what the dry run's calibration ran at (torch's default, one
    thread per core) on a machine whose other work already holds the cores."""
    import torch

    from curlora.models.gguf import SMOLLM2
    from curlora.models.loading import load_model

    model, tok, _ = load_model(SMOLLM2, device="cpu")
    task, ctx = reviews_task(), context(tok, 1)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = {"threads": threads, "load": os.getloadavg()[0]}
        for name, kind in (("lora", "lora"), ("dora", "dora"), ("lora_after", "lora")):
            r = steps_of(model, tok, task, kind, ctx, steps)
            out[name] = {k: r[k] for k in ("step_cpu_s", "step_wall_s", "steps_cpu_s")}
            print(json.dumps({name: out[name]}), flush=True)
    finally:
        torch.set_num_threads(old)
    return out


def findings(results: dict) -> list[str]:
    """What the table says, in sentences (numbers from `results`)."""
    r = {k: v["ratio_cpu"] for k, v in results.items() if k in METHODS}
    out = ["## What the numbers say", ""]
    if {"dora", "osf", "full"} <= set(r):
        out.append(f"- On one thread, per step: DoRA costs {r['dora']:.2f}x LoRA's step, full fine-tuning "
                   f"{r['full']:.2f}x, OSF {r['osf']:.2f}x" + (f", CorDA {r['corda']:.2f}x" if "corda" in r else "")
                   + " (CPU time). The dry-run calibration's 35.6 s (DoRA), 45.6 s (OSF), 15.4 s (full) and 8.1 s "
                   "(CorDA) against MiCA's 0.74 s are not what these methods cost: see the next point.")
    c = results.get("contention")
    if c and "dora" in c:
        lora1 = results.get("lora", {}).get("step_cpu_s") or results.get("curlora", {}).get("lora_step_cpu_s")
        lo = (c["lora"]["step_wall_s"] + c["lora_after"]["step_wall_s"]) / 2
        out.append(f"- The calibration ran with torch's default {c['threads']} threads on 2 cores that other work "
                   f"already held (load average about 7). Measured that way here (load {c['load']:.1f}): a LoRA step "
                   f"took {lo:.1f} s of wall time and a DoRA step {c['dora']['step_wall_s']:.1f} s"
                   + (f", against {lora1:.2f} s of CPU for LoRA's on one thread" if lora1 else "")
                   + f". LoRA's own step took {c['lora']['step_wall_s']:.1f} s before DoRA's and "
                   f"{c['lora_after']['step_wall_s']:.1f} s after it, minutes apart: every parallel operation waits "
                   "for a thread that is off the core, so the time follows the machine's load of the moment, not the "
                   "method, and the calibration's spread between methods (MiCA 0.74 s, DoRA 35.6 s) most likely followed the load "
                   "changing while it went from method to method (it measures each method once, in turn). A LoRA "
                   "step at "
                   f"{c['threads']} threads also took {c['lora']['step_cpu_s']:.1f} s of CPU"
                   + (f" for {lora1:.2f} s of work" if lora1 else "") + ": threads waiting on each other spin, and "
                   "that CPU is lost to the other processes.")
    out += ["- Where the remaining costs go is PEFT's own design, not our integration: the profiles put LoRA's, "
            "CURLoRA's, MiCA's, PiSSA's and CorDA's steps in the frozen body's matrix products (aten::mm), DoRA's "
            "extra in rebuilding W + s·B·A and its norms at every forward (aten::add, aten::mul over whole "
            "matrices), OSF's in its near-full-rank factors and their optimiser state, full fine-tuning's in the "
            "weight gradients and AdamW over every weight. Nothing in curlora/run (train.py, methods.py, peers.py) "
            "runs per step beyond the forward, the label-only loss, the backward and the optimiser: no float64, no "
            "copy, no calibration inside a step, no gradient checkpointing unless training.gradient_checkpointing "
            "asks for it (the attach-time work, SVDs and CorDA's covariance pass, happens once per run or task and "
            "is in the attach column).",
            "- What changed (ours): the time estimate (`run --dry-run`, the Train tab) now records the threads and "
            "the load it was calibrated under and says, when several threads share a machine whose load is at or "
            "over its cores, that the times can be several times the work and to run with OMP_NUM_THREADS=1. "
            "No method's step changed, so there is no before/after column for the step itself: the 'dry-run "
            "calibration before' column is the figure that was misread, the rest is the measurement.", ""]
    return out


def render(results: dict, args, loads: tuple, earlier: dict | None) -> str:
    doc = ["# What a training step of each method costs on SmolLM2", "",
           f"Measured by `python bench/method_step_cost.py --steps {args.steps} --threads {args.threads}` on "
           f"{cpu_name()}: SmolLM2-135M-Instruct (float32, from its converted cache), the real demo's schedule "
           "(batch 8, max_length 96, length-grouped batches of the bundled reviews task, the label-only head), r 8 "
           "on all seven projections, every step through the run's own `train_task`. Each method's step is the "
           f"median of {args.steps} steps after one uncounted; LoRA ran the same steps right before and right after "
           "it, and the ratio is to the mean of those two. Process CPU time of this one process (torch "
           f"{args.threads} thread{'s' if args.threads > 1 else ''}); wall time beside it. The machine was shared: "
           f"load average {loads[0]:.1f} at the start and {loads[1]:.1f} at the end on 2 cores (a long SmolLM2 study "
           "and other engineers' tests ran), so single seconds move by tens of per cent between runs; the ratios, "
           "measured beside LoRA, move less.", ""]
    if earlier:
        doc += ["| method | s per step (CPU) | vs LoRA (CPU) | s per step (wall) | vs LoRA (wall) | dry-run "
                "calibration before (wall, 2 threads, heavy load) | attach (CPU s, once) | where the time goes |",
                "|---|---|---|---|---|---|---|---|"]
    else:
        doc += ["| method | s per step (CPU) | vs LoRA (CPU) | s per step (wall) | vs LoRA (wall) | attach (CPU s, once) "
                "| where the time goes |", "|---|---|---|---|---|---|---|"]
    for kind, r in results.items():
        if kind not in METHODS and kind != "lora":
            continue
        cells = [kind, f"{r['step_cpu_s']:.2f}", f"{r['ratio_cpu']:.2f}", f"{r['step_wall_s']:.2f}",
                 f"{r['ratio_wall']:.2f}"]
        if earlier:
            cells.append(f"{earlier[kind]:.2f}" if kind in earlier else "")
        cells += [f"{r['attach_cpu_s']:.1f}", WHERE.get(kind, "")]
        doc.append("| " + " | ".join(cells) + " |")
    doc += ["", "Heaviest operators of one profiled step (share of the step's self CPU time):", ""]
    for kind, r in results.items():
        if isinstance(r, dict) and r.get("top_ops"):
            doc.append(f"- {kind}: " + ", ".join(f"{name} {100 * share:.0f} %" for name, share in r["top_ops"]))
    c = results.get("contention")
    if c and "dora" in c:
        doc += ["", f"At {c['threads']} torch threads (the dry run's setting), same machine, load average "
                f"{c['load']:.1f} (`--contention {c['threads']}`, {CONTENTION_STEPS} step"
                f"{'s' if CONTENTION_STEPS > 1 else ''} after one uncounted, "
                "LoRA before and after DoRA):", "",
                "| method | s per step (CPU) | s per step (wall) |", "|---|---|---|"]
        doc += [f"| {name} | {c[name]['step_cpu_s']:.2f} | {c[name]['step_wall_s']:.2f} |"
                for name in ("lora", "dora", "lora_after")]
    doc += [""] + findings(results)
    doc += ["", "Raw numbers:", "", "```json", json.dumps(results, indent=1), "```", ""]
    return "\n".join(doc)


# The dry-run's calibration these replace (docs/forgetting-study.md, bench/studies/smollm2-pilot.yaml): seconds per
# step on the same machine under heavy load, wall time, torch's default threads (2).
DRY_RUN = {"mica": 0.74, "pissa": 1.17, "corda": 8.14, "osf": 45.56, "dora": 35.63, "full": 15.42}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calibration-tokens", type=int, default=8192)
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--contention", type=int, default=0, metavar="THREADS",
                    help="also measure LoRA and DoRA at THREADS torch threads (the dry run's setting)")
    ap.add_argument("--keep", action="store_true", help="keep the methods' results already in --out (its JSON "
                    "block) and measure only --contention's")
    ap.add_argument("--out", default=str(REPO / "docs" / "method-step-cost.md"))
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    loads = [os.getloadavg()[0]]
    if args.keep:
        text = Path(args.out).read_text(encoding="utf-8")
        results = json.loads(text.split("```json", 1)[1].split("```", 1)[0])
        import re

        said = re.search(r"load average ([\d.]+) at the start and ([\d.]+) at the end", text)
        loads = results.pop("loads", None) or ([float(said[1]), float(said[2])] if said else loads * 2)
    else:
        results = measure(args.methods.split(","), args.steps, args.calibration_tokens, not args.no_profile)
    if args.contention:
        results["contention"] = contention(args.contention, CONTENTION_STEPS)
    if not args.keep:
        loads.append(os.getloadavg()[0])
    results["loads"] = loads
    if args.out != "-":
        Path(args.out).write_text(render(results, args, tuple(loads[:2]), DRY_RUN), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
