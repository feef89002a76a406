"""Strided perplexity: every token scored once, and the number matches a direct computation."""

import math

import pytest
import torch
import torch.nn.functional as F

from curlora.measure import perplexity as ppl_module
from curlora.measure.perplexity import batches, perplexity, single_window_perplexity, windows
from tiny_models import tiny_model


@pytest.mark.parametrize("n, window, stride", [(100, 32, 16), (100, 32, 32), (33, 32, 8), (5, 32, 16), (64, 16, 5)])
def test_windows_score_each_token_at_most_once_and_all_of_them_when_windows_overlap(n, window, stride):
    scored, starts = [], []
    for begin, end, first in windows(n, window, stride):
        assert end - begin <= window and begin < first <= end
        scored += range(first, end)
        starts.append(begin)
    if stride < window:
        assert scored == list(range(1, n))
    else:  # non-overlapping windows: a window's first token has no context inside it and is not scored
        assert scored == [t for t in range(1, n) if t not in starts]


def test_non_overlapping_windows_match_a_direct_computation():
    model = tiny_model("llama")
    ids = torch.randint(0, 97, (64,), generator=torch.Generator().manual_seed(0))
    got = perplexity(model, ids, window=32, stride=32, batch_size=3)
    nll = 0.0
    for chunk in (ids[:32], ids[32:]):
        logits = model(input_ids=chunk[None]).logits[0]
        nll += F.cross_entropy(logits[:-1], chunk[1:], reduction="sum").item()
    assert got["tokens"] == 62
    assert got["ppl"] == pytest.approx(math.exp(nll / 62), rel=1e-5)


def test_striding_gives_context_and_batch_size_does_not_matter():
    model = tiny_model("gpt2")
    ids = torch.randint(0, 97, (80,), generator=torch.Generator().manual_seed(1))
    a = perplexity(model, ids, window=32, stride=8, batch_size=1)
    b = perplexity(model, ids, window=32, stride=8, batch_size=16)
    assert a["tokens"] == b["tokens"] == 79
    assert a["ppl"] == pytest.approx(b["ppl"], rel=1e-5)
    single = single_window_perplexity(model, ids, 32)
    assert single["tokens"] == 31 and single["windows"] == 1


def test_a_short_last_window_batched_with_full_ones_scores_as_it_does_alone():
    model = tiny_model("llama")
    ids = torch.randint(0, 97, (70,), generator=torch.Generator().manual_seed(2))
    assert windows(70, 32, 16)[-1][1] - windows(70, 32, 16)[-1][0] < 32  # the last window is shorter: padding
    alone = perplexity(model, ids, window=32, stride=16, batch_size=1)
    batched = perplexity(model, ids, window=32, stride=16, batch_size=4)
    assert alone["tokens"] == batched["tokens"] == 69
    assert batched["ppl"] == pytest.approx(alone["ppl"], rel=1e-5)


def test_the_strided_pass_gives_the_single_window_number_too():
    model = tiny_model("gpt2")
    ids = torch.randint(0, 97, (80,), generator=torch.Generator().manual_seed(3))
    got = perplexity(model, ids, window=32, stride=8, batch_size=4)["single_window"]
    single = single_window_perplexity(model, ids, 32)
    assert got["tokens"] == single["tokens"] == 31 and got["windows"] == 1
    assert got["ppl"] == pytest.approx(single["ppl"], rel=1e-5)
    assert "single_window" not in single


class _NoLogitsToKeep(torch.nn.Module):
    """A causal LM whose forward takes only input_ids (no logits_to_keep), as some remote-code models do."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids):
        return self.inner(input_ids=input_ids)


def test_models_without_logits_to_keep_give_the_same_number():
    model = tiny_model("llama")
    ids = torch.randint(0, 97, (90,), generator=torch.Generator().manual_seed(4))
    want = perplexity(model, ids, window=32, stride=16, batch_size=3)
    got = perplexity(_NoLogitsToKeep(model), ids, window=32, stride=16, batch_size=3)
    assert got["tokens"] == want["tokens"] == 89
    assert got["ppl"] == pytest.approx(want["ppl"], rel=1e-5)


@pytest.mark.parametrize("n, window, stride, size, budget", [(300, 32, 16, 8, 4 * 97 * 40), (300, 32, 16, 8, 1),
                                                              (90, 32, 32, 3, 10**9), (45, 16, 5, 4, 4 * 97 * 30)])
def test_batches_keep_order_and_the_logits_budget(n, window, stride, size, budget):
    spans = windows(n, window, stride)
    got = batches(spans, size, vocab=97, budget=budget)
    assert [s for b in got for s in b] == spans and all(1 <= len(b) <= size for b in got)
    for b in got:
        width = max(e - s for s, e, _ in b)
        lo = min(f - s for s, _, f in b) - 1
        assert len(b) == 1 or len(b) * (width - lo) * 97 * 4 <= budget


class _Recording(torch.nn.Module):
    """A model that notes the shape of every logits tensor it returns."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config, self.shapes = inner, inner.config, []

    def forward(self, **kwargs):
        out = self.inner(**kwargs)
        self.shapes.append(tuple(out.logits.shape))
        return out


def test_a_big_vocabulary_splits_the_windows_to_the_budget_with_the_same_number(monkeypatch):
    model = tiny_model("llama")
    ids = torch.randint(0, 97, (200,), generator=torch.Generator().manual_seed(5))
    want = perplexity(model, ids, window=32, stride=16, batch_size=8)
    budget = 3 * 17 * 97 * 4  # three strided windows' logits (17 positions each), fewer than the first window's 32
    monkeypatch.setattr(ppl_module, "LOGITS_BUDGET", budget)
    rec = _Recording(model)
    got = perplexity(rec, ids, window=32, stride=16, batch_size=8)
    assert got["tokens"] == want["tokens"] == 199 and got["windows"] == want["windows"] == 12
    assert got["ppl"] == pytest.approx(want["ppl"], rel=1e-6)
    assert got["single_window"] == pytest.approx(want["single_window"], rel=1e-6)
    assert rec.shapes[0] == (1, 32, 97)  # the first window (scored from its second token) goes alone
    assert all(b * k * v * 4 <= budget for b, k, v in rec.shapes[1:]) and len(rec.shapes) == 5
