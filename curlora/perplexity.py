"""Perplexity of a model on a text: the strided sliding window of the HF perplexity guide, batched.

Every token after the first is scored exactly once, each with up to `window - stride` tokens of context from
the previous window. `stride == window` gives non-overlapping windows; `single_window` is the paper's number (the
first window only), kept so the two can be shown side by side.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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
def perplexity(model, ids: torch.Tensor, window: int = 256, stride: int = 128, batch_size: int = 8) -> dict:
    """{ppl, nll (mean per token), tokens scored, windows} of `model` on token ids (1-D)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    spans = windows(int(ids.numel()), window, stride)
    total_nll, total = 0.0, 0
    try:
        for i in range(0, len(spans), batch_size):
            batch = spans[i:i + batch_size]
            width = max(end - begin for begin, end, _ in batch)
            inp = torch.zeros(len(batch), width, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.long)
            target = torch.full((len(batch), width), -100, dtype=torch.long)
            for b, (begin, end, first) in enumerate(batch):
                inp[b, : end - begin] = ids[begin:end]
                mask[b, : end - begin] = 1
                target[b, first - begin: end - begin] = ids[first:end]
            logits = model(input_ids=inp.to(device), attention_mask=mask.to(device)).logits
            # logits at position t predict token t + 1
            nll = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), target[:, 1:].to(device).flatten(),
                                  ignore_index=-100, reduction="sum")
            total_nll += float(nll)
            total += int((target[:, 1:] != -100).sum())
    finally:
        model.train(was_training)
    mean = total_nll / max(total, 1)
    return {"ppl": math.exp(mean), "nll": mean, "tokens": total, "windows": len(spans)}


def single_window_perplexity(model, ids: torch.Tensor, window: int) -> dict:
    """The paper's variant: one window over the first `window` tokens, no stride."""
    return perplexity(model, ids[:window], window=window, stride=window, batch_size=1)
