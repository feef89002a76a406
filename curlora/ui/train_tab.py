"""Train tab: methods and their settings side by side, the config as YAML and CLI, Start / Stop, and the live view.

The widgets fill one ExperimentConfig (nothing else is sent to the engine). Start hands it to the JobManager,
which trains in its own thread: the run goes on when the page closes, and the timer here only reads the store.
"""

from __future__ import annotations

import dataclasses
import html
import typing

import gradio as gr

from curlora.errors import CurloraError, clip
from curlora.experiment import SAMPLING_RULES, ExperimentConfig, MethodSettings
from curlora.methods.registry import kinds as registered, method
from curlora.models.loading import available_memory
from curlora.paths import QUICK_DEMO, REAL_DEMO
from curlora.run.estimate import memory_text, trainable_parameters, training_memory
from curlora.run.store import atomic_write_text
from curlora.ui import live
from curlora.ui.common import Engine, friendly, shown, with_request

# The form starts from the preset of the default base model; the picker above the form loads either.
DEMOS = {"quick-demo": ("Quick demo: the bundled 5M model, about 3 min", QUICK_DEMO),
         "real-demo": ("Real demo: SmolLM2-135M-Instruct (docs/demo-cost.md)", REAL_DEMO)}
GROUPS = ("forgetting-aware", "LoRA family", "baselines")
DEFAULT_METHODS = ("curlora", "lora")  # the form's methods until the visitor picks others
METHODS = [(method(k).title, k) for group in GROUPS for k in registered() if method(k).group == group]  # form order
GROUPED = " · ".join(f"{group}: {', '.join(t for t, k in METHODS if method(k).group == group)}" for group in GROUPS)


def default_demo() -> str:
    """The real demo where SmolLM2 is the app's default model (its package is installed), else the quick demo."""
    from curlora.models.gguf import PACKAGED
    from curlora.models.presets import default_model_name

    return "real-demo" if default_model_name() in PACKAGED else "quick-demo"


def _defaults(demo: str | None = None) -> ExperimentConfig:
    try:
        return ExperimentConfig.load(DEMOS[demo or default_demo()][1])
    except CurloraError:
        return ExperimentConfig(tasks=[{"name": "x", "train_file": "x.csv"}])


def _targets(text: str) -> list[str] | None:
    names = [t.strip() for t in (text or "").replace("\n", ",").split(",") if t.strip()]
    return names or None


def _assign(obj, key: str, value) -> None:
    """Set obj.key from a widget's value, converted to the field's type: an empty box (or a 0 in a box whose field
    may be None, such as eval rows or a target loss) leaves None; any other empty box keeps the default."""
    hints = typing.get_type_hints(type(obj))
    if key not in hints:
        raise CurloraError(f"The Train form has no setting {clip(key)}.")
    tp = hints[key]
    optional = type(None) in typing.get_args(tp)
    base = next((a for a in typing.get_args(tp) if a is not type(None)), tp)
    if value in (None, "") or (optional and base in (int, float) and value == 0):
        if optional:
            setattr(obj, key, None)
        return
    setattr(obj, key, base(value.strip() if isinstance(value, str) else value) if base in (int, float, str) else value)


def form_values(cfg: ExperimentConfig, paths: list[str]) -> list:
    """The Train form's values for an experiment (the inverse of make_config, field by field): what loading a preset
    puts in each widget. A method column the experiment doesn't have keeps its widget's value (gr.skip)."""
    by_column = {(method(m.kind).column or m.kind): m for m in cfg.methods}
    out = []
    for path in paths:
        section, _, key = path.partition(".")
        if path == "methods":
            out.append([m.kind for m in cfg.methods])
        elif path == "methods.target_modules":
            first = next((m for m in cfg.methods if m.target_modules), None)
            out.append(", ".join(first.target_modules) if first else "")
        elif section in ("model", "training", "evaluation", "run"):
            out.append(getattr(getattr(cfg, section), key))
        elif section in by_column:
            out.append(getattr(by_column[section], key))
        elif path == "preset":
            out.append(gr.skip())
        else:
            out.append(gr.skip())
    return out


def method_settings(values: dict) -> list[MethodSettings]:
    """The methods of the form: the ticked kinds, each with the fields of its column ('curlora.r', 'lora.r', …: its
    own, or the one its registered class names, as LoRA's peers share LoRA's) and the shared target modules for the
    kinds that attach adapters."""
    kinds = values.get("methods") or []
    if not kinds:
        raise CurloraError("Pick at least one method (CURLoRA and LoRA side by side is the point).")
    out = []
    for _, kind in METHODS:
        if kind not in kinds:
            continue
        settings = MethodSettings(kind=kind)
        if method(kind).has_adapter:
            settings.target_modules = _targets(values.get("methods.target_modules"))
        column = method(kind).column or kind
        for path, value in values.items():
            if path.startswith(column + "."):
                _assign(settings, path[len(column) + 1:], value)
        out.append(settings)
    return with_replay(out, values)


def with_replay(methods: list[MethodSettings], values: dict) -> list[MethodSettings]:
    """The replay box: every ticked method that can replay gets that share, as a '<label>-replay' copy beside the
    plain one (so both rows are in one run) or, with 'beside' unticked, in its place."""
    share = values.get("methods.replay") or 0
    if not share:
        return methods
    beside = values.get("methods.replay_beside", True)

    def replays(m):
        return method(m.kind).trains and method(m.kind).replays

    if not any(replays(m) for m in methods):
        raise CurloraError("Experience replay needs a ticked method that trains on the tasks (CURLoRA, LoRA, …); "
                           "tick one or set the replay share to 0.")
    out = []
    for m in methods:
        if not replays(m):
            out.append(m)
            continue
        replayed = dataclasses.replace(m, replay=float(share), name=f"{m.label}-replay" if beside else m.name)
        out += [m, replayed] if beside else [replayed]
    return out


def build(engine: Engine, model: dict) -> dict:
    jobs, sessions = engine.jobs, engine.sessions
    d = _defaults()
    preset = {m.kind: m for m in d.methods}
    cur, lora = preset.get("curlora", MethodSettings(kind="curlora")), preset.get("lora", MethodSettings(kind="lora"))

    gr.Markdown("Every ticked method trains on the same tasks, in the same order, with the same data order. CURLoRA "
                "may have its own learning rate (its U starts at zero between frozen low-norm columns and rows, so it "
                "usually needs a larger one); leave it empty for one shared rate, or compare at matched loss. Runs "
                "live on the server: close the tab and come back, the run keeps going.")
    demo_pick = gr.Dropdown([(label, key) for key, (label, _) in DEMOS.items()], value=default_demo(),
                            label="Start from a preset (sets the base model and this form; tasks stay as they are)",
                            elem_id="train-preset")
    with gr.Accordion("What each method does, and what it needs", open=False):
        gr.Markdown("\n".join(f"- **{title}** ({method(k).group}): {method(k).help}" for title, k in METHODS))
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=260):
            kinds = gr.CheckboxGroup(METHODS, value=list(DEFAULT_METHODS), label="Methods", info=GROUPED,
                                     elem_id="methods")
            targets = gr.Textbox(", ".join(cur.target_modules or []), label="Target modules (every adapter)")
            counts = gr.Markdown(elem_id="trainable-counts")
            memory = gr.Markdown(elem_id="memory-estimate")
            time_btn = gr.Button("Estimate time (measures a few steps)", size="sm", elem_id="time-estimate-btn")
            time_box = gr.Markdown(elem_id="time-estimate")
        with gr.Column(scale=1, min_width=200):
            gr.Markdown("**CURLoRA** — trains only U (r × r); C, R sampled from W, frozen")
            c_r = gr.Number(cur.r, label="rank r", precision=0, minimum=1)
            c_alpha = gr.Number(1.0 if cur.alpha is None else cur.alpha, label="alpha (scale of C·U·R; paper: 1)")
            c_sampling = gr.Dropdown(list(SAMPLING_RULES), value=cur.sampling, label="column/row sampling")
            c_seed = gr.Number(cur.seed, label="sampling seed", precision=0)
            c_lr = gr.Number(cur.lr, label="learning rate (empty: the shared one)", elem_id="curlora-lr")
        with gr.Column(scale=1, min_width=200):
            gr.Markdown("**LoRA** (PEFT) — trains A (r × in) and B (out × r); these boxes also set "
                        + ", ".join(method(k).title for _, k in METHODS if method(k).column == "lora"))
            l_r = gr.Number(lora.r, label="rank r", precision=0, minimum=1)
            l_alpha = gr.Number(lora.alpha or lora.r, label="lora_alpha (paper: = r, scale 1)")
            l_dropout = gr.Number(lora.dropout, label="dropout", minimum=0, maximum=0.9)
        with gr.Column(scale=1, min_width=220):
            gr.Markdown("**Training** (shared)")
            steps = gr.Number(d.training.max_steps, label="steps per task", precision=0, minimum=1)
            lr = gr.Number(d.training.lr, label="learning rate (LoRA, and CURLoRA unless set)")
            batch = gr.Number(d.training.batch_size, label="batch size", precision=0, minimum=1)
            max_len = gr.Number(d.training.max_length, label="max tokens per example", precision=0, minimum=8)
            checkpointing = gr.Checkbox(d.training.gradient_checkpointing, label="gradient checkpointing",
                                        info="less activation memory, about a third more time per step")
            replay = gr.Number(0, label="experience replay: share of each batch from earlier tasks (0: off)",
                               minimum=0, maximum=0.95, elem_id="replay-share")
            replay_beside = gr.Checkbox(True, label="replay beside: each method also without replay",
                                        info="'<method>-replay' rows next to the plain ones; joint, base and "
                                             "head-only never replay")
            grouped = gr.Checkbox(d.training.group_by_length, label="group rows by length",
                                  info="batches of similar-length rows (seeded, the same for every method): "
                                       "less padding per step")
            quantization = gr.Dropdown(["none", "8bit", "4bit"], value=d.model.quantization,
                                       label="base quantisation (bitsandbytes)",
                                       info="4bit: NF4 (QLoRA); the adapters train on top in the compute dtype")
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

    # Config path -> widget: adding a setting to the form is one line here. `<kind>.<field>` is that method's
    # field; the /start API takes the values in this order.
    fields = {
        "methods": kinds, "methods.target_modules": targets,
        "curlora.r": c_r, "curlora.alpha": c_alpha, "curlora.sampling": c_sampling, "curlora.seed": c_seed,
        "lora.r": l_r, "lora.alpha": l_alpha, "lora.dropout": l_dropout,
        "training.max_steps": steps, "training.lr": lr, "training.batch_size": batch, "training.max_length": max_len,
        "evaluation.scoring": scoring, "evaluation.probe_every": probe_every, "evaluation.eval_rows": eval_rows,
        "run.name": run_name, "model.name": model["name"], "model.dtype": model["dtype"],
        "model.device": model["device"], "training.comparison": comparison, "training.target_loss": target_loss,
        "curlora.lr": c_lr, "training.gradient_checkpointing": checkpointing,
        "model.quantization": quantization, "training.group_by_length": grouped,
        "methods.replay": replay, "methods.replay_beside": replay_beside,
        "preset": demo_pick,  # not a config field: which preset gives the settings the form doesn't show
    }
    form = list(fields.values())
    paths = list(fields)

    def make_config(request, values: dict) -> ExperimentConfig:
        tasks = sessions.get(request).tasks
        if not tasks:
            raise CurloraError("Add at least one task on the Tasks tab first (the three demo tasks are one click).")
        cfg = _defaults(values.get("preset") if values.get("preset") in DEMOS else None)
        cfg.tasks = list(tasks)
        cfg.methods = method_settings(values)
        for path, value in values.items():
            section, _, key = path.partition(".")
            if section in ("model", "training", "evaluation", "run") and key not in ("comparison", "target_loss"):
                _assign(getattr(cfg, section), key, value)
        cfg.run.name = (values.get("run.name") or "").strip() or "studio"
        cfg.model.name = (values.get("model.name") or "").strip()  # empty: "No model chosen", not a silent default
        t = cfg.training
        if values.get("training.comparison") == "matched_loss":
            t.comparison = "matched_loss"
            _assign(t, "target_loss", values.get("training.target_loss"))  # the empty box shows (and may send) 0
            if t.target_loss is None:  # LoRA sets the target, so it trains first
                t.matched_loss_reference = "lora"
                cfg.methods.sort(key=lambda m: m.label != "lora")
        cfg.check()
        return ExperimentConfig.from_dict(cfg.to_dict())  # the same validation a YAML file gets

    n = len(form)

    @friendly
    def load_demo(key: str):
        values = form_values(_defaults(key), paths)
        values[paths.index("run.name")] = key
        return values

    @with_request(n)
    @friendly
    def show_config(*values, request: gr.Request):
        try:
            cfg = make_config(request, dict(zip(paths, values)))
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

    count_paths = [p for p in paths if p.split(".")[0] in ("methods", *dict(METHODS).values())] + ["model.name"]

    @friendly
    def count(*values):
        values = dict(zip(count_paths, values))
        try:
            settings = method_settings(values)
            numbers = trainable_parameters((values["model.name"] or "").strip(), settings)
        except (CurloraError, ValueError, TypeError) as err:
            return f"_Trainable parameters: {err}_"
        notes = {m.label: method(m.kind).trainable_note for m in settings}
        shown = [f"**{k}** {notes[k] if v is None else f'{v:,}'}" for k, v in numbers.items()]
        return "Trainable parameters: " + " · ".join(shown)

    @with_request(n)
    @friendly
    def estimate_memory(*values, request: gr.Request):
        try:
            cfg = make_config(request, dict(zip(paths, values)))
            est = training_memory(cfg)
            free = available_memory(est["device"])
        except (CurloraError, ValueError, TypeError) as err:
            return f"_Memory: {shown(str(err))}_"
        warn = " — **will not fit**: lower the batch size or max tokens, or turn on checkpointing or 4bit" \
            if est["total"] > free else ""
        return f"Memory: {memory_text(est, free)}{warn}"

    @with_request(n)
    @friendly
    def estimate_time(*values, request: gr.Request):
        """The run's time on this machine, from a calibration on the device (it waits its turn like a stage)."""
        from curlora.run.cost import estimate_config

        cfg = make_config(request, dict(zip(paths, values)))
        jobs.policy.check_config(cfg, jobs.root, engine.owner(request))
        limits = jobs.policy.limits if jobs.policy.hosted else None
        with jobs.gate.hold("a time estimate"):  # it trains a few steps: it waits for the device like a stage
            est = jobs.gate.on_device(lambda: estimate_config(cfg, limits=limits))
        return est.text().replace("\n", "  \n")

    @with_request(n)
    @friendly
    def submit(*values, request: gr.Request):
        notices = []
        run = jobs.submit(make_config(request, dict(zip(paths, values))), engine.owner(request), notices,
                          client=engine.client(request))
        for note in notices:
            gr.Info(note)
        return run, run, gr.Timer(active=True)

    @friendly
    def submit_yaml(text: str, request: gr.Request):
        notices = []
        run = jobs.submit(ExperimentConfig.from_yaml(text or "", source="the YAML box", aliases=not engine.hosted),
                          engine.owner(request), notices, client=engine.client(request))
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
        return {"run_id": rid, **status, "events": len(events), "metrics": metrics.to_json() if metrics else {}}

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
        return (live.progress_html(rid, status, metrics, events), *live.redraw(drawn, rid, metrics, events),
                gr.Timer(active=not finished))

    def reattach(saved: str, request: gr.Request):
        """Page (re)load: the run this browser started last, else the run of this visitor's the server is training
        now (never another visitor's: hosted, the owner check refuses it)."""
        live.forget(sessions.get(request).drawn)
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
    demo_pick.input(load_demo, demo_pick, form, api_name=False, **light)
    time_btn.click(estimate_time, form, time_box, api_name="estimate_time", concurrency_id="gpu", concurrency_limit=1)
    timer.tick(poll, run_id, outputs, api_name=False, show_progress="hidden", **light)
    run_id.change(poll, run_id, outputs, api_name=False, show_progress="hidden", **light)
    status_json = gr.JSON(visible=False)
    status_btn = gr.Button(visible=False)
    status_btn.click(run_status, run_id, status_json, api_name="run_status", **light)
    count_inputs = [fields[p] for p in count_paths]
    for comp in count_inputs:
        comp.change(count, count_inputs, counts, api_name=False, show_progress="hidden", **light)
    for comp in form:
        comp.change(show_config, form, [cli, yaml_box, yaml_file], api_name=False, show_progress="hidden", **light)
        comp.change(estimate_memory, form, memory, api_name=False, show_progress="hidden", **light)
    return {"run_id": run_id, "remembered": remembered, "timer": timer, "reattach": reattach, "count": count,
            "count_inputs": count_inputs, "counts": counts, "show_config": show_config, "form": form,
            "paths": paths, "make_config": make_config,
            "config_outputs": [cli, yaml_box, yaml_file]}
