"""The server-side job queue: training runs one at a time in a background thread, shared fairly between visitors.

    jobs = JobManager()
    run_id = jobs.submit(cfg, owner)   # checks policy and limits, validates (tasks, model); writes nothing if bad
    jobs.status(run_id, owner)         # {status: queued (+ position) | running | completed | cancelled | ...}
    jobs.cancel(run_id, owner)         # a queued job never starts; a running one stops after its current step
    jobs.resume(run_id, owner)         # an interrupted or cancelled run goes back in the queue
    jobs.runs(owner)                   # the runs this owner may see, newest first

Jobs belong to the server process, not to a browser tab, so closing or refreshing the page changes nothing.
Fairness: each job is paid for by a `Client` (curlora/serve/hosting.py: a signed-in user, or the pool of anonymous
callers, per forwarded address behind a Space's proxy). The worker starts the waiting job of the client served
longest ago, and a job yields after any unit of work while a job of another client waits: it goes back in the
queue with its finished stages kept, and continues from there when its turn comes again. So one visitor's long
study delays another visitor's run by one unit (one method on one task), not by the whole study.
A run's units of work (one method on one task) pass through `jobs.gate` (curlora/serve/device_gate.py), which chat and
evaluation take too: one piece of device work at a time, and none waits for more than one stage.
On a ZeroGPU Space (a `handoff`, curlora/serve/handoff.py) the worker thread posts each unit instead, and the
visitor's own request runs it (`drive`): spaces.GPU takes the visitor's quota from the request it is called in.
Runs live on disk (the run store); this object knows which are queued and who owns what. Every call that takes a
run id takes the caller's owner key too (curlora/serve/hosting.py): when the app is hosted a visitor reaches only their
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
from typing import TYPE_CHECKING

from curlora.errors import Cancelled, CurloraError, clip
from curlora.experiment import ExperimentConfig
from curlora.models.lookup import hub_only
from curlora.serve.device_gate import DeviceGate
from curlora.serve.handoff import PAUSED, Handoff, Unattended
from curlora.run import study as studies  # registers how a Study executes (curlora/run/store.py Run.execute)
from curlora.run.store import EventCache, Run, data_dir, list_runs, resumable
from curlora.serve.hosting import Client, Policy, read_owner, write_owner

if TYPE_CHECKING:  # annotations only: the server loads no torch until a job runs
    from curlora.run.measurer import Loaded


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


class Yielded(Cancelled):
    """A job gave the device to another client's waiting job after a unit; it is queued again, stages kept."""


@dataclass
class Job:
    run: Run
    cfg: ExperimentConfig
    loaded: Loaded | None = None  # what start() loaded; None for a resume or a job that waited (loaded when it starts)
    owner: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    error: str | None = None
    paused: bool = False  # ZeroGPU: no request took its next unit in time (see curlora/serve/handoff.py)
    client: Client | None = None  # who pays: None = its owner (the CLI, tests, a server that is not hosted)
    units: int = 0  # units of work done in its current turn
    yielded: bool = False  # its last turn ended because another client's job was waiting

    @property
    def payer(self) -> Client:
        return self.client or Client.of(self.owner)


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
        self._events = EventCache()
        self._owners: dict[str, tuple[int, str | None]] = {}  # run id -> (owner file's mtime_ns, owner)
        self._store_size: tuple[float, int] | None = None  # (when measured, bytes of the whole store)
        self._served: dict[str, int] = {}  # client key -> when it last got the worker (a counter, not a time)
        self._turns = 0

    @property
    def root(self) -> Path:
        return (self._root or data_dir()).resolve()

    # -- submitting --------------------------------------------------------------------------------------
    def submit(self, cfg: ExperimentConfig, owner: str | None = None, notices: list[str] | None = None,
               client: Client | None = None) -> str:
        """Check the server's policy and limits, validate and create the run (CurloraError on bad input, nothing
        written), then queue it. To stay within the owner's store quota their oldest finished runs may be deleted
        first; `notices` gets one sentence per deleted run. `client` pays for it (its owner when None)."""
        from curlora.run.runner import start

        run, loaded = start(cfg, self.root, self._admit(cfg, owner, notices, client))
        return self._queue_new(Job(run, cfg, loaded, owner=owner, client=client))

    def submit_study(self, cfg: ExperimentConfig, settings, owner: str | None = None,
                     notices: list[str] | None = None, client: Client | None = None) -> str:
        """Queue a study (curlora/run/study.py) as one job: its runs share the loaded model and the base row, and
        each training unit passes the device gate like any run's. The same checks as `submit`, and the limits on
        its whole grid: runs per study, training tokens summed over them, and the store its runs will take (an
        estimate, checked against the owner's share and the store's room)."""
        from curlora.serve.limits import study_points

        points = study_points(studies.plan_settings(cfg, settings))  # the grid's refusals first, then its size
        limits = self.policy.limits
        if limits is not None:
            limits.check_study(cfg, points)  # before anything loads: a 100,000-run grid costs nothing to refuse
        loaded = self._admit(cfg, owner, notices, client)
        if limits is not None:
            limits.check_study(cfg, points, rows=[len(t.train) for t in loaded.tasks])
            self._check_study_store(cfg, loaded, points, owner)
        return self._queue_new(Job(studies.create(cfg, settings, self.root), cfg, loaded, owner=owner,
                                   client=client))

    def _admit(self, cfg: ExperimentConfig, owner: str | None, notices: list[str] | None,
               client: Client | None = None) -> Loaded:
        """The policy's and the limits' checks of a new job, then its tasks and model loaded (nothing written)."""
        from curlora.run.runner import load_everything

        self.policy.admit(cfg, self.root, owner)  # 'upload:x.csv' / 'bundled:…' to their files; all it refuses
        self._check_room(owner, client)
        self._check_store(owner, notices, keep=self.policy.uploads_used(cfg.to_dict()))
        self._check_payer_store(client)
        with hub_only(self.policy.hosted):  # hosted, a model name is never looked up as a server path
            return load_everything(cfg, limits=self.policy.limits)

    def _check_study_store(self, cfg: ExperimentConfig, loaded: Loaded, points: dict[str, int],
                           owner: str | None) -> None:
        """Refuse a study whose runs would not fit the owner's store share or the store's room (estimated: each run
        keeps an adapter per task and the self-probe reference; see curlora/serve/store_estimate.py)."""
        from curlora.serve.store_estimate import study_bytes

        limits = self.policy.limits
        mine, total = getattr(limits, "store_mb_per_visitor", None), getattr(limits, "store_mb_total", None)
        if mine is None and total is None:
            return
        need, runs = study_bytes(cfg, loaded, points), sum(points.values())
        checks = []
        if mine is not None:
            used = self.stored_bytes(owner)
            checks.append(("your share", used, mine))
        if total is not None and self.root.is_dir():
            checks.append(("this server's run store", self.store_bytes(), total))
        for what, used, limit in checks:
            if used + need > limit * 1e6:
                raise CurloraError(f"Stored runs: this study's {runs} runs would store about {need / 1e6:,.1f} MB "
                                   f"and {what} already holds {used / 1e6:,.1f} MB, over the limit of {limit:g} MB "
                                   "here; use fewer learning rates or seeds, or delete some of your runs or "
                                   "uploads first.")

    def _check_payer_store(self, client: Client | None) -> None:
        """The share counted per paying client, over every owner (session, workspace) it has used: a fresh session
        starts an empty task list, not a fresh 500 MB."""
        mine = getattr(self.policy.limits, "store_mb_per_visitor", None)
        if client is None or mine is None or not self.policy.hosted:
            return
        used = self.payer_bytes(client)
        if used >= mine * 1e6:
            raise CurloraError(f"Stored runs per visitor: what you store here over all your sessions takes "
                               f"{used / 1e6:,.1f} MB, the limit here is {mine:g} MB; delete some of your runs or "
                               "uploads first (in the browser that made them), or sign in.")

    def payer_bytes(self, client: Client) -> int:
        """Bytes stored by every owner whose last paying client was `client` (runs and own folders)."""
        owners = self.policy.owners_paid_by(self.root, client)
        total = sum(folder_bytes(self.policy.owner_dir(self.root, o)) for o in owners)
        for run in list_runs(self.root):
            if self._owner_of(run) in owners:
                total += folder_bytes(run.path)
        return total

    def stored_bytes(self, owner: str | None) -> int:
        """What `owner` stores: their runs and their own folder (uploads, exports, task list)."""
        runs = [r for r in self.runs(owner) if self.policy.may_change(read_owner(r.path), owner)]
        return sum(folder_bytes(r.path) for r in runs) + folder_bytes(self.policy.owner_dir(self.root, owner))

    def _queue_new(self, job: Job) -> str:
        write_owner(job.run.path, job.owner)
        self.policy.note_payer(self.root, job.owner, job.client)
        with self._cv:
            if self._current is not None or self._queue:
                # A waiting job should not hold a second copy of the weights; it reloads them when its turn comes.
                job.loaded = None
            self._enqueue(job)
        return job.run.id

    def resume(self, run_id: str, owner: str | None = None, client: Client | None = None) -> str:
        """Queue an interrupted or cancelled run (or study); it continues from its last finished stage."""
        self.open(run_id, owner, change=True)
        self._check_room(owner, client)
        with self._cv:
            if self._find(run_id) is not None:
                raise CurloraError(f"Run {run_id} is already queued or running.")
            run, cfg = resumable(run_id, self.root)
            run.clear_cancel()  # a Stop that came before this Resume is answered already
            self._enqueue(Job(run, cfg, None, owner=owner, client=client))
        return run_id

    def _check_room(self, owner: str | None, client: Client | None = None) -> None:
        """The host's limits on the queue: per paying client (active + queued; a fresh session or workspace token
        is the same client), for all callers who are not signed in together, and in all."""
        limits = self.policy.limits
        jobs = self._active()
        payer = client or Client.of(owner)
        mine = sum(1 for j in jobs if j.payer.key == payer.key)
        per = getattr(limits, "runs_per_visitor", None)
        if per is not None and mine >= per:
            raise CurloraError(f"Runs per visitor: you have {mine} run(s) training or queued, the limit here is "
                               f"{per}; wait for one to finish or stop one.")
        pool = getattr(limits, "runs_anonymous", None)
        if payer.pooled and pool is not None and self.policy.hosted:
            anonymous = sum(1 for j in jobs if j.payer.pooled)
            if anonymous >= pool:
                raise CurloraError(f"Runs of visitors who are not signed in: {anonymous} are training or queued, the "
                                   f"limit here is {pool}; sign in for an allowance of your own, or try again when "
                                   "one has finished.")
        total = getattr(limits, "queue_length", None)
        if total is not None and len(jobs) >= total:
            raise CurloraError(f"Queue length: {len(jobs)} runs are training or queued on this server, the limit "
                               f"here is {total}; try again when one has finished.")

    def _enqueue(self, job: Job) -> None:
        if self._closing:
            raise CurloraError("The server is shutting down; try again in a minute, once it has restarted.")
        job.run.set_status("queued", "waiting for its turn")  # on disk too: other processes see it queued
        self._queue.append(job)
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
            used = self.store_bytes() / 1e6
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
                raise CurloraError(f"No run {clip(str(run_id))} here; the Runs tab lists your runs.")
            if change and not self.policy.may_change(run_owner, owner):
                raise CurloraError(f"Run {run_id} is a shared example: it can be read, exported and chatted with, "
                                   "but not changed; start your own run to train.")
        return run

    def events(self, run_id: str, owner: str | None = None) -> list[dict]:
        """The run's events, read incrementally (polling costs the same at any run length); do not modify."""
        return self._events.events(self.open(run_id, owner))

    def runs(self, owner: str | None = None) -> list[Run]:
        """The runs `owner` may see, newest first (every run, locally). Owners are remembered per run and read
        again only when a run's owner file changes (a stat, not a read, per run: with thousands of other visitors'
        runs a page load no longer reads thousands of files)."""
        runs = list_runs(self.root)
        if not self.policy.hosted:
            return runs
        return [r for r in runs if self.policy.visible(self._owner_of(r), owner)]

    def _owner_of(self, run: Run) -> str | None:
        try:
            stamp = os.lstat(run.path / "owner").st_mtime_ns
        except OSError:
            stamp = -1
        cached = self._owners.get(run.id)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        found = read_owner(run.path)
        if len(self._owners) > 100_000:  # a bound, not an eviction policy: ids of deleted runs pile up slowly
            self._owners.clear()
        self._owners[run.id] = (stamp, found)
        return found

    STORE_SIZE_AGE = 30.0  # seconds a measurement of the whole store is used for the store_mb_total checks

    def store_bytes(self) -> int:
        """Bytes of the whole run store, measured at most every STORE_SIZE_AGE seconds: the total limit is a
        coarse bound, and walking every visitor's files at every submission and every unit cost seconds."""
        now = time.monotonic()
        if self._store_size is None or now - self._store_size[0] >= self.STORE_SIZE_AGE:
            self._store_size = (now, folder_bytes(self.root))
        return self._store_size[1]

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
        """1 for the next job to start, 2 for the one after…; None if not waiting (the order the fair rule gives
        now: each client in turn, the one served longest ago first)."""
        with self._cv:
            for i, job in enumerate(self._order()):
                if job.run.id == run_id:
                    return i + 1
        return None

    def _order(self) -> list[Job]:
        """The waiting jobs in the order they would start if no more came: round-robin over clients, each
        client's own jobs first come first served, the client served longest ago (or never) first."""
        served = dict(self._served)
        if self._current is not None:
            served[self._current.payer.key] = self._turns + 1
        waiting, order, turn = list(self._queue), [], self._turns + 2
        while waiting:
            job = min(waiting, key=lambda j: (served.get(j.payer.key, -1), waiting.index(j)))
            waiting.remove(job)
            order.append(job)
            served[job.payer.key] = turn
            turn += 1
        return order

    def current(self) -> str | None:
        with self._cv:
            return self._current.run.id if self._current else None

    def queued(self) -> list[str]:
        with self._cv:
            return [j.run.id for j in self._order()]

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
                job = self._current = self._order()[0]
                self._queue.remove(job)
                self._turns += 1
                self._served[job.payer.key] = self._turns
                job.units, job.yielded = 0, False
            loaded = None
            try:
                if job.run.cancel_requested():  # a Stop sent from another process while it waited
                    job.run.clear_cancel()
                    job.run.set_status("cancelled", "cancelled before it started — resume to run it")
                    continue
                with hub_only(self.policy.hosted):
                    loaded, job.loaded = job.loaded or load_everything(job.cfg, should_stop=job.stop.is_set), None
                device_call = self._device_call(job, loaded)
                job.run.execute(loaded, should_stop=job.stop.is_set, device_call=device_call)
                if job.paused:  # ended like a cancelled run; say why, and that its owner's page continues it
                    job.run.set_status("interrupted", PAUSED.format(wait=self.handoff.wait), paused=True)
                elif job.yielded and not job.stop.is_set():
                    self._requeue(job)
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

    def _requeue(self, job: Job) -> None:
        """A job that yielded goes to the back of the queue (a fresh load when its turn comes: a waiting job holds
        no weights); its finished stages are on disk, and it continues from them like a resumed run."""
        with self._cv:
            if self._closing:
                return  # shutdown() marks it to be queued again at the next start
            job.loaded = None
            job.run.set_status("queued", "waiting for its turn: it gave the device to another visitor's run after "
                                         "a finished stage and continues from there")
            self._queue.append(job)
            self._cv.notify_all()

    def _others_wait(self, job: Job) -> bool:
        with self._cv:
            return any(j.payer.key != job.payer.key for j in self._queue)

    def _device_call(self, job: Job, loaded: Loaded):
        """How the runner runs each unit of `job` (under the gate here, or on ZeroGPU handed to its owner's
        request), after its first unit of a turn only while no other client's job waits: otherwise it yields."""
        inner = self._device_inner(job, loaded)

        def call(fn):
            if job.units > 0 and self._others_wait(job):
                job.yielded = True
                raise Yielded("gave the device to another visitor's waiting run after a finished stage; it continues "
                              "from there when its turn comes")
            self._check_growth(job)
            job.units += 1
            return inner(fn)
        return call

    def _check_growth(self, job: Job) -> None:
        """The store quotas while a run grows (each unit saves a stage, a study's each run its own files): over
        its owner's share, or with the whole store full, this job stops before its next unit with a sentence
        (finished stages kept). Only the job that is growing is stopped; nobody else's run is touched."""
        if not self.policy.hosted:
            return
        limits = self.policy.limits
        mine, total = getattr(limits, "store_mb_per_visitor", None), getattr(limits, "store_mb_total", None)
        what = f"{job.run.kind} {job.run.id}"
        if mine is not None:
            used = self.stored_bytes(job.owner)
            if job.client is not None:
                used = max(used, self.payer_bytes(job.client))
            if used >= mine * 1e6:
                raise CurloraError(f"Stored runs per visitor: your runs and uploads take {used / 1e6:,.1f} MB, over "
                                   f"the limit of {mine:g} MB here, so {what} stopped after its finished stages "
                                   "(kept); delete some of your runs or uploads, then resume it.")
        if total is not None:
            used = self.store_bytes()
            if used >= total * 1e6:
                raise CurloraError(f"Stored runs in total: this server's run store holds {used / 1e6:,.0f} MB, the "
                                   f"limit here is {total:g} MB, so {what} stopped after its finished stages (kept); "
                                   "delete some of your runs, then resume it.")

    def _device_inner(self, job: Job, loaded: Loaded):
        """Under the gate here, or (ZeroGPU) handed to its owner's request with a duration measured from the run
        (curlora/serve/gpu_budget.py)."""
        what = f"a training stage of {job.run.kind} {job.run.id}"
        if self.handoff is None:
            return self.gate.caller(what)
        from curlora.serve.gpu_budget import Budget, unit_seconds

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
