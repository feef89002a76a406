"""Tasks tab: build the task sequence — demo tasks or uploaded CSVs, columns mapped by dropdowns (prefilled by
detection), verbalizers and prompt, the engine's validation report before anything trains; reorder and remove.

The list lives on the server, keyed by the browser session (see common.Sessions)."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from curlora.data.columns import detect_columns
from curlora.data.csvfile import read_table
from curlora.data.presets import load_presets
from curlora.data.report import format_summary
from curlora.data.task_config import TaskConfig
from curlora.data.tasks import load_task
from curlora.errors import CurloraError, clip
from curlora.paths import DEMO_TASKS, task_sources
from curlora.serve.limits import reading_tasks
from curlora.ui.common import Engine, friendly, with_request

DEMO_DIR = DEMO_TASKS
DEMO_ORDER = ("testament", "reviews", "answers")  # the quick demo's sequence
NONE = "(none)"
LIST_HEADERS = ["#", "task", "train file", "eval", "columns", "verbalizers"]


def demo_tasks() -> list[str]:
    found = [p.name for p in sorted(DEMO_DIR.iterdir()) if (p / "train.csv").is_file()] if DEMO_DIR.is_dir() else []
    return [n for n in DEMO_ORDER if n in found] + [n for n in found if n not in DEMO_ORDER]


def demo_config(name: str) -> TaskConfig:
    folder = DEMO_DIR / name
    if not (folder / "train.csv").is_file():
        raise CurloraError(f"There is no demo task {clip(name)}; choose one of {', '.join(demo_tasks())}.")
    ev = folder / "eval.csv"
    return TaskConfig(name=name, train_file=str(folder / "train.csv"), eval_file=str(ev) if ev.is_file() else None,
                      max_train_rows=400, max_eval_rows=100)


def parse_verbalizers(text: str) -> dict[str, str] | None:
    """'negative = bad' lines (or comma-separated) -> {label: word}; empty -> None (labels score as themselves)."""
    out = {}
    for part in (text or "").replace(",", "\n").splitlines():
        if not part.strip():
            continue
        if "=" not in part:
            raise CurloraError(f"Verbalizer {clip(part.strip())} needs the form 'label = word', e.g. '0 = negative'.")
        label, word = (s.strip() for s in part.split("=", 1))
        if not label or not word:
            raise CurloraError(f"Verbalizer {clip(part.strip())} needs a label and a word on either side of '='.")
        out[label] = word
    return out or None


def form_config(name, file, text, pair, label, verbalizers, template, preset, max_train, max_eval) -> TaskConfig:
    if not file:
        raise CurloraError("Upload a CSV (or add a demo task) first.")
    name = (name or "").strip() or Path(file).stem
    pick = lambda v: None if v in (None, "", NONE) else v  # noqa: E731
    return TaskConfig(name=name, train_file=file, text=pick(text), text_pair=pick(pair), label=pick(label),
                      verbalizers=parse_verbalizers(verbalizers), template=(template or "").strip() or None,
                      preset=pick(preset), max_train_rows=int(max_train) if max_train else None,
                      max_eval_rows=int(max_eval) if max_eval else None)


def task_rows(tasks: list[TaskConfig]) -> list[list]:
    rows = []
    for i, t in enumerate(tasks):
        cols = ", ".join(f"{k}={v}" for k, v in (("text", t.text), ("pair", t.text_pair), ("label", t.label)) if v)
        rows.append([i + 1, t.name, Path(t.train_file).name if t.train_file else t.preset,
                     Path(t.eval_file).name if t.eval_file else f"{t.eval_size or 0.2} held out",
                     cols or "detected", ", ".join(f"{k}→{v}" for k, v in (t.verbalizers or {}).items()) or "labels"])
    return rows


def preview_rows(table, n: int = 8):
    return gr.update(value=[list(r) for r in table.rows[:n]], headers=table.columns)


UPLOAD_HEADERS = ["upload", "size (kB)", "used by runs", "id"]


def build(engine: Engine) -> dict:
    sessions, policy, jobs = engine.sessions, engine.jobs.policy, engine.jobs

    def read(path):
        """A CSV read within the host's limits: a place among the files read at once, reading stopped at the
        row limit."""
        with reading_tasks(policy.limits):
            return read_table(path, max_rows=getattr(policy.limits, "rows_per_file", None))

    def loaded(cfg: TaskConfig):
        with reading_tasks(policy.limits):
            return load_task(cfg, max_rows=getattr(policy.limits, "rows_per_file", None))

    def uploads_of(request) -> list:
        owner = engine.owner(request)
        return policy.list_uploads(jobs.root, owner, jobs.runs(owner))

    @friendly
    def list_uploads(request: gr.Request):
        """The visitor's kept uploads (they count against their store quota): name, size, runs using it, id."""
        return [[u.name, round(u.size / 1000, 1), ", ".join(u.used_by) or "–", u.digest] for u in uploads_of(request)]

    @friendly
    def delete_upload(digest: str, request: gr.Request):
        owner = engine.owner(request)
        gone = policy.delete_upload(jobs.root, owner, (digest or "").strip(), jobs.runs(owner),
                                    busy=jobs.active(owner))
        note = f"Deleted upload '{gone.name}' ({gone.size / 1e6:.1f} MB)."
        if gone.used_by:
            note += f" Run(s) {', '.join(gone.used_by)} keep their numbers but can no longer be resumed or re-run."
        gr.Info(note)
        return list_uploads(request)

    def listing(request: gr.Request):
        tasks = sessions.get(request).tasks
        note = (f"**{len(tasks)} task(s)**, trained in this order: " + " → ".join(t.name for t in tasks)
                if tasks else "_No tasks yet: add the demo tasks or upload a CSV per task._")
        return task_rows(tasks), note

    def check_and_add(cfg: TaskConfig, request: gr.Request) -> str:
        tasks = sessions.get(request).tasks
        if any(t.name == cfg.name for t in tasks):
            raise CurloraError(f"There is already a task named {clip(cfg.name)}; give this one another name.")
        limit = getattr(policy.limits, "tasks_per_run", None)
        if limit is not None and len(tasks) >= limit:
            raise CurloraError(f"Tasks per run: the limit here is {limit}; remove a task before adding another.")
        owner = engine.owner(request)
        for obj, key, what in task_sources(cfg):
            policy.check_source(getattr(obj, key), what, jobs.root, owner)
        task = loaded(cfg)  # the engine's validation: bad input never reaches the task list
        tasks.append(cfg)
        sessions.save(request)
        return format_summary(task.summary)

    @friendly
    def add_demo(name: str, request: gr.Request):
        report = check_and_add(demo_config(name), request)
        return (*listing(request), report)

    @friendly
    def add_all_demos(request: gr.Request):
        state = sessions.get(request)
        state.tasks[:] = []
        sessions.save(request)
        for name in demo_tasks():
            report = check_and_add(demo_config(name), request)
        return (*listing(request), report)

    @friendly
    def uploaded(path, request: gr.Request):
        if not path:
            return (gr.update(), gr.update(), gr.update(), gr.update(), gr.update(), None, "")
        # Read (and so validated) before it is kept: a file the reader refuses never reaches the run store.
        owner, client = engine.owner(request), engine.client(request)
        stored = jobs.stored_bytes(owner)
        if client is not None:  # hosted: the client's share counts every session it has used
            stored = max(stored, jobs.payer_bytes(client))
        kept = str(policy.keep_upload(path, jobs.root, owner, validate=read, stored=stored))
        policy.note_payer(jobs.root, owner, client)
        table = read(kept)
        found = detect_columns(table.columns)
        cols = [NONE] + table.columns
        dd = lambda role: gr.update(choices=cols, value=found[role] or NONE)  # noqa: E731
        return (Path(path).stem, dd("text"), dd("text_pair"), dd("label"), preview_rows(table), kept,
                f"{len(table.rows):,} rows; columns {', '.join(table.columns)} ({table.describe_format()}). "
                "Check the column mapping, then Check or Add.")

    @friendly
    def check(*form):
        task = loaded(form_config(*form))
        return format_summary(task.summary)

    @with_request(10)
    @friendly
    def add(*form, request: gr.Request):
        report = check_and_add(form_config(*form), request)
        return (*listing(request), report)

    @friendly
    def move(index, delta, request: gr.Request):
        tasks = sessions.get(request).tasks
        i = int(index or 0) - 1
        if not 0 <= i < len(tasks):
            raise CurloraError(f"There is no task #{index}; the list numbers tasks 1 to {len(tasks)}.")
        if delta == 0:
            tasks.pop(i)
        else:
            j = min(max(i + delta, 0), len(tasks) - 1)
            tasks[i], tasks[j] = tasks[j], tasks[i]
        sessions.save(request)
        return listing(request)

    gr.Markdown("Tasks are trained in order, T1 → T2 → …; after each one every task is scored again, which is "
                "where forgetting shows. Start with the three demo tasks, or upload one CSV per task.")
    with gr.Row():
        with gr.Column(scale=1):
            with gr.Group():
                demo = gr.Dropdown(demo_tasks(), value=(demo_tasks() or [None])[0], label="Demo task")
                with gr.Row():
                    add_demo_btn = gr.Button("Add demo task", size="sm")
                    add_all_btn = gr.Button("Use the 3 demo tasks", size="sm", variant="primary",
                                            elem_id="add-demo-tasks")
            upload = gr.File(label="…or upload a CSV (one task)", file_types=[".csv", ".tsv", ".txt"], height=110,
                             elem_id="task-upload")
            kept = gr.State(None)  # the path of the copy in the data dir (a string, not data)
            upload_note = gr.Markdown()
            name = gr.Textbox(label="Task name")
            with gr.Row():
                text = gr.Dropdown([NONE], value=NONE, label="text column")
                pair = gr.Dropdown([NONE], value=NONE, label="second text (pairs)")
                label = gr.Dropdown([NONE], value=NONE, label="label column")
            verbalizers = gr.Textbox(label="Verbalizers (label = word, one per line; empty: the label itself)",
                                     lines=2, placeholder="0 = negative\n1 = positive")
            template = gr.Textbox(label="Prompt template (empty: default)", placeholder="Text: {text}\nLabel:")
            with gr.Row():
                preset = gr.Dropdown([NONE] + list(load_presets()), value=NONE, label="Dataset preset (optional)")
                max_train = gr.Number(None, label="max train rows", precision=0)
                max_eval = gr.Number(None, label="max eval rows", precision=0)
            with gr.Row():
                check_btn = gr.Button("Check")
                add_btn = gr.Button("Add task", variant="primary")
        with gr.Column(scale=2):
            task_list = gr.Dataframe(headers=LIST_HEADERS, value=[], label="Task sequence", interactive=False,
                                     elem_id="task-list", wrap=True)
            order_note = gr.Markdown("_No tasks yet: add the demo tasks or upload a CSV per task._")
            with gr.Row():
                index = gr.Number(1, label="task #", precision=0, minimum=1, scale=1)
                up = gr.Button("Move up", size="sm", scale=1)
                down = gr.Button("Move down", size="sm", scale=1)
                remove = gr.Button("Remove", size="sm", variant="stop", scale=1)
            report = gr.Textbox(label="Validation report (the engine's check-data)", lines=12, max_lines=20,
                                elem_id="task-report")
            preview = gr.Dataframe(label="Preview (first rows of the upload)", interactive=False, wrap=True)
            with gr.Accordion("Your uploads (they count against what you may store here)", open=False):
                upload_list = gr.Dataframe(headers=UPLOAD_HEADERS, value=[], interactive=False, wrap=True,
                                           elem_id="upload-list")
                with gr.Row():
                    upload_id = gr.Textbox(label="id of the upload to delete", scale=3, elem_id="upload-id")
                    refresh_uploads = gr.Button("Refresh", size="sm", scale=1)
                    delete_btn = gr.Button("Delete upload", size="sm", variant="stop", scale=1,
                                           elem_id="upload-delete")

    form = [name, kept, text, pair, label, verbalizers, template, preset, max_train, max_eval]
    light = {"concurrency_limit": None, "api_name": False}
    add_demo_btn.click(add_demo, demo, [task_list, order_note, report], **light)
    add_all_btn.click(add_all_demos, None, [task_list, order_note, report], api_name="use_demo_tasks",
                      concurrency_limit=None)
    upload.upload(uploaded, upload, [name, text, pair, label, preview, kept, upload_note], **light)
    check_btn.click(check, form, report, **light)
    add_btn.click(add, form, [task_list, order_note, report], **light)
    def mover(delta):
        def handler(index, request: gr.Request):
            return move(index, delta, request)
        return handler

    refresh_uploads.click(list_uploads, None, upload_list, api_name="list_uploads", concurrency_limit=None)
    delete_btn.click(delete_upload, upload_id, upload_list, api_name="delete_upload", concurrency_limit=None)
    up.click(mover(-1), [index], [task_list, order_note], **light)
    down.click(mover(1), [index], [task_list, order_note], **light)
    remove.click(mover(0), [index], [task_list, order_note], **light)
    return {"task_list": task_list, "order_note": order_note, "listing": listing}
