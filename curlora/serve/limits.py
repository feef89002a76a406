"""How big a run may be: the absolute bounds every config obeys, and the limits a host sets on top of them.

`curlora.experiment.UPPER_BOUNDS` are checked by `ExperimentConfig.check` everywhere (CLI, app, tests): far above any sensible run, low
enough that a typo or a hostile form (`max_steps: 1e12`, `r: 200000`) is refused with one sentence before
anything is loaded, instead of running for a year or dying in the allocator.

`Limits` are the host's: none on a laptop (except the upload size), safe defaults on a shared Space, each
overridable without code:

    CURLORA_LIMIT_TASKS_PER_RUN=20      a number (`2e8` is fine), or `none` to lift that limit; empty = unset
    CURLORA_LIMITS_FILE=limits.yaml     a mapping of field names to numbers (or null / none)

The defaults come first, then the file, then the environment variables (the most specific setting wins).
`check_experiment` refuses what the config alone shows is too big, `check_loaded` what needs the loaded tasks;
neither writes anything. The per-visitor and global fields (runs, queue, store, uploads, chat) are enforced by
the job queue and the app, which read them from here.

Training tokens per run (`tokens_per_run`): the work a run may do, counted before it starts as

    sum over trained methods m (every kind but `base`) and tasks i of
        steps(m, i) × batch_size × grad_accum × max_length

where steps(m, i) is the optimiser-step budget of m's schedule on task i (curlora/methods/registry.py stage_steps, what
`train_task` runs): `training.max_steps` per task the stage trains on (joint: every task so far), or without it
max(1, ceil(epochs × ceil(ceil(train rows of those tasks / own rows per batch) / grad_accum))), where a batch's own
rows are batch_size less the rows that experience replay draws from earlier tasks. Under
`matched_loss` a method chasing the target may run `matched_loss_max_steps` instead; the larger budget counts.
Sequences are padded to the longest in their batch, never beyond max_length, so this is an upper bound on the
tokens trained on: one number that grows with every knob that makes a run slower.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from curlora.errors import CurloraError, clip
from curlora.methods.registry import method, stage_steps

ENV_PREFIX = "CURLORA_LIMIT_"
FILE_ENV = "CURLORA_LIMITS_FILE"


def _limit(label: str, unit: str = "", whole: bool = True):
    return field(default=None, metadata={"label": label, "unit": unit, "whole": whole})


@dataclass
class Limits:
    """The host's limits; None = no limit. See the module docstring for how they are set and checked."""

    runs_per_visitor: int | None = _limit("runs per visitor (active + queued)")
    tokens_per_run: int | None = _limit("training tokens per run (steps × batch_size × grad_accum × max_length)")
    tasks_per_run: int | None = _limit("tasks per run")
    rows_per_task: int | None = _limit("training rows per task")
    eval_rows_per_task: int | None = _limit("eval rows scored per task")
    upload_mb: float | None = _limit("upload size", "MB", whole=False)
    store_mb_per_visitor: float | None = _limit("stored runs per visitor", "MB", whole=False)
    chat_per_minute: int | None = _limit("chat replies per visitor per minute")
    queue_length: int | None = _limit("runs queued at once (everyone)")
    store_mb_total: float | None = _limit("stored runs in total (everyone)", "MB", whole=False)
    max_rank: int | None = _limit("largest rank r")
    runs_anonymous: int | None = _limit("runs of visitors not signed in, all together (active + queued)")
    chat_per_minute_anonymous: int | None = _limit("chat replies per minute of visitors not signed in, together")
    points_per_study: int | None = _limit("runs in one study (methods × learning rates × seeds)")
    tokens_per_study: int | None = _limit("training tokens per study (summed over its runs)")
    rows_per_file: int | None = _limit("data rows read from one task file (reading stops there)")
    eval_rows_per_run: int | None = _limit("eval rows scored per run (rows × stages, over tasks, and in-task probes)")
    self_probe_tokens: int | None = _limit("self-probe tokens per stage (texts × tokens)")
    probe_tokens: int | None = _limit("perplexity probe tokens per stage (evaluation.ppl_max_tokens)")
    task_loads_at_once: int | None = _limit("task files read at once (everyone)")
    device_actions_per_hour: int | None = _limit("time estimates, evaluations, exports and sampling inspections per "
                                                 "visitor per hour (each holds the device outside the run queue)")
    device_actions_per_hour_anonymous: int | None = _limit("the same per hour of visitors not signed in, together")

    @classmethod
    def load(cls, hosted: bool) -> "Limits":
        """The defaults for a hosted or a local app, then CURLORA_LIMITS_FILE, then CURLORA_LIMIT_<FIELD>."""
        values = dict(HOSTED if hosted else LOCAL)
        path = os.environ.get(FILE_ENV)
        if path:
            values.update(_read_file(Path(path)))
        for f in dataclasses.fields(cls):
            var = ENV_PREFIX + f.name.upper()
            raw = os.environ.get(var, "")
            if raw.strip():
                values[f.name] = _parse(raw, f, var)
        return cls(**values)

    def describe(self) -> list[tuple[str, str]]:
        """(what, how much) per limit, for the page: ("runs per visitor (active + queued)", "2")."""
        rows = []
        for f in dataclasses.fields(self):
            value, unit = getattr(self, f.name), f.metadata["unit"]
            shown = "no limit" if value is None else f"{_show(value)} {unit}".strip()
            rows.append((f.metadata["label"], shown))
        return rows

    # -- per-run checks ----------------------------------------------------------------------------------
    def check_experiment(self, cfg) -> None:
        """Refuse what the config alone shows is over a per-run limit (tasks, rank, eval rows, training tokens
        when every schedule has max_steps); the rest waits for `check_loaded`."""
        _over("Tasks per run", len(cfg.tasks), self.tasks_per_run, "remove tasks or split the sequence over "
                                                                    "several runs")
        for i, m in enumerate(cfg.methods):
            if method(m.kind).ranked:
                _over(f"Rank (methods[{i}].r of {m.label})", m.r, self.max_rank, "lower it")
        rows = cfg.evaluation.eval_rows
        if rows is not None:
            _over("Eval rows per task (evaluation.eval_rows)", rows, self.eval_rows_per_task, "lower it")
        _over_tokens(training_tokens(cfg), self.tokens_per_run)
        ev = cfg.evaluation
        if ev.self_probe:
            _over("Self-probe tokens per stage (evaluation.self_probe_texts × self_probe_tokens)",
                  ev.self_probe_texts * ev.self_probe_tokens, self.self_probe_tokens,
                  "lower self_probe_texts or self_probe_tokens")
        if self.probe_tokens is not None and ev.ppl_max_tokens is None:
            raise CurloraError(f"Perplexity probe tokens per stage (evaluation.ppl_max_tokens): this run reads the "
                               f"whole probe text, the limit here is {_show(self.probe_tokens)}; set ppl_max_tokens to "
                               "that or less.")
        _over("Perplexity probe tokens per stage (evaluation.ppl_max_tokens)", ev.ppl_max_tokens or 0,
              self.probe_tokens, "lower it")
        if rows is not None:
            _over_eval(eval_work(cfg, [rows] * len(cfg.tasks)), self.eval_rows_per_run)

    def check_loaded(self, cfg, tasks) -> None:
        """Refuse what the config and the loaded tasks show is over a limit: everything `check_experiment` refuses
        (Policy.admit has refused it before anything was read; this is the loader's complete check), then training
        rows, scored eval rows, and the training tokens of epoch-based schedules (steps from the row counts)."""
        self.check_experiment(cfg)
        for t in tasks:
            _over(f"Training rows per task (task '{t.name}')", len(t.train), self.rows_per_task,
                  "set its max_train_rows to the limit or less (a seeded stratified sample)")
            _over(f"Eval rows per task (task '{t.name}')", scored_eval_rows(cfg, t), self.eval_rows_per_task,
                  "set evaluation.eval_rows (or the task's max_eval_rows) to the limit or less")
        _over_tokens(training_tokens(cfg, [len(t.train) for t in tasks]), self.tokens_per_run)
        _over_eval(eval_work(cfg, [scored_eval_rows(cfg, t) for t in tasks], [len(t.train) for t in tasks]),
                   self.eval_rows_per_run)

    def reading(self, wait: float | None = None):
        """A context that holds one of this host's `task_loads_at_once` places while task files are read (the
        loader and evaluation read under it, without importing this module)."""
        return reading_tasks(self, READ_WAIT if wait is None else wait)

    # -- per-study checks --------------------------------------------------------------------------------
    def check_study(self, cfg, points: dict[str, int], rows: list[int] | None = None) -> None:
        """Refuse a study whose whole grid is over the limits: its runs (`points`: method label -> runs of that
        method, see study_points) and the training tokens summed over them (each run trains one method; with
        `rows` None, only when every schedule has max_steps)."""
        _over("Runs per study (methods × learning rates × seeds)", sum(points.values()), self.points_per_study,
              "use fewer learning rates or seeds (or fewer methods)", subject="study")
        per = tokens_by_method(cfg, rows)
        if per is None:
            return
        total = sum(per.get(label, 0) * n for label, n in points.items())
        _over("Training tokens per study (summed over its runs)", total, self.tokens_per_study,
              "use fewer learning rates or seeds, or lower training.max_steps (or epochs), batch_size or max_length",
              subject="study")


# Hosted defaults, for a free CPU Space (2 vCPUs, 16 GB RAM, 50 GB of disk that is lost on restart) that every
# visitor shares, one run at a time:
# - runs 2 per visitor and 8 in the queue: one visitor can queue a follow-up but never fill the queue.
# - training tokens 2e7: the quick demo (3 tasks × 2 methods × 60 steps × 16 × 128 = 737,280) takes under 3
#   minutes on 2 laptop cores, so 2e7 is about 27 quick demos, roughly an hour of the Space on the bundled model.
# - tasks 10, training rows 5,000 and eval rows 1,000 per task: every stage scores every task, so evaluation
#   grows with tasks² × methods; 10 × 1,000 rows keep each evaluation of the bundled model within a minute or so.
# - uploads 20 MB: a 5,000-row CSV of reviews is about 5 MB.
# - store 500 MB per visitor, 10,000 MB in all: LoRA/CURLoRA stages of a small model are kilobytes to a few MB,
#   a full fine-tune of the bundled model is 20 MB a stage; the rest of the disk holds models and caches.
# - chat 20 replies a minute: a reply takes the device for a second or two, so one visitor can't starve the rest.
# - rank 64: a quarter of the bundled model's hidden size; CURLoRA's U is r × r per adapted matrix.
# - evaluation: 60,000 eval rows scored per run (the quick demo scores 3 tasks × 7 stages × ~100 rows), 4,096
#   self-probe tokens per stage (the default 8 × 64 = 512) and 16,384 probe tokens (twice the default): a run of
#   1 step, 1,024 self-probe texts of 400 tokens and 1,000 eval rows ran for minutes before these.
# - files: reading stops after 20,000 data rows (4 × the training rows a task may keep, so a task can still be
#   sub-sampled), and two task files are read at once, so concurrent /start calls cannot fill the memory.
# - what holds the device outside the run queue (a time estimate trains a few steps; an evaluation scores a file; a
#   stage export, a merged export or push and a sampling inspection load the model): 20 an hour per visitor and 60
#   for those not signed in together, so pressing one of those buttons in a loop cannot hold the device.
# - visitors who are not signed in: 6 runs and 60 chat replies a minute all together, so anonymous callers (however
#   many sessions, tokens or connections they open) leave 2 queue places to signed-in visitors.
# - a study: 16 runs (2 methods × 4 learning rates × 2 seeds) and 4e7 training tokens in all (two runs' worth: a
#   study of quick-demo points has 108 of them), so one study is an afternoon of the Space, not 9 days.
HOSTED: dict[str, int | float | None] = {
    "runs_per_visitor": 2, "tokens_per_run": 20_000_000, "tasks_per_run": 10, "rows_per_task": 5_000,
    "eval_rows_per_task": 1_000, "upload_mb": 20, "store_mb_per_visitor": 500, "chat_per_minute": 20,
    "queue_length": 8, "store_mb_total": 10_000, "max_rank": 64, "runs_anonymous": 6,
    "chat_per_minute_anonymous": 60, "points_per_study": 16, "tokens_per_study": 40_000_000,
    "rows_per_file": 20_000, "eval_rows_per_run": 60_000, "self_probe_tokens": 4_096, "probe_tokens": 16_384,
    "task_loads_at_once": 2, "device_actions_per_hour": 20,
    "device_actions_per_hour_anonymous": 60,
}
# On your own machine nothing is limited but the size of one upload through the browser.
LOCAL: dict[str, int | float | None] = {"upload_mb": 50}


# Task files being read now, by every caller of this process (the app's visitors, its job thread): reading a big CSV
# holds its rows in memory, so concurrent /start calls wait for a place (and are refused after READ_WAIT seconds).
_READING = {"count": 0}
_READING_CV = threading.Condition()
READ_WAIT = 60.0


@contextmanager
def reading_tasks(limits, wait: float = READ_WAIT):
    """Hold one of the host's `task_loads_at_once` places while task files are read (no limit: no wait)."""
    limit = getattr(limits, "task_loads_at_once", None)
    if limit is None:
        yield
        return
    with _READING_CV:
        if not _READING_CV.wait_for(lambda: _READING["count"] < max(1, limit), wait):
            raise CurloraError(f"Task files read at once: {_READING['count']} are being read for other visitors, "
                               f"the limit here is {_show(limit)}; try again in a minute.")
        _READING["count"] += 1
    try:
        yield
    finally:
        with _READING_CV:
            _READING["count"] -= 1
            _READING_CV.notify()


def steps_per_task(rows: int, training) -> int:
    """Optimiser steps of an epoch-based schedule on `rows` training rows (train_task's formula)."""
    per_epoch = math.ceil(math.ceil(rows / training.batch_size) / training.grad_accum)
    return max(1, math.ceil(training.epochs * per_epoch))


def training_tokens(cfg, rows: list[int] | None = None) -> int | None:
    """Training tokens per run (module docstring); None when a schedule needs the row counts and `rows`
    (train rows per task, in task order) is not given."""
    per = tokens_by_method(cfg, rows)
    return None if per is None else sum(per.values())


def tokens_by_method(cfg, rows: list[int] | None = None) -> dict[str, int] | None:
    """Training tokens of each trained method's schedule over all tasks (label -> tokens); None as above."""
    tr = cfg.training
    per_step = tr.batch_size * tr.grad_accum * tr.max_length
    out = {}
    for m in cfg.methods:
        if not method(m.kind).trains:
            continue
        budgets = {tr.max_steps}
        if tr.comparison == "matched_loss" and m.label != tr.matched_loss_reference:
            budgets.add(tr.matched_loss_max_steps or tr.max_steps)
        total = 0
        for i in range(len(cfg.tasks)):
            steps = [stage_steps(m, tr, i, b, rows) for b in budgets]
            if None in steps:
                return None
            total += max(steps) * per_step
        out[m.label] = total
    return out


def study_points(settings) -> dict[str, int]:
    """Runs of each method in a study's grid (label -> learning rates × seeds × task orders, when the settings
    have an orders axis), from its planned settings (study.plan_settings), before anything is created."""
    seeds = len(getattr(settings, "seeds", None) or [0])
    orders = len(getattr(settings, "orders", None) or [None])
    return {label: len(grid) * seeds * orders for label, grid in settings.lrs.items()}


def eval_work(cfg, scored: list[int], rows: list[int] | None = None) -> int:
    """Eval rows a run scores in all: every stage (the base, then each trained method after each task) scores every
    task's eval rows (`scored`, per task), and the in-task probe (evaluation.probe_every) scores probe_rows rows of
    each earlier task every probe_every steps (counted where the steps are known)."""
    tr, ev = cfg.training, cfg.evaluation
    trained = [m for m in cfg.methods if method(m.kind).trains]
    stages = 1 + len(trained) * len(cfg.tasks)
    total = stages * sum(scored)
    if ev.probe_every:
        for i in range(1, len(cfg.tasks)):
            steps = tr.max_steps if tr.max_steps is not None else (
                steps_per_task(rows[i], tr) if rows is not None else 0)
            total += len(trained) * (steps // ev.probe_every) * ev.probe_rows * i
    return total


def scored_eval_rows(cfg, task) -> int:
    """Eval rows of `task` scored at every stage (evaluation.eval_rows caps them)."""
    limit = cfg.evaluation.eval_rows
    return len(task.eval) if not limit else min(limit, len(task.eval))


def _over(what: str, asked: int, limit: int | float | None, change: str, subject: str = "run") -> None:
    if limit is not None and asked > limit:
        raise CurloraError(f"{what}: this {subject} asks for {_show(asked)}, the limit here is {_show(limit)}; "
                           f"{change}.")


def _over_eval(rows: int, limit: int | None) -> None:
    _over("Eval rows scored per run (eval rows × stages, over tasks, with in-task probes)", rows, limit,
          "lower evaluation.eval_rows or probe_rows, raise probe_every, or train fewer tasks or methods")


def _over_tokens(tokens: int | None, limit: int | None) -> None:
    if tokens is not None:
        _over("Training tokens per run (steps × batch_size × grad_accum × max_length, over tasks and methods)",
              tokens, limit, "lower training.max_steps (or epochs), batch_size, grad_accum or max_length, or train "
                             "fewer tasks or methods")


def _show(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def _parse(raw, f: dataclasses.Field, where: str) -> int | float | None:
    """One limit's value from the environment or the file: a number of at least 0, or none / null to lift it."""
    whole = f.metadata["whole"]
    example = "10" if whole else "20.5"
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("none", "null")):
        return None
    value = raw
    if isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            value = raw
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CurloraError(f"{where}: {clip(raw)} is not a number; give a number such as {example}, or none to lift "
                           "the limit.")
    if not math.isfinite(value) or value < 0:
        raise CurloraError(f"{where}: {clip(raw)} is not a limit; give a number of at least 0, or none to lift it.")
    if whole:
        if not float(value).is_integer():
            raise CurloraError(f"{where}: {clip(raw)} is not a whole number; give one such as {example}, or none to "
                               "lift the limit.")
        return int(value)
    return float(value)


def _read_file(path: Path) -> dict:
    where = f"{FILE_ENV} ({path})"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise CurloraError(f"{where} cannot be read ({err.strerror or err}); fix the path or unset it.") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise CurloraError(f"{where} is not valid YAML{at}; write one 'name: number' per line.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CurloraError(f"{where} must be a mapping of limit names to numbers, such as 'tasks_per_run: 10'.")
    fields = {f.name: f for f in dataclasses.fields(Limits)}
    names = list(fields)
    out = {}
    for key, raw in data.items():
        if key not in fields:
            guess = difflib.get_close_matches(str(key), names, n=1)
            hint = f"did you mean '{guess[0]}'? " if guess else ""
            raise CurloraError(f"{where}: unknown limit '{key}'; {hint}known limits are {', '.join(names)}.")
        out[key] = _parse(raw, fields[key], f"{where}: {key}")
    return out
