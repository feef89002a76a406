"""Train tab: methods and their settings side by side, the config as YAML and CLI, Start / Stop, and the live view.

The widgets fill one ExperimentConfig (nothing else is sent to the engine). Start hands it to the JobManager,
which trains in its own thread: the run goes on when the page closes, and the timer here only reads the store.

`build` only makes the widgets and wires them; the handlers below are module-level functions that take the engine,
the Form and the widgets' values as one {component: value} dict (gradio's form for a set of inputs), so each can be
called without a browser. The form's values become the experiment's YAML shape (`experiment_dict`), and
ExperimentConfig.from_dict checks it as it checks a YAML file: a wrong value gets the config's own sentence.
"""

from __future__ import annotations

import dataclasses
import html
from dataclasses import dataclass
from typing import Any

import gradio as gr

from curlora.data.task_config import TaskConfig
from curlora.errors import CurloraError
from curlora.experiment import (COMPARISONS, DEFAULT_METHODS, QUANTIZATIONS, SAMPLING_RULES, SCORING_MODES,
                                ExperimentConfig, MethodSettings)
from curlora.methods.registry import GROUPS, kinds as registered, method
from curlora.models.loading import available_memory
from curlora.paths import QUICK_DEMO, REAL_DEMO
from curlora.run.estimate import memory_text, trainable_parameters, training_memory
from curlora.run.store import atomic_write_text
from curlora.ui import live
from curlora.ui.common import Engine, friendly, handler, shown

# The form starts from the preset of the default base model; the picker above the form loads either.
DEMOS = {"quick-demo": ("Quick demo: the bundled 5M model, about 3 min", QUICK_DEMO),
         "real-demo": ("Real demo: SmolLM2-135M-Instruct (docs/demo-cost.md)", REAL_DEMO)}
METHODS = [(method(k).title, k) for group in GROUPS for k in registered() if method(k).group == group]  # form order
GROUPED = " · ".join(f"{group}: {', '.join(t for t, k in METHODS if method(k).group == group)}" for group in GROUPS)
SECTIONS = ("model", "training", "evaluation", "run")  # the config's sections a form path may name
# Boxes whose empty value (or the 0 an emptied number box shows, and may send) means the setting's None: the default
# scale, the shared learning rate, epochs instead of steps, every eval row, LoRA's final loss as the target. Any
# other empty box keeps the preset's value. (tests/test_train_handlers.py checks each is an optional field.)
NONE_WHEN_EMPTY = frozenset({"curlora.alpha", "curlora.lr", "lora.alpha", "training.max_steps",
                             "evaluation.eval_rows", "training.target_loss"})
MATCHED_LOSS = ("training.comparison", "training.target_loss")  # set together, only for matched_loss


def default_demo() -> str:
    """The real demo where SmolLM2 is the app's default model (its package is installed), else the quick demo."""
    from curlora.models.gguf import PACKAGED
    from curlora.models.presets import default_model_name

    return "real-demo" if default_model_name() in PACKAGED else "quick-demo"


def preset_config(demo: str | None = None) -> ExperimentConfig:
    """The preset the form starts from (the default demo's unless `demo` names one): the settings it doesn't show."""
    try:
        return ExperimentConfig.load(DEMOS[demo or default_demo()][1])
    except CurloraError:
        return ExperimentConfig(tasks=[{"name": "x", "train_file": "x.csv"}])


def _targets(text: str) -> list[str] | None:
    names = [t.strip() for t in (text or "").replace("\n", ",").split(",") if t.strip()]
    return names or None


def _put(section: dict, path: str, key: str, value) -> None:
    """Put one box's value into its section of the experiment dict as the box holds it: the config checks its type.
    An empty box leaves the preset's value, or None where the path is in NONE_WHEN_EMPTY."""
    clear = path in NONE_WHEN_EMPTY
    if value is None or value == "" or (clear and value == 0):
        if clear:
            section[key] = None
        return
    section[key] = value.strip() if isinstance(value, str) else value


@dataclass
class Form:
    """The Train form: config path -> widget. `<kind>.<field>` is that method column's field (its own, or the
    column its registered class names, as LoRA's peers share LoRA's); `preset` is not a config field but which preset
    gives the settings the form doesn't show. The /start API takes the values in this order."""

    fields: dict[str, Any]

    @property
    def components(self) -> list:
        return list(self.fields.values())

    @property
    def paths(self) -> list[str]:
        return list(self.fields)

    @property
    def count_paths(self) -> list[str]:
        """What the trainable-parameter count reads: the methods, their columns and the model."""
        columns = ("methods", *dict(METHODS).values())
        return [p for p in self.fields if p.split(".")[0] in columns] + ["model.name"]

    def read(self, values: dict) -> dict[str, Any]:
        """{component: value} (what gradio passes for a set of inputs) as {config path: value}; widgets not in
        `values` are left out."""
        return {path: values[c] for path, c in self.fields.items() if c in values}


def form_values(cfg: ExperimentConfig, paths: list[str]) -> list:
    """The Train form's values for an experiment (the inverse of experiment_dict, field by field): what loading a
    preset puts in each widget. A method column the experiment doesn't have keeps its widget's value (gr.skip)."""
    by_column = {(method(m.kind).column or m.kind): m for m in cfg.methods}
    out = []
    for path in paths:
        section, _, key = path.partition(".")
        if path == "methods":
            out.append([m.kind for m in cfg.methods])
        elif path == "methods.target_modules":
            first = next((m for m in cfg.methods if m.target_modules), None)
            out.append(", ".join(first.target_modules) if first else "")
        elif section in SECTIONS:
            out.append(getattr(getattr(cfg, section), key))
        elif section in by_column:
            out.append(getattr(by_column[section], key))
        else:  # the preset picker, and a column this experiment has no method for
            out.append(gr.skip())
    return out


def method_settings(values: dict) -> list[MethodSettings]:
    """The methods of the form: the ticked kinds, each with the fields of its column ('curlora.r', 'lora.r', …: its
    own, or the one its registered class names, as LoRA's peers share LoRA's) and the shared target modules for the
    kinds that attach adapters. The values are the boxes' own; ExperimentConfig.from_dict checks them."""
    kinds = values.get("methods") or []
    if not kinds:
        raise CurloraError("Pick at least one method (CURLoRA and LoRA side by side is the point).")
    out = []
    for _, kind in METHODS:
        if kind not in kinds:
            continue
        fields = {"kind": kind}
        if method(kind).has_adapter:
            fields["target_modules"] = _targets(values.get("methods.target_modules"))
        column = method(kind).column or kind
        for path, value in values.items():
            if path.startswith(column + "."):
                _put(fields, path, path[len(column) + 1:], value)
        out.append(MethodSettings(**fields))
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


def experiment_dict(tasks: list[TaskConfig], values: dict[str, Any]) -> dict:
    """The form's experiment in the shape of its YAML: the chosen preset (the settings the form doesn't show), the
    session's tasks, the form's methods and boxes over them. matched_loss with no target loss lets LoRA set each
    task's target, so LoRA trains first."""
    if not tasks:
        raise CurloraError("Add at least one task on the Tasks tab first (the three demo tasks are one click).")
    cfg = preset_config(values.get("preset") if values.get("preset") in DEMOS else None)
    cfg.tasks = list(tasks)
    cfg.methods = method_settings(values)
    data = cfg.to_dict()
    for path, value in values.items():
        section, _, key = path.partition(".")
        if section in SECTIONS and path not in MATCHED_LOSS:
            _put(data[section], path, key, value)
    data["run"]["name"] = (values.get("run.name") or "").strip() or "studio"
    data["model"]["name"] = (values.get("model.name") or "").strip()  # empty: "No model chosen", not a default
    training = data["training"]
    if values.get("training.comparison") == "matched_loss":
        training["comparison"] = "matched_loss"
        _put(training, "training.target_loss", "target_loss", values.get("training.target_loss"))
        if training["target_loss"] is None:
            training["matched_loss_reference"] = "lora"
            data["methods"].sort(key=lambda m: (m["name"] or m["kind"]) != "lora")
    return data


def form_config(tasks: list[TaskConfig], values: dict[str, Any]) -> ExperimentConfig:
    """The form's experiment, checked as a YAML file is (ExperimentConfig.from_dict): one sentence per wrong value."""
    return ExperimentConfig.from_dict(experiment_dict(tasks, values))


def make_config(engine: Engine, request: gr.Request | None, values: dict[str, Any]) -> ExperimentConfig:
    """The experiment of this session's task list and the form's values ({config path: value})."""
    return form_config(engine.sessions.get(request).tasks, values)


# -- handlers: each takes the engine and the Form first (bound in build), then the widgets' {component: value} -----

@friendly
def load_demo(form: Form, key: str) -> list:
    """The preset picker: the form's values from that preset, the run named after it."""
    values = form_values(preset_config(key), form.paths)
    values[form.paths.index("run.name")] = key
    return values


@friendly
def show_config(engine: Engine, form: Form, values: dict, request: gr.Request):
    """The form as YAML and a CLI command, and the YAML as a file to download (or the config's sentence)."""
    jobs = engine.jobs
    try:
        cfg = make_config(engine, request, form.read(values))
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
def count(form: Form, values: dict) -> str:
    """Each ticked method's trainable parameters on the chosen model (from the config alone)."""
    values = form.read(values)
    try:
        settings = method_settings(values)
        numbers = trainable_parameters((values.get("model.name") or "").strip(), settings)
    except (CurloraError, ValueError, TypeError) as err:
        return f"_Trainable parameters: {err}_"
    notes = {m.label: method(m.kind).trainable_note for m in settings}
    parts = [f"**{k}** {notes[k] if v is None else f'{v:,}'}" for k, v in numbers.items()]
    return "Trainable parameters: " + " · ".join(parts)


@friendly
def estimate_memory(engine: Engine, form: Form, values: dict, request: gr.Request) -> str:
    try:
        cfg = make_config(engine, request, form.read(values))
        est = training_memory(cfg)
        free = available_memory(est["device"])
    except (CurloraError, ValueError, TypeError) as err:
        return f"_Memory: {shown(str(err))}_"
    warn = " — **will not fit**: lower the batch size or max tokens, or turn on checkpointing or 4bit" \
        if est["total"] > free else ""
    return f"Memory: {memory_text(est, free)}{warn}"


def calibrated(engine: Engine, request: gr.Request, cfg: ExperimentConfig, estimator) -> str:
    """An estimate's text as Markdown: `estimator(limits)` (a run's or a study's calibration) once the host's policy
    admits `cfg` and the visitor's allowance of device actions has room (Policy.allow_device), on the device (it trains
    a few steps: it waits its turn like a stage)."""
    jobs = engine.jobs
    jobs.policy.check_config(cfg, jobs.root, engine.owner(request))
    engine.allow_device(request)
    limits = jobs.policy.limits if jobs.policy.hosted else None
    with jobs.gate.hold("a time estimate"):
        est = jobs.gate.on_device(lambda: estimator(limits))
    return est.text().replace("\n", "  \n")


@friendly
def estimate_time(engine: Engine, form: Form, values: dict, request: gr.Request) -> str:
    """The run's time on this machine, from a calibration on the device."""
    from curlora.run.cost import estimate_config

    cfg = make_config(engine, request, form.read(values))
    return calibrated(engine, request, cfg, lambda limits: estimate_config(cfg, limits=limits))


def _submitted(engine: Engine, cfg: ExperimentConfig, request: gr.Request):
    notices = []
    run = engine.jobs.submit(cfg, engine.owner(request), notices, client=engine.client(request))
    for note in notices:
        gr.Info(note)
    return run, run, gr.Timer(active=True)


@friendly
def submit(engine: Engine, form: Form, values: dict, request: gr.Request):
    # Start (no docstring: gradio would show it as the /start API's description)
    return _submitted(engine, make_config(engine, request, form.read(values)), request)


@friendly
def submit_yaml(engine: Engine, text: str, request: gr.Request):
    cfg = ExperimentConfig.from_yaml(text or "", source="the YAML box", aliases=not engine.hosted)
    return _submitted(engine, cfg, request)


@friendly
def cancel(engine: Engine, rid: str, request: gr.Request):
    if not rid:
        raise CurloraError("No run to stop: start one first.")
    engine.jobs.cancel(rid, engine.owner(request))
    gr.Info("Stopping after the current step; finished stages are kept (resume from the Runs tab).")


@friendly
def run_status(engine: Engine, rid: str, request: gr.Request) -> dict:
    status, metrics, events = live.snapshot(engine.jobs, rid, engine.owner(request))
    return {"run_id": rid, **status, "events": len(events), "metrics": metrics.to_json() if metrics else {}}


def poll(engine: Engine, rid: str, request: gr.Request):
    """Timer tick: redraw only what changed; stop ticking once the run is over."""
    if not rid:
        return (gr.skip(),) * 5 + (gr.Timer(active=False),)
    try:
        status, metrics, events = live.snapshot(engine.jobs, rid, engine.owner(request))
    except CurloraError as err:
        return (f"<i>{html.escape(shown(str(err)))}</i>",) + (gr.skip(),) * 4 + (gr.Timer(active=False),)
    drawn = engine.sessions.get(request).drawn
    sig = (rid,) + live.signature(status, events)
    finished = status["status"] not in ("running", "queued")
    if drawn.get("train") == sig:
        return (gr.skip(),) * 5 + (gr.Timer(active=not finished),)
    drawn["train"] = sig
    return (live.progress_html(rid, status, metrics, events), *live.redraw(drawn, rid, metrics, events),
            gr.Timer(active=not finished))


def reattach(engine: Engine, saved: str, request: gr.Request):
    """Page (re)load: the run this browser started last, else the run of this visitor's the server is training
    now (never another visitor's: hosted, the owner check refuses it)."""
    live.forget(engine.sessions.get(request).drawn)
    owner = engine.owner(request)
    for rid in (saved, engine.jobs.current()):
        if not rid:
            continue
        try:
            engine.jobs.status(rid, owner)
        except CurloraError:
            continue
        return rid, gr.Timer(active=True)
    return "", gr.Timer(active=False)


def build(engine: Engine, model: dict) -> dict:
    d = preset_config()
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
            quantization = gr.Dropdown(list(QUANTIZATIONS), value=d.model.quantization,
                                       label="base quantisation (bitsandbytes)",
                                       info="4bit: NF4 (QLoRA); the adapters train on top in the compute dtype")
        with gr.Column(scale=1, min_width=220):
            gr.Markdown("**Evaluation**")
            scoring = gr.Dropdown(list(SCORING_MODES), value=d.evaluation.scoring, label="scoring")
            probe_every = gr.Number(d.evaluation.probe_every, label="probe earlier tasks every N steps (0: off)",
                                    precision=0, minimum=0)
            eval_rows = gr.Number(d.evaluation.eval_rows, label="eval rows per task (empty: all)", precision=0)
            run_name = gr.Textbox(d.run.name if d.run.name != "quick-demo" else "studio", label="run name")
            comparison = gr.Dropdown(list(COMPARISONS), value=COMPARISONS[0], label="comparison",
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
    status_json = gr.JSON(visible=False)
    status_btn = gr.Button(visible=False)

    # Config path -> widget: adding a setting to the form is one line here. The /start API takes the values in
    # this order, so a new widget goes at the end.
    form = Form({
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
        "preset": demo_pick,
    })
    widgets, counted = set(form.components), {form.fields[p] for p in form.count_paths}
    light = {"concurrency_limit": None}
    quiet = {"api_name": False, "show_progress": "hidden", **light}
    live_outputs = [progress, loss_plot, heatmap, ppl_plot, forget_plot, timer]
    show = handler(show_config, engine, form)
    counter = handler(count, form)
    start.click(handler(submit, engine, form, inputs=form.components), form.components, [run_id, remembered, timer],
                api_name="start", **light)
    start_yaml.click(handler(submit_yaml, engine), yaml_in, [run_id, remembered, timer], api_name="start_yaml",
                     **light)
    stop.click(handler(cancel, engine), run_id, None, api_name="stop", **light)
    demo_pick.input(handler(load_demo, form), demo_pick, form.components, api_name=False, **light)
    time_btn.click(handler(estimate_time, engine, form, inputs=form.components), form.components, time_box,
                   api_name="estimate_time", concurrency_id="gpu", concurrency_limit=1)
    timer.tick(handler(poll, engine), run_id, live_outputs, **quiet)
    run_id.change(handler(poll, engine), run_id, live_outputs, **quiet)
    status_btn.click(handler(run_status, engine), run_id, status_json, api_name="run_status", **light)
    for path in form.count_paths:
        form.fields[path].change(counter, counted, counts, **quiet)
    memory_of = handler(estimate_memory, engine, form)
    for comp in form.components:
        comp.change(show, widgets, [cli, yaml_box, yaml_file], **quiet)
        comp.change(memory_of, widgets, memory, **quiet)
    return {"run_id": run_id, "remembered": remembered, "timer": timer, "count": counter, "count_inputs": counted,
            "counts": counts, "show_config": show, "form": form.components, "widgets": widgets, "paths": form.paths,
            "config_outputs": [cli, yaml_box, yaml_file]}
