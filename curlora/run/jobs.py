"""The server-side job queue: training runs one at a time in a background thread, first come first served.

    jobs = JobManager()
    run_id = jobs.submit(cfg, owner)   # checks policy and limits, validates (tasks, model); writes nothing if bad
    jobs.status(run_id, owner)         # {status: queued (+ position) | running | completed | cancelled | ...}
    jobs.cancel(run_id, owner)         # a queued job never starts; a running one stops after its current step
    jobs.resume(run_id, owner)         # an interrupted or cancelled run goes back in the queue
    jobs.runs(owner)                   # the runs this owner may see, newest first

Jobs belong to the server process, not to a browser tab, so closing or refreshing the page changes nothing.
A run's units of work (one method on one task) pass through `jobs.gate` (curlora/run/device_gate.py), which chat and
evaluation take too: one piece of device work at a time, and none waits for more than one stage.
On a ZeroGPU Space (a `handoff`, curlora/run/handoff.py) the worker thread posts each unit instead, and the
visitor's own request runs it (`drive`): spaces.GPU takes the visitor's quota from the request it is called in.
Runs live on disk (the run store); this object knows which are queued and who owns what. Every call that takes a
run id takes the caller's owner key too (curlora/run/hosting.py): when the app is hosted a visitor reaches only their
own runs, and another visitor's run id is answered exactly as an unknown one. Locally (owner None) the one user
owns everything. No gradio here: the app, an MCP server and the tests drive the same object.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from curlora.errors import CurloraError
from curlora.experiment import ExperimentConfig
from curlora.run.device_gate import DeviceGate
from curlora.run.handoff import PAUSED, Handoff, Unattended
from curlora.run.hosting import Policy, read_owner, write_owner
from curlora.run import study as studies  # registers how a Study executes (curlora/run/store.py Run.execute)
from curlora.run.store import EventCache, Run, data_dir, list_runs, resumable


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder` (links not followed)."""
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def _created(run: Run) -> float:
    try:
        return (run.path / "config.yaml").stat().st_mtime
    except OSError:
        return 0.0


@dataclass
class Job:
    run: Run
    cfg: ExperimentConfig
    loaded: object = None  # what start() loaded; None for a resume or a job that waited (loaded when it starts)
    owner: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    error: str | None = None
    paused: bool = False  # ZeroGPU: no request took its next unit in time (see curlora/run/handoff.py)


class JobManager:
    """A FIFO of runs and the one worker thread that executes them."""

    def __init__(self, root: Path | None = None, gate: DeviceGate | None = None, policy: Policy | None = None,
                 handoff: Handoff | None = None):
        self._root = root
        self.gate = gate or DeviceGate()
        self.handoff = handoff  # ZeroGPU: units run in their owner's request (`drive`), not in the worker thread
        self.policy = policy or Policy.detect()
        self._queue: deque[Job] = deque()
        self._current: Job | None = None
        self._cv = threading.Condition()
        self._worker: threading.Thread | None = None
        self._closing = False
        self.last_run_id: str | None = None
        self._events = EventCache()

    @property
    def root(self) -> Path:
        return (self._root or data_dir()).resolve()

    # -- submitting --------------------------------------------------------------------------------------
    def submit(self, cfg: ExperimentConfig, owner: str | None = None, notices: list[str] | None = None) -> str:
        """Check the server's policy and limits, validate and create the run (CurloraError on bad input, nothing
        written), then queue it. To stay within the owner's store quota their oldest finished runs may be deleted
        first; `notices` gets one sentence per deleted run."""
        from curlora.run.runner import start

        run, loaded = start(cfg, self.root, self._admit(cfg, owner, notices))
        return self._queue_new(Job(run, cfg, loaded, owner=owner))

    def submit_study(self, cfg: ExperimentConfig, settings, owner: str | None = None,
                     notices: list[str] | None = None) -> str:
        """Queue a study (curlora/run/study.py) as one job: its runs share the loaded model and the base row, and
        each training unit passes the device gate like any run's. The same checks as `submit`; a study counts as
        one run against the per-visitor limit."""
        loaded = self._admit(cfg, owner, notices)
        return self._queue_new(Job(studies.create(cfg, settings, self.root), cfg, loaded, owner=owner))

    def _admit(self, cfg: ExperimentConfig, owner: str | None, notices: list[str] | None):
        """The policy's and the limits' checks of a new job, then its tasks and model loaded (nothing written)."""
        from curlora.run.runner import load_everything

        self.policy.resolve_sources(cfg, self.root, owner)  # 'upload:x.csv' / 'bundled:…' to their files
        self.policy.check_config(cfg, self.root, owner)
        self._check_room(owner)
        self._check_store(owner, notices, keep=self.policy.uploads_used(cfg.to_dict()))
        return load_everything(cfg, limits=self.policy.limits)

    def _queue_new(self, job: Job) -> str:
        write_owner(job.run.path, job.owner)
        with self._cv:
            if self._current is not None or self._queue:
                # A waiting job should not hold a second copy of the weights; it reloads them when its turn comes.
                job.loaded = None
            self._enqueue(job)
        return job.run.id

    def resume(self, run_id: str, owner: str | None = None) -> str:
        """Queue an interrupted or cancelled run (or study); it continues from its last finished stage."""
        self.open(run_id, owner, change=True)
        self._check_room(owner)
        with self._cv:
            if self._find(run_id) is not None:
                raise CurloraError(f"Run {run_id} is already queued or running.")
            run, cfg = resumable(run_id, self.root)
            run.clear_cancel()  # a Stop that came before this Resume is answered already
            self._enqueue(Job(run, cfg, None, owner=owner))
        return run_id

    def _check_room(self, owner: str | None) -> None:
        """The host's limits on the queue: per visitor (active + queued) and in all."""
        limits = self.policy.limits
        jobs = self._active()
        mine = sum(1 for j in jobs if j.owner == owner)
        per = getattr(limits, "runs_per_visitor", None)
        if per is not None and mine >= per:
            raise CurloraError(f"Runs per visitor: you have {mine} run(s) training or queued, the limit here is "
                               f"{per}; wait for one to finish or stop one.")
        total = getattr(limits, "queue_length", None)
        if total is not None and len(jobs) >= total:
            raise CurloraError(f"Queue length: {len(jobs)} runs are training or queued on this server, the limit "
                               f"here is {total}; try again when one has finished.")

    def _enqueue(self, job: Job) -> None:
        if self._closing:
            raise CurloraError("The server is shutting down; try again in a minute, once it has restarted.")
        job.run.set_status("queued", "waiting for its turn")  # on disk too: other processes see it queued
        self._queue.append(job)
        self.last_run_id = job.run.id
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="curlora-jobs", daemon=True)
            self._worker.start()
        self._cv.notify_all()

    def _check_store(self, owner: str | None, notices: list[str] | None, keep: set[Path] = frozenset()) -> None:
        """The host's limits on disk: the whole store (refused when full), and each owner's share (their oldest
        finished runs deleted first, each with a notice; refused if their active runs alone exceed it)."""
        limits = self.policy.limits
        total, mine = getattr(limits, "store_mb_total", None), getattr(limits, "store_mb_per_visitor", None)
        if total is not None and self.root.is_dir():
            used = folder_bytes(self.root) / 1e6
            if used >= total:
                raise CurloraError(f"Stored runs in total: this server's run store holds {used:.0f} MB, the limit "
                                   f"here is {total:g} MB; try again after older runs are deleted.")
        if mine is None:
            return
        runs = [r for r in self.runs(owner) if self.policy.may_change(read_owner(r.path), owner)]
        sizes = {r.id: folder_bytes(r.path) for r in runs}
        used = sum(sizes.values()) + folder_bytes(self.policy.owner_dir(self.root, owner))
        active = {j.run.id for j in self._active()}
        for run in sorted(runs, key=_created):  # oldest first (ids sort by the second only)
            if used < mine * 1e6:
                return
            if run.id in active or run.status()["status"] == "running":
                continue
            self.delete(run.id, owner, keep=keep)
            used -= sizes[run.id]
            if notices is not None:
                notices.append(f"Deleted your oldest run {run.id} ({sizes[run.id] / 1e6:.1f} MB) to stay within "
                               f"the {mine:g} MB each visitor may store here.")
        if used >= mine * 1e6:
            raise CurloraError(f"Stored runs per visitor: yours take {used / 1e6:.0f} MB, the limit here is "
                               f"{mine:g} MB; delete some of your runs or uploads first.")

    # -- owners --------------------------------------------------------------------------------------------
    def open(self, run_id: str, owner: str | None = None, change: bool = False) -> Run:
        """The run, if `owner` may see it (and change it, with change=True). Another owner's run reads exactly as
        an unknown id, so a visitor cannot even learn that it exists."""
        try:
            run = Run.open(run_id, self.root)
        except CurloraError:
            if not self.policy.hosted:
                raise
            run = None
        if self.policy.hosted:
            run_owner = read_owner(run.path) if run is not None else None
            if run is None or not self.policy.visible(run_owner, owner):
                raise CurloraError(f"No run {str(run_id)[:140]!r} here; the Runs tab lists your runs.")
            if change and not self.policy.may_change(run_owner, owner):
                raise CurloraError(f"Run {run_id} is a shared example: it can be read, exported and chatted with, "
                                   "but not changed; start your own run to train.")
        return run

    def events(self, run_id: str, owner: str | None = None) -> list[dict]:
        """The run's events, read incrementally (polling costs the same at any run length); do not modify."""
        return self._events.events(self.open(run_id, owner))

    def runs(self, owner: str | None = None) -> list[Run]:
        """The runs `owner` may see, newest first (every run, locally)."""
        runs = list_runs(self.root)
        if not self.policy.hosted:
            return runs
        return [r for r in runs if self.policy.visible(read_owner(r.path), owner)]

    # -- asking --------------------------------------------------------------------------------------------
    def _active(self) -> list[Job]:
        """The job training now (if any), then the waiting ones in order."""
        with self._cv:
            return ([self._current] if self._current else []) + list(self._queue)

    def _find(self, run_id: str) -> Job | None:
        if self._current is not None and self._current.run.id == run_id:
            return self._current
        return next((j for j in self._queue if j.run.id == run_id), None)

    def position(self, run_id: str) -> int | None:
        """1 for the next job to start, 2 for the one after…; None if not waiting."""
        with self._cv:
            for i, job in enumerate(self._queue):
                if job.run.id == run_id:
                    return i + 1
        return None

    def current(self) -> str | None:
        with self._cv:
            return self._current.run.id if self._current else None

    def queued(self) -> list[str]:
        with self._cv:
            return [j.run.id for j in self._queue]

    def status(self, run_id: str, owner: str | None = None) -> dict:
        """The store's status, except that a job still waiting here is `queued` with its position."""
        run = self.open(run_id, owner)
        pos = self.position(run_id)
        if pos is not None:
            ahead = pos - 1 + (self._current is not None)
            return {"status": "queued", "position": pos,
                    "message": f"queued: {ahead} job{'s' if ahead != 1 else ''} ahead of it"}
        return run.status()

    # -- stopping ------------------------------------------------------------------------------------------
    def cancel(self, run_id: str, owner: str | None = None) -> str:
        """Stop a run: a queued one is taken out of the queue; a running one stops after its current step. A run
        queued or trained by another process on this store gets the request through its folder (it stops there:
        at its next step, or before it starts)."""
        run = self.open(run_id, owner, change=True)
        with self._cv:
            job = next((j for j in self._queue if j.run.id == run_id), None)
            if job is not None:
                self._queue.remove(job)
                run.set_status("cancelled", "cancelled before it started — resume to run it")
                return "cancelled"
            if self._current is not None and self._current.run.id == run_id:
                self._current.stop.set()
        run.request_cancel()  # also reaches a run executed by another process (the CLI, another app)
        return "stopping"

    def delete(self, run_id: str, owner: str | None = None, keep: set[Path] = frozenset()) -> None:
        """Remove a run folder for good, and the owner's uploads no other run of theirs uses (except `keep`);
        refused while the run is queued or running (here or in another process: Run.remove takes its lock)."""
        run = self.open(run_id, owner, change=True)
        with self._cv:
            if self._find(run_id) is not None or run.status()["status"] in ("running", "queued"):
                raise CurloraError(f"Run {run_id} is queued or running; stop it before deleting it.")
            run_owner = read_owner(run.path)
            used = self.policy.uploads_used(run.config_yaml)
            run.remove()
            still = set()
            for other in list_runs(self.root):
                if read_owner(other.path) == run_owner:
                    still |= self.policy.uploads_used(other.config_yaml)
            self.policy.forget_uploads(used - still - set(keep), self.root, run_owner)

    def wait(self, run_id: str, timeout: float | None = None) -> bool:
        """Block until the run is neither queued nor running here (tests, scripts); False on timeout."""
        with self._cv:
            return self._cv.wait_for(lambda: self._find(run_id) is None, timeout)

    # -- shutting down and starting again ------------------------------------------------------------------
    def shutdown(self, timeout: float = 30.0) -> list[str]:
        """Stop cooperatively (what SIGTERM, a Space restart, asks for): take no new work, stop the run in progress
        after its current step (finished stages are kept), and mark it and every waiting run to be queued again,
        in this order, when the app next starts (`recover`). Returns the run ids in that order."""
        with self._cv:
            self._closing = True
            current, waiting = self._current, list(self._queue)
            self._queue.clear()
            if current is not None:
                current.stop.set()
            self._cv.wait_for(lambda: self._current is None, timeout)
        stamp = round(time.time(), 3)
        order = ([current] if current is not None else []) + waiting
        for i, job in enumerate(order):
            with contextlib.suppress(CurloraError, OSError):
                job.run.set_status("interrupted", "stopped by a server shutdown; it is queued again, in its "
                                   "place, when the app starts", requeue=True, order=i, shutdown_at=stamp)
        return [j.run.id for j in order]

    def recover(self) -> list[str]:
        """Queue again, in their old order, the runs a shutdown stopped (see `shutdown`); a run killed without one
        (kill -9, a crash) stays interrupted, for its owner to resume. Returns the run ids queued."""
        marked = []
        for run in list_runs(self.root):
            st = run.status()
            if st.get("status") == "interrupted" and st.get("requeue"):
                marked.append((st.get("shutdown_at") or 0, st.get("order") or 0, run))
        queued = []
        for _, _, run in sorted(marked, key=lambda t: t[:2]):
            with contextlib.suppress(CurloraError):
                run, cfg = resumable(run.id, self.root)  # a Study comes back as a Study
                with self._cv:
                    self._enqueue(Job(run, cfg, None, owner=read_owner(run.path)))
                queued.append(run.id)
        return queued

    # -- the worker ----------------------------------------------------------------------------------------
    def _work(self) -> None:
        from curlora.errors import Cancelled
        from curlora.run.runner import load_everything
        from curlora.run.store import RunBusy

        while True:
            with self._cv:
                self._cv.wait_for(lambda: bool(self._queue) or self._closing)
                if self._closing:
                    return
                job = self._current = self._queue.popleft()
            loaded = None
            try:
                if job.run.cancel_requested():  # a Stop sent from another process while it waited
                    job.run.clear_cancel()
                    job.run.set_status("cancelled", "cancelled before it started — resume to run it")
                    continue
                loaded, job.loaded = job.loaded or load_everything(job.cfg, should_stop=job.stop.is_set), None
                device_call = self._device_call(job, loaded)
                job.run.execute(loaded, should_stop=job.stop.is_set, device_call=device_call)
                if job.paused:  # ended like a cancelled run; say why, and that its owner's page continues it
                    job.run.set_status("interrupted", PAUSED.format(wait=self.handoff.wait), paused=True)
            except RunBusy as err:  # another process trains it: its status is that process's to write
                job.error = str(err)
            except Cancelled:  # stopped while its tasks or model were loading
                job.run.clear_cancel()
                job.run.set_status("cancelled", "stopped on request before training began — resume to run it")
            except Exception as err:  # the runner has already written status 'failed'; keep serving the queue
                job.error = str(err) if isinstance(err, CurloraError) else f"{type(err).__name__}: {err}"
                with contextlib.suppress(CurloraError, OSError):
                    if job.run.status()["status"] in ("running", "interrupted", "queued"):
                        job.run.set_status("failed", job.error)
            finally:
                loaded = None  # drop the weights before waiting for the next job
                with self._cv:
                    self._current = None
                    self._cv.notify_all()

    def _device_call(self, job: Job, loaded):
        """How the runner runs each unit of `job`: under the gate here, or (ZeroGPU) handed to its owner's request
        with a duration measured from the run (curlora/run/gpu_budget.py)."""
        what = f"a training stage of {job.run.kind} {job.run.id}"
        if self.handoff is None:
            return self.gate.caller(what)
        from curlora.run.gpu_budget import Budget, unit_seconds

        budget = Budget.from_env()

        def call(fn):
            seconds = unit_seconds(job.run, job.cfg, loaded.tasks, budget)
            try:
                return self.handoff.call(job.run.id, job.owner, what, seconds, fn, should_stop=job.stop.is_set)
            except Unattended:
                job.paused = True
                raise
        return call

    # -- ZeroGPU: units run in their owner's request -----------------------------------------------------------
    def active(self, owner: str | None = None) -> list[str]:
        """Run ids of `owner`'s jobs training or waiting here."""
        return [j.run.id for j in self._active() if j.owner == owner]
