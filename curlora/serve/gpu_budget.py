"""How long the next unit of a run may hold a ZeroGPU device, from the run's own measurements.

    budget = Budget.from_env()                       # floor, cap and first guesses (CURLORA_GPU_* variables)
    seconds = unit_seconds(run, cfg, tasks, budget)  # what to declare to spaces.GPU(duration=…) for the next unit

A unit is the base row or one method on one task (see runner.Executor.execute). Its duration is

    overhead + margin × (steps × seconds per step + evaluation seconds),  within [floor, cap]

with the seconds per step measured by the run itself (its latest `step` event of that method, else of any method),
the evaluation seconds from its latest measured evaluation (a stage event minus the step before it, or the base
row), and first guesses before anything is measured. ZeroGPU aborts a call that outlives its duration and queues a
visitor by what they ask for, so a measured number beats a constant both ways.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from curlora.measure.record import RunMetrics
from curlora.run import events as ev
from curlora.run.store import Run, Study


def _env(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass
class Budget:
    floor: float = 20.0  # seconds: a GPU call never asks for less
    cap: float = 300.0  # seconds: nor for more (CURLORA_GPU_SECONDS; keep each task's steps within it)
    overhead: float = 15.0  # starting the GPU worker and moving the weights there
    margin: float = 1.5  # measured times vary (other work on the node, longer examples)
    step_guess: float = 1.0  # seconds per step before the run has measured one
    eval_guess: float = 60.0  # seconds of evaluation before the run has measured one

    @classmethod
    def from_env(cls) -> "Budget":
        return cls(floor=_env("CURLORA_GPU_MIN_SECONDS", cls.floor), cap=_env("CURLORA_GPU_SECONDS", cls.cap))

    def seconds(self, steps: int, per_step: float | None, evaluation: float | None) -> int:
        work = steps * (self.step_guess if per_step is None else per_step)
        work += self.eval_guess if evaluation is None else evaluation
        return int(min(self.cap, max(self.floor, math.ceil(self.overhead + self.margin * work))))


def next_unit(cfg, m: RunMetrics) -> tuple[str, int] | None:
    """("base", 0) while the base row is missing, then (method label, task index) of the first method with a task
    left, in the runner's order; None when nothing is left."""
    if m.base is None:
        return "base", 0
    n = len(cfg.tasks)
    for settings in cfg.methods:
        rec = m.methods.get(settings.label)
        if rec is None:
            return settings.label, 0
        if rec.status not in ("completed", "failed") and rec.stages_done < n:
            return settings.label, rec.stages_done
    return None


def unit_steps(cfg, label: str, task_index: int, tasks) -> int:
    """Optimiser steps of one method on one task, as train_task counts them (curlora/methods/registry.py stage_steps:
    max_steps, else epochs over the stage's training rows); 0 for the base row and for methods that do not train."""
    from curlora.methods.registry import method, stage_steps

    settings = next((m for m in cfg.methods if m.label == label), None)
    if settings is None or not method(settings.kind).trains:
        return 0
    tr = cfg.training
    chasing = tr.comparison == "matched_loss" and label != tr.matched_loss_reference
    steps = (tr.matched_loss_max_steps or tr.max_steps) if chasing else tr.max_steps
    rows = [len(t.train) for t in tasks] if tasks is not None else [0] * (task_index + 1)
    rows += [0] * (task_index + 1 - len(rows))
    return int(stage_steps(settings, tr, task_index, steps, rows))


def step_seconds(events: list[dict], label: str) -> float | None:
    """Seconds per optimiser step: the latest step event of `label` (elapsed / step), else of any method."""
    steps = [e for e in events if e.get("kind") == ev.STEP and e.get("step")]
    for pool in ([e for e in steps if e.get("method") == label], steps):
        if pool:
            last = pool[-1]
            return float(last["elapsed"]) / int(last["step"])
    return None


def eval_seconds(events: list[dict]) -> float | None:
    """Seconds of one evaluation (every task, the perplexity probes): the latest stage event minus the step before
    it (saving and evaluating a trained stage), else the base row (its stage_start to its stage event)."""
    last_step: dict[tuple, float] = {}
    base_start, found = None, None
    for e in events:
        kind, key = e.get("kind"), (e.get("method"), e.get("stage"))
        if kind == ev.STEP:
            last_step[key] = e["t"]
        elif kind == ev.STAGE_START and e.get("method") == "base":
            base_start = e["t"]
        elif kind == ev.STAGE and key in last_step:
            found = e["t"] - last_step[key]
        elif kind == ev.STAGE and e.get("method") == "base" and base_start is not None:
            found = e["t"] - base_start
    return None if found is None else max(0.0, found)


def unit_seconds(run, cfg, tasks, budget: Budget) -> int:
    """The duration to declare for the next unit of `run` (of a study: of its point in progress)."""
    history: list[dict] = []
    if isinstance(run, Study):
        run, cfg, history = _study_point(run, cfg)
    unit = next_unit(cfg, run.record())
    if unit is None:
        return int(budget.floor)
    label, index = unit
    events = history + run.events()
    steps = unit_steps(cfg, label, index, tasks)
    return budget.seconds(steps, step_seconds(events, label) if steps else None, eval_seconds(events))


def _study_point(study, cfg):
    """(the study's point run in progress, its config, the events of its earlier points); the study itself while
    its base row is measured."""
    history, current = [], None
    for run_id in study.point_run_ids():
        try:
            point = Run.open(run_id, study.root)
        except Exception:  # a point deleted by hand: measure without it
            continue
        if point.status()["status"] == "running":
            current = point
        else:
            history += point.events()
    if current is None:
        return study, cfg, history
    return current, current.config(), history
