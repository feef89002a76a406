"""Talk to a run's models: the base model and any method at any finished stage, each with its own weights.

    chat = Chat()
    for text in chat.stream(run_id, "lora@2", "And the king said", max_new_tokens=40):
        ...                                # the reply so far, token by token
    chat.stream(run_id, "lora@2", "And then?", history=[...], system="Answer briefly.")   # a chat model

A pane is "base" or "<method>@<stage>", for every method whose stages keep weights (adapters, and full fine-tuning's
whole weights). The base model is loaded once per (name, dtype, device) and shared; a pane loads its stage onto it
through the method's own `load` (curlora/methods/registry.py), generates, and gives the base back, so the base pane can
never see a fine-tuned weight (Unsloth Studio shipped a compare view where both panes used the fine-tuned model). One
lock serialises panes: they share the one copy of the base weights.

A tokenizer with a chat template gets a real chat: the pane's history and the system prompt go through the template
(curlora/run/chat_format.py) and the reply stops at the end-of-turn marker or eos. Without a template the prompt is
completed as plain text, and history and system prompt are not sent.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from curlora.errors import CurloraError, clip
from curlora.experiment import ExperimentConfig
from curlora.methods.registry import kinds, method
from curlora.run.chat_format import chat_prompt, conversation, has_template, held_back, stop_tokens
from curlora.run.store import Run

CHAT, COMPLETION = "chat", "completion"


def parse_pane(pane: str) -> tuple[str, int]:
    """"base" -> ("base", 0); "lora@2" -> ("lora", 2)."""
    if pane == "base":
        return "base", 0
    method, sep, stage = pane.rpartition("@")
    if not sep or not method or not stage.isdigit():
        raise CurloraError(f"{clip(pane)} is not a chat pane: use 'base' or '<method>@<stage>', e.g. 'lora@2'.")
    return method, int(stage)


def pane_kinds(run: Run) -> dict:
    """label -> registered method, for the run's methods whose stages keep weights to chat with."""
    return {m.label: method(m.kind) for m in run.config().methods if m.kind in kinds() and method(m.kind).loads_stage}


def pane_choices(run: Run) -> dict[str, list[int]]:
    """Methods of a run whose stages keep weights and the stages each has saved whole (what the chat slider can
    show): a half-written stage-k.partial is not one."""
    out = {}
    folder = run.path / "adapters"
    if not folder.is_dir():
        return out
    owners = pane_kinds(run)
    for m in sorted(folder.iterdir()):
        if m.name not in owners:
            continue
        stages = sorted(int(p.name.split("-")[1]) for p in m.glob("stage-*")
                        if p.name.split("-")[1].isdigit() and owners[m.name].has_stage(p))
        if stages:
            out[m.name] = stages
    return out


def _key(cfg: ExperimentConfig) -> tuple:
    return (cfg.model.name, cfg.model.dtype, cfg.model.device, cfg.model.revision)


def same_base(run: Run, other: Run) -> None:
    """Refuse, in one sentence, to set two runs' stages side by side unless both adapt the same base model (name,
    dtype, device, revision): otherwise the panes would differ by more than their training."""
    a, b = run.config(), other.config()
    if _key(a) != _key(b):
        raise CurloraError(f"Run {other.id} adapts {b.model.name} ({b.model.dtype}) and run {run.id} adapts "
                           f"{a.model.name} ({a.model.dtype}): pick runs on the same base model to chat with them "
                           "side by side.")


# A prompt or chat message is read by a tokenizer and echoed back (MCP's generate returns it): bounded, so one
# request cannot make the server tokenise or return megabytes. 4,000 characters are about 1,000 tokens, above the
# bundled model's context; a conversation's earlier turns together get 16 times that.
MAX_PROMPT_CHARS = 4_000
MAX_HISTORY_CHARS = 64_000


def check_prompt(prompt, system: str | None = None, histories=()) -> None:
    """Refuse a prompt, system prompt or history over its bound (one sentence, nothing tokenised)."""
    for what, text in (("The prompt", prompt), ("The system prompt", system)):
        if isinstance(text, str) and len(text) > MAX_PROMPT_CHARS:
            raise CurloraError(f"{what} is {len(text):,} characters long; the limit here is {MAX_PROMPT_CHARS:,}, "
                               "so shorten it.")
    for history in histories:
        total = sum(len(str(t.get("content", ""))) if isinstance(t, dict) else len(str(t)) for t in history or [])
        if total > MAX_HISTORY_CHARS:
            raise CurloraError(f"The conversation so far is {total:,} characters long; the limit here is "
                               f"{MAX_HISTORY_CHARS:,}; press Clear to start a new one.")


class Chat:
    """A cache of base models and a generator that runs one pane at a time."""

    def __init__(self):
        self._models: dict[tuple, tuple] = {}
        self._tokenizers: dict[tuple, object] = {}
        self.lock = threading.Lock()

    def base(self, cfg: ExperimentConfig):
        from curlora.models.loading import load_model

        key = _key(cfg)
        if key not in self._models:
            model, tok, _ = load_model(cfg.model.name, dtype=cfg.model.dtype, device=cfg.model.device,
                                       revision=cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code)
            self._models = {key: (model, tok)}  # keep one base model in memory at a time
        return self._models[key]

    def tokenizer(self, cfg: ExperimentConfig):
        """The base model's tokenizer without loading its weights (the loaded model's, once it is loaded)."""
        from curlora.models.loading import load_tokenizer, locate

        key = _key(cfg)
        if key in self._models:
            return self._models[key][1]
        if key not in self._tokenizers:
            _, folder = locate(cfg.model.name, revision=cfg.model.revision, weights=True)  # a hub model's files
            self._tokenizers = {key: load_tokenizer(folder, cfg.model.name, cfg.model.trust_remote_code)}
        return self._tokenizers[key]

    def check(self, run_id: str | None, prompt: str, histories=(None,), system: str | None = None,
              root=None) -> str:
        """Everything about a message that can be refused, before any device work: the run, the prompt, and (for a
        chat model) the template applied to each pane's history. Returns "chat" or "completion"."""
        if not prompt or not prompt.strip():
            raise CurloraError("Type a prompt first.")
        check_prompt(prompt, system, histories)
        if not run_id:
            raise CurloraError("Pick a run first: its config says which base model to load.")
        tok = self.tokenizer(Run.open(run_id, root).config())
        if not has_template(tok):
            return COMPLETION
        limit = getattr(tok, "model_max_length", None)
        for history in histories:
            n = len(tok(chat_prompt(tok, conversation(history, prompt, system)), add_special_tokens=False).input_ids)
            if limit and limit < 10**8 and n >= limit:
                raise CurloraError(f"The conversation is {n} tokens long and the model reads at most {limit}; press "
                                   "Clear to start a new one.")
        return CHAT

    @contextmanager
    def pane_model(self, run: Run, model, pane: str):
        """The model of `pane` on the shared base `model` while the block runs; the base is given back after."""
        label, stage = parse_pane(pane)
        if label == "base":
            yield model
            return
        kind = pane_kinds(run).get(label)
        folder = run.adapter_dir(label, stage)
        if kind is None or not kind.has_stage(folder):
            saved = "adapter" if kind is None or kind.has_adapter else "weights"
            raise CurloraError(f"Run {run.id} has no saved {label} {saved} after stage {stage} (yet).")
        loaded = kind.load(model, folder)
        try:
            yield loaded.model
        finally:
            loaded.cleanup()

    def stream(self, run_id: str | None, pane: str, prompt: str, *, max_new_tokens: int = 48,
               temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, root=None, history=None,
               system: str | None = None) -> Iterator[str]:
        """The reply so far after each new token. temperature 0 is greedy; sampling is seeded, the same for every
        pane, so panes differ only through their weights. `history` (this pane's earlier turns, {"role",
        "content"}) and `system` are used by a model with a chat template and ignored by one without."""
        if not prompt or not prompt.strip():
            raise CurloraError("Type a prompt first.")
        check_prompt(prompt, system, (history,))
        if not run_id:
            raise CurloraError("Pick a run first: its config says which base model to load.")
        run = Run.open(run_id, root)
        cfg = run.config()
        with self.lock:
            model, tok = self.base(cfg)
            templated = has_template(tok)
            if templated:
                text = chat_prompt(tok, conversation(history, prompt, system))
                ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids
            else:
                ids = tok(prompt, return_tensors="pt").input_ids
            stop_ids, stop_texts = stop_tokens(tok, model, templated)
            with self.pane_model(run, model, pane) as m:
                yield from generate(m, tok, ids, max_new_tokens, temperature, top_p, seed, stop_ids, stop_texts)


@torch.no_grad()
def generate(model, tok, ids: torch.Tensor, max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
             seed: int = 0, stop_ids: set[int] | None = None, stop_texts: tuple[str, ...] = ()) -> Iterator[str]:
    """A plain decoding loop with the KV cache (works the same through PEFT and CURLoRA wrappers), yielding the
    reply so far after each token: every yield extends the one before (a half-decoded character, or text that may
    be the start of a stop text, waits for the next token), and the last is the whole reply. It ends at a token in
    `stop_ids` or at a text in `stop_texts` (neither is shown), after `max_new_tokens`, or at the context limit."""
    device = next(model.parameters()).device
    ids = ids.to(device)
    stop_ids = {tok.eos_token_id} if stop_ids is None else stop_ids
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    limit = getattr(model.config, "max_position_embeddings", None)
    out_ids: list[int] = []
    past, step_ids, shown, text, said = None, ids, "", "", False
    for _ in range(int(max_new_tokens)):
        if limit and ids.shape[1] + len(out_ids) >= limit:
            break
        out = model(input_ids=step_ids, cache=past, use_cache=True)
        past = getattr(out, "cache", None) or out.past_key_values
        logits = out.logits[0, -1].float().cpu()
        if temperature and temperature > 0:
            probs = torch.softmax(logits / temperature, dim=-1)
            if top_p < 1.0:
                sorted_p, order = probs.sort(descending=True)
                keep = sorted_p.cumsum(0) - sorted_p < top_p
                probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
            nxt = int(torch.multinomial(probs / probs.sum(), 1, generator=gen))
        else:
            nxt = int(logits.argmax())
        if nxt in stop_ids:
            break
        out_ids.append(nxt)
        step_ids = torch.tensor([[nxt]], device=device)
        text = tok.decode(out_ids, skip_special_tokens=True)
        cut = min((text.find(s) for s in stop_texts if s in text), default=-1)
        if cut >= 0:
            text = text[:cut]
            break
        visible = text[:len(text) - held_back(text, stop_texts)]
        if visible.endswith("\ufffd"):  # a character whose bytes are not all generated yet
            continue
        if visible != shown and visible.startswith(shown):
            shown, said = visible, True
            yield shown
    if text != shown or not said:
        yield text
