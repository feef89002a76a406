"""Train tab: methods and their settings side by side, the config as YAML and CLI, Start / Stop, and the live view.

The widgets fill one ExperimentConfig (nothing else is sent to the engine). Start hands it to the JobManager,
which trains in its own thread: the run goes on when the page closes, and the timer here only reads the store.
"""

from __future__ import annotations

import html

import gradio as gr

from curlora.errors import CurloraError
from curlora.experiment import ExperimentConfig, MethodSettings
from curlora.paths import QUICK_DEMO
from curlora.run.estimate import trainable_parameters
from curlora.run.store import atomic_write_text
from curlora.ui import live
from curlora.ui.common import Engine, friendly, shown, with_request

PRESET = QUICK_DEMO
METHODS = [("CURLoRA", "curlora"), ("LoRA", "lora"), ("base (no training)", "base"), ("full fine-tune", "full"),
           ("head-only (needs head scoring)", "head-only")]


def _defaults() -> ExperimentConfig:
    try:
        return ExperimentConfig.load(PRESET)
    except CurloraError:
        return ExperimentConfig(tasks=[{"name": "x", "train_file": "x.csv"}])


def _targets(text: str) -> list[str] | None:
    names = [t.strip() for t in (text or "").replace("\n", ",").split(",") if t.strip()]
    return names or None


def method_settings(kinds, targets, c_r, c_alpha, c_sampling, c_seed, l_r, l_alpha, l_dropout,
                    c_lr=None) -> list[MethodSettings]:
    if not kinds:
        raise CurloraError("Pick at least one method (CURLoRA and LoRA side by side is the point).")
    # The fields each kind's column of the form sets; a kind without a column takes its defaults.
    fields = {
        "curlora": dict(r=int(c_r), alpha=float(c_alpha), sampling=c_sampling, seed=int(c_seed),
                        target_modules=_targets(targets), lr=float(c_lr) if c_lr not in (None, "") else None),
        "lora": dict(r=int(l_r), alpha=float(l_alpha) if l_alpha else None, dropout=float(l_dropout),
                     target_modules=_targets(targets)),
    }
    return [MethodSettings(kind=k, **fields.get(k, {})) for _, k in METHODS if k in kinds]


def build(engine: Engine, model: dict) -> dict:
    jobs, sessions = engine.jobs, engine.sessions
    d = _defaults()
    preset = {m.kind: m for m in d.methods}
    cur, lora = preset.get("curlora", MethodSettings(kind="curlora")), preset.get("lora", MethodSettings(kind="lora"))

    gr.Markdown("Both methods train on the same tasks, in the same order, with the same data order. CURLoRA may "
                "have its own learning rate (its U starts at zero between frozen low-norm columns and rows, so it "
                "usually needs a larger one); leave it empty for one shared rate, or compare at matched loss. Runs "
                "live on the server: close the tab and come back, the run keeps going.")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=260):
            kinds = gr.CheckboxGroup(METHODS, value=["curlora", "lora"], label="Methods", elem_id="methods")
            targets = gr.Textbox(", ".join(cur.target_modules or []), label="Target modules (both adapters)")
            counts = gr.Markdown(elem_id="trainable-counts")
        with gr.Column(scale=1, min_width=200):
            gr.Markdown("**CURLoRA** — trains only U (r × r); C, R sampled from W, frozen")
            c_r = gr.Number(cur.r, label="rank r", precision=0, minimum=1)
            c_alpha = gr.Number(1.0 if cur.alpha is None else cur.alpha, label="alpha (scale of C·U·R; paper: 1)")
            c_sampling = gr.Dropdown(["inverted", "inverted_offset", "uniform", "norm"], value=cur.sampling,
                                     label="column/row sampling")
            c_seed = gr.Number(cur.seed, label="sampling seed", precision=0)
            c_lr = gr.Number(cur.lr, label="learning rate (empty: the shared one)", elem_id="curlora-lr")
        with gr.Column(scale=1, min_width=200):
            gr.Markdown("**LoRA** (PEFT) — trains A (r × in) and B (out × r)")
            l_r = gr.Number(lora.r, label="rank r", precision=0, minimum=1)
            l_alpha = gr.Number(lora.alpha or lora.r, label="lora_alpha (paper: = r, scale 1)")
            l_dropout = gr.Number(lora.dropout, label="dropout", minimum=0, maximum=0.9)
        with gr.Column(scale=1, min_width=220):
            gr.Markdown("**Training** (shared)")
            steps = gr.Number(d.training.max_steps, label="steps per task", precision=0, minimum=1)
            lr = gr.Number(d.training.lr, label="learning rate (LoRA, and CURLoRA unless set)")
            batch = gr.Number(d.training.batch_size, label="batch size", precision=0, minimum=1)
            max_len = gr.Number(d.training.max_length, label="max tokens per example", precision=0, minimum=8)
        with gr.Column(scale=1, min_width=220):
            gr.Markdown("**Evaluation**")
            scoring = gr.Dropdown(["likelihood", "head", "generate"], value=d.evaluation.scoring, label="scoring")
            probe_every = gr.Number(d.evaluation.probe_every, label="probe earlier tasks every N steps (0: off)",
                                    precision=0, minimum=0)
            eval_rows = gr.Number(d.evaluation.eval_rows, label="eval rows per task (empty: all)", precision=0)
            run_name = gr.Textbox(d.run.name if d.run.name != "quick-demo" else "studio", label="run name")
            comparison = gr.Dropdown(["equal_lr", "matched_loss"], value="equal_lr", label="comparison",
                                     info="matched_loss: each method trains until its smoothed loss reaches the target")
            target_loss = gr.Number(None, label="target loss (matched_loss; 0 or empty: LoRA's final loss per task)")
    with gr.Row():
        start = gr.Button("Start", variant="primary", elem_id="start", scale=2)
        stop = gr.Button("Stop", variant="stop", elem_id="stop", scale=1)
        run_id = gr.Textbox(label="Run", interactive=False, elem_id="run-id", scale=3)
    progress = gr.HTML(elem_id="progress")
    with gr.Row():
        loss_plot = gr.Plot(label="Loss", elem_id="loss-plot")
        ppl_plot = gr.Plot(label="Perplexity", elem_id="ppl-plot")
    heatmap = gr.Plot(label="Accuracy", elem_id="heatmap")
    forget_plot = gr.Plot(label="Forgetting", elem_id="forgetting-plot")
    with gr.Accordion("The same experiment as YAML and a CLI command", open=False):
        cli = gr.Markdown()
        with gr.Row():
            yaml_box = gr.Code(language="yaml", label="experiment.yaml", elem_id="config-yaml", scale=3)
            yaml_file = gr.File(label="Download experiment.yaml", scale=1)
        gr.Markdown("Start from a YAML instead (e.g. from presets/experiments/ or a run's config.yaml):")
        yaml_in = gr.Code(language="yaml", label="YAML to run", lines=6)
        start_yaml = gr.Button("Start this YAML")
    timer = gr.Timer(1.0)
    remembered = gr.BrowserState("", storage_key="curlora-last-run", secret="curlora-studio-last-run")

    form = [kinds, targets, c_r, c_alpha, c_sampling, c_seed, l_r, l_alpha, l_dropout, steps, lr, batch, max_len,
            scoring, probe_every, eval_rows, run_name, model["name"], model["dtype"], model["device"], comparison,
            target_loss, c_lr]

    def make_config(request, kinds, targets, c_r, c_alpha, c_sampling, c_seed, l_r, l_alpha, l_dropout, steps, lr,
                    batch, max_len, scoring, probe_every, eval_rows, run_name, name, dtype, device,
                    comparison="equal_lr", target_loss=None, c_lr=None) -> ExperimentConfig:
        tasks = sessions.get(request).tasks
        if not tasks:
            raise CurloraError("Add at least one task on the Tasks tab first (the three demo tasks are one click).")
        cfg = _defaults()
        cfg.model.name, cfg.model.dtype, cfg.model.device = (name or "").strip(), dtype, device
        cfg.tasks = list(tasks)
        cfg.methods = method_settings(kinds, targets, c_r, c_alpha, c_sampling, c_seed, l_r, l_alpha, l_dropout,
                                      c_lr)
        t, e = cfg.training, cfg.evaluation
        t.max_steps, t.lr, t.batch_size, t.max_length = int(steps), float(lr), int(batch), int(max_len)
        e.scoring, e.probe_every, e.eval_rows = scoring, int(probe_every or 0), int(eval_rows) if eval_rows else None
        cfg.run.name = (run_name or "studio").strip()
        if comparison == "matched_loss":
            t.comparison = "matched_loss"
            if target_loss not in (None, "") and float(target_loss) > 0:  # the empty box shows (and may send) 0
                t.target_loss = float(target_loss)
            else:  # LoRA sets the target, so it trains first
                t.matched_loss_reference = "lora"
                cfg.methods.sort(key=lambda m: m.label != "lora")
        cfg.check()
        return ExperimentConfig.from_dict(cfg.to_dict())  # the same validation a YAML file gets

    n = len(form)

    @with_request(n)
    @friendly
    def show_config(*values, request: gr.Request):
        try:
            cfg = make_config(request, *values)
        except CurloraError as err:
            return f"_{shown(str(err))}_", "", None
        text = jobs.policy.public_yaml(cfg, jobs.root)
        # One preview file per owner, rewritten on every edit (gradio keeps its own copy of what it serves).
        folder = jobs.policy.owner_dir(jobs.root, engine.owner(request)) / "preview"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "experiment.yaml"
        atomic_write_text(path, text)
        return ("Save it as `experiment.yaml` and run\n```\npython -m curlora run experiment.yaml\n```\n"
                "(runs land in `$CURLORA_DATA_DIR`, default `./runs`; the app lists them too)"), text, str(path)

    @friendly
    def count(kinds, targets, c_r, c_alpha, c_sampling, c_seed, l_r, l_alpha, l_dropout, name):
        try:
            settings = method_settings(kinds, targets, c_r, c_alpha, c_sampling, c_seed, l_r, l_alpha, l_dropout)
            numbers = trainable_parameters((name or "").strip(), settings)
        except (CurloraError, ValueError, TypeError) as err:
            return f"_Trainable parameters: {err}_"
        shown = [f"**{k}** {'hidden × classes per task' if v is None else f'{v:,}'}" for k, v in numbers.items()]
        return "Trainable parameters: " + " · ".join(shown)

    @with_request(n)
    @friendly
    def submit(*values, request: gr.Request):
        notices = []
        run = jobs.submit(make_config(request, *values), engine.owner(request), notices)
        for note in notices:
            gr.Info(note)
        return run, run, gr.Timer(active=True)

    @friendly
    def submit_yaml(text: str, request: gr.Request):
        notices = []
        run = jobs.submit(ExperimentConfig.from_yaml(text or "", source="the YAML box"), engine.owner(request),
                          notices)
        for note in notices:
            gr.Info(note)
        return run, run, gr.Timer(active=True)

    @friendly
    def cancel(rid: str, request: gr.Request):
        if not rid:
            raise CurloraError("No run to stop: start one first.")
        jobs.cancel(rid, engine.owner(request))
        gr.Info("Stopping after the current step; finished stages are kept (resume from the Runs tab).")

    @friendly
    def run_status(rid: str, request: gr.Request) -> dict:
        status, metrics, events = live.snapshot(jobs, rid, engine.owner(request))
        return {"run_id": rid, **status, "events": len(events), "metrics": metrics}

    def poll(rid: str, request: gr.Request):
        """Timer tick: redraw only what changed; stop ticking once the run is over."""
        if not rid:
            return (gr.skip(),) * 5 + (gr.Timer(active=False),)
        try:
            status, metrics, events = live.snapshot(jobs, rid, engine.owner(request))
        except CurloraError as err:
            return (f"<i>{html.escape(shown(str(err)))}</i>",) + (gr.skip(),) * 4 + (gr.Timer(active=False),)
        drawn = sessions.get(request).drawn
        sig = (rid,) + live.signature(status, events)
        finished = status["status"] not in ("running", "queued")
        if drawn.get("train") == sig:
            return (gr.skip(),) * 5 + (gr.Timer(active=not finished),)
        drawn["train"] = sig
        return (live.progress_html(rid, status, metrics, events), *live.figures(metrics, events),
                gr.Timer(active=not finished))

    def reattach(saved: str, request: gr.Request):
        """Page (re)load: the run this browser started last, else the run of this visitor's the server is training
        now (never another visitor's: hosted, the owner check refuses it)."""
        sessions.get(request).drawn.pop("train", None)
        owner = engine.owner(request)
        for rid in (saved, jobs.current()):
            if not rid:
                continue
            try:
                jobs.status(rid, owner)
            except CurloraError:
                continue
            return rid, gr.Timer(active=True)
        return "", gr.Timer(active=False)

    light = {"concurrency_limit": None}
    outputs = [progress, loss_plot, heatmap, ppl_plot, forget_plot, timer]
    start.click(submit, form, [run_id, remembered, timer], api_name="start", concurrency_limit=None)
    start_yaml.click(submit_yaml, yaml_in, [run_id, remembered, timer], api_name="start_yaml", concurrency_limit=None)
    stop.click(cancel, run_id, None, api_name="stop", **light)
    timer.tick(poll, run_id, outputs, api_name=False, show_progress="hidden", **light)
    run_id.change(poll, run_id, outputs, api_name=False, show_progress="hidden", **light)
    status_json = gr.JSON(visible=False)
    status_btn = gr.Button(visible=False)
    status_btn.click(run_status, run_id, status_json, api_name="run_status", **light)
    count_inputs = [kinds, targets, c_r, c_alpha, c_sampling, c_seed, l_r, l_alpha, l_dropout, model["name"]]
    for comp in count_inputs:
        comp.change(count, count_inputs, counts, api_name=False, show_progress="hidden", **light)
    for comp in form:
        comp.change(show_config, form, [cli, yaml_box, yaml_file], api_name=False, show_progress="hidden", **light)
    return {"run_id": run_id, "remembered": remembered, "timer": timer, "reattach": reattach, "count": count,
            "count_inputs": count_inputs, "counts": counts, "show_config": show_config, "form": form,
            "config_outputs": [cli, yaml_box, yaml_file]}
