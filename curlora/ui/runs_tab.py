"""Runs tab: every run in the data directory with its status; open, re-run, resume, delete (after a confirm).

Statuses come from the store (a run whose process died shows as `interrupted`) and from the queue (`queued`)."""

from __future__ import annotations

import time

import gradio as gr

from curlora.errors import CurloraError
from curlora.serve.hosting import EXAMPLES, read_owner
from curlora.ui.common import Engine, friendly

HEADERS = ["run", "status", "tasks", "methods", "progress", "updated", "message"]


def rows(jobs, owner: str | None = None) -> list[list]:
    """One row per run or study (progress: a run's stages done per method, a study's runs finished of its plan)."""
    out = []
    for run in jobs.runs(owner):
        st = jobs.status(run.id, owner)
        o = run.outline()
        updated = st.get("updated")
        shared = " · shared example" if read_owner(run.path) == EXAMPLES else ""
        out.append([run.id, st["status"] + (f" #{st['position']}" if st.get("position") else "") + shared,
                    ", ".join(o.tasks) or "–", ", ".join(o.methods) or "–", o.progress,
                    time.strftime("%Y-%m-%d %H:%M", time.localtime(updated)) if updated else "–",
                    st.get("message", "")])
    return out


def build(engine: Engine) -> dict:
    jobs = engine.jobs

    @friendly
    def listing(request: gr.Request, selected: str | None = None):
        owner = engine.owner(request)
        ids = [r.id for r in jobs.runs(owner)]
        return (rows(jobs, owner),
                gr.update(choices=ids) if selected is None else gr.update(choices=ids, value=selected))

    def pick(evt: gr.SelectData, table):
        try:
            return table.iloc[evt.index[0], 0]
        except (AttributeError, IndexError, TypeError):
            return gr.skip()

    @friendly
    def resume(rid: str, request: gr.Request):
        if not rid:
            raise CurloraError("Pick a run first.")
        jobs.resume(rid, engine.owner(request), client=engine.client(request))
        gr.Info(f"Run {rid} is queued again; it continues from its last finished stage.")
        return listing(request, rid)

    @friendly
    def rerun(rid: str, request: gr.Request):
        if not rid:
            raise CurloraError("Pick a run first.")
        owner = engine.owner(request)
        run = jobs.open(rid, owner)
        new = jobs.submit(run.config(), owner, client=engine.client(request))
        gr.Info(f"Started {new} with the same config.")
        return listing(request, new)

    @friendly
    def delete(rid: str, sure: bool, request: gr.Request):
        if not rid:
            raise CurloraError("Pick a run first.")
        if not sure:
            raise CurloraError("Tick 'Yes, delete it' first: a deleted run cannot be recovered.")
        jobs.delete(rid, engine.owner(request))
        gr.Info(f"Deleted {rid}.")
        return (*listing(request, ""), False)

    @friendly
    def list_api(request: gr.Request) -> list[dict]:
        return [dict(zip(HEADERS, r)) for r in rows(jobs, engine.owner(request))]

    gr.Markdown(lambda: ("Your runs on this server: every visitor sees only their own (and any shared examples). "
                         if engine.hosted else
                         "Runs live in the data directory (`$CURLORA_DATA_DIR`, default `./runs`). ")
                + "A run that was training when the app stopped shows as **interrupted**: resume it to continue "
                "from its last finished task.")
    with gr.Row():
        refresh = gr.Button("Refresh", size="sm", scale=1)
        run = gr.Dropdown([], label="Selected run", allow_custom_value=True, scale=4, elem_id="runs-run")
    table = gr.Dataframe(headers=HEADERS, value=[], interactive=False, wrap=True, elem_id="runs-table",
                         label="Runs (click a row to select it)")
    with gr.Row():
        open_btn = gr.Button("Open in Results", variant="primary")
        resume_btn = gr.Button("Resume")
        rerun_btn = gr.Button("Re-run (same config)")
        sure = gr.Checkbox(False, label="Yes, delete it")
        delete_btn = gr.Button("Delete", variant="stop")
    hidden = gr.JSON(visible=False)
    api_btn = gr.Button(visible=False)

    light = {"concurrency_limit": None}
    def fresh(request: gr.Request):
        return listing(request)

    refresh.click(fresh, None, [table, run], api_name=False, **light)
    table.select(pick, table, run, api_name=False, **light)
    resume_btn.click(resume, run, [table, run], api_name="resume", **light)
    rerun_btn.click(rerun, run, [table, run], api_name="rerun", **light)
    delete_btn.click(delete, [run, sure], [table, run, sure], api_name="delete", **light)
    api_btn.click(list_api, None, hidden, api_name="list_runs", **light)
    return {"run": run, "table": table, "open": open_btn, "listing": listing, "fresh": fresh}
