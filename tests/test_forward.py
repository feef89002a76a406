"""Measurements compute only the logits they read (curlora/measure/forward.py): the same numbers as a full forward,
on models that take `logits_to_keep` and on one that does not; the self-probe samples through the KV cache."""

import pytest
import torch
import torch.nn.functional as F

from curlora.measure import probes
from curlora.measure.forward import next_token_logits, tail_logits
from tiny_models import tiny_model, tokens


class NoKeep(torch.nn.Module):
    """A causal LM whose forward takes no `logits_to_keep` (and returns no cache)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def forward(self, input_ids, attention_mask=None, use_cache=False, output_hidden_states=False):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                          output_hidden_states=output_hidden_states)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
@pytest.mark.parametrize("wrap", [False, True])
def test_tail_logits_are_the_full_forwards_last_positions(arch, wrap):
    model = tiny_model(arch)
    x = tokens(batch=3, length=10)
    with torch.no_grad():
        full = model(input_ids=x).logits
        m = NoKeep(model) if wrap else model
        for keep in (1, 4, 10, 50):
            got = tail_logits(m, keep, input_ids=x)
            assert got.shape == (3, min(keep, 10), full.shape[-1])
            assert torch.allclose(got, full[:, -min(keep, 10):], atol=1e-5)


class OnlyIds(torch.nn.Module):
    """A causal LM whose forward takes nothing but input_ids, as some remote-code models do."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config = inner, inner.config

    def forward(self, input_ids):
        return self.inner(input_ids=input_ids)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_measurement_holds_no_kv_cache_and_a_forward_without_the_arguments_still_works(arch):
    """A cache of the whole batch would sit beside the logits (GPT-2, 8 windows of 256: 150 MB) for nothing."""
    from curlora.measure.forward import tail_forward

    model = tiny_model(arch)
    x = tokens(batch=2, length=12)
    with torch.no_grad():
        full = model(input_ids=x).logits
        out = tail_forward(model, 3, input_ids=x)
        assert getattr(out, "cache", None) is None and getattr(out, "past_key_values", None) is None
        assert tail_forward(model, 3, input_ids=x, use_cache=True).cache is not None  # asked for: given
        bare = OnlyIds(model)
        for _ in range(2):  # the second call goes straight to what the model takes
            got = tail_forward(bare, 3, input_ids=x).logits
            assert torch.allclose(got, full[:, -3:], atol=1e-5)
        assert bare._curlora_refused == {"use_cache", "logits_to_keep"}


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_greedy_sampling_through_the_cache_is_the_whole_prefix_argmax(arch):
    model = tiny_model(arch)
    ids = torch.zeros(2, 1, dtype=torch.long)
    past = None
    with torch.no_grad():
        for _ in range(8):
            cached, past = next_token_logits(model, ids, past)
            assert past is not None
            assert torch.allclose(cached, model(input_ids=ids).logits[:, -1], atol=1e-4)
            ids = torch.cat([ids, cached.argmax(-1, keepdim=True)], 1)


def test_self_probe_on_a_model_without_cache_or_keep_matches_the_cached_one():
    class Tok:
        bos_token_id, eos_token_id = 1, 2

    model = tiny_model("llama")
    a = probes.sample_self_probe(model, Tok(), texts=2, tokens=10, temperature=0)
    b = probes.sample_self_probe(NoKeep(model), Tok(), texts=2, tokens=10, temperature=0)
    assert torch.equal(a, b)


def test_likelihood_scores_read_the_same_positions_as_a_full_log_softmax():
    """The tail of each batch starts where the shortest prompt's label is predicted: every row's label positions
    fall inside it (prompts of different lengths in one batch)."""
    from curlora.measure.encode import pad_batch

    model = tiny_model("llama")
    seqs = [[5, 6, 7, 8, 9, 10, 11], [5, 6, 7, 8], [5, 6, 7, 8, 9, 10, 11, 12, 13]]
    starts = [5, 3, 6]  # continuation begins at these positions
    ids, mask, _ = pad_batch(seqs, 0)
    with torch.no_grad():
        full = F.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
        lo = min(starts) - 1
        tail = F.log_softmax(tail_logits(model, ids.shape[1] - lo, input_ids=ids, attention_mask=mask).float(), -1)
    for b, (seq, start) in enumerate(zip(seqs, starts)):
        for pos in range(start - 1, len(seq) - 1):
            assert torch.allclose(tail[b, pos - lo], full[b, pos], atol=1e-5)
