"""A learning-rate sweep: a few learning rates per method, short runs on the first task, pick by final loss.

    python -m curlora sweep EXPERIMENT.yaml --lrs 1e-4,1e-3,1e-2 [--steps 50]

Every trained method of the experiment (not `base`) trains from scratch on the first task once per learning
rate, with the experiment's schedule cut to `steps` optimiser steps; the learning rate with the lowest final
smoothed training loss wins (a diverged run counts as infinitely bad). The sweep is a run folder of its own
(`<name>-lr-sweep-…`, listed with the other runs) holding the config and `lr_sweep.json`:

    {"task": first task's name, "steps": steps, "lrs": [...],
     "methods": {label: {"runs": [{"lr": x, "smoothed_loss": y | null, "final_loss": z | null, "steps": n,
                                   "diverged": bool}, ...],
                         "best_lr": x | null}}}
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from curlora.errors import CurloraError
from curlora.experiment import ExperimentConfig
from curlora.methods.registry import method

SWEEP_FILE = "lr_sweep.json"


def lr_sweep(cfg: ExperimentConfig, lrs: list[float], steps: int | None = None, root: Path | None = None,
             on_event=None):
    """Run the sweep and return (run, results); results are also written to the run folder's lr_sweep.json."""
    from curlora.run.runner import Executor, start
    from curlora.run.store import atomic_write_text
    from curlora.run.train import Diverged, new_head, train_task

    if not lrs or any(not (lr > 0 and math.isfinite(lr)) for lr in lrs):
        raise CurloraError(f"--lrs: give one or more positive learning rates, e.g. 1e-4,1e-3,1e-2 (got {lrs}).")
    trained = [m for m in cfg.methods if method(m.kind).trains]
    if not trained:
        raise CurloraError("methods: the sweep needs at least one trained method (not only 'base').")
    tr = cfg.training
    steps = steps or tr.max_steps or 50
    schedule = dataclasses.replace(tr, max_steps=steps)
    sweep_cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, name=f"{cfg.run.name}-lr-sweep"))
    run, loaded = start(sweep_cfg, root)
    ex = Executor(run, sweep_cfg, loaded)
    task = loaded.tasks[0]
    results = {"task": task.name, "steps": steps, "lrs": list(lrs), "methods": {}}
    try:
        for m in trained:
            runs = []
            for lr in lrs:
                model, _, cleanup = ex.attach(m, 0)
                head = (new_head(loaded.model, len(task.classes), tr.seed)
                        if cfg.evaluation.scoring == "head" else None)
                try:
                    r = train_task(model, loaded.tokenizer, task, schedule, lr=lr, head=head)
                    runs.append({"lr": lr, "smoothed_loss": r.smoothed_loss, "final_loss": r.final_loss,
                                 "steps": r.steps, "diverged": False})
                except Diverged:
                    runs.append({"lr": lr, "smoothed_loss": None, "final_loss": None, "steps": None, "diverged": True})
                finally:
                    cleanup()
                if on_event:
                    on_event({"kind": "sweep", "method": m.label, **runs[-1]})
            ok = [r for r in runs if not r["diverged"] and math.isfinite(r["smoothed_loss"])]
            best = min(ok, key=lambda r: r["smoothed_loss"])["lr"] if ok else None
            results["methods"][m.label] = {"runs": runs, "best_lr": best}
            atomic_write_text(run.path / SWEEP_FILE, json.dumps(results, indent=1) + "\n")
    except Exception as err:
        run.set_status("failed", str(err))
        raise
    run.set_status("completed", "learning-rate sweep (results in lr_sweep.json)")
    return run, results
