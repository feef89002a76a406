"""Experiment trackers (`run.log_with`): a run's numbers in TensorBoard, Trackio, W&B or MLflow, through accelerate's
own tracker classes (accelerate.tracking), fed from the run's events and read from its store.

    on_event = follow(run, cfg, on_event)   # the runner's hook: every event also reaches the trackers
    export_tensorboard(run, dest)           # `python -m curlora export RUN --tensorboard DIR`, for any stored run
    check_installed(cfg.run.log_with)       # one sentence naming what to install, before a run starts

What is logged, under the same names in every tracker:

    <method>/train/loss, <method>/train/smoothed_loss,     step = optimiser steps counted across the tasks
    <method>/train/learning_rate
    <method>/<task>/accuracy                                step = the stage (0 = the base model, k = after task k)
    <method>/perplexity, <method>/self_perplexity,          step = the stage
    <method>/kl_to_base, <method>/weight_drift,
    <method>/chat_kl, <method>/facts_right, <method>/task_kl  (where the chat probe / new-task KL run)
    <method>/summary/acc, bwt, fwt, forgetting              step = the last stage, when the run ends
    the config, flattened (training.lr, methods.0.kind, …)  as the run's hyperparameters

A step event is logged as it comes; the stage numbers are read from metrics.json when a stage event says a stage was
stored, so a tracker shows exactly the numbers the store holds (an untrained method's rows too). Where it goes:
TensorBoard under $CURLORA_TRACKING_DIR (default <data dir>/tracking)/tensorboard/[<group>/]<run id>; Trackio, W&B
and MLflow where their own settings say (TRACKIO_DIR, WANDB_MODE / WANDB_DIR, MLFLOW_TRACKING_URI), in the project
(experiment) `curlora-studio`, one tracker run per run id. A study's runs carry the study's id as `run.group`: the
group in Trackio and W&B, a tag in MLflow, a folder in TensorBoard. A tracker that fails never stops training: it
is dropped with one line on stderr and the run goes on.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from pathlib import Path

from curlora.errors import CurloraError, clip
from curlora.run import events as ev
from curlora.run.store import Run, Study

PROJECT = "curlora-studio"
DIR_ENV = "CURLORA_TRACKING_DIR"
MODULES = {"tensorboard": "tensorboard", "trackio": "trackio", "wandb": "wandb", "mlflow": "mlflow"}
PACKAGES = {"tensorboard": "tensorboard==2.21.0", "trackio": "trackio==0.43.0", "wandb": "wandb==0.31.0",
            "mlflow": "mlflow-skinny==3.17.2"}  # the pins of requirements-extras.txt
SUMMARY = ("acc", "bwt", "fwt", "forgetting")
STAGE_MEASURES = {"perplexity": "ppl", "self_perplexity": "self_ppl", "kl_to_base": "kl_to_base", "chat_kl": "chat_kl",
                  "facts_right": "facts", "task_kl": "task_kl"}  # a probe that is off (None) is not logged

log = logging.getLogger("curlora.trackers")


def missing(names: list[str]) -> list[str]:
    """The trackers of `names` whose package is not installed here."""
    return [n for n in names if importlib.util.find_spec(MODULES.get(n, n)) is None]


def check_installed(names: list[str]) -> None:
    """One sentence naming the package to install when a tracker of `names` is missing (before a run starts)."""
    gone = missing(list(names or []))
    if gone:
        raise CurloraError(f"run.log_with: {gone[0]} is not installed here; install it with `pip install "
                           f"{PACKAGES[gone[0]]}` (or `pip install -r requirements-extras.txt`), or remove it from "
                           "run.log_with.")


def tracking_dir(run: Run) -> Path:
    return Path(os.environ.get(DIR_ENV) or run.root / "tracking")


def hyperparameters(cfg) -> dict:
    """The config as flat scalars ("training.lr": 0.01, "methods.0.kind": "lora"); lists of scalars and None as JSON
    text, which every tracker takes."""
    flat: dict = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, v in enumerate(value):
                walk(f"{prefix}.{i}", v)
        elif isinstance(value, (bool, int, float, str)):
            flat[prefix] = value
        else:
            flat[prefix] = json.dumps(value)

    walk("", cfg.to_dict())
    return flat


def stage_values(metrics, label: str, stage: int) -> dict:
    """The stored numbers of one method after one stage, by tracker name (None where nothing was measured)."""
    rec = metrics.methods[label]
    row = rec.row(stage)
    out = {f"{label}/{task}/accuracy": acc for task, acc in zip(metrics.tasks, row.accuracy)}
    for name, attr in STAGE_MEASURES.items():
        out[f"{label}/{name}"] = getattr(row, attr)
    drift = rec.drift[stage] if stage < len(rec.drift) else None
    out[f"{label}/weight_drift"] = drift.get("total") if isinstance(drift, dict) else None
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _make(name: str, run: Run, group: str | None, logging_dir: Path | None):
    """accelerate's tracker for `name`, set up for this run (not started yet)."""
    from accelerate import tracking

    if name == "tensorboard":
        folder = logging_dir if logging_dir is not None else tracking_dir(run) / "tensorboard"
        return tracking.TensorBoardTracker(f"{group}/{run.id}" if group else run.id, str(folder))
    if name == "trackio":
        return tracking.TrackioTracker(PROJECT, name=run.id, group=group, resume="allow", auto_log_cpu=False,
                                       auto_log_gpu=False)
    if name == "wandb":
        return tracking.WandBTracker(PROJECT, name=run.id, group=group)
    if name == "mlflow":
        tags = {"curlora.run_id": run.id, **({"group": group} if group else {})}
        return tracking.MLflowTracker(PROJECT, run_name=run.id, tags=tags)
    raise CurloraError(f"run.log_with: {clip(name)} is not a tracker this app knows.")


class RunTracker:
    """The trackers of one run: started at its first event, fed by `__call__(event)`, finished at `run_end`."""

    def __init__(self, run: Run, cfg, names: list[str], logging_dir: Path | None = None, resumed: bool = False,
                 strict: bool = False):
        """`resumed`: the rows stored before this process started were sent by the process that stored them (a
        resumed run logs on from where it stopped, not everything twice). `strict`: a failing tracker is an error
        (an export), not a line on stderr (a run, which must go on)."""
        self.run, self.cfg, self.names = run, cfg, list(dict.fromkeys(names))
        self.strict = strict
        self.logging_dir = logging_dir
        self.trackers: list = []
        self.started = False
        self._offsets: dict[tuple, int] = {}  # (method, stage) -> optimiser steps of the stages before it
        self._logged: set[tuple] = set()  # (method, stage) rows already sent
        if resumed:
            self._logged = {(label, i) for label, rec in run.record().methods.items() for i in range(len(rec.matrix))}

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.started = True
        group = self.cfg.run.group
        for name in self.names:
            if missing([name]):
                self._drop(None, f"{name} is not installed (pip install {PACKAGES[name]})")
                continue
            tracker = None
            try:
                tracker = _make(name, self.run, group, self.logging_dir)
                tracker.start()
                tracker.store_init_configuration(hyperparameters(self.cfg))
                if name == "wandb":
                    self._wandb_axes(tracker)
                self.trackers.append(tracker)
            except Exception as err:  # a tracker is an extra: it never stops a run
                self._drop(tracker, f"{name} could not start ({type(err).__name__}: {err})")

    def finish(self) -> None:
        for tracker in self.trackers:
            try:
                tracker.finish()
            except Exception as err:
                log.warning("tracker %s did not finish cleanly: %s", tracker.name, err)
        self.trackers = []

    def _drop(self, tracker, why: str) -> None:
        if self.strict:
            raise CurloraError(f"Run {self.run.id} was not exported: {why}; check the folder and try again.")
        if tracker in self.trackers:
            self.trackers.remove(tracker)
        print(f"run {self.run.id}: experiment tracking stopped: {why}; the run goes on.", file=sys.stderr, flush=True)

    def _wandb_axes(self, tracker) -> None:
        """W&B wants one rising step per run: each method's steps and the stages get their own axes instead."""
        wb = tracker.tracker
        wb.define_metric("stage")
        for m in self.cfg.methods:
            wb.define_metric(f"{m.label}/train/step")
            wb.define_metric(f"{m.label}/train/*", step_metric=f"{m.label}/train/step")
            names = [f"{m.label}/{t.name}/accuracy" for t in self.cfg.tasks] + \
                    [f"{m.label}/{n}" for n in (*STAGE_MEASURES, "weight_drift")] + \
                    [f"{m.label}/summary/{s}" for s in SUMMARY]
            for name in names:
                wb.define_metric(name, step_metric="stage")

    def _log(self, values: dict, step: int, axis: str) -> None:
        if not values:
            return
        for tracker in list(self.trackers):
            try:
                if tracker.name == "wandb":
                    tracker.log({**values, axis: step})
                else:
                    tracker.log(values, step=step)
            except Exception as err:
                self._drop(tracker, f"{tracker.name} failed ({type(err).__name__}: {err})")

    # -- what is sent ------------------------------------------------------------------------------------------
    def __call__(self, event: dict) -> None:
        kind = event.get("kind")
        if not self.started:
            self.start()
        if kind == ev.STEP:
            self.step(event)
        elif kind == ev.STAGE:
            self.sync()
        elif kind == ev.RUN_END:
            self.sync()
            self.summary()
            self.finish()

    def step(self, e: dict) -> None:
        label, stage = e["method"], int(e["stage"])
        if (label, stage) not in self._offsets:  # the stages before it are in metrics.json by now
            rec = self.run.record().methods.get(label)
            self._offsets[(label, stage)] = sum(t.steps or 0 for t in (rec.train if rec else [])[: stage - 1])
        values = {f"{label}/train/loss": e.get("loss"), f"{label}/train/smoothed_loss": e.get("smoothed_loss"),
                  f"{label}/train/learning_rate": e.get("lr")}
        self._log({k: float(v) for k, v in values.items() if v is not None}, self._offsets[(label, stage)] +
                  int(e["step"]), f"{label}/train/step")

    def sync(self) -> None:
        """Every stored (method, stage) row not sent yet, read from metrics.json."""
        m = self.run.record()
        for label, rec in m.methods.items():
            for stage in range(len(rec.matrix)):
                if (label, stage) not in self._logged:
                    self._log(stage_values(m, label, stage), stage, "stage")
                    self._logged.add((label, stage))

    def summary(self) -> None:
        m = self.run.record()
        for label, rec in m.methods.items():
            values = {f"{label}/summary/{k}": rec.summary.get(k) for k in SUMMARY}
            values = {k: float(v) for k, v in values.items() if isinstance(v, (int, float))}
            self._log(values, rec.stages_done, "stage")


def follow(run: Run, cfg, on_event=None):
    """`on_event`, wrapped so that every event also reaches the run's trackers (`run.log_with`); `on_event` itself
    when the run has none, or in a process that does not write the store (torchrun's other ranks)."""
    names = list(cfg.run.log_with or [])
    if not names or int(os.environ.get("RANK", "0")) != 0:
        return on_event
    box = [RunTracker(run, cfg, names, resumed=True)]

    def on(event: dict) -> None:
        if box:
            try:
                box[0](event)
            except Exception as err:  # reading the store for a tracker must not stop training either
                box.pop().finish()
                print(f"run {run.id}: experiment tracking stopped ({type(err).__name__}: {err}); the run goes on.",
                      file=sys.stderr, flush=True)
        if on_event is not None:
            on_event(event)

    return on


# -- from the store ------------------------------------------------------------------------------------------------
def final_steps(events: list[dict]) -> list[dict]:
    """The step events of each stage's last attempt: a stage that was interrupted and trained again on resume keeps
    only its second curve."""
    last_start = {}
    for i, e in enumerate(events):
        if e.get("kind") == ev.STAGE_START:
            last_start[(e.get("method"), e.get("stage"))] = i
    return [e for i, e in enumerate(events) if e.get("kind") == ev.STEP
            and i > last_start.get((e.get("method"), e.get("stage")), -1)]


def replay(run: Run, cfg, names: list[str], logging_dir: Path | None = None) -> None:
    """Send a stored run to trackers as if it were running now: its training curves, every stored row, the summary."""
    tracker = RunTracker(run, cfg, names, logging_dir=logging_dir, strict=True)
    tracker.start()
    try:
        for e in final_steps(run.events()):
            tracker.step(e)
        tracker.sync()
        tracker.summary()
    finally:
        tracker.finish()


def export_tensorboard(run: Run, dest: Path) -> list[Path]:
    """TensorBoard event files of a stored run (any version's) under dest/<run id>/ — of each run of a study under
    dest/<study id>/<run id>/. Returns the folders written."""
    check_installed(["tensorboard"])
    runs = [run]
    group = None
    if isinstance(run, Study):
        runs, group = [Run.open(i, run.root) for i in run.point_run_ids()], run.id
        if not runs:
            raise CurloraError(f"Study {run.id} has no runs yet; nothing to export.")
    written = []
    for r in runs:
        cfg = r.config()
        cfg.run.group = group or cfg.run.group
        replay(r, cfg, ["tensorboard"], logging_dir=dest)
        written.append(dest / (f"{cfg.run.group}/{r.id}" if cfg.run.group else r.id))
    return written
