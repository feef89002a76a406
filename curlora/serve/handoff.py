"""Units of work handed from the job thread to a visitor's request (a ZeroGPU Space).

    jobs = JobManager(handoff=Handoff(wait=120))      # the job thread posts each unit here instead of running it
    for run_id in drive(jobs, owner, on_device):       # inside the visitor's event handler: runs their units
        ...

On a ZeroGPU Space the GPU is lent per call of a `spaces.GPU` function, and the `spaces` package schedules that call
with the headers of the gradio request it runs in (the visitor's quota token, read from gradio's request context).
A call from the job thread has no request, so there the job thread only decides *what* runs next (the runner and
its units, unchanged) and posts each unit; the visitor's open page takes it and makes the GPU call from inside its
own request. A unit nobody takes pauses the run (`Unattended`), so one absent visitor never holds the queue; their
page continues it when it is opened again. It pauses at once (after `grace` seconds, the gap between two polls of an
open page) when no request of its owner is driving, and after `wait` seconds when one is but does not take it.

No gradio here: the request side is whatever calls `take` (curlora/ui/zero_gpu.py in the app, tests directly).
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from collections.abc import Callable
from dataclasses import dataclass, field

from curlora.errors import Cancelled, CurloraError

PAUSED = ("paused: on this Space a run gets the GPU only through its owner's open page, and none took its next "
          "stage (no page of theirs was open, or none took it for {wait:g} s); open the app again (it continues by "
          "itself) or resume it from the Runs tab")


class Unattended(Cancelled):
    """No request took a unit within the wait: the run stops like a cancelled one (finished stages are kept)."""


@dataclass
class Unit:
    run_id: str
    owner: str | None
    what: str  # for the gate's holder: 'a training stage of run …'
    seconds: int  # the duration to declare to spaces.GPU (curlora/serve/gpu_budget.py)
    fn: Callable[[], object]
    done: threading.Event = field(default_factory=threading.Event)
    taken: bool = False
    result: object = None
    error: BaseException | None = None


class Handoff:
    def __init__(self, wait: float = 120.0, grace: float = 5.0):
        self.wait = float(wait)
        self.grace = min(float(grace), self.wait)
        self._cv = threading.Condition()
        self._posted: list[Unit] = []
        self._drivers: dict[str | None, int] = {}  # owner -> requests in `drive` now
        self._last_driven: dict[str | None, float] = {}  # owner -> when their last driving request ended

    @contextmanager
    def driving(self, owner: str | None):
        """(A request.) Mark `owner`'s page as present for as long as it drives their units."""
        with self._cv:
            self._drivers[owner] = self._drivers.get(owner, 0) + 1
            self._cv.notify_all()
        try:
            yield
        finally:
            with self._cv:
                self._drivers[owner] -= 1
                self._last_driven[owner] = time.monotonic()

    def _absent(self, owner: str | None, since: float) -> bool:
        """No request of `owner` is driving, nor has one for `grace` seconds (since the unit was posted)."""
        if self._drivers.get(owner, 0) > 0:
            return False
        return time.monotonic() - max(since, self._last_driven.get(owner, 0.0)) >= self.grace

    def call(self, run_id: str, owner: str | None, what: str, seconds: int, fn: Callable[[], object],
             should_stop: Callable[[], bool] | None = None):
        """(The job thread.) Post the unit and block until a request has run it; returns its result or raises its
        error, as if fn() had run here. Cancelled if the run is stopped before a request takes it; Unattended if
        none takes it within `wait` seconds. A unit once taken runs to its end (training watches Stop itself)."""
        unit = Unit(run_id, owner, what, int(seconds), fn)
        posted = time.monotonic()
        deadline = posted + self.wait
        with self._cv:
            self._posted.append(unit)
            self._cv.notify_all()
            while not unit.taken:
                left = deadline - time.monotonic()
                stopped = bool(should_stop and should_stop())
                if stopped or left <= 0 or self._absent(owner, posted):
                    self._posted.remove(unit)
                    raise Cancelled() if stopped else Unattended(PAUSED.format(wait=self.wait))
                self._cv.wait(min(left, 0.25))
        unit.done.wait()
        if unit.error is not None:
            raise unit.error
        return unit.result

    def take(self, owner: str | None, timeout: float) -> Unit | None:
        """(A request.) The oldest posted unit of `owner`'s runs, now taken; None if none comes within `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                unit = next((u for u in self._posted if u.owner == owner), None)
                if unit is not None:
                    self._posted.remove(unit)
                    unit.taken = True
                    self._cv.notify_all()
                    return unit
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cv.wait(left)

    @staticmethod
    def finish(unit: Unit, result=None, error: BaseException | None = None) -> None:
        """(A request.) Hand the unit's result or error back to the job thread."""
        unit.result, unit.error = result, error
        unit.done.set()

    def waiting(self, owner: str | None = None) -> list[str]:
        """Run ids with a unit posted and not yet taken (of `owner`'s runs)."""
        with self._cv:
            return [u.run_id for u in self._posted if u.owner == owner]


def drive(jobs, owner: str | None, on_device: Callable[[Callable[[], object], int], object], poll: float = 1.0):
    """Run `owner`'s units here, in the caller's thread (a visitor's event handler on ZeroGPU), each as
    on_device(fn, seconds) while holding the device gate; a unit's result or error goes back to the job thread,
    which records it as it does for any unit. Yields the run id after each unit and None every `poll` s while
    waiting; returns once `owner` has no job training or waiting in `jobs` (a JobManager)."""
    if jobs.handoff is None:
        return
    with jobs.handoff.driving(owner):
        yield from _drive(jobs, owner, on_device, poll)


def _drive(jobs, owner, on_device, poll):
    while True:
        unit = jobs.handoff.take(owner, poll)
        if unit is None:
            if not jobs.active(owner):
                return
            yield None
            continue
        try:
            with jobs.gate.hold(unit.what):
                result = on_device(unit.fn, unit.seconds)
        except Exception as err:
            Handoff.finish(unit, error=err)
        except BaseException as err:  # the handler is being torn down: the job thread still hears of it
            Handoff.finish(unit, error=err)
            raise
        else:
            Handoff.finish(unit, result)
        yield unit.run_id


def paused(jobs, run_id: str, owner: str | None = None) -> bool:
    """Did `run_id` pause because no request of its owner's took its next unit, and may `owner` resume it?"""
    try:
        run = jobs.open(run_id, owner, change=True)
    except CurloraError:
        return False
    st = run.status()
    return (st.get("status") == "interrupted" and bool(st.get("paused")) and jobs.position(run_id) is None
            and jobs.current() != run_id)
