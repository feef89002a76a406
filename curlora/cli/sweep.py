"""`python -m curlora sweep EXPERIMENT.yaml --lrs 1e-4,1e-3,1e-2 [--steps 50]`: the learning-rate sweep of
curlora/run/sweep.py from the command line."""

from __future__ import annotations

from curlora.errors import CurloraError, clip
from curlora.experiment import ExperimentConfig
from curlora.run.sweep import SWEEP_FILE, lr_sweep


def register(sub) -> None:
    p = sub.add_parser("sweep", help="learning-rate sweep: short runs per method on the first task, pick by loss")
    p.add_argument("experiment", metavar="EXPERIMENT.yaml")
    p.add_argument("--lrs", required=True, help="comma-separated learning rates, e.g. 1e-4,1e-3,1e-2")
    p.add_argument("--steps", type=int, default=None,
                   help="optimiser steps per short run (default: training.max_steps, else 50)")
    p.set_defaults(func=cmd_sweep)


def parse_lrs(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CurloraError(f"--lrs: {clip(text)} is not a comma-separated list of numbers (e.g. 1e-4,1e-3).") from None


def cmd_sweep(args) -> int:
    from curlora.cli.runs import admit

    cfg = admit(ExperimentConfig.load(args.experiment))
    if args.steps is not None and args.steps < 1:
        raise CurloraError("--steps: must be at least 1.")

    def show(e):
        loss = "diverged" if e["diverged"] else f"smoothed loss {e['smoothed_loss']:.4f}"
        print(f"  {e['method']} lr {e['lr']:g}: {loss}", flush=True)

    run, results = lr_sweep(cfg, parse_lrs(args.lrs), args.steps, on_event=show)
    print(f"sweep {run.id}: {run.path / SWEEP_FILE}")
    for label, r in results["methods"].items():
        print(f"{label}: best lr {r['best_lr']:g}" if r["best_lr"] is not None else f"{label}: every lr diverged")
    return 0
