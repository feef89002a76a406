"""One piece of device work at a time: a training unit, an evaluation or a chat reply.

    gate = DeviceGate()
    jobs = JobManager(gate=gate)      # runs each unit of a run (one method, one task) through gate.caller(...)
    with gate.hold("a chat reply"):   # waits for the unit in progress to finish
        ...

Training is split into units (the base row, then one method on one task; see runner.Executor.execute), and the
gate is taken per unit, so a chat reply or an evaluation waits for at most one stage, never for a whole run.
`wrap` (optional) runs each unit through a wrapper such as `spaces.GPU(duration=…)`. The app does not use it for
training on a ZeroGPU Space: a spaces.GPU call needs the visitor's request, so there the units are handed to the
visitor's event handler instead (curlora/serve/handoff.py), which takes this gate around each one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import contextmanager


class DeviceGate:
    def __init__(self, wrap: Callable | None = None):
        self._lock = threading.Lock()
        self._wrap = wrap
        self.holder: str | None = None  # what holds the device now, for a waiting user to read

    def acquire(self, what: str, timeout: float = -1) -> bool:
        if not self._lock.acquire(timeout=timeout):
            return False
        self.holder = what
        return True

    def release(self) -> None:
        self.holder = None
        self._lock.release()

    @contextmanager
    def hold(self, what: str):
        self.acquire(what)
        try:
            yield
        finally:
            self.release()

    def on_device(self, fn):
        """fn() under `wrap` (a ZeroGPU call where there is one), for a caller that already holds the gate."""
        return (self._wrap(fn) if self._wrap else fn)()

    def caller(self, what: str) -> Callable[[Callable], object]:
        """device_call for the runner: runs fn under the gate (and under `wrap`, where there is one)."""

        def call(fn):
            with self.hold(what):
                return self.on_device(fn)
        return call
