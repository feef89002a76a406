"""Scoring a model on a task's rows — three modes, each named wherever its numbers are shown.

- `likelihood` (default): the class whose label word has the highest log-likelihood after the prompt (sum over
  the word's tokens). No new weights, so the same model also chats.
- `head` (the paper's): a per-task linear head on the hidden state of the last *non-pad* token (the reference code
  read the last position, a pad token in right-padded batches).
- `generate`: greedy generation; correct when the generated text starts with the right label word.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from curlora.errors import check_stop
from curlora.measure.encode import Encoder, last_token_index, pad_batch
from curlora.measure.forward import tail_forward, tail_logits

ENCODE_CHECK_ROWS = 1024  # how often the prompt encoding of a large eval split checks for Stop


def _device(model) -> torch.device:
    return next(model.parameters()).device


def row_columns(data, limit: int | None = None):
    n = len(data) if limit is None else min(limit, len(data))
    pairs = data["text_pair"][:n] if "text_pair" in data.column_names else [None] * n
    return data["text"][:n], pairs, data["label_id"][:n]


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


KEEP_PER_ROW = 4  # the vocabulary logits a scoring batch may compute: on average this many positions per row


def logit_batches(items: list, batch_size: int) -> list[list]:
    """Consecutive groups of `items` (sorted by sequence length; item[2] the sequence, item[3] the first position
    after the prompt) of at most `batch_size`, cut early where the batch's logits would span more than
    KEEP_PER_ROW positions per row.

    A right-padded batch computes logits from its earliest label position to its longest row's end for every
    row: 32 prompts of 23 to 57 tokens would take 35 positions x 32 rows of the full vocabulary (225 MB on
    GPT-2's, 680 MB on Qwen's) where 32 to 64 are read, plus the padding to the longest row. Rows of nearly equal
    length still fill a whole batch."""
    out, batch, lo = [], [], None
    for it in items:
        start = it[3] - 1
        lo2 = start if lo is None else min(lo, start)
        if batch and (len(batch) >= batch_size or (len(it[2]) - lo2) * (len(batch) + 1) > KEEP_PER_ROW * batch_size):
            out.append(batch)
            batch, lo2 = [], start
        batch.append(it)
        lo = lo2
    return out + ([batch] if batch else [])


def _shared_cache(out):
    """The KV cache of a prompt forward when the continuations can run on it (one cache of full-attention layers
    that can be repeated per class), else None."""
    cache = getattr(out, "cache", None)  # transformers 5's name, as in forward.next_token_logits
    if cache is None or not hasattr(cache, "batch_repeat_interleave"):
        return None
    if any(getattr(cache, "is_sliding", None) or []) or any(getattr(cache, "is_linear", None) or []):
        return None  # a sliding window or recurrent state keeps less than the whole prompt
    return cache


def _shared_prompt_scores(model, batch, pad: int, device) -> torch.Tensor | None:
    """(rows x classes) summed label-word log-likelihoods of `batch` (items whose prompt is the same for every
    class): the prompts go through the model once, then every class's continuation of every row in one forward on
    the prompts' KV cache, repeated per class. None when the model returns no usable cache.

    A two-class task with several-token label words forwarded each prompt twice before (one sequence per class);
    now once, plus the few tokens of the words."""
    classes = len(batch[0][4])
    ids, mask, _ = pad_batch([it[2] for it in batch], pad)
    lo = min(it[3] for it in batch) - 1
    out = tail_forward(model, ids.shape[1] - lo, input_ids=ids.to(device), attention_mask=mask.to(device),
                       use_cache=True)
    cache = _shared_cache(out)
    if cache is None:
        return None
    first = F.log_softmax(out.logits.float(), -1).cpu()
    scores = torch.stack([first[b, it[3] - 1 - lo, [c[0] for c in it[4]]] for b, it in enumerate(batch)])
    # The continuations: token j of a word is predicted from its tokens before j, which sit right after each
    # row's own prompt end (position ids say where; the prompt's padding stays masked).
    tails = [c[:-1] for it in batch for c in it[4]]  # row-major: (row b, class k) at b * classes + k
    width = max(len(t) for t in tails)
    if width == 0:
        return scores
    cache.batch_repeat_interleave(classes)
    cont, cont_mask, _ = pad_batch(tails, pad)
    starts = torch.tensor([it[3] for it in batch]).repeat_interleave(classes)
    positions = starts[:, None] + torch.arange(width)[None, :]
    full_mask = torch.cat([mask.repeat_interleave(classes, dim=0), cont_mask], dim=1)
    inputs = {"input_ids": cont.to(device), "attention_mask": full_mask.to(device),
              "position_ids": positions.to(device), "use_cache": True, "cache": cache}
    logp = F.log_softmax(model(**inputs).logits.float(), -1).cpu()
    for b, it in enumerate(batch):
        for k, c in enumerate(it[4]):
            if len(c) > 1:
                i = b * classes + k
                scores[b, k] += logp[i, torch.arange(len(c) - 1), torch.tensor(c[1:])].sum()
    return scores


@torch.no_grad()
def likelihood_scores(model, tokenizer, task, data, max_length: int, batch_size: int = 32,
                      limit: int | None = None, should_stop=None) -> tuple[torch.Tensor, list[int]]:
    """(rows x classes) log-likelihood of each class's label word after each row's prompt (summed over the word's
    tokens), and the gold class ids."""
    enc = Encoder(tokenizer, max_length)
    texts, pairs, gold = row_columns(data, limit)
    words = task.words
    items = []  # (row, class or -1 for "all classes at once", seq, start of continuation, continuation)
    shared = []  # (row, -2, prompt, its length, every class's continuation): several-token words, one prompt
    for row, (text, pair) in enumerate(zip(texts, pairs)):
        if row % ENCODE_CHECK_ROWS == 0:
            check_stop(should_stop)
        prompt = task.prompt(text, pair)
        p = enc.prompt_ids(prompt)
        conts = [enc.continuation(prompt, p, w) for w in words]
        if all(len(c) == 1 for c in conts):  # one forward scores every class: next-token logits after the prompt
            q = enc.fit(p, [0])
            items.append((row, -1, q, len(q), [c[0] for c in conts]))
            continue
        fitted = [enc.fit(p, c) for c in conts]
        if all(q == fitted[0] for q in fitted):  # the prompt is not cut differently for a longer word
            shared.append((row, -2, fitted[0], len(fitted[0]), conts))
        else:
            items += [(row, k, q + c, len(q), c) for k, (q, c) in enumerate(zip(fitted, conts))]
    scores = torch.full((len(texts), len(words)), float("-inf"))
    device = _device(model)
    shared.sort(key=lambda it: len(it[2]))
    for batch in logit_batches(shared, batch_size):
        check_stop(should_stop)
        got = _shared_prompt_scores(model, batch, pad_id(tokenizer), device)
        if got is None:  # no cache to continue from: one sequence per class, as for a cut prompt
            items += [(row, k, q + c, len(q), c) for row, _, q, _, conts in batch for k, c in enumerate(conts)]
        else:
            scores[[it[0] for it in batch]] = got
    items.sort(key=lambda it: len(it[2]))  # similar lengths together: less padding
    for batch in logit_batches(items, batch_size):
        check_stop(should_stop)
        ids, mask, _ = pad_batch([it[2] for it in batch], pad_id(tokenizer))
        # logits only from the first position that predicts a label token on (a few positions: see logit_batches)
        lo = min(it[3] for it in batch) - 1
        logits = tail_logits(model, ids.shape[1] - lo, input_ids=ids.to(device), attention_mask=mask.to(device))
        logp = F.log_softmax(logits.float(), -1).cpu()
        for b, (row, k, seq, start, cont) in enumerate(batch):
            if k == -1:
                scores[row] = logp[b, start - 1 - lo, cont]
            else:
                pos = torch.arange(start - 1 - lo, start - 1 - lo + len(cont))
                scores[row, k] = logp[b, pos, torch.tensor(cont)].sum()
    return scores, list(gold)


def likelihood_predictions(model, tokenizer, task, data, max_length: int, batch_size: int = 32,
                           limit: int | None = None, should_stop=None) -> tuple[list[int], list[int]]:
    scores, gold = likelihood_scores(model, tokenizer, task, data, max_length, batch_size, limit, should_stop)
    return scores.argmax(dim=1).tolist(), gold


def head_features(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Last-layer hidden state at the last non-pad token of each row."""
    out = tail_forward(model, 1, input_ids=ids, attention_mask=mask, output_hidden_states=True)  # no vocabulary logits
    hidden = out.hidden_states[-1]
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last_token_index(mask)]


def encode_prompts(tokenizer, task, texts, pairs, max_length: int) -> list[list[int]]:
    enc = Encoder(tokenizer, max_length)
    return [enc.fit(enc.prompt_ids(task.prompt(t, p)), []) for t, p in zip(texts, pairs)]


@torch.no_grad()
def head_predictions(model, tokenizer, task, data, head: nn.Module, max_length: int, batch_size: int = 32,
                     limit: int | None = None, left_pad: bool = False,
                     should_stop=None) -> tuple[list[int], list[int]]:
    texts, pairs, gold = row_columns(data, limit)
    seqs = encode_prompts(tokenizer, task, texts, pairs, max_length)
    device = _device(model)
    preds = []
    for i in range(0, len(seqs), batch_size):
        check_stop(should_stop)
        ids, mask, _ = pad_batch(seqs[i:i + batch_size], pad_id(tokenizer), left=left_pad)
        feats = head_features(model, ids.to(device), mask.to(device))
        preds += head(feats.to(head.weight.dtype)).argmax(-1).tolist()
    return preds, list(gold)


@torch.no_grad()
def generate_predictions(model, tokenizer, task, data, max_length: int, batch_size: int = 16,
                         limit: int | None = None, should_stop=None) -> tuple[list[int], list[int]]:
    texts, pairs, gold = row_columns(data, limit)
    seqs = encode_prompts(tokenizer, task, texts, pairs, max_length)
    words = [w.strip().lower() for w in task.words]
    longest = max(len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) for w in task.words)
    device = _device(model)
    preds = []
    for i in range(0, len(seqs), batch_size):
        check_stop(should_stop)
        ids, mask, _ = pad_batch(seqs[i:i + batch_size], pad_id(tokenizer), left=True)
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                             max_new_tokens=longest + 1, pad_token_id=pad_id(tokenizer))
        for text in tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True):
            said = text.strip().lower()
            # Longest word first, so "not_equivalent" isn't read as "not".
            match = [k for k in sorted(range(len(words)), key=lambda k: -len(words[k])) if said.startswith(words[k])]
            preds.append(match[0] if match else -1)
    return preds, list(gold)


def accuracy(preds: list[int], gold: list[int]) -> float:
    return sum(int(p == g) for p, g in zip(preds, gold)) / max(len(gold), 1)


def score(model, tokenizer, task, data, mode: str, max_length: int, batch_size: int = 32,
          head: nn.Module | None = None, limit: int | None = None, should_stop=None) -> dict:
    """{accuracy, n, mode, correct (per row), pred_share (share of the most predicted class)} of `model` on `data`
    (a task's eval split or a sub-sample); raises
    curlora.errors.Cancelled between batches once `should_stop()` is true."""
    was_training = model.training
    model.eval()
    try:
        if mode == "likelihood":
            preds, gold = likelihood_predictions(model, tokenizer, task, data, max_length, batch_size, limit,
                                                 should_stop=should_stop)
        elif mode == "head":
            if head is None:
                raise ValueError("head scoring needs the task's head")
            preds, gold = head_predictions(model, tokenizer, task, data, head, max_length, batch_size, limit,
                                           should_stop=should_stop)
        elif mode == "generate":
            preds, gold = generate_predictions(model, tokenizer, task, data, max_length, batch_size, limit,
                                               should_stop=should_stop)
        else:
            raise ValueError(f"unknown scoring mode {mode!r}")
    finally:
        model.train(was_training)
    correct = [p == g for p, g in zip(preds, gold)]
    top = max((preds.count(c) for c in set(preds)), default=0)
    return {"accuracy": accuracy(preds, gold), "n": len(gold), "mode": mode, "correct": correct,
            "pred_share": top / len(preds) if preds else None}
