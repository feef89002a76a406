"""Talk to a run's models: the base model and any method at any finished stage, each with its own weights.

    chat = Chat()
    for text in chat.stream(run_id, "lora@2", "And the king said", max_new_tokens=40):
        ...                                # the reply so far, token by token

A pane is "base" or "<method>@<stage>". The base model is loaded once per (name, dtype, device) and shared; a
pane attaches its adapter, generates, and detaches again, so the base pane can never see a fine-tuned weight
(Unsloth Studio shipped a compare view where both panes used the fine-tuned model). One lock serialises panes:
they share the one copy of the base weights.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from curlora.errors import CurloraError
from curlora.experiment import ExperimentConfig
from curlora.run import adapters as methods
from curlora.run.store import Run


def parse_pane(pane: str) -> tuple[str, int]:
    """"base" -> ("base", 0); "lora@2" -> ("lora", 2)."""
    if pane == "base":
        return "base", 0
    method, sep, stage = pane.rpartition("@")
    if not sep or not method or not stage.isdigit():
        raise CurloraError(f"{pane!r} is not a chat pane: use 'base' or '<method>@<stage>', e.g. 'lora@2'.")
    return method, int(stage)


def pane_choices(run: Run) -> dict[str, list[int]]:
    """Adapter methods of a run and the stages each has saved (what the chat slider can show)."""
    out = {}
    folder = run.path / "adapters"
    if not folder.is_dir():
        return out
    for m in sorted(folder.iterdir()):
        stages = sorted(int(p.name.split("-")[1]) for p in m.glob("stage-*")
                        if p.name.split("-")[1].isdigit() and (p / "adapter_config.json").is_file())
        if stages:
            out[m.name] = stages
    return out


class Chat:
    """A cache of base models and a generator that runs one pane at a time."""

    def __init__(self):
        self._models: dict[tuple, tuple] = {}
        self.lock = threading.Lock()

    def base(self, cfg: ExperimentConfig):
        from curlora.models.loading import load_model

        key = (cfg.model.name, cfg.model.dtype, cfg.model.device, cfg.model.revision)
        if key not in self._models:
            model, tok, _ = load_model(cfg.model.name, dtype=cfg.model.dtype, device=cfg.model.device,
                                       revision=cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code)
            self._models = {key: (model, tok)}  # keep one base model in memory at a time
        return self._models[key]

    @contextmanager
    def _weights(self, run: Run, model, pane: str):
        method, stage = parse_pane(pane)
        if method == "base":
            yield model
            return
        folder = run.adapter_dir(method, stage)
        if not (folder / "adapter_config.json").is_file():
            raise CurloraError(f"Run {run.id} has no saved {method} adapter after stage {stage} (yet).")
        adapted = methods.load_adapter(model, folder)
        try:
            yield adapted
        finally:
            methods.detach(adapted)

    def stream(self, run_id: str | None, pane: str, prompt: str, *, max_new_tokens: int = 48,
               temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, root=None) -> Iterator[str]:
        """The reply so far after each new token. temperature 0 is greedy; sampling is seeded, the same for every
        pane, so panes differ only through their weights."""
        if not prompt or not prompt.strip():
            raise CurloraError("Type a prompt first.")
        if not run_id:
            raise CurloraError("Pick a run first: its config says which base model to load.")
        run = Run.open(run_id, root)
        cfg = run.config()
        with self.lock:
            model, tok = self.base(cfg)
            with self._weights(run, model, pane) as m:
                yield from _generate(m, tok, prompt, max_new_tokens, temperature, top_p, seed)


@torch.no_grad()
def _generate(model, tok, prompt: str, max_new_tokens: int, temperature: float, top_p: float,
              seed: int) -> Iterator[str]:
    """A plain decoding loop with the KV cache: works the same through PEFT and CURLoRA wrappers."""
    device = next(model.parameters()).device
    ids = tok(prompt, return_tensors="pt").input_ids.to(device)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    limit = getattr(model.config, "max_position_embeddings", None)
    out_ids: list[int] = []
    past, step_ids = None, ids
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
        if nxt == tok.eos_token_id:
            break
        out_ids.append(nxt)
        step_ids = torch.tensor([[nxt]], device=device)
        yield tok.decode(out_ids, skip_special_tokens=True)
    if not out_ids:
        yield ""
