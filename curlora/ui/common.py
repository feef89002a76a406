"""What every tab shares: the engine objects, per-session state kept on the server, and error handling that turns
an engine error into its sentence on screen (never a traceback)."""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import gradio as gr

from curlora.chat import Chat
from curlora.errors import CurloraError
from curlora.jobs import JobManager
from curlora.store import list_runs
from curlora.task_config import TaskConfig

log = logging.getLogger("curlora.ui")


@dataclass
class SessionState:
    """One browser session's unfinished work: the task list being assembled, what the live view last drew."""

    tasks: list[TaskConfig] = field(default_factory=list)
    drawn: dict = field(default_factory=dict)  # view name -> signature of what is on screen


class Sessions:
    """Session hash -> SessionState, on the server (models and files never go into gr.State)."""

    def __init__(self, limit: int = 512):
        self._items: OrderedDict[str, SessionState] = OrderedDict()
        self._lock = threading.Lock()
        self._limit = limit

    def get(self, request: gr.Request | None) -> SessionState:
        key = getattr(request, "session_hash", None) or "default"
        with self._lock:
            state = self._items.pop(key, None) or SessionState()
            self._items[key] = state
            while len(self._items) > self._limit:
                self._items.popitem(last=False)
            return state


@dataclass
class Engine:
    """The server-wide objects the tabs talk to."""

    jobs: JobManager
    chat: Chat
    sessions: Sessions


def friendly(fn):
    """Show a CurloraError's sentence as a gradio error; anything else as one line (and log the traceback)."""

    def translate(err: Exception) -> gr.Error:
        if isinstance(err, gr.Error):
            return err
        if isinstance(err, CurloraError):
            return gr.Error(str(err), print_exception=False)
        log.exception("unexpected error in %s", fn.__name__)
        return gr.Error(f"Something went wrong ({type(err).__name__}: {str(err)[:200]}); the server log has "
                        "the details.", print_exception=False)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as err:
                raise translate(err) from None
        return gen

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            raise translate(err) from None
    return call


def with_request(n_inputs: int):
    """For handlers written as f(*values, request): gradio passes gr.Request only to a parameter it can see, so
    give the handler an explicit signature of n_inputs values plus a `request: gr.Request`."""

    def wrap(fn):
        params = [inspect.Parameter(f"value_{i}", inspect.Parameter.POSITIONAL_ONLY) for i in range(n_inputs)]
        params.append(inspect.Parameter("request", inspect.Parameter.POSITIONAL_ONLY, annotation=gr.Request))

        @functools.wraps(fn)
        def call(*args):
            return fn(*args[:-1], request=args[-1])

        call.__signature__ = inspect.Signature(params)
        del call.__wrapped__  # gradio must read the signature above, not the wrapped one
        return call
    return wrap


def wait_for_device(gate, what: str, n_outputs: int, poll: float = 0.5):
    """Take the device gate for `what`, yielding a waiting note (one per output) while a training stage, an
    evaluation or another reply holds it. The caller releases the gate (try/finally around its work)."""
    while not gate.acquire(what, timeout=poll):
        note = f"Waiting for the device: {gate.holder or 'another job'} is using it…"
        yield (note,) * n_outputs if n_outputs > 1 else note


def run_ids(jobs: JobManager) -> list[str]:
    return [r.id for r in list_runs(jobs.root)]
