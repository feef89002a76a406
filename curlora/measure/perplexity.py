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


# A batch of windows holds at most this many bytes of float32 logits (a window alone may hold more): on a 152k
# vocabulary a window of 256 is ~156 MB of them, and 8 windows with the loss's copies were ~3.7 GB at the peak.
LOGITS_BUDGET = 256 * 2**20


def _span(batch) -> tuple[int, int]:
    """(width, lo) of a batch of windows: its longest window, and the last position whose logits it needs not."""
    return max(end - begin for begin, end, _ in batch), min(first - begin for begin, _, first in batch) - 1


def batches(spans: list[tuple[int, int, int]], batch_size: int, vocab: int | None = None,
            budget: int = LOGITS_BUDGET) -> list[list[tuple[int, int, int]]]:
    """Consecutive windows, at most `batch_size` together and, where the vocabulary size is known, no more than
    keep `budget` bytes of float32 logits (windows x positions computed x vocab); a window alone may exceed it."""
    out, cur = [], []
    for span in spans:
        trial = cur + [span]
        width, lo = _span(trial)
        if cur and (len(trial) > batch_size or (vocab and len(trial) * (width - lo) * vocab * 4 > budget)):
            out.append(cur)
            trial = [span]
        cur = trial
    return out + [cur] if cur else out


def vocab_size(model) -> int | None:
    """The vocabulary size from the model's config (None for a bare module without one)."""
    return getattr(getattr(model, "config", None), "vocab_size", None)


def _window_nlls(logits: torch.Tensor, batch, lo: int, ids: torch.Tensor) -> list[tuple[float, int]]:
    """(summed NLL, tokens scored) of each window of a batch, from its logits (batch x positions from lo + 1 on).

    Logits at position p predict token p + 1, so a window's scored predictions are one contiguous slice: the loss
    reads a view of the batch's logits, one window at a time, instead of a flattened copy. Nothing here outlives
    the call, so a batch's logits are freed before the next batch's are made."""
    out = []
    for b, (begin, end, first_scored) in enumerate(batch):
        rows = logits[b, first_scored - begin - 1 - lo: end - begin - 1 - lo]
        target = ids[first_scored:end].to(logits.device)
        out.append((float(F.cross_entropy(rows.float(), target, reduction="sum")), end - first_scored))
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
        for batch in batches(spans, batch_size, vocab_size(model), LOGITS_BUDGET):
            check_stop(should_stop)
            width, lo = _span(batch)
            inp = torch.zeros(len(batch), width, dtype=torch.long)
            for b, (begin, end, _) in enumerate(batch):
                inp[b, : end - begin] = ids[begin:end]
            # Padding sits on the right, after every real token: causal attention never lets a real token see it,
            # so no attention mask is needed (pad positions are never scored).
            # Logits only from the first position that predicts a scored token on (about half of a strided window):
            # the vocabulary projection and the loss are a large part of a small model's forward.
            for nll, count in _window_nlls(tail_logits(model, width - lo, input_ids=inp.to(device)), batch, lo, ids):
                if first is None:
                    first = (nll, count)
                total_nll += nll
                total += count
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
