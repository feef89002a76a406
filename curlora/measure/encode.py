"""Rows → token ids, the same way for training and for scoring.

A row becomes `prompt` + " " + `label word`. The label word's tokens are found by tokenizing the whole string and
taking what follows the prompt's own tokens (so word-boundary merges of BPE and sentencepiece are respected);
if the prompt's tokens are not a prefix of the whole, the word is tokenized on its own and appended. Long prompts
are cut from the left, so the end of the prompt ("Label:") and the word always fit.
"""

from __future__ import annotations

from functools import lru_cache

import torch


class Encoder:
    """Tokenizes prompts and label words for one tokenizer, with a cache for the (few) label words."""

    def __init__(self, tokenizer, max_length: int):
        self.tok = tokenizer
        self.max_length = max_length
        self._word = lru_cache(maxsize=4096)(self._word_ids)

    def prompt_ids(self, prompt: str) -> list[int]:
        return self.tok(prompt, add_special_tokens=True)["input_ids"]

    def _word_ids(self, word: str) -> tuple[int, ...]:
        ids = self.tok(" " + word, add_special_tokens=False)["input_ids"]
        return tuple(ids) or tuple(self.tok(word, add_special_tokens=False)["input_ids"])

    def continuation(self, prompt: str, prompt_ids: list[int], word: str) -> list[int]:
        full = self.tok(prompt + " " + word, add_special_tokens=True)["input_ids"]
        if len(full) > len(prompt_ids) and full[: len(prompt_ids)] == prompt_ids:
            return full[len(prompt_ids):]
        return list(self._word(word))

    def fit(self, prompt_ids: list[int], cont: list[int]) -> list[int]:
        """Cut the prompt from the left so prompt + continuation fits max_length."""
        room = max(self.max_length - len(cont), 1)
        return prompt_ids[-room:] if len(prompt_ids) > room else prompt_ids

    def training_example(self, prompt: str, word: str) -> tuple[list[int], list[int]]:
        """(input_ids, labels) with the prompt masked (-100): the loss is on the label word only."""
        p = self.prompt_ids(prompt)
        cont = self.continuation(prompt, p, word)
        p = self.fit(p, cont)
        return p + cont, [-100] * len(p) + cont


def pad_batch(seqs: list[list[int]], pad_id: int, labels: list[list[int]] | None = None, left: bool = False):
    """input_ids, attention_mask (and labels padded with -100) as tensors; right padding unless `left`."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    lab = torch.full((len(seqs), width), -100, dtype=torch.long) if labels is not None else None
    for i, s in enumerate(seqs):
        sl = slice(width - len(s), width) if left else slice(0, len(s))
        ids[i, sl] = torch.tensor(s, dtype=torch.long)
        mask[i, sl] = 1
        if lab is not None:
            lab[i, sl] = torch.tensor(labels[i], dtype=torch.long)
    return ids, mask, lab


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last non-pad position of each row, for left- and right-padded batches alike."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), positions, torch.full_like(positions, -1)).max(dim=1).values
