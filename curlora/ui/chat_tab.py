"""Chat tab: one message, three panes — the base model, LoRA at stage k, CURLoRA at stage k (another method with
saved stages where a run has no LoRA or no CURLoRA, full fine-tuning included) — each with its own
weights and its own conversation (see curlora/run/chat.py), streamed one pane after the other with shared
generation settings. A base model with a chat template chats (system prompt, each pane's history, the template);
one without completes each message as plain text. Clear empties all three panes.

The right pane can come from another run on the same base model ("Right pane from another run"): a study's points
are one method each, so the best CURLoRA point and the best LoRA point chat side by side that way."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from curlora.errors import CurloraError
from curlora.measure.record import RunMetrics
from curlora.methods.registry import described
from curlora.run.chat import CHAT, pane_choices, same_base
from curlora.run.chat_format import default_system, has_template
from curlora.ui.common import Engine, friendly, stage_slider, wait_for_device

PENDING = "…"
EMPTY = "(an empty reply: the model ended its turn at once)"
MODES = {True: "This base model has a **chat template**: each pane keeps its own conversation, sent through the "
               "template with the system prompt; a reply ends at the template's end-of-turn marker.",
         False: "This base model has **no chat template**: each message is completed as plain text; earlier turns "
                "and the system prompt are not sent."}


def pane_methods(choices: dict, record: RunMetrics | None = None) -> dict[str, str]:
    """{"lora": label, "curlora": label}: the run's method shown in each of the two trained panes — its first method
    of kind LoRA (LoRA + replay included) and its first of kind CURLoRA, by the kind each method's record names (an
    old record without kinds: the label is the kind); a run without one of them shows another method with saved
    stages there instead (full fine-tuning, a PEFT peer), so every kind that saves a stage can be chatted with."""
    def kind(label: str) -> str:
        rec = record.methods.get(label) if record is not None else None
        return (rec.kind if rec is not None else "") or label

    lora = next((m for m in choices if kind(m) == "lora"), None)
    cur = next((m for m in choices if kind(m) == "curlora"), None)
    others = iter(m for m in choices if m not in (lora, cur))
    lora = lora or next(others, "lora")
    return {"lora": lora, "curlora": cur or next(others, "curlora")}


@dataclass
class Side:
    """A run as the Chat tab shows it: its id, its record and the stages each weight-keeping method saved."""
    rid: str
    record: RunMetrics
    choices: dict[str, list[int]]

    @property
    def methods(self) -> dict[str, str]:
        return pane_methods(self.choices, self.record)


def pane_labels(m: RunMetrics | None, choices: dict, stage, other: Side | None = None) -> tuple[str, str]:
    """(LoRA pane label, CURLoRA pane label) at stage k, each with its method's setting:
    'lora (lr 1e-3, r 8) after task 2'; a generic label before a run is picked, the bare label for an old record.
    `other`: the run whose method fills the right pane, and the label says so."""
    k = int(stage or 1)
    if m is None:
        return f"LoRA after task {k}", f"CURLoRA after task {k}"
    out = []
    for side, label in pane_methods(choices, m).items():  # LoRA's pane, then CURLoRA's
        record, note = m, ""
        if side == "curlora" and other is not None:
            record, label, note = other.record, other.methods["curlora"], f" (run {other.rid})"
        rec = record.methods.get(label) if record is not None else None
        out.append(f"{described(label, rec.setting if rec is not None else None)} after task {k}{note}")
    return out[0], out[1]


def build(engine: Engine, gpu=None) -> dict:
    jobs, chat = engine.jobs, engine.chat

    def sides(rid: str, other: str | None, request: gr.Request) -> tuple[Side, Side | None]:
        """The run, and the right pane's other run (None when none is picked, or it is this run): each opened once;
        refused unless both runs adapt the same base model."""
        owner = engine.owner(request)
        run = jobs.open(rid, owner)
        mine = Side(rid, run.record(), pane_choices(run))
        if not other or other == rid:
            return mine, None
        theirs = jobs.open(other, owner)
        same_base(run, theirs)
        return mine, Side(other, theirs.record(), pane_choices(theirs))

    def mode_of(rid: str, request: gr.Request) -> str:
        """Whether the run's base model chats (a chat template) or completes plain text, in a sentence."""
        try:
            tok = chat.tokenizer(jobs.open(rid, engine.owner(request)).config())
        except CurloraError:
            return ""
        injected = default_system(tok)
        return MODES[has_template(tok)] + (
            f" With the system prompt left empty, its template sends its own: “{injected}”; type one to replace it."
            if injected else "")

    @friendly
    def pick_run(rid: str, other: str | None, request: gr.Request):
        if not rid:
            return gr.update(), "_Pick a run with saved stages._", gr.update(), gr.update(), gr.update(), ""
        mine, theirs = sides(rid, other, request)
        choices, record = mine.choices, mine.record
        top = max((max(s) for s in choices.values()), default=1)
        label = ", ".join(f"{described(m, record.methods[m].setting if m in record.methods else None)}: stages "
                          f"{', '.join(map(str, s))}" for m, s in choices.items()) or "no stage saved yet"
        order = " → ".join(f"{i + 1}. {t}" for i, t in enumerate(record.tasks))
        note = f"Tasks: {order}. Saved stages — {label}."
        if theirs is not None:
            shown, orecord = theirs.methods["curlora"], theirs.record
            note += (f" Right pane: {described(shown, orecord.methods[shown].setting if shown in orecord.methods else None)}"
                     f" from run {theirs.rid} (tasks: {' → '.join(orecord.tasks)}).")
        lora_label, cur_label = pane_labels(record, choices, top, theirs)
        return (stage_slider(top), note,
                gr.update(label=lora_label), gr.update(label=cur_label), gr.update(label="Base model"),
                mode_of(rid, request))

    def panes(mine: Side, stage: int, theirs: Side | None = None) -> list[tuple[str, str, dict]]:
        """(run id, pane, that run's saved stages) for the base, LoRA and CURLoRA panes; the right one from the
        other run where one is picked."""
        right = theirs or mine
        return [(mine.rid, "base", mine.choices), (mine.rid, f"{mine.methods['lora']}@{stage}", mine.choices),
                (right.rid, f"{right.methods['curlora']}@{stage}", right.choices)]

    def replies(rid, sources, stage, prompt, max_new_tokens, temperature, top_p, seed, histories=None, system=None):
        """The three panes' replies so far, pane after pane (what runs on the device). `sources`: panes(...)."""
        texts = ["", "", ""]
        for i, (pane_run, pane, choices) in enumerate(sources):
            method = pane.split("@")[0]
            if pane != "base" and stage not in choices.get(method, []):
                texts[i] = f"({method} has no saved stage {stage} in this run)"
                yield tuple(texts)
                continue
            for part in chat.stream(pane_run, pane, prompt, max_new_tokens=int(max_new_tokens),
                                    temperature=float(temperature), top_p=float(top_p), seed=int(seed),
                                    root=jobs.root, history=histories[i] if histories else None, system=system):
                texts[i] = part
                yield tuple(texts)

    # ZeroGPU: the GPU is held for the replies, not while waiting; an engine error raised on the GPU keeps its
    # sentence (friendly turns it into a gr.Error, which spaces passes through; anything else it reduces to a name).
    on_device = gpu(friendly(replies)) if gpu else replies

    @friendly
    def send(rid, stage, prompt, max_new_tokens, temperature, top_p, seed, other=None, request: gr.Request = None):
        """One prompt, three text replies (the API's /chat; a chat model gets it as a single user turn); `other`: the
        run whose method fills the right pane (optional)."""
        if not rid:
            raise CurloraError("Pick a run first.")
        if not (prompt or "").strip():
            raise CurloraError("Type a prompt first.")
        stage = int(stage or 1)
        mine, theirs = sides(rid, other, request)
        sources = panes(mine, stage, theirs)
        chat.check(rid, prompt, root=jobs.root)
        engine.allow_chat(request)
        yield from wait_for_device(jobs.gate, "a chat reply", 3)
        try:
            yield from on_device(rid, sources, stage, prompt, max_new_tokens, temperature, top_p, seed)
        finally:
            jobs.gate.release()

    @friendly
    def turn(rid, stage, message, system, max_new_tokens, temperature, top_p, seed, h_base, h_lora, h_cur,
             other=None, request: gr.Request = None):
        """The message as the next turn of each pane's conversation; every input is checked before device work."""
        if not rid:
            raise CurloraError("Pick a run first.")
        if not (message or "").strip():
            raise CurloraError("Type a message first.")
        stage = int(stage or 1)
        mine, theirs = sides(rid, other, request)
        sources = panes(mine, stage, theirs)
        earlier = [list(h or []) for h in (h_base, h_lora, h_cur)]
        mode = chat.check(rid, message, earlier, system, root=jobs.root)
        engine.allow_chat(request)
        shown = [h + [{"role": "user", "content": message}, {"role": "assistant", "content": PENDING}]
                 for h in earlier]

        cleared = []

        def frame(texts):
            """The three conversations with the replies so far; the message box is emptied once, at the start."""
            for h, text in zip(shown, texts):
                h[-1] = {"role": "assistant", "content": text or PENDING}
            box = gr.skip() if cleared else ""
            cleared.append(True)
            return (*[list(h) for h in shown], box)

        yield frame(("",) * 3)  # the message shows in every pane at once, before the device is asked for
        for note in wait_for_device(jobs.gate, "a chat reply", 1):
            yield frame((note,) * 3)
        try:
            texts = ("", "", "")
            history = earlier if mode == CHAT else None
            for texts in on_device(rid, sources, stage, message, max_new_tokens, temperature, top_p, seed,
                                   history, system if mode == CHAT else None):
                yield frame(texts)
            yield frame(tuple(t or EMPTY for t in texts))
        finally:
            jobs.gate.release()

    with gr.Row():
        run = gr.Dropdown([], label="Run", allow_custom_value=True, scale=3, elem_id="chat-run")
        stage = gr.Slider(1, 3, value=1, step=1, label="After task k (stage)", scale=2, elem_id="chat-stage")
        other = gr.Dropdown([], value="", label="Right pane from another run (optional, same base model)",
                            allow_custom_value=True, scale=3, elem_id="chat-run2")
    note = gr.Markdown()
    mode = gr.Markdown(elem_id="chat-mode")
    system = gr.Textbox(label="System prompt (chat models only)", lines=1, elem_id="chat-system",
                        placeholder="You are a helpful assistant.")
    with gr.Row():
        base = gr.Chatbot(label="Base model", height=360, elem_id="pane-base")
        lora = gr.Chatbot(label="LoRA at stage k", height=360, elem_id="pane-lora")
        cur = gr.Chatbot(label="CURLoRA at stage k", height=360, elem_id="pane-curlora")
    prompt = gr.Textbox(label="Message (sent to all three)", lines=2, elem_id="chat-prompt",
                        placeholder="What is the capital of France?  (a base model without a chat template completes the text)")
    with gr.Row():
        send_btn = gr.Button("Send to all three", variant="primary", elem_id="chat-send", scale=3)
        clear_btn = gr.Button("Clear", elem_id="chat-clear", scale=1)
    with gr.Row():
        max_new = gr.Slider(1, 256, value=48, step=1, label="max new tokens")
        temperature = gr.Slider(0, 2, value=0, step=0.05, label="temperature (0: greedy)")
        top_p = gr.Slider(0.05, 1, value=1, step=0.05, label="top-p")
        seed = gr.Number(0, label="seed", precision=0)
    # The API's /chat: one prompt, three text replies (no history), as before the panes became conversations.
    with gr.Row(visible=False):
        api_base, api_lora, api_cur = gr.Textbox(), gr.Textbox(), gr.Textbox()
        api_send = gr.Button()

    def relabel(rid, k, other, request: gr.Request):
        """The pane labels at stage k, with each method's setting (generic when the run can't be read)."""
        try:
            mine, theirs = sides(rid, other, request) if rid else (None, None)
        except CurloraError:
            mine, theirs = None, None
        lora_label, cur_label = pane_labels(mine and mine.record, mine.choices if mine else {}, k, theirs)
        return gr.update(label=lora_label), gr.update(label=cur_label)

    def others(request: gr.Request):
        """The runs the right pane can come from: this browser's runs."""
        return gr.update(choices=[""] + engine.run_ids(request))

    pick_outputs = [stage, note, lora, cur, base, mode]
    stage.change(relabel, [run, stage, other], [lora, cur], api_name=False, concurrency_limit=None,
                 show_progress="hidden")
    run.change(pick_run, [run, other], pick_outputs, api_name=False, concurrency_limit=None).then(
        others, None, other, api_name=False, concurrency_limit=None, show_progress="hidden")
    other.change(pick_run, [run, other], pick_outputs, api_name=False, concurrency_limit=None)
    # Chat computes on the model: one generation at a time, in the same group as evaluation work.
    gpu_group = {"concurrency_id": "gpu", "concurrency_limit": 1}
    turn_inputs = [run, stage, prompt, system, max_new, temperature, top_p, seed, base, lora, cur, other]
    send_btn.click(turn, turn_inputs, [base, lora, cur, prompt], api_name="chat_turn", **gpu_group)
    prompt.submit(turn, turn_inputs, [base, lora, cur, prompt], api_name=False, **gpu_group)
    clear_btn.click(lambda: ([], [], []), None, [base, lora, cur], api_name=False, concurrency_limit=None,
                    show_progress="hidden")
    api_send.click(send, [run, stage, prompt, max_new, temperature, top_p, seed, other],
                   [api_base, api_lora, api_cur], api_name="chat", **gpu_group)
    return {"run": run, "other": other, "pick_run": pick_run, "pick_inputs": [run, other], "pick_outputs": pick_outputs,
            "others": others}
