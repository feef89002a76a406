"""The app as an MCP server: `CURLORA_MCP=1 python app.py` (or `app.py --mcp`); off by default. Gradio serves it at
/gradio_api/mcp/ (streamable HTTP; /gradio_api/mcp/sse for SSE clients; /gradio_api/mcp/schema lists the tools).

The tools are the engine's (curlora/serve/mcp_tools.py: their docstrings and type hints are the tool descriptions);
this module only registers them and says who is asking. Read-mostly: every tool takes a run id explicitly and reads
the run store; `start_run` exists only where the app has a login (CURLORA_AUTH), and every tool then asks the
caller for that login as an `Authorization: Basic base64(user:password)` header (gradio's login page does not
cover the MCP route). The app's own endpoints (start, results, exports, …) stay callable by gradio_client but are
neither MCP tools nor in the API docs while the server is on; UI plumbing (a component's value function) is never
an API endpoint.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import importlib.util
import os

import gradio as gr

from curlora.errors import CurloraError
from curlora.serve.hosting import Client, LoginGuard, owner_key
from curlora.serve.mcp_tools import Tools
from curlora.ui.common import Engine, friendly

MCP_ENV = "CURLORA_MCP"
AUTH_ENV = "CURLORA_AUTH"  # the app's login, as launch() reads it (curlora/ui/app.py)
READ_TOOLS = ("list_runs", "get_run_summary", "get_accuracy_matrix", "compare_methods", "generate")
ENDPOINT = "mcp_"  # the tools' endpoint names (mcp_list_runs): the Runs tab already has a /list_runs
INSTALL = "pip install 'gradio[mcp]==6.31.0' mcp==1.30.0"


def enabled() -> bool:
    return os.environ.get(MCP_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def check_installed() -> None:
    if importlib.util.find_spec("mcp") is None:
        raise CurloraError(f"The MCP server needs gradio's mcp extra, which is not installed here: `{INSTALL}` (or "
                           "`pip install -r requirements-extras.txt`).")


GUARD = LoginGuard()  # wrong MCP logins, per client, for the whole process


def login() -> tuple[str, str] | None:
    user, sep, password = os.environ.get(AUTH_ENV, "").partition(":")
    return (user.strip(), password) if sep and user.strip() and password else None


def caller(engine: Engine, request: gr.Request | None) -> str | None:
    """The owner key an MCP call reads runs as. With a login set the call must carry it (Basic auth); hosted, the
    login's user owns what they started in the browser too. Without one: locally everything, hosted the shared
    examples only."""
    creds = login()
    if creds is None:
        return None
    who = engine.sessions.client(request)  # the address the Space's proxy forwards, or the anonymous pool
    GUARD.check(who)
    header = ""
    headers = getattr(request, "headers", None)
    if headers is not None:
        header = headers.get("authorization", "") or ""
    scheme, _, value = header.partition(" ")
    try:
        user, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        user, password = "", ""
    ok = scheme.lower() == "basic" and hmac.compare_digest(user.encode(), creds[0].encode()) and \
        hmac.compare_digest(password.encode(), creds[1].encode())
    if not ok:
        if value:  # a wrong login, not a missing one: it counts towards the backoff
            GUARD.failed(who)
        raise CurloraError("This app has a login: send it with every MCP request as the header "
                           "`Authorization: Basic <base64 of user:password>`.")
    GUARD.passed(who)
    return owner_key("user", user) if engine.hosted else None


def payer(engine: Engine, owner: str | None, request: gr.Request | None) -> Client | None:
    """Who pays for an MCP call: the login's user, else (like a page) the forwarded address or the anonymous pool;
    a new MCP connection is none of these anew."""
    if not engine.hosted:
        return None
    return Client(owner) if owner else engine.client(request)


def register(engine: Engine) -> list[str]:
    """The tools as API endpoints of the Blocks being built (call inside its `with`); returns their names."""
    tools = Tools(engine.jobs, engine.chat)

    def list_runs(request: gr.Request) -> str:
        return tools.list_runs(caller(engine, request))

    def get_run_summary(run_id: str, request: gr.Request) -> str:
        return tools.get_run_summary(run_id, caller(engine, request))

    def get_accuracy_matrix(run_id: str, method: str, request: gr.Request) -> str:
        return tools.get_accuracy_matrix(run_id, method, caller(engine, request))

    def compare_methods(run_id: str, request: gr.Request, with_studies: str = "") -> str:
        return tools.compare_methods(run_id, caller(engine, request), with_studies)

    def generate(run_id: str, method: str, stage: int, prompt: str, request: gr.Request) -> str:
        owner = caller(engine, request)
        return tools.generate(run_id, method, stage, prompt, owner, gate=engine.jobs.gate,
                              client=payer(engine, owner, request))

    def start_run(experiment_yaml: str, request: gr.Request) -> str:
        owner = caller(engine, request)
        return tools.start_run(experiment_yaml, owner, client=payer(engine, owner, request))

    fns = [list_runs, get_run_summary, get_accuracy_matrix, compare_methods, generate]
    if login() is not None:
        fns.append(start_run)
    for fn in fns:
        fn.__doc__ = getattr(Tools, fn.__name__).__doc__  # the engine's docstring is the tool's description
        # queue=False: gradio calls the tool in-process with the MCP request itself (its headers carry the login)
        gr.api(friendly(fn), api_name=ENDPOINT + fn.__name__, queue=False, concurrency_limit=None)
    return [fn.__name__ for fn in fns]


def settle(demo: gr.Blocks, tools: list[str]) -> None:
    """API visibility once every tab is built: UI plumbing (a component's value function, named by gradio after a
    lambda) is private; with the MCP server on, the app's own endpoints become undocumented (gradio_client still
    calls them; MCP clients and the API docs see only the tools)."""
    mine = {ENDPOINT + t for t in tools}
    for fn in demo.fns.values():
        if fn.api_visibility != "public" or fn.api_name in mine:
            continue
        if getattr(fn.fn, "__name__", "") == "<lambda>":
            fn.api_visibility = "private"
        elif tools:
            fn.api_visibility = "undocumented"
