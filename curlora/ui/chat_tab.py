"""Chat tab: one prompt, three panes — the base model, LoRA at stage k, CURLoRA at stage k — each with its own
weights (see curlora/run/chat.py), streamed one pane after the other with shared generation settings."""

from __future__ import annotations

import gradio as gr

from curlora.errors import CurloraError
from curlora.measure.record import RunMetrics
from curlora.run.chat import pane_choices
from curlora.run.methods import described
from curlora.ui.common import Engine, friendly, wait_for_device


def pane_methods(choices: dict) -> dict[str, str]:
    """{"lora": label, "curlora": label}: the run's method shown in each adapter pane (its first of that kind)."""
    return {"lora": next((m for m in choices if m.startswith("lora")), "lora"),
            "curlora": next((m for m in choices if m.startswith("curlora")), "curlora")}


def pane_labels(metrics: RunMetrics | dict | None, choices: dict, stage) -> tuple[str, str]:
    """(LoRA pane label, CURLoRA pane label) at stage k, each with its method's setting:
    'lora (lr 1e-3, r 8) after task 2'; a generic label before a run is picked, the bare label for an old record."""
    k = int(stage or 1)
    if metrics is None:
        return f"LoRA after task {k}", f"CURLoRA after task {k}"
    m = RunMetrics.of(metrics)
    out = []
    for label in pane_methods(choices).values():  # LoRA's pane, then CURLoRA's
        rec = m.methods.get(label)
        out.append(f"{described(label, rec.setting if rec is not None else None)} after task {k}")
    return out[0], out[1]


def build(engine: Engine, gpu=None) -> dict:
    jobs, chat = engine.jobs, engine.chat

    def panes_of(rid: str, request: gr.Request) -> tuple[dict, RunMetrics]:
        run = jobs.open(rid, engine.owner(request))
        return pane_choices(run), run.record()

    @friendly
    def pick_run(rid: str, request: gr.Request):
        if not rid:
            return gr.update(), "_Pick a run with saved stages._", gr.update(), gr.update()
        choices, record = panes_of(rid, request)
        top = max((max(s) for s in choices.values()), default=1)
        label = ", ".join(f"{described(m, record.methods[m].setting if m in record.methods else None)}: stages "
                          f"{', '.join(map(str, s))}" for m, s in choices.items()) or "no stage saved yet"
        order = " → ".join(f"{i + 1}. {t}" for i, t in enumerate(record.tasks))
        note = f"Tasks: {order}. Saved adapters — {label}."
        lora_label, cur_label = pane_labels(record, choices, top)
        return (gr.update(minimum=1, maximum=max(top, 1), value=top, step=1, interactive=top > 1), note,
                gr.update(label=lora_label), gr.update(label=cur_label))

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
        by_kind = pane_methods(choices)
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
    def relabel(rid, k, request: gr.Request):
        """The pane labels at stage k, with each method's setting (generic when the run can't be read)."""
        try:
            choices, record = panes_of(rid, request) if rid else ({}, None)
        except CurloraError:
            choices, record = {}, None
        lora_label, cur_label = pane_labels(record, choices, k)
        return gr.update(label=lora_label), gr.update(label=cur_label)

    pick_outputs = [stage, note, lora, cur]
    stage.change(relabel, [run, stage], [lora, cur], api_name=False, concurrency_limit=None, show_progress="hidden")
    run.change(pick_run, run, pick_outputs, api_name=False, concurrency_limit=None)
    # Chat computes on the model: one generation at a time, in the same group as evaluation work.
    send_btn.click(send, [run, stage, prompt, max_new, temperature, top_p, seed], [base, lora, cur], api_name="chat",
                   concurrency_id="gpu", concurrency_limit=1)
    prompt.submit(send, [run, stage, prompt, max_new, temperature, top_p, seed], [base, lora, cur], api_name=False,
                  concurrency_id="gpu", concurrency_limit=1)
    return {"run": run, "pick_run": pick_run, "pick_outputs": pick_outputs}
