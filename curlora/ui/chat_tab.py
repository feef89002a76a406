"""Chat tab: one prompt, three panes — the base model, LoRA at stage k, CURLoRA at stage k — each with its own
weights (see curlora/run/chat.py), streamed one pane after the other with shared generation settings."""

from __future__ import annotations

import gradio as gr

from curlora.errors import CurloraError
from curlora.run.chat import pane_choices
from curlora.ui.common import Engine, friendly, wait_for_device


def build(engine: Engine, gpu=None) -> dict:
    jobs, chat = engine.jobs, engine.chat

    def panes_of(rid: str, request: gr.Request) -> tuple[dict, list[str]]:
        run = jobs.open(rid, engine.owner(request))
        choices = pane_choices(run)
        tasks = run.record().tasks
        return choices, tasks

    @friendly
    def pick_run(rid: str, request: gr.Request):
        if not rid:
            return gr.update(), "_Pick a run with saved stages._"
        choices, tasks = panes_of(rid, request)
        top = max((max(s) for s in choices.values()), default=1)
        label = ", ".join(f"{m}: stages {', '.join(map(str, s))}" for m, s in choices.items()) or "no stage saved yet"
        note = f"Tasks: {' → '.join(f'{i + 1}. {t}' for i, t in enumerate(tasks))}. Saved adapters — {label}."
        return gr.update(minimum=1, maximum=max(top, 1), value=top, step=1, interactive=top > 1), note

    @friendly
    def send(rid, stage, prompt, max_new_tokens, temperature, top_p, seed, request: gr.Request):
        if not rid:
            raise CurloraError("Pick a run first.")
        if not (prompt or "").strip():
            raise CurloraError("Type a prompt first.")
        choices, _ = panes_of(rid, request)
        jobs.policy.allow_chat(engine.owner(request))
        stage = int(stage or 1)
        yield from wait_for_device(jobs.gate, "a chat reply", 3)
        try:
            yield from on_device(rid, choices, stage, prompt, max_new_tokens, temperature, top_p, seed)
        finally:
            jobs.gate.release()

    def reply(rid, choices, stage, prompt, max_new_tokens, temperature, top_p, seed):
        by_kind = {"lora": next((m for m in choices if m.startswith("lora")), "lora"),
                   "curlora": next((m for m in choices if m.startswith("curlora")), "curlora")}
        panes = ["base", f"{by_kind['lora']}@{stage}", f"{by_kind['curlora']}@{stage}"]
        texts = ["", "", ""]
        for i, pane in enumerate(panes):
            method = pane.split("@")[0]
            if pane != "base" and stage not in choices.get(method, []):
                texts[i] = f"({method} has no saved stage {stage} in this run)"
                yield tuple(texts)
                continue
            for part in chat.stream(rid, pane, prompt, max_new_tokens=int(max_new_tokens),
                                    temperature=float(temperature), top_p=float(top_p), seed=int(seed),
                                    root=jobs.root):
                texts[i] = part
                yield tuple(texts)

    on_device = gpu(reply) if gpu else reply  # ZeroGPU: the GPU is held for the reply, not while waiting
    with gr.Row():
        run = gr.Dropdown([], label="Run", allow_custom_value=True, scale=3, elem_id="chat-run")
        stage = gr.Slider(1, 3, value=1, step=1, label="After task k (stage)", scale=2, elem_id="chat-stage")
    note = gr.Markdown()
    prompt = gr.Textbox(label="Prompt (sent to all three)", lines=2, elem_id="chat-prompt",
                        placeholder="And the LORD said unto Moses,")
    with gr.Row():
        max_new = gr.Slider(1, 256, value=48, step=1, label="max new tokens")
        temperature = gr.Slider(0, 2, value=0, step=0.05, label="temperature (0: greedy)")
        top_p = gr.Slider(0.05, 1, value=1, step=0.05, label="top-p")
        seed = gr.Number(0, label="seed", precision=0)
    send_btn = gr.Button("Send to all three", variant="primary", elem_id="chat-send")
    with gr.Row():
        base = gr.Textbox(label="Base model", lines=8, elem_id="pane-base")
        lora = gr.Textbox(label="LoRA at stage k", lines=8, elem_id="pane-lora")
        cur = gr.Textbox(label="CURLoRA at stage k", lines=8, elem_id="pane-curlora")
    def relabel(k):
        k = int(k or 1)
        return gr.update(label=f"LoRA after task {k}"), gr.update(label=f"CURLoRA after task {k}")

    stage.change(relabel, stage, [lora, cur], api_name=False, concurrency_limit=None, show_progress="hidden")
    run.change(pick_run, run, [stage, note], api_name=False, concurrency_limit=None)
    # Chat computes on the model: one generation at a time, in the same group as evaluation work.
    send_btn.click(send, [run, stage, prompt, max_new, temperature, top_p, seed], [base, lora, cur], api_name="chat",
                   concurrency_id="gpu", concurrency_limit=1)
    prompt.submit(send, [run, stage, prompt, max_new, temperature, top_p, seed], [base, lora, cur], api_name=False,
                  concurrency_id="gpu", concurrency_limit=1)
    return {"run": run, "pick_run": pick_run, "pick_outputs": [stage, note]}
