"""What a training step computes: the vocabulary head only at the positions that predict a label token (the loss
unchanged to 1e-5 on llama, qwen2 and gpt2, under gradient checkpointing, with a tied embedding still trained), and
length-grouped batches (seeded, every row once per pass, the same batches for every method, less padding)."""

import pytest
import torch

from curlora.measure.forward import label_loss
from curlora.run.train import LengthGroupedBatches, padding_share
from tiny_models import tiny_model


def batch(seed=0, vocab=90):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (4, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    mask[2, 6:] = 0
    labels = torch.full_like(ids, -100)
    labels[0, 10:12] = ids[0, 10:12]  # a two-token word at the end
    labels[1, 8] = ids[1, 8]  # a shorter row, right-padded
    labels[2, 4:6] = ids[2, 4:6]
    labels[3, 11] = ids[3, 11]
    return ids, mask, labels


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_the_label_loss_equals_the_full_loss_and_its_gradients(arch):
    ids, mask, labels = batch()
    model = tiny_model(arch)
    model.train()
    full = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    full.backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    ours = label_loss(model, ids, mask, labels)
    ours.backward()
    assert abs(float(full) - float(ours)) < 1e-5
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, want[n], atol=1e-6), n
    emb = model.get_input_embeddings().weight
    if model.config.tie_word_embeddings:  # the tied head's rows are trained through the positions it reads
        assert emb is model.get_output_embeddings().weight and emb.grad.abs().sum() > 0


def test_under_gradient_checkpointing_and_through_adapters():
    from curlora.experiment import MethodSettings
    from curlora.methods.registry import method

    ids, mask, labels = batch(1)
    base = tiny_model("llama")
    for kind in ("curlora", "lora"):
        att = method(kind).attach(base, MethodSettings(kind=kind, r=4, target_modules=["q_proj", "v_proj"]), None)
        model = att.model
        for p in model.parameters():
            if p.requires_grad:
                torch.nn.init.normal_(p, std=0.02)  # not the zero start: the adapter must change the loss
        model.train()
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        a = label_loss(model, ids, mask, labels)
        base.gradient_checkpointing_disable()
        b = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        assert abs(float(a) - float(b)) < 1e-5, kind
        a.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters() if p.requires_grad)
        att.cleanup()


def test_length_grouped_batches_are_seeded_complete_and_carry_less_padding():
    g = torch.Generator().manual_seed(3)
    lengths = torch.randint(8, 90, (403,), generator=g).tolist()
    first = list(LengthGroupedBatches(lengths, 8, seed=0))
    again = list(LengthGroupedBatches(lengths, 8, seed=0))
    assert first == again  # every method sees the same batches in the same order
    assert sorted(i for b in first for i in b) == list(range(403)) and len(first) == 51
    sampler = LengthGroupedBatches(lengths, 8, seed=0)
    one, two = list(sampler), list(sampler)
    assert one == first and two != one  # the next pass is a new order
    shuffled = torch.randperm(403, generator=torch.Generator().manual_seed(0)).tolist()
    plain = [shuffled[i:i + 8] for i in range(0, 403, 8)]
    assert padding_share(first, lengths) < 0.1 < 0.3 < padding_share(plain, lengths)
    assert padding_share([[0]], lengths) == 0.0


TRAINED = ["curlora", "lora", "full", "mica", "pissa", "corda", "osf", "dora", "head-only", "joint", "ewc"]


def test_the_list_below_holds_every_registered_kind_that_trains():
    from curlora.methods.registry import kinds

    assert set(kinds()) - {"base"} == set(TRAINED)


@pytest.mark.parametrize("kind", TRAINED)
def test_every_trained_kind_sees_the_same_loss_with_the_label_only_head(kind):
    """Each registered kind that trains, attached as the runner attaches it (a context for the data-driven inits),
    with gradient checkpointing on: the label-only loss equals the full-head loss to 1e-5 and reaches the trainable
    parameters."""
    from curlora.experiment import MethodSettings
    from curlora.methods.registry import Context, method

    ids, mask, labels = batch(2)
    base = tiny_model("llama")
    calib = torch.randint(3, 90, (256,), generator=torch.Generator().manual_seed(0))
    ctx = Context(0, 2, 16, lambda n: (calib[:n], "random tokens"))
    att = method(kind).attach(base, MethodSettings(kind=kind, r=4, target_modules=["q_proj", "v_proj"]), None,
                              context=ctx)
    model = att.model
    model.train()
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    try:
        a = label_loss(model, ids, mask, labels)
        a.backward()
    finally:
        base.gradient_checkpointing_disable()
    b = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert abs(float(a) - float(b)) < 1e-5
    trainable = [p for p in model.parameters() if p.requires_grad]
    if kind == "head-only":  # it trains a classification head, which only head scoring has: none of the LM trains
        assert trainable == []
    else:
        assert trainable and any(p.grad is not None for p in trainable)
    att.cleanup()
