"""The app: the six tabs side by side, wired to one JobManager and one Chat for the whole server.

    demo = build_app()           # Blocks; tests pass their own JobManager
    launch(demo)                 # loopback by default, upload cap, queue

Every heavy thing happens outside gradio's event workers: training in the JobManager thread, chat in the "gpu"
concurrency group (one at a time). Everything else (previews, polling, listings) has no concurrency limit, so
it never waits behind a generation.
"""

from __future__ import annotations

import os

import gradio as gr

from curlora.chat import Chat
from curlora.device_gate import DeviceGate
from curlora.jobs import JobManager
from curlora.ui import chat_tab, model_tab, results_tab, runs_tab, tasks_tab, train_tab
from curlora.ui.common import Engine, Sessions, run_ids

MAX_UPLOAD = os.environ.get("CURLORA_MAX_UPLOAD", "50mb")
CSS = """
.gradio-container {max-width: 1400px !important}
#run-progress code {font-size: 12px}
footer {display: none !important}
"""
INTRO = ("# CURLoRA Studio\nContinual fine-tuning with **CURLoRA** beside **LoRA**: train both through a sequence "
         "of tasks and watch what each forgets. Steps: **Model** → **Tasks** → **Train**, then **Results** and "
         "**Chat**; every run is kept under **Runs**.")


def zero_gpu(seconds: int = 120):
    """`spaces.GPU(duration=seconds)` on a ZeroGPU Space; None anywhere else."""
    if not os.environ.get("SPACES_ZERO_GPU"):
        return None
    try:
        import spaces
    except ImportError:
        return None
    return spaces.GPU(duration=seconds)


def default_jobs() -> JobManager:
    """The server's job queue. On ZeroGPU every unit of a run (one method on one task) is its own GPU call,
    of at most CURLORA_GPU_SECONDS (default 300) seconds: keep each task's steps within that."""
    wrap = zero_gpu(int(os.environ.get("CURLORA_GPU_SECONDS", "300")))
    return JobManager(gate=DeviceGate(wrap=wrap) if wrap else None)


def build_app(jobs: JobManager | None = None, chat: Chat | None = None) -> gr.Blocks:
    engine = Engine(jobs=jobs or default_jobs(), chat=chat or Chat(), sessions=Sessions())
    with gr.Blocks(title="CURLoRA Studio") as demo:
        gr.Markdown(INTRO, elem_id="intro")
        with gr.Tabs() as tabs:
            with gr.Tab("1 · Model", id="model"):
                model = model_tab.build()
            with gr.Tab("2 · Tasks", id="tasks"):
                tasks = tasks_tab.build(engine)
            with gr.Tab("3 · Train", id="train"):
                train = train_tab.build(engine, model)
            with gr.Tab("Results", id="results") as results_page:
                results = results_tab.build(engine)
            with gr.Tab("Chat", id="chat") as chat_page:
                chat_ui = chat_tab.build(engine, gpu=zero_gpu())
            with gr.Tab("Runs", id="runs") as runs_page:
                runs = runs_tab.build(engine)

        light = {"api_name": False, "concurrency_limit": None, "show_progress": "hidden"}

        def follow(rid: str):
            """A run started or re-attached on the Train tab becomes the selected run of the other tabs."""
            ids = run_ids(engine.jobs)
            value = rid if rid in ids else None
            return (gr.update(choices=ids, value=value) if value else gr.update(choices=ids),) * 2

        train["run_id"].change(follow, train["run_id"], [results["run"], chat_ui["run"]], **light)
        tasks["task_list"].change(train["show_config"], train["form"], train["config_outputs"], **light)

        def open_run(rid: str):
            ids = run_ids(engine.jobs)
            return gr.update(choices=ids, value=rid), gr.Tabs(selected="results")

        def newest(rid: str):
            """Entering Results or Chat with no run picked selects the newest run."""
            ids = run_ids(engine.jobs)
            return gr.update(choices=ids, value=rid if rid in ids else (ids[0] if ids else None))

        # Opening a tab redraws it from the store: a run may have moved on since it was last shown.
        results_page.select(newest, results["run"], results["run"], **light).then(
            results["show"], results["run"], results["outputs"], **light)
        chat_page.select(newest, chat_ui["run"], chat_ui["run"], **light).then(
            chat_ui["pick_run"], chat_ui["run"], chat_ui["pick_outputs"], **light)
        runs_page.select(lambda: runs["listing"](), None, [runs["table"], runs["run"]], **light)
        runs["open"].click(open_run, runs["run"], [results["run"], tabs], **light)

        # This browser's workspace: its task list lives on the server under a random token kept in local storage.
        workspace = gr.BrowserState("", storage_key="curlora-workspace", secret="curlora-studio-workspace")

        def on_load(saved: str, token: str, request: gr.Request):
            token = engine.sessions.bind(request, token)
            rid, timer = train["reattach"](saved, request)
            ids = run_ids(engine.jobs)
            return (rid, timer, *tasks["listing"](request), *runs["listing"](),
                    gr.update(choices=ids), gr.update(choices=ids), token)

        demo.load(on_load, [train["remembered"], workspace],
                  [train["run_id"], train["timer"], tasks["task_list"], tasks["order_note"], runs["table"],
                   runs["run"], results["run"], chat_ui["run"], workspace], **light)
        demo.load(model["describe"], [model["name"], model["dtype"]], model["info"], **light)
        demo.load(train["count"], train["count_inputs"], train["counts"], **light)
    return demo


AUTH_ENV = "CURLORA_AUTH"  # "user:password", split at the first ':' (the password may contain colons)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def launch(demo: gr.Blocks, **kwargs):
    """Loopback unless GRADIO_SERVER_NAME (or server_name=) says otherwise (a Space sets it); port from
    GRADIO_SERVER_PORT. A login from CURLORA_AUTH="user:password" when set (never a password in code); a warning on
    stderr when the app is reachable beyond this machine (non-loopback address or a share link) without one."""
    import ipaddress
    import sys

    from curlora.errors import CurloraError

    demo.queue(default_concurrency_limit=4)
    options = {"server_name": os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), "max_file_size": MAX_UPLOAD,
               "css": CSS, "theme": gr.themes.Soft(primary_hue="blue"), "show_error": True}
    secret = os.environ.get(AUTH_ENV, "")
    if secret:
        user, sep, password = secret.partition(":")
        if not (sep and user.strip() and password):
            raise CurloraError(f"{AUTH_ENV} must be 'user:password' (a user name, a colon, a non-empty password).")
        options["auth"] = (user.strip(), password)
    options.update(kwargs)
    host = (options.get("server_name") or "127.0.0.1").strip("[]")
    try:
        loopback = host in LOOPBACK or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False  # a host name other than localhost: assume it is reachable
    share = options.get("share")
    if share is None:
        share = os.environ.get("GRADIO_SHARE", "").lower() == "true"
    if (share or not loopback) and not options.get("auth") and not options.get("auth_dependency"):
        where = "a public share link" if share else f"{host} (reachable from other machines)"
        print(f"WARNING: CURLoRA Studio is served on {where} without a login: anyone who can reach it can start "
              f"runs, read every run and upload files. Set {AUTH_ENV}=user:password to require one.",
              file=sys.stderr, flush=True)
    return demo.launch(**options)
