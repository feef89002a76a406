"""ZeroGPU: GPU work as `spaces.GPU` calls made inside the event handler the visitor triggered.

The `spaces` package schedules each call with the request it is made in: `spaces/zero/wrappers.py` reads
`gradio.context.LocalContext.request` (gradio sets it around every step of an event handler) and
`spaces/zero/client.py: schedule` sends that request's `X-IP-Token` header, the visitor's quota. A call from the job
thread has no request there. So on a ZeroGPU Space the job thread posts each unit (curlora/serve/handoff.py) and the
visitor's page runs it: the Train tab's run id changing (Start, a page re-attaching to its run) and the Runs table
changing (Resume) start `drive`, a generator handler that makes one spaces.GPU call per unit, with the duration
measured from the run (curlora/serve/gpu_budget.py), for as long as the visitor has a run queued or training.
API clients call /train_units with the run id after /start. Anywhere else nothing here is wired: the job thread
runs every unit, as always.
"""

from __future__ import annotations

import os

import gradio as gr

from curlora.errors import CurloraError
from curlora.serve.device_gate import DeviceGate
from curlora.serve.handoff import Handoff, drive, paused
from curlora.serve.jobs import JobManager
from curlora.ui.common import Engine, friendly


def on_zero_gpu() -> bool:
    return bool(os.environ.get("SPACES_ZERO_GPU"))


def zero_gpu(seconds: int = 120):
    """`spaces.GPU(duration=seconds)` on a ZeroGPU Space; None anywhere else."""
    if not on_zero_gpu():
        return None
    try:
        import spaces
    except ImportError:
        return None
    return spaces.GPU(duration=seconds)


def default_jobs() -> JobManager:
    """The server's job queue. On ZeroGPU its units are handed to the owner's requests (a unit nobody takes within
    CURLORA_GPU_WAIT_SECONDS, default 120, pauses its run); anywhere else the job thread runs them."""
    if zero_gpu() is None:
        return JobManager()
    return JobManager(gate=DeviceGate(), handoff=Handoff(wait=float(os.environ.get("CURLORA_GPU_WAIT_SECONDS", 120))))


def keep_sentence(fn):
    """fn for the GPU worker: an engine error leaves it as a gr.Error, which spaces passes through with its text
    (any other error it reduces to the error's class name)."""
    def call():
        try:
            return fn()
        except CurloraError as err:
            raise gr.Error(str(err), print_exception=False) from None
    return call


def on_device(fn, seconds: int):
    """One unit as its own spaces.GPU call (a fresh function, so the worker forks with the state of now)."""
    import spaces

    try:
        return spaces.GPU(duration=int(seconds))(keep_sentence(fn))()
    except gr.Error as err:  # back in the engine, the sentence is an engine error again
        raise CurloraError(str(err.message)) from None


def wire(engine: Engine, train: dict, runs: dict) -> None:
    """On ZeroGPU: drive the visitor's units from their page (see the module docstring); elsewhere nothing."""
    jobs = engine.jobs
    if jobs.handoff is None:
        return

    def run_units(rid, request: gr.Request):
        owner = engine.owner(request)
        if isinstance(rid, str) and rid and paused(jobs, rid, owner):
            jobs.resume(rid, owner, client=engine.client(request))
        for done in drive(jobs, owner, on_device):
            yield gr.Timer(active=True) if done else gr.skip()  # the Train tab's view keeps polling

    @friendly
    def units(rid, request: gr.Request):
        """Run this visitor's training units inside this request, one GPU call each, until none is left; their
        run `rid`, if it paused for want of an open page, is resumed first."""
        yield from run_units(rid, request)

    @friendly
    def any_units(request: gr.Request):
        yield from run_units(None, request)

    light = {"concurrency_limit": None, "show_progress": "hidden"}
    train["run_id"].change(units, train["run_id"], train["timer"], api_name="train_units", **light)
    runs["table"].change(any_units, None, train["timer"], api_name=False, **light)
