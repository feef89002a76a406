"""The server-side job queue: training runs one at a time in a background thread, first come first served.

    jobs = JobManager()
    run_id = jobs.submit(cfg)      # validates (tasks, model) first; raises CurloraError and writes nothing if bad
    jobs.status(run_id)            # {status: queued (+ position) | running | completed | cancelled | ...}
    jobs.cancel(run_id)            # a queued job never starts; a running one stops after its current step
    jobs.resume(run_id)            # an interrupted or cancelled run goes back in the queue

Jobs belong to the server process, not to a browser tab, so closing or refreshing the page changes nothing.
A run's units of work (one method on one task) pass through `jobs.gate` (curlora/device_gate.py), which chat and
evaluation take too: one piece of device work at a time, and none waits for more than one stage.
Runs live on disk (the run store), so every visitor sees every run; this object only knows which are queued.
No gradio here: the app and the tests drive the same object.
"""

from __future__ import annotations

import shutil
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from curlora.device_gate import DeviceGate
from curlora.errors import CurloraError
from curlora.experiment import ExperimentConfig
from curlora.store import Run, data_dir


@dataclass
class Job:
    run: Run
    cfg: ExperimentConfig
    loaded: object = None  # what start() loaded; None for a resume or a job that waited (loaded when it starts)
    stop: threading.Event = field(default_factory=threading.Event)
    error: str | None = None


class JobManager:
    """A FIFO of runs and the one worker thread that executes them."""

    def __init__(self, root: Path | None = None, gate: DeviceGate | None = None):
        self._root = root
        self.gate = gate or DeviceGate()
        self._queue: deque[Job] = deque()
        self._current: Job | None = None
        self._cv = threading.Condition()
        self._worker: threading.Thread | None = None
        self.last_run_id: str | None = None

    @property
    def root(self) -> Path:
        return (self._root or data_dir()).resolve()

    # -- submitting --------------------------------------------------------------------------------------
    def submit(self, cfg: ExperimentConfig) -> str:
        """Validate and create the run (CurloraError on bad input, nothing written), then queue it."""
        from curlora.runner import start

        run, loaded = start(cfg, self.root)
        with self._cv:
            busy = self._current is not None or bool(self._queue)
            # A waiting job should not hold a second copy of the weights; it reloads them when its turn comes.
            self._enqueue(Job(run, cfg, None if busy else loaded))
        return run.id

    def resume(self, run_id: str) -> str:
        """Queue an interrupted or cancelled run; it continues from its last finished stage."""
        from curlora.runner import resumable

        with self._cv:
            if self._find(run_id) is not None:
                raise CurloraError(f"Run {run_id} is already queued or running.")
            run, cfg = resumable(run_id, self.root)
            self._enqueue(Job(run, cfg, None))
        return run_id

    def _enqueue(self, job: Job) -> None:
        self._queue.append(job)
        self.last_run_id = job.run.id
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="curlora-jobs", daemon=True)
            self._worker.start()
        self._cv.notify_all()

    # -- asking --------------------------------------------------------------------------------------------
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

    def status(self, run_id: str) -> dict:
        """The store's status, except that a job still waiting here is `queued` with its position."""
        pos = self.position(run_id)
        if pos is not None:
            ahead = pos - 1 + (self._current is not None)
            return {"status": "queued", "position": pos,
                    "message": f"queued: {ahead} job{'s' if ahead != 1 else ''} ahead of it"}
        return Run.open(run_id, self.root).status()

    # -- stopping ------------------------------------------------------------------------------------------
    def cancel(self, run_id: str) -> str:
        """Stop a run: a queued one is taken out of the queue; a running one stops after its current step."""
        run = Run.open(run_id, self.root)
        with self._cv:
            job = next((j for j in self._queue if j.run.id == run_id), None)
            if job is not None:
                self._queue.remove(job)
                run.set_status("cancelled", "cancelled before it started — resume to run it")
                return "cancelled"
            if self._current is not None and self._current.run.id == run_id:
                self._current.stop.set()
        run.request_cancel()  # also reaches a run executed by another process (the CLI)
        return "stopping"

    def delete(self, run_id: str) -> None:
        """Remove a run folder for good; refused while the run is queued or running."""
        run = Run.open(run_id, self.root)
        with self._cv:
            if self._find(run_id) is not None or run.status()["status"] == "running":
                raise CurloraError(f"Run {run_id} is queued or running; stop it before deleting it.")
            shutil.rmtree(run.path)

    def wait(self, run_id: str, timeout: float | None = None) -> bool:
        """Block until the run is neither queued nor running here (tests, scripts); False on timeout."""
        with self._cv:
            return self._cv.wait_for(lambda: self._find(run_id) is None, timeout)

    # -- the worker ----------------------------------------------------------------------------------------
    def _work(self) -> None:
        from curlora.runner import execute, load_everything

        while True:
            with self._cv:
                self._cv.wait_for(lambda: bool(self._queue))
                job = self._current = self._queue.popleft()
            loaded = None
            try:
                loaded, job.loaded = job.loaded or load_everything(job.cfg), None
                execute(job.run, job.cfg, loaded, should_stop=job.stop.is_set,
                        device_call=self.gate.caller(f"a training stage of run {job.run.id}"))
            except Exception as err:  # the runner has already written status 'failed'; keep serving the queue
                job.error = str(err) if isinstance(err, CurloraError) else f"{type(err).__name__}: {err}"
                if job.run.status()["status"] in ("running", "interrupted"):
                    job.run.set_status("failed", job.error)
            finally:
                loaded = None  # drop the weights before waiting for the next job
                with self._cv:
                    self._current = None
                    self._cv.notify_all()
