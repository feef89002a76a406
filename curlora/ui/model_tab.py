"""Model tab: pick a preset (the bundled model first) or type a hub id / folder; see what it is before loading."""

from __future__ import annotations

import gradio as gr

from curlora.models.loading import BUNDLED_DEFAULT, describe_model
from curlora.models.presets import load_model_presets
from curlora.ui.common import friendly


def _gb(n: int | None) -> str:
    return "unknown" if n is None else f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


def describe(choice: str, dtype: str, policy=None) -> str:
    choice = (choice or "").strip()
    if not choice:
        raise gr.Error("Choose a model or type a hub id or a local folder.")
    hosted = bool(policy and policy.hosted)
    if policy is not None:
        policy.check_model(choice)  # hosted: no server folders (an upload must never become a model)
    d = describe_model(choice, dtype=dtype, device="auto")
    preset = load_model_presets().get(choice)
    lines = [f"### {preset.label if preset else choice}",
             f"- **architecture** {d.architecture or 'unknown'} ({d.model_type or '?'})",
             f"- **parameters** {d.parameters:,}" if d.parameters else "- **parameters** unknown",
             f"- **weights in memory ({d.dtype})** {_gb(d.memory_bytes)}",
             f"- **adaptable modules** {', '.join(d.target_modules) or '–'}",
             f"- **source** {d.source}{' — `' + d.path + '`' if d.path and not hosted else ''}"]
    if preset:
        lines.append(f"- **suggested** rank {preset.rank}, targets {', '.join(preset.target_modules)}")
        lines.append(f"- **license** {preset.license}")
        if preset.notes:
            lines.append(f"\n{preset.notes}")
    if d.note:
        lines.append(f"\n_Note: {d.note}_")
    return "\n".join(lines)


def default_targets(choice: str) -> str:
    preset = load_model_presets().get(choice)
    return ", ".join(preset.target_modules) if preset else ""


def build(engine=None) -> dict:
    policy = engine.jobs.policy if engine is not None else None

    @friendly
    def describe_here(choice: str, dtype: str) -> str:
        return describe(choice, dtype, policy)

    presets = load_model_presets()
    choices = [(p.label or name, name) for name, p in presets.items()]
    default = BUNDLED_DEFAULT if BUNDLED_DEFAULT in presets else next(iter(presets))
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
                dtype = gr.Dropdown(["auto", "float32", "bfloat16", "float16"], value="auto", label="dtype")
                device = gr.Dropdown(["auto", "cpu", "cuda", "mps"], value="auto", label="device",
                                     allow_custom_value=True)
            check = gr.Button("Describe", variant="secondary")
        with gr.Column(scale=3):
            info = gr.Markdown(elem_id="model-info")
    for trigger in (name.change, dtype.change, check.click):
        trigger(describe_here, [name, dtype], info, api_name=False, concurrency_limit=None, show_progress="minimal")
    return {"name": name, "dtype": dtype, "device": device, "info": info, "describe": describe_here}
