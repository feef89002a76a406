"""A forward pass that computes only the logits a measurement reads.

The vocabulary projection is the largest single matmul of a small model's forward (GPT-2: 768 x 50,257; Qwen2.5-0.5B:
896 x 151,936), and a log-softmax over it at every position of a batch is gigabytes on a big vocabulary. Every
measurement reads a few positions: the last one (sampling), the tail of a window (perplexity) or the label word
after a prompt (likelihood scoring). transformers' `logits_to_keep` computes just the last `keep` positions.
"""

from __future__ import annotations

import torch


def _call(model, inputs: dict, optional: dict):
    """(model(**inputs, **optional), the optional arguments passed): an optional argument the model's forward does
    not take (a TypeError naming it) is dropped, for that model from then on."""
    refused = getattr(model, "_curlora_refused", frozenset())
    optional = {k: v for k, v in optional.items() if k not in refused}
    while True:
        try:
            return model(**inputs, **optional), optional
        except TypeError as err:
            name = next((k for k in optional if f"'{k}'" in str(err)), None)
            if name is None:
                raise
            refused = refused | {name}
            model._curlora_refused = refused
            optional = {k: v for k, v in optional.items() if k != name}


def tail_forward(model, keep: int, **inputs):
    """The model's output with `.logits` cut to the last `keep` positions (computed only there where it can).

    No KV cache unless `use_cache` is given: a measurement that reads none would otherwise hold one for the whole
    batch while the logits are made (GPT-2, 8 perplexity windows of 256 tokens: 150 MB)."""
    width = inputs["input_ids"].shape[1]
    keep = max(1, min(int(keep), width))
    optional = {} if "use_cache" in inputs else {"use_cache": False}
    if keep < width:
        # the positions as an index tensor, not the int: transformers then slices the hidden states by index (a
        # contiguous copy) instead of by a strided view, which CPU bf16 matmuls take ~90x longer on (PyTorch 2.13)
        optional["logits_to_keep"] = torch.arange(width - keep, width, device=inputs["input_ids"].device)
    out, _ = _call(model, inputs, optional)
    out.logits = out.logits[:, -keep:]  # all of them where the model computed (or returned) every position
    return out


def tail_logits(model, keep: int, **inputs) -> torch.Tensor:
    """Logits of the last `keep` positions (batch x keep x vocab)."""
    return tail_forward(model, keep, **inputs).logits


@torch.no_grad()
def next_token_logits(model, ids: torch.Tensor, past=None):
    """(logits at the last position (batch x vocab), the KV cache to pass back): after the first call only the
    newest token goes through the model. A model that returns no cache gets the whole prefix each time."""
    inputs = {"input_ids": ids if past is None else ids[:, -1:], "use_cache": True}
    if past is not None:
        inputs["cache"] = past  # transformers 5's name for what 4.x called past_key_values
    out = tail_forward(model, 1, **inputs)
    return out.logits[:, -1], getattr(out, "cache", None)


def label_loss(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The causal-LM loss over the tokens `labels` keeps (not -100), computing vocabulary logits only at the
    positions that predict them: the mean over those tokens of the float32 cross-entropy, equal to
    `model(..., labels=labels).loss` (to float rounding) without the head at every other position.

    A row's label tokens sit at different columns in a right-padded batch, so the head runs at the union of the
    batch's predicting columns (a handful in a length-grouped batch of label words) and each row reads its own."""
    targets = labels[:, 1:]
    keep = targets != -100
    columns = keep.any(dim=0).nonzero().flatten()  # the predicting positions, sorted
    if columns.numel() == 0:
        raise ValueError("no label token in the batch")
    out, passed = _call(model, {"input_ids": input_ids, "attention_mask": attention_mask},
                        {"use_cache": False, "logits_to_keep": columns})
    logits = out.logits
    if logits.shape[1] != columns.numel():  # a model that computed every position
        logits = logits[:, columns]
    picked = targets[:, columns]
    return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), picked.reshape(-1),
                                             ignore_index=-100)
