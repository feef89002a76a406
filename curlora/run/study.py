"""A study: each method traced over a grid of learning rates and seeds, drawn as learning against forgetting.

    python -m curlora study EXPERIMENT.yaml --lrs curlora=3e-3,1e-2,3e-2,1e-1 --lrs lora=2e-4,5e-4,1e-3,2e-3 \\
        --seeds 0,1,2 [--kl-budget 0.05]
    python -m curlora study --resume STUDY_ID

A single setting per method cannot say which method forgets less: the answer moves with the learning rate. A
study runs one ordinary run per (method, lr, seed) — each listed, resumable, exportable like any run — and keeps
`study.json` in a folder of its own in the run store (beside `study.yaml`, its settings, and `config.yaml`, the
experiment): a Study entry (curlora/run/store.py). Work that does not depend on the method is done once: the model
is loaded once, the tasks are read and encoded once, the base row (stage 0, with the self-probe texts and the
base's reference distribution) is measured once and handed to every run (with `rows_per_seed`, each seed draws its
own training and eval rows, and the base row is measured once per seed). A killed study resumes where it stopped:
finished runs are kept, the run that was interrupted continues from its last finished stage, the rest start.

This module runs a study. Its plan is curlora/run/study_plan.py; study.json is the typed StudyRecord of
curlora/measure/study_record.py (its fields are documented there); the analysis that fills it from the runs
(points, groups, frontier, best lr, the comparison and its sentence) is curlora/measure/study_analysis.py.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from curlora.errors import Cancelled, CurloraError
from curlora.experiment import ExperimentConfig
from curlora.measure.record import Row, RunMetrics
from curlora.measure.study_analysis import analyse, point_measures
from curlora.measure.study_record import PlanEntry, Point, StudyRecord, StudySettings
from curlora.run import events
from curlora.run.store import STUDY_FILE, STUDY_SETTINGS, Run, Study, atomic_write_text, register_executor
from curlora.run.study_plan import (parse_grid, parse_replays, parse_seeds, permutation, plan_of,  # noqa: F401
                                    plan_settings, point_config, replay_label, seeded_tasks, with_replays)

if TYPE_CHECKING:  # annotations only: the study imports no torch until it runs
    from curlora.run.measurer import Loaded

OWNER_FILE = "owner"  # curlora/serve/hosting.py write_owner
SETTINGS_FILE = STUDY_SETTINGS  # the marker of a study's folder (curlora/run/store.py Study)


# -- running --------------------------------------------------------------------------------------------------
def create(cfg: ExperimentConfig, settings: StudySettings, root: Path | None = None) -> Study:
    """The study's folder, with its plan: nothing runs yet. Refusals (bad grids, no trained method) write nothing."""
    cfg, settings = with_replays(cfg, settings)
    settings = plan_settings(cfg, settings)
    folder = Run.create(cfg.to_yaml(), name=f"{cfg.run.name}-study", root=root)
    atomic_write_text(folder.path / SETTINGS_FILE, yaml.safe_dump(settings.to_dict(), sort_keys=False))
    study = folder.entry()
    plan = plan_of(settings)
    write(study, analyse(settings, None, plan, [], None, tasks=[t.name for t in cfg.tasks]))
    study.set_status("queued", f"study of {len(plan)} runs, waiting to start")
    return study


def is_study(run: Run) -> bool:
    return (run.path / SETTINGS_FILE).is_file()


def read(study: Run) -> dict:
    """study.json as stored (scripts and tests); everything else reads `Study.study_record()`."""
    return Run(study.root, study.id).entry().study_json() if is_study(study) else {}


def write(study: Run, rec: StudyRecord) -> None:
    atomic_write_text(study.path / STUDY_FILE, json.dumps(rec.to_json(), indent=1, default=float) + "\n")


def settings_of(study: Run) -> StudySettings:
    return StudySettings.from_dict(yaml.safe_load((study.path / SETTINGS_FILE).read_text(encoding="utf-8")))


def execute(study: Run, loaded: Loaded, should_stop=None, on_event=None, device_call=None) -> str:
    """Run (or resume) every point of the study in `study`, one after another, sharing `loaded` and the base row.
    Returns the study's status: completed | cancelled (a failed point is recorded and the study goes on)."""
    from curlora.run.runner import execute as execute_run

    study = study.entry()
    cfg, settings = study.config(), settings_of(study)
    root = study.root
    rec = study.study_record()
    plan = rec.plan
    with study.lock():
        study.set_status("running", f"study of {len(plan)} runs")
        try:
            seeded = _Seeded(study, rec, cfg, loaded, settings, should_stop, device_call)
            for entry in plan:
                if entry.status == "completed":
                    continue
                if should_stop and should_stop():
                    raise Cancelled()
                if entry.run_id:
                    run = Run.open(entry.run_id, root)
                    if run.status()["status"] == "completed":
                        entry.status = "completed"
                        continue
                    run.clear_cancel()
                    with run.lock():
                        run.repair()
                    pcfg = run.config()
                else:
                    run, pcfg = _new_point_run(study, cfg, entry)
                    rec = _save(study, settings, rec)
                entry.status = "running"
                perm = permutation(cfg, _order(settings, entry))
                loaded_s, base = seeded.state(entry.seed, rec)
                status = execute_run(run, pcfg, _loaded_in_order(loaded_s, perm), should_stop=should_stop,
                                     on_event=on_event, device_call=device_call, base=_row_in_order(base, perm))
                entry.status = status
                rec = _save(study, settings, rec)
                if status == "cancelled":
                    raise Cancelled()
                study.log(events.STUDY_POINT, study=study.id, run_id=run.id, method=entry.method, lr=entry.lr,
                          seed=entry.seed)
        except Cancelled:
            _save(study, settings, rec)
            study.set_status("cancelled", "stopped on request; finished runs are kept — resume the study to go on")
            return "cancelled"
        except Exception as err:
            _save(study, settings, rec)
            study.set_status("failed", str(err) if isinstance(err, CurloraError) else f"{type(err).__name__}: {err}")
            raise
        study.set_status("completed", f"study finished: {rec.done} of {len(plan)} runs completed")
        return "completed"


register_executor("study", execute)  # Study.execute (curlora/run/store.py)


def _new_point_run(study: Run, cfg: ExperimentConfig, entry: PlanEntry) -> tuple[Run, ExperimentConfig]:
    """The run folder of one plan entry (its id goes into the entry), with the study's self-probe, chat probe and
    new-task KL references (their texts copied, their references shared: the run reads them from the study folder)
    and its owner (a visitor owns the runs of their study)."""
    from curlora.measure import chat_probe, task_kl  # here: the probes modules import torch
    from curlora.measure.probes import share_reference

    settings = settings_of(study)
    pcfg = point_config(cfg, entry.method, entry.lr, entry.seed, study.id, _order(settings, entry), entry.order,
                        rows_per_seed=settings.rows_per_seed)
    run = Run.create(pcfg.to_yaml(), name=pcfg.run.name, root=study.root)
    share_reference(study.path, run.path)
    share_reference(study.path, run.path, chat_probe.PROBE_FILE, chat_probe.REF_FILE)
    share_reference(study.path, run.path, task_kl.FILE, task_kl.REF_FILE)
    if (study.path / OWNER_FILE).is_file():
        shutil.copyfile(study.path / OWNER_FILE, run.path / OWNER_FILE)
    entry.run_id = run.id
    return run, pcfg


class _Seeded:
    """What a point of a seed is scored against: the study's loaded tasks and its base row, or with rows_per_seed
    each task drawn again with the seed (from the same files: its training and eval rows and their order) and the
    base row measured once per seed on those rows (kept in study.json, so a resumed study measures it once)."""

    def __init__(self, study, rec, cfg, loaded: Loaded, settings: StudySettings, should_stop, device_call):
        self.study, self.cfg, self.loaded, self.settings = study, cfg, loaded, settings
        self.should_stop, self.device_call = should_stop, device_call
        self.cache: dict[int, tuple] = {}
        self.shared = None if settings.rows_per_seed else \
            (loaded, _base_row(study, rec, cfg, loaded, should_stop, device_call))
        self.state(settings.seeds[0], rec)  # with rows_per_seed, the first seed's base row is the study's base row

    def state(self, seed: int, rec: StudyRecord):
        """(loaded, base row) for a point of `seed`; `rec` is the study's current record (a new base goes in)."""
        if self.shared is not None:
            return self.shared
        if seed not in self.cache:
            from curlora.data.tasks import load_task

            loaded = dataclasses.replace(self.loaded, tasks=[load_task(dataclasses.replace(t.config, seed=seed))
                                                             for t in self.loaded.tasks])
            cfg = dataclasses.replace(self.cfg, tasks=seeded_tasks(self.cfg.tasks, seed))
            self.cache[seed] = loaded, _base_row(self.study, rec, cfg, loaded, self.should_stop,
                                                 self.device_call, seed=seed)
        return self.cache[seed]


def _order(settings: StudySettings, entry: PlanEntry) -> list[str] | None:
    return settings.orders[entry.order] if settings.orders else None


def _loaded_in_order(loaded: Loaded, perm: list[int] | None) -> Loaded:
    """The study's loaded model and tasks, the tasks in a point's order (the model is shared, not copied)."""
    return loaded if perm is None else dataclasses.replace(loaded, tasks=[loaded.tasks[i] for i in perm])


def _row_in_order(row: Row, perm: list[int] | None) -> Row:
    """The study's base row with its per-task entries in a point's task order."""
    if perm is None:
        return row
    return dataclasses.replace(row, **{name: [getattr(row, name)[i] for i in perm]
                                       for name in ("accuracy", "n", "ci95", "correct", "pred_share")
                                       if getattr(row, name) is not None})


def _point_in_worker(root: str, run_id: str, base: dict) -> str:
    """One point run inside a Ray worker: it loads the model itself and reads the shared base row and self-probe
    from the run store (the workers share its filesystem: one machine, or a store on shared storage)."""
    from curlora.run.runner import execute as execute_run
    from curlora.run.runner import load_everything

    run = Run.open(run_id, Path(root))
    cfg = run.config()
    return execute_run(run, cfg, load_everything(cfg), base=Row.from_json(base))


def execute_ray(study: Run, loaded: Loaded, should_stop=None, address: str | None = None, poll: float = 1.0) -> str:
    """Like `execute`, but the study's pending runs spread over a Ray cluster (`address`, else RAY_ADDRESS, else
    a local instance with this machine's CPUs and GPUs): one GPU per run where the cluster has GPUs, else one CPU.
    The base row is measured here first, then every point is one Ray task; Stop cancels the tasks not finished."""
    try:
        import ray
    except ImportError:
        raise CurloraError("--executor ray needs Ray: pip install -r requirements-extras.txt (or pip install ray)."
                           ) from None
    import os

    study = study.entry()
    cfg, settings = study.config(), settings_of(study)
    root = study.root
    rec = study.study_record()
    plan = rec.plan
    started_here = not ray.is_initialized()
    if started_here:
        package_root = str(Path(__file__).resolve().parents[2])  # workers import curlora from the same tree
        path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
        ray.init(address=address or os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False,
                 configure_logging=False, runtime_env={"env_vars": {"PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}})
    try:
        with study.lock():
            study.set_status("running", f"study of {len(plan)} runs on Ray")
            seeded = _Seeded(study, rec, cfg, loaded, settings, should_stop, None)
            gpus = ray.cluster_resources().get("GPU", 0)
            remote = ray.remote(num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1)(_point_in_worker)
            tasks = {}
            for entry in plan:
                if entry.status == "completed":
                    continue
                run = _new_point_run(study, cfg, entry)[0] if not entry.run_id else Run.open(entry.run_id, root)
                if run.status()["status"] == "completed":
                    entry.status = "completed"
                    continue
                run.set_status("queued", f"waiting for a Ray worker (study {study.id})")
                entry.status = "running"
                row = _row_in_order(seeded.state(entry.seed, rec)[1], permutation(cfg, _order(settings, entry)))
                tasks[remote.remote(str(root), entry.run_id, dataclasses.asdict(row))] = entry
            rec = _save(study, settings, rec)
            failed = []
            while tasks:
                if should_stop and should_stop():
                    for ref, entry in tasks.items():
                        Run.open(entry.run_id, root).request_cancel()
                        ray.cancel(ref)
                        entry.status = "cancelled"
                    _save(study, settings, rec)
                    study.set_status("cancelled", "stopped on request; finished runs are kept — resume the study "
                                                  "to go on")
                    return "cancelled"
                done, _ = ray.wait(list(tasks), num_returns=1, timeout=poll)
                for ref in done:
                    entry = tasks.pop(ref)
                    try:
                        entry.status = ray.get(ref)
                    except Exception as err:  # the run wrote its own failed status; the study goes on
                        entry.status = "failed"
                        failed.append(f"{entry.run_id}: {type(err).__name__}")
                    rec = _save(study, settings, rec)
                    study.log(events.STUDY_POINT, study=study.id, run_id=entry.run_id, method=entry.method,
                              lr=entry.lr, seed=entry.seed)
            done_n = rec.done
            note = f"; failed: {', '.join(failed)}" if failed else ""
            study.set_status("completed", f"study finished on Ray: {done_n} of {len(plan)} runs completed{note}")
            return "completed"
    finally:
        if started_here:
            ray.shutdown()


def _base_row(study: Study, rec: StudyRecord, cfg, loaded: Loaded, should_stop, device_call,
              seed: int | None = None) -> Row:
    """Row 0, measured once for the whole study (in the study folder, with the self-probe files), or with `seed`
    once for that seed's rows (rows_per_seed; the first seed's is also the study's base row)."""
    from curlora.run.measurer import Measurer  # torch: only once a study runs
    from curlora.run.runner import MAIN

    stored = rec.base if seed is None else rec.bases.get(seed)
    if stored is not None:
        return stored

    def log(kind: str, **fields) -> None:
        if MAIN:
            study.log(kind, **fields)

    measure = Measurer(study.path, cfg, loaded, should_stop=lambda: study.cancel_requested() or bool(
        should_stop and should_stop()), log=log, write=MAIN)  # stops as a run does: on the study's Stop too
    box = {}

    def unit():
        measure.prepare()
        box["row"] = measure.evaluate(loaded.model, {})

    (device_call or (lambda fn: fn()))(unit)
    row = box["row"]
    if seed is not None:
        rec.bases[seed] = row
    if rec.base is None:
        rec.base = row
    write(study, rec)
    study.log(events.STAGE, method="base", stage=0, **({"seed": seed} if seed is not None else {}), **row.event())
    return row


def _save(study: Study, settings: StudySettings, rec: StudyRecord) -> StudyRecord:
    """The points and the analysis from the runs the plan names, written to study.json; returns the new record
    (same plan entries). Every finished run's point is measured from its metrics with today's code (so a study
    resumed by a newer version gains what that version measures, e.g. forgetting of what each run knew); a point
    whose run can no longer be read keeps what the last save stored."""
    root = study.root
    known = {p.run_id: p for p in rec.points}
    cache: dict[str, RunMetrics] = {}

    def metrics_of(run_id: str) -> RunMetrics | None:
        """The run's metrics, None where its folder can no longer be read (moved, deleted, damaged)."""
        if run_id not in cache:
            try:
                cache[run_id] = Run.open(run_id, root).record()
            except (CurloraError, OSError, ValueError):
                cache[run_id] = None
        return cache[run_id]

    points = []
    for e in rec.plan:
        if e.status != "completed" or not e.run_id:
            continue
        m = metrics_of(e.run_id)
        measures = point_measures(m, e.method) if m is not None else None
        if measures is None:
            if e.run_id in known:
                points.append(known[e.run_id])
            continue
        points.append(Point(method=e.method, lr=e.lr, seed=e.seed, run_id=e.run_id, order=e.order,
                            setting=m.methods[e.method].setting, **measures))
    new = analyse(settings, rec.base, rec.plan, points, metrics_of,
                  tasks=rec.tasks or [t.name for t in study.config().tasks])
    new.extra, new.bases = rec.extra, rec.bases
    write(study, new)
    return new


def run_study(cfg: ExperimentConfig, settings: StudySettings, root: Path | None = None, should_stop=None,
              on_event=None, executor: str = "auto") -> Run:
    """Create and run a study here (the CLI): load once, then every point — one after another (`local`) or
    spread over a Ray cluster (`ray`)."""
    from curlora.run.runner import load_everything

    loaded = load_everything(cfg)
    study = create(cfg, settings, root)
    _dispatch(study, loaded, should_stop, on_event, executor)
    return study


def pick_executor(executor: str = "auto") -> str:
    """`auto`: Ray where there is something to spread over (RAY_ADDRESS set, or more than one GPU visible) and
    Ray is installed; else the runs go one after another here."""
    if executor != "auto":
        return executor
    import importlib.util
    import os

    import torch

    wide = bool(os.environ.get("RAY_ADDRESS")) or torch.cuda.device_count() > 1
    return "ray" if wide and importlib.util.find_spec("ray") is not None else "local"


def _dispatch(study, loaded: Loaded, should_stop, on_event, executor: str) -> str:
    executor = pick_executor(executor)
    if executor == "ray":
        return execute_ray(study, loaded, should_stop=should_stop)
    if executor != "local":
        raise CurloraError(f"--executor: {executor!r} is not one of auto, local, ray.")
    return execute(study, loaded, should_stop=should_stop, on_event=on_event)


def resume_study(study_id: str, root: Path | None = None, should_stop=None, on_event=None,
                 executor: str = "auto") -> Run:
    from curlora.run.runner import load_everything

    study = Run.open(study_id, root)
    if not isinstance(study, Study):
        raise CurloraError(f"{study_id} is a run, not a study; resume it with `python -m curlora resume {study_id}`.")
    study.check_resumable()
    _dispatch(study, load_everything(study.config()), should_stop, on_event, executor)
    return study
