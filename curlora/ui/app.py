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

from curlora.run.chat import Chat
from curlora.serve.jobs import JobManager
from curlora.ui import chat_tab, compare_tab, mcp, model_tab, results_tab, runs_tab, tasks_tab, train_tab
from curlora.ui import zero_gpu as zgpu
from curlora.ui.common import Engine, Sessions

MAX_UPLOAD = os.environ.get("CURLORA_MAX_UPLOAD", "50mb")
CSS = """
.gradio-container {max-width: 1400px !important}
#run-progress code {font-size: 12px}
footer {display: none !important}
"""
INTRO = ("# CURLoRA Studio\nContinual fine-tuning with **CURLoRA** beside **LoRA**: train both through a sequence "
         "of tasks and watch what each forgets. Steps: **Model** → **Tasks** → **Train**, then **Results** and "
         "**Chat**; **Compare** traces each method over learning rates and seeds; every run is kept under **Runs**.")


zero_gpu, default_jobs = zgpu.zero_gpu, zgpu.default_jobs  # ZeroGPU: curlora/ui/zero_gpu.py


def limits_text(engine: Engine) -> str:
    """The host's limits as a table (curlora/serve/limits.py; set with CURLORA_LIMIT_<NAME> or CURLORA_LIMITS_FILE)."""
    rows = engine.jobs.policy.limits.describe()
    who = ("Hosted: every visitor sees and changes only their own runs, uploads and exports; models are presets, "
           "the bundled model or hub ids, and task files are your own uploads or the bundled demo tasks. Allowances "
           "(runs, chat replies, time estimates, evaluations and exports) are per signed-in user, else per address "
           "on a Space; everyone not signed in also shares one pool, so signing in gets you your own. The queue takes visitors in turn, one stage at a time: "
           "another visitor's study delays your run by one stage, not the whole study."
           if engine.hosted else "On your own machine: one user, who owns every run.")
    return (who + "\n\n| limit | here |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
            + "\n\nA run over a limit is refused before anything is written, with the limit named; an allowance "
              "that is used up says how long until it has room again.")


def build_app(jobs: JobManager | None = None, chat: Chat | None = None) -> gr.Blocks:
    jobs = jobs or default_jobs()
    engine = Engine(jobs=jobs, chat=chat or Chat(), sessions=Sessions(root=lambda: jobs.root))
    jobs.policy.serve()  # error sentences on screen follow this app's policy
    # gradio's cache of served files (exports, previews) is emptied of anything older than an hour, every hour.
    with gr.Blocks(title="CURLoRA Studio", delete_cache=(3600, 3600)) as demo:
        demo.curlora_engine = engine
        gr.Markdown(INTRO, elem_id="intro")
        if os.environ.get("OAUTH_CLIENT_ID") and os.environ.get("SPACE_ID"):  # a Space with `hf_oauth: true`
            gr.LoginButton(value="Sign in with Hugging Face to keep your runs across browsers")
        with gr.Accordion("Who sees what, and this server's limits", open=False, elem_id="limits"):
            gr.Markdown(lambda: limits_text(engine))  # read at every page load: launch() may make the app hosted
        with gr.Tabs() as tabs:
            with gr.Tab("1 · Model", id="model"):
                model = model_tab.build(engine)
            with gr.Tab("2 · Tasks", id="tasks"):
                tasks = tasks_tab.build(engine)
            with gr.Tab("3 · Train", id="train"):
                train = train_tab.build(engine, model)
            with gr.Tab("Compare", id="compare") as compare_page:
                compare = compare_tab.build(engine, train)
            with gr.Tab("Results", id="results") as results_page:
                results = results_tab.build(engine)
            with gr.Tab("Chat", id="chat") as chat_page:
                chat_ui = chat_tab.build(engine, gpu=zero_gpu())
            with gr.Tab("Runs", id="runs") as runs_page:
                runs = runs_tab.build(engine)
        zgpu.wire(engine, train, runs)  # ZeroGPU only: training units run in the visitor's requests

        light = {"api_name": False, "concurrency_limit": None, "show_progress": "hidden"}

        def follow(rid: str, request: gr.Request):
            """A run started or re-attached on the Train tab becomes the selected run of the other tabs."""
            ids = engine.run_ids(request)
            value = rid if rid in ids else None
            return (gr.update(choices=ids, value=value) if value else gr.update(choices=ids),) * 2

        train["run_id"].change(follow, train["run_id"], [results["run"], chat_ui["run"]], **light)
        tasks["task_list"].change(train["show_config"], train["widgets"], train["config_outputs"], **light)

        def open_run(rid: str, request: gr.Request):
            ids = engine.run_ids(request)
            return gr.update(choices=ids, value=rid), gr.Tabs(selected="results")

        def newest(rid: str, request: gr.Request):
            """Entering Results or Chat with no run picked selects the newest run."""
            ids = engine.run_ids(request)
            return gr.update(choices=ids, value=rid if rid in ids else (ids[0] if ids else None))

        # Opening a tab redraws it from the store: a run may have moved on since it was last shown.
        results_page.select(newest, results["run"], results["run"], **light).then(
            results["show"], results["run"], results["outputs"], **light)
        chat_page.select(newest, chat_ui["run"], chat_ui["run"], **light).then(
            chat_ui["others"], None, chat_ui["other"], **light).then(
            chat_ui["pick_run"], chat_ui["pick_inputs"], chat_ui["pick_outputs"], **light)
        runs_page.select(runs["fresh"], None, [runs["table"], runs["run"]], **light)
        runs["open"].click(open_run, runs["run"], [results["run"], tabs], **light)
        compare_page.select(compare["fresh"], [compare["pick"], compare["together"]],
                            [compare["pick"], compare["together"]], **light)
        compare["open"].click(open_run, compare["point"], [results["run"], tabs], **light)

        def chat_with(rid: str, request: gr.Request):
            ids = engine.run_ids(request)
            return gr.update(choices=ids, value=rid), gr.Tabs(selected="chat")

        compare["chat"].click(chat_with, compare["point"], [chat_ui["run"], tabs], **light)

        # This browser's workspace: its task list lives on the server under a random token kept in local storage.
        workspace = gr.BrowserState("", storage_key="curlora-workspace", secret="curlora-studio-workspace")

        def on_load(saved: str, token: str, request: gr.Request):
            token = engine.sessions.bind(request, token)
            rid, timer = train_tab.reattach(engine, saved, request)
            ids = engine.run_ids(request)
            return (rid, timer, *tasks["listing"](request), *runs["listing"](request),
                    gr.update(choices=ids), gr.update(choices=ids), token)

        demo.load(on_load, [train["remembered"], workspace],
                  [train["run_id"], train["timer"], tasks["task_list"], tasks["order_note"], runs["table"],
                   runs["run"], results["run"], chat_ui["run"], workspace], **light)
        demo.load(model["describe"], [model["name"], model["dtype"]], model["info"], **light)
        demo.load(model["show_template"], model["name"], model["template"], **light)
        demo.load(train["count"], train["count_inputs"], train["counts"], **light)
        tools = mcp.register(engine) if mcp.enabled() else []  # CURLORA_MCP=1: curlora/ui/mcp.py
    mcp.settle(demo, tools)
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
    # run_history off: gradio would keep every call's inputs (uploaded task files among them) in the browser
    options = {"server_name": os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), "max_file_size": MAX_UPLOAD,
               "css": CSS, "theme": gr.themes.Soft(primary_hue="blue"), "show_error": True, "run_history": False}
    if mcp.enabled():
        mcp.check_installed()
        options["mcp_server"] = True
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
    engine = getattr(demo, "curlora_engine", None)
    if engine is not None and (share or not loopback):
        engine.jobs.policy.become_hosted()  # reachable by others: visitors own their runs, no server paths
    if engine is not None and engine.hosted:
        from curlora.models.remote_code import remote_code_allowed

        if remote_code_allowed():
            raise CurloraError("--trust-remote-code cannot be used when the app is hosted (served beyond this "
                               "machine, on a Space, or with CURLORA_MULTI_USER=1): visitors' models would run "
                               "code on this server.")
        upload_mb = getattr(engine.jobs.policy.limits, "upload_mb", None)
        if upload_mb is not None and "max_file_size" not in kwargs:
            options["max_file_size"] = f"{upload_mb:g}mb"
    if (share or not loopback) and not options.get("auth") and not options.get("auth_dependency"):
        where = "a public share link" if share else f"{host} (reachable from other machines)"
        print(f"WARNING: CURLoRA Studio is served on {where} without a login: anyone who can reach it can start "
              f"runs, read every run and upload files. Set {AUTH_ENV}=user:password to require one.",
              file=sys.stderr, flush=True)
    if engine is not None:
        engine.jobs.recover()  # the runs a shutdown stopped, queued again in their old order
        if not options.get("prevent_thread_lock"):
            stop_cooperatively_on_sigterm(engine.jobs)
    return demo.launch(**options)


def stop_cooperatively_on_sigterm(jobs: JobManager) -> None:
    """SIGTERM (a Space restart, `docker stop`, systemd): stop the run in progress after its current step, keep
    its finished stages, and leave it and every waiting run marked to be queued again, in order, on the next
    start; then leave as Ctrl-C does. Only the main thread may install a handler (the served app runs there)."""
    import signal
    import sys
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):
        order = jobs.shutdown(timeout=float(os.environ.get("CURLORA_SHUTDOWN_SECONDS", "25")))
        print(f"SIGTERM: stopped; {len(order)} run(s) will be queued again on the next start.", file=sys.stderr,
              flush=True)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
