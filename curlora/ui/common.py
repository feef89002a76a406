"""What every tab shares: the engine objects, per-session state kept on the server, and error handling that turns
an engine error into its sentence on screen (never a traceback)."""

from __future__ import annotations

import functools
import inspect
import logging
import secrets
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
    """Per-browser state on the server (models and files never go into gr.State).

    A page load gets a new gradio session; `bind` ties it to the browser's workspace token (a random id kept in
    the browser's local storage), so a refreshed or reopened page finds its task list again. The token only names
    server-side state: nothing of it (paths, files) is ever sent to or trusted from the browser."""

    def __init__(self, limit: int = 512):
        self._items: OrderedDict[str, SessionState] = OrderedDict()
        self._aliases: OrderedDict[str, str] = OrderedDict()  # gradio session hash -> workspace token
        self._lock = threading.Lock()
        self._limit = limit

    @staticmethod
    def new_token() -> str:
        return secrets.token_hex(16)

    def bind(self, request: gr.Request | None, token: str | None) -> str:
        """Tie this page's session to `token` (a fresh one if it is missing or malformed); returns the token."""
        if not (isinstance(token, str) and len(token) == 32 and all(c in "0123456789abcdef" for c in token)):
            token = self.new_token()
        key = getattr(request, "session_hash", None)
        if key:
            with self._lock:
                self._aliases[key] = token
                if key in self._items and token not in self._items:  # work done before the page finished loading
                    self._items[token] = self._items.pop(key)
                while len(self._aliases) > 4 * self._limit:
                    self._aliases.popitem(last=False)
        return token

    def get(self, request: gr.Request | None) -> SessionState:
        key = getattr(request, "session_hash", None) or "default"
        with self._lock:
            key = self._aliases.get(key, key)
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
