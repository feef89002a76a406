"""Perplexity of a model on a text: the strided sliding window of the HF perplexity guide, batched.

Every token after the first is scored exactly once, each with up to `window - stride` tokens of context from
the previous window. `stride == window` gives non-overlapping windows; `single_window` is the paper's number (the
first window only), kept so the two can be shown side by side.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from curlora.errors import check_stop
from curlora.measure.forward import tail_logits


def tokenize_text(tokenizer, text: str, max_tokens: int | None = None) -> torch.Tensor:
    if max_tokens:  # no need to tokenize a whole corpus for its first N tokens; no token is 32 characters long
        text = text[: max_tokens * 32]
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=True)["input_ids"][0]
    return ids[:max_tokens] if max_tokens else ids


def windows(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first scored position) per window; scored positions tile 1..n_tokens-1 exactly once."""
    out, prev_end = [], 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + window, n_tokens)
        first = max(prev_end, begin + 1)  # position 0 of the text has nothing to condition on
        if end > first:
            out.append((begin, end, first))
        prev_end = end
        if end == n_tokens:
            break
    return out


@torch.no_grad()
def perplexity(model, ids: torch.Tensor, window: int = 256, stride: int = 128, batch_size: int = 8,
               should_stop=None) -> dict:
    """{ppl, nll (mean per token), tokens scored, windows, single_window} of `model` on token ids (1-D); raises
    curlora.errors.Cancelled between batches of windows once `should_stop()` is true.

    `single_window` is the paper's number ({ppl, nll, tokens, windows: 1}, what `single_window_perplexity` gives):
    the first window of the strided pass is exactly that window, so it comes at no extra cost.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    spans = windows(int(ids.numel()), window, stride)
    total_nll, total, first = 0.0, 0, None
    try:
        for i in range(0, len(spans), batch_size):
            check_stop(should_stop)
            batch = spans[i:i + batch_size]
            width = max(end - begin for begin, end, _ in batch)
            inp = torch.zeros(len(batch), width, dtype=torch.long)
            target = torch.full((len(batch), width), -100, dtype=torch.long)
            for b, (begin, end, first_scored) in enumerate(batch):
                inp[b, : end - begin] = ids[begin:end]
                target[b, first_scored - begin: end - begin] = ids[first_scored:end]
            # Padding sits on the right, after every real token: causal attention never lets a real token see it,
            # so no attention mask is needed (pad positions are never scored).
            # Logits only from the first position that predicts a scored token on (about half of a strided window):
            # the vocabulary projection and the loss are a large part of a small model's forward.
            lo = min(first_scored - begin for begin, _, first_scored in batch) - 1
            logits = tail_logits(model, width - lo, input_ids=inp.to(device))
            nll = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), target[:, lo + 1:].to(device).flatten(),
                                  ignore_index=-100, reduction="none").view(len(batch), width - lo - 1)
            if first is None:
                first = (float(nll[0].sum()), int((target[0, 1:] != -100).sum()))
            total_nll += float(nll.sum())
            total += int((target[:, 1:] != -100).sum())
    finally:
        model.train(was_training)
    mean = total_nll / max(total, 1)
    out = {"ppl": math.exp(mean), "nll": mean, "tokens": total, "windows": len(spans)}
    if first is not None:
        single = first[0] / max(first[1], 1)
        out["single_window"] = {"ppl": math.exp(single), "nll": single, "tokens": first[1], "windows": 1}
    return out


def single_window_perplexity(model, ids: torch.Tensor, window: int) -> dict:
    """The paper's variant: one window over the first `window` tokens, no stride (also `perplexity(...)["single_window"]`)."""
    out = perplexity(model, ids[:window], window=window, stride=window, batch_size=1)
    out.pop("single_window", None)
    return out
