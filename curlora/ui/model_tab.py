"""Model tab: pick a preset (the bundled model first) or type a hub id / folder; see what it is before loading."""

from __future__ import annotations

import contextlib

import gradio as gr

from curlora.experiment import SAMPLING_RULES
from curlora.measure.cur_sampling import inspect_model, table
from curlora.models.loading import DEVICE_NAMES, DTYPE_NAMES, describe_model, hub_only, load_model
from curlora.models.presets import default_model_name, gpu_24gb_text, load_model_presets, quality
from curlora.ui.common import friendly
from curlora.ui.sampling_charts import sampling_figure


def _gb(n: int | None) -> str:
    return "unknown" if n is None else f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


def describe(choice: str, dtype: str, policy=None) -> str:
    choice = (choice or "").strip()
    if not choice:
        raise gr.Error("Choose a model or type a hub id or a local folder.")
    hosted = bool(policy and policy.hosted)
    if policy is not None:
        policy.check_model(choice)  # hosted: no server folders (an upload must never become a model)
    with hub_only(hosted):  # hosted, a name is never looked up as a server path
        d = describe_model(choice, dtype=dtype, device="auto")
    preset = load_model_presets().get(choice)
    lines = [f"### {preset.label if preset else choice}",
             f"- **architecture** {d.architecture or 'unknown'} ({d.model_type or '?'})",
             f"- **parameters** {d.parameters:,}" if d.parameters else "- **parameters** unknown",
             f"- **weights in memory ({d.dtype})** {_gb(d.memory_bytes)}",
             f"- **adaptable modules** {', '.join(d.target_modules) or '–'}",
             f"- **source** {d.source}{' — `' + d.path + '`' if d.path and not hosted else ''}"]
    if d.weights:
        lines.append(f"- **weights** {d.weights}")
    if preset:
        lines.append(f"- **suggested** rank {preset.rank}, targets {', '.join(preset.target_modules)}")
        lines.append(f"- **license** {preset.license}")
        if gpu_24gb_text(preset):
            lines.append(f"- **fits a 24 GB GPU with** {gpu_24gb_text(preset)} (the training-memory estimate, "
                         "tests/test_preset_memory.py)")
        if preset.notes:
            lines.append(f"\n{preset.notes}")
        lines += quality_lines(choice)
    if d.note:
        lines.append(f"\n_Note: {d.note}_")
    return "\n".join(lines)


def quality_lines(choice: str) -> list[str]:
    """What this project measured of the preset, each number with its protocol (presets/quality/<name>.json)."""
    q = quality(choice)
    if q is None:
        return []
    lines = [f"\n**Measured by this project** ({q.weights}; `{q.measured_by}`, {q.machine}):",
             f"- WikiText-2 test perplexity **{q.perplexity:.1f}** ({q.protocol})",
             f"- zero-shot ({q.scoring}): " + "; ".join(z.text() for z in q.zero_shot)]
    if q.reply:
        lines.append(f"- greedy reply to \"What is the capital of France?\": \"{q.reply}\"")
    return lines


def template_text(choice: str) -> str:
    """The chat template of a described model, for the Model tab's accordion ("" when it has none or is not
    local yet)."""
    from curlora.models.loading import load_tokenizer, locate

    try:
        _, folder = locate(choice)
        tok = load_tokenizer(folder, choice)
    except Exception:  # noqa: BLE001 — a hub id not cached, a folder without a tokenizer: nothing to show
        return ""
    template = getattr(tok, "chat_template", None)
    return template if isinstance(template, str) else ""


def inspect_sampling(choice: str, dtype: str, r, rule: str, seed, policy=None, gate=None, allow=None):
    """(report, summary, matrix choices, columns figure, rows figure, table) for the chosen model, loaded on the CPU
    for this click only: the report kept in the page's state holds no weights. `allow`: called once the model is
    admitted, before the device is taken (the visitor's allowance)."""
    choice = (choice or "").strip()
    if not choice:
        raise gr.Error("Choose a model first.")
    if policy is not None:
        policy.check_model(choice)
    if allow is not None:
        allow()
    # Under the device gate (never beside a training stage or a chat reply), hosted never as a server folder, and
    # load_model refuses weights larger than the free memory before reading them.
    with gate.hold("inspecting a model's sampling") if gate is not None else contextlib.nullcontext():
        with hub_only(bool(policy and policy.hosted)):
            model, _, _ = load_model(choice, dtype=dtype, device="cpu")
        try:
            report = inspect_model(model, r=int(r or 0), sampling=rule, seed=int(seed or 0))
        finally:
            del model
    first = report["matrices"][0]
    headers, rows = table(report)
    return (report, report["summary"], gr.update(choices=[m["name"] for m in report["matrices"]], value=first["name"]),
            sampling_figure(first, "columns"), sampling_figure(first, "rows"), {"headers": headers, "data": rows})


def pick_matrix(report: dict | None, name: str):
    matrix = next((m for m in (report or {}).get("matrices", []) if m["name"] == name), None)
    return sampling_figure(matrix, "columns"), sampling_figure(matrix, "rows")


def sampling_panel(name, dtype, policy, gate=None, engine=None) -> None:
    """Which columns and rows CURLoRA would take from each adapted matrix of the selected model, under each rule."""
    gr.Markdown("CURLoRA takes r real columns (C) and rows (R) of each adapted W, drawn from probabilities a rule "
                "gives them: **inverted** 1/p (the paper), **inverted_offset** 1/(p + 0.001) (the reference code), "
                "**norm** p, **leverage** (classic CUR) or **uniform**. The histograms show how far each rule is "
                "from uniform (TV: total-variation distance); the table shows what the chosen rule draws from the "
                "architecture's default targets.")
    with gr.Row():
        r = gr.Number(8, label="rank r", precision=0, minimum=1)
        rule = gr.Dropdown(list(SAMPLING_RULES), value="inverted", label="rule the draws use")
        seed = gr.Number(0, label="sampling seed", precision=0)
        inspect_button = gr.Button("Inspect sampling", variant="secondary")
    summary = gr.Markdown(elem_id="sampling-summary")
    matrix = gr.Dropdown([], label="matrix", elem_id="sampling-matrix")
    with gr.Row():
        cols_plot = gr.Plot(sampling_figure(None, "columns"), label="columns")
        rows_plot = gr.Plot(sampling_figure(None, "rows"), label="rows")
    table = gr.Dataframe(value=[], interactive=False, label="every adapted matrix (c/r: columns/rows)")
    report = gr.State(None)

    @friendly
    def run(choice, dtype_value, r_value, rule_value, seed_value, request: gr.Request):
        allow = (lambda: engine.allow_device(request)) if engine is not None else None  # it loads a whole model
        return inspect_sampling(choice, dtype_value, r_value, rule_value, seed_value, policy, gate, allow)

    inspect_button.click(run, [name, dtype, r, rule, seed], [report, summary, matrix, cols_plot, rows_plot, table],
                         api_name=False, concurrency_limit=1, concurrency_id="inspect-sampling")
    matrix.change(pick_matrix, [report, matrix], [cols_plot, rows_plot], api_name=False, concurrency_limit=None,
                  show_progress="hidden")


def build(engine=None) -> dict:
    policy = engine.jobs.policy if engine is not None else None

    @friendly
    def describe_here(choice: str, dtype: str) -> str:
        return describe(choice, dtype, policy)

    presets = load_model_presets()
    choices = [(p.label or name, name) for name, p in presets.items()]
    default = default_model_name()
    gr.Markdown(lambda: "Pick the base model every method starts from. The bundled model works offline; a hub id "
                "needs the network (or the hub cache) " + (
                    "(on this hosted server folders can't be used: presets, the bundled model and hub ids only)."
                    if policy is not None and policy.hosted else
                    "and a local folder needs `config.json`, the tokenizer and `*.safetensors`."))
    with gr.Row():
        with gr.Column(scale=2):
            name = gr.Dropdown(choices, value=default, label="Base model (or type a hub id / local folder)",
                               allow_custom_value=True, elem_id="model-name")
            with gr.Row():
                dtype = gr.Dropdown(list(DTYPE_NAMES), value="auto", label="dtype")
                device = gr.Dropdown(list(DEVICE_NAMES), value="auto", label="device",
                                     allow_custom_value=True)
            check = gr.Button("Describe", variant="secondary")
        with gr.Column(scale=3):
            info = gr.Markdown(elem_id="model-info")
    with gr.Accordion("Chat template", open=False, elem_id="model-template"):
        template = gr.Code(language="jinja2", interactive=False, label="the template chat prompts go through "
                           "(empty: the model completes plain text)")

    @friendly
    def template_here(choice: str) -> str:
        if policy is not None:
            policy.check_model(choice)
        with hub_only(bool(policy and policy.hosted)):  # hosted, never a server path
            return template_text((choice or "").strip())

    for trigger in (name.change, dtype.change, check.click):
        trigger(describe_here, [name, dtype], info, api_name=False, concurrency_limit=None, show_progress="minimal")
    name.change(template_here, name, template, api_name=False, concurrency_limit=None, show_progress="hidden")
    with gr.Accordion("CURLoRA sampling", open=False, elem_id="sampling-panel"):
        sampling_panel(name, dtype, policy, engine.jobs.gate if engine is not None else None, engine)
    return {"name": name, "dtype": dtype, "device": device, "info": info, "describe": describe_here,
            "template": template, "show_template": template_here}
