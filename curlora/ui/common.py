"""What every tab shares: the engine objects, per-session state kept on the server, and error handling that turns
an engine error into its sentence on screen (never a traceback)."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import secrets
import threading
import typing
from collections import OrderedDict
from dataclasses import dataclass, field

import gradio as gr

from curlora.data.task_config import TaskConfig
from curlora.errors import CurloraError
from curlora.run.chat import Chat
from curlora.run.store import atomic_write_text
from curlora.serve.hosting import Client, Policy, behind_space_proxy, client_of, owner_key
from curlora.serve.jobs import JobManager

log = logging.getLogger("curlora.ui")
ALIASES = 100_000  # page sessions remembered (about 100 bytes each): one per page load, not per request


def stage_slider(top: int, low: int = 1) -> dict:
    """A stage slider's update for stages low..top, set at top. Gradio refuses a slider whose minimum is not below
    its maximum, so one with a single stage keeps a range of two and is not movable (its value stays that stage)."""
    return gr.update(minimum=low, maximum=max(top, low + 1), value=top, step=1, interactive=top > low)


def shown(text: str) -> str:
    """An error sentence as the served app's policy lets a visitor read it (curlora/serve/hosting.py Policy.serve)."""
    policy = Policy.serving()
    return policy.public(text) if policy is not None else text


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

    def __init__(self, limit: int = 512, root=None):
        self._items: OrderedDict[str, SessionState] = OrderedDict()
        self._aliases: OrderedDict[str, str] = OrderedDict()  # gradio session hash -> workspace token
        self._lock = threading.Lock()
        self._limit = limit
        self._root = root  # () -> the data dir: task lists are kept there too, so evicting one from memory loses
        # nothing (other sessions' requests can push any list out of this cache; it comes back from disk)

    @staticmethod
    def _is_token(key: str) -> bool:
        return len(key) == 32 and all(c in "0123456789abcdef" for c in key)

    def _file(self, key: str):
        if self._root is None or key == "default":
            return None
        owner = owner_key("workspace" if self._is_token(key) else "session", key)
        return Policy.owner_dir(self._root(), owner) / "tasks.json"

    def _load(self, key: str) -> SessionState:
        path = self._file(key)
        state = SessionState()
        if path is not None and path.is_file():
            try:
                state.tasks = [TaskConfig.from_dict(t) for t in json.loads(path.read_text(encoding="utf-8"))]
            except (OSError, ValueError, TypeError, CurloraError):
                log.warning("task list %s is unreadable; starting an empty one", path)
        return state

    def save(self, request: gr.Request | None) -> None:
        """Keep this session's task list on disk (call after changing it)."""
        key = self._key(request)
        path = self._file(key)
        if path is None:
            return
        with self._lock:
            tasks = [t.to_dict() for t in (self._items.get(key) or SessionState()).tasks]
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(tasks))

    def _key(self, request) -> str:
        key = getattr(request, "session_hash", None) or "default"
        with self._lock:
            return self._aliases.get(key, key)

    @staticmethod
    def new_token() -> str:
        return secrets.token_hex(16)

    def bind(self, request: gr.Request | None, token: str | None) -> str:
        """Tie this page's session to `token` (a fresh one if it is missing or malformed); returns the token."""
        if not (isinstance(token, str) and self._is_token(token)):
            token = self.new_token()
        key = getattr(request, "session_hash", None)
        if key:
            with self._lock:
                self._aliases[key] = token
                self._aliases.move_to_end(key)
                if key in self._items and token not in self._items:  # work done before the page finished loading
                    self._items[token] = self._items.pop(key)
                while len(self._aliases) > ALIASES:
                    self._aliases.popitem(last=False)
        return token

    @staticmethod
    def signed_in(request: gr.Request | None) -> str | None:
        """The owner key of the signed-in user (CURLORA_AUTH or a Space's Hugging Face login), if there is one."""
        user = getattr(request, "username", None)
        if user:
            return owner_key("user", str(user))
        hf_user = _hugging_face_user(request)
        return owner_key("hf", hf_user) if hf_user else None

    def client(self, request: gr.Request | None) -> Client:
        """Who pays for this request (curlora/serve/hosting.py client_of): the signed-in user, else the address the
        Space's proxy forwards, else the one anonymous pool. A fresh session or workspace token is not a new one."""
        headers = getattr(request, "headers", None)
        forwarded = headers.get("x-forwarded-for") if headers is not None else None
        return client_of(self.signed_in(request), forwarded, behind_space_proxy())

    def owner(self, request: gr.Request | None) -> str:
        """Who is asking, as a hashed owner key: the signed-in user (CURLORA_AUTH or a Space's Hugging Face login),
        else this browser's workspace token, else (an API client, which has no page) its gradio session."""
        user = self.signed_in(request)
        if user:
            return user
        key = getattr(request, "session_hash", None)
        with self._lock:
            token = self._aliases.get(key) if key else None
        if token:
            return owner_key("workspace", token)
        if key:
            return owner_key("session", key)
        raise CurloraError("This request carries no session; reload the page.")

    def get(self, request: gr.Request | None) -> SessionState:
        key = self._key(request)
        with self._lock:
            state = self._items.pop(key, None)
        if state is None:
            state = self._load(key)
        with self._lock:
            state = self._items.pop(key, None) or state
            self._items[key] = state
            while len(self._items) > self._limit:
                self._items.popitem(last=False)
            return state


def _hugging_face_user(request) -> str | None:
    """The Hugging Face account signed in through the Space's login button (gradio keeps it in the session)."""
    try:
        info = request.session.get("oauth_info") or {}
    except (AttributeError, AssertionError, KeyError, TypeError):  # no session middleware: no OAuth here
        return None
    name = (info.get("userinfo") or {}).get("preferred_username")
    return str(name) if name else None


@dataclass
class Engine:
    """The server-wide objects the tabs talk to."""

    jobs: JobManager
    chat: Chat
    sessions: Sessions

    @property
    def hosted(self) -> bool:
        return self.jobs.policy.hosted

    def owner(self, request: gr.Request | None) -> str | None:
        """The owner key the engine checks every run id against; None locally (the one user owns everything)."""
        return self.sessions.owner(request) if self.hosted else None

    def client(self, request: gr.Request | None) -> Client | None:
        """Who pays for the request's work when hosted (None locally: the one user)."""
        return self.sessions.client(request) if self.hosted else None

    def allow_device(self, request: gr.Request | None) -> None:
        """Count one action that holds the device outside the run queue against the payer's allowance, or refuse
        it with the wait (Policy.allow_device)."""
        self.jobs.policy.allow_device(self.client(request) or self.owner(request))

    def allow_chat(self, request: gr.Request | None) -> None:
        """Count one chat reply against the payer's allowance, or refuse it with the wait (Policy.allow_chat)."""
        self.jobs.policy.allow_chat(self.client(request) or self.owner(request))

    def run_ids(self, request: gr.Request | None) -> list[str]:
        return [r.id for r in self.jobs.runs(self.owner(request))]


def friendly(fn):
    """Show a CurloraError's sentence as a gradio error; anything else as one line (and log the traceback)."""

    def translate(err: Exception) -> gr.Error:
        if isinstance(err, gr.Error):
            return err
        if isinstance(err, CurloraError):
            return gr.Error(shown(str(err)), print_exception=False)
        log.exception("unexpected error in %s", fn.__name__)
        return gr.Error(f"Something went wrong ({type(err).__name__}: {shown(str(err))[:200]}); the "
                        "server log has the details.", print_exception=False)

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


def handler(fn, *bound, inputs: list | None = None):
    """A module-level function `fn(*bound, …)` as a gradio event handler, its first arguments (the engine, the form)
    given here. Gradio reads the handler's signature and annotations to pass a gr.Request, so the handler has fn's
    own, less the bound arguments (functools.partial would hide the annotations).

    fn's next parameter takes the event's inputs as one {component: value} dict. Gradio passes that dict itself when
    the inputs are a set; with `inputs` (a list, for an API endpoint whose parameters keep the list's order) the
    handler takes the values one by one, as value_0 … value_n-1, and zips them into the dict."""
    hints, signature = typing.get_type_hints(fn), inspect.signature(fn)
    params = list(signature.parameters.values())[len(bound):]
    if inputs is None:
        def call(*args, **kwargs):
            return fn(*bound, *args, **kwargs)
    else:
        components, n = list(inputs), len(inputs)
        params = [inspect.Parameter(f"value_{i}", inspect.Parameter.POSITIONAL_ONLY) for i in range(n)] + [
            p.replace(kind=inspect.Parameter.POSITIONAL_ONLY) for p in params[1:]]

        def call(*args, **kwargs):
            return fn(*bound, dict(zip(components, args[:n])), *args[n:], **kwargs)
    call.__name__, call.__qualname__, call.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
    call.__signature__ = inspect.Signature(params, return_annotation=signature.return_annotation)
    call.__annotations__ = {p.name: hints[p.name] for p in params if p.name in hints}
    return call


def wait_for_device(gate, what: str, n_outputs: int, poll: float = 0.5):
    """Take the device gate for `what`, yielding a waiting note (one per output) while a training stage, an
    evaluation or another reply holds it. The caller releases the gate (try/finally around its work)."""
    while not gate.acquire(what, timeout=poll):
        note = f"Waiting for the device: {gate.holder or 'another job'} is using it…"
        yield (note,) * n_outputs if n_outputs > 1 else note

