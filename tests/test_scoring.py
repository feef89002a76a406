"""Scoring modes: the head reads the last non-pad token whatever the padding; likelihood matches a direct sum."""

import pytest
import torch
import torch.nn.functional as F

from curlora.data.task_config import TaskConfig
from curlora.data.tasks import load_task
from curlora.measure.encode import Encoder, last_token_index, pad_batch
from curlora.measure.scoring import (KEEP_PER_ROW, head_features, head_predictions, likelihood_predictions,
                                     likelihood_scores, logit_batches, score)
from curlora.run.train import new_head
from test_runner import make_tasks
from tiny_models import save_tiny_llama_dir


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = tmp_path_factory.mktemp("scoring")
    folder = save_tiny_llama_dir(tmp / "model", seed=3)
    make_tasks(tmp)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    task = load_task(TaskConfig(name="sent", train_file=str(tmp / "sent.csv"), eval_size=16,
                                verbalizers={"0": "bad", "1": "good"}))
    pair = load_task(TaskConfig(name="pair", train_file=str(tmp / "pair.csv"), eval_size=10))
    return model, tok, task, pair


def test_last_token_index_for_left_and_right_padding():
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    left = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]])
    assert last_token_index(right).tolist() == [2, 3, 0]
    assert last_token_index(left).tolist() == [3, 3, 3]


def test_head_mode_scores_are_the_same_with_left_and_right_padding(setup):
    model, tok, task, _ = setup
    head = new_head(model, len(task.classes), seed=0)
    with torch.no_grad():
        head.weight.mul_(50)  # make the head's decision sensitive to the features it reads
    right = head_predictions(model, tok, task, task.eval, head, 64, batch_size=8, left_pad=False)
    left = head_predictions(model, tok, task, task.eval, head, 64, batch_size=8, left_pad=True)
    assert right == left
    # ... and the features are those of each prompt run alone, not of a pad token.
    enc = Encoder(tok, 64)
    seqs = [enc.prompt_ids(task.prompt(t)) for t in task.eval["text"][:4]]
    ids, mask, _ = pad_batch(seqs, tok.pad_token_id)
    batched = head_features(model, ids, mask)
    for i, s in enumerate(seqs):
        alone = head_features(model, torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))
        assert torch.allclose(batched[i], alone[0], atol=1e-5)


@pytest.mark.parametrize("which", ["single", "pair"])
def test_likelihood_picks_the_most_likely_label_word(setup, which):
    model, tok, task, pair = setup
    t = task if which == "single" else pair
    preds, gold = likelihood_predictions(model, tok, t, t.eval, 64, batch_size=5)
    assert gold == list(t.eval["label_id"])
    pairs = t.eval["text_pair"] if t.is_pair else [None] * len(t.eval)
    for row in range(3):
        prompt = t.prompt(t.eval["text"][row], pairs[row])
        totals = []
        for word in t.words:
            full = tok(prompt + " " + word)["input_ids"]
            n_prompt = len(tok(prompt)["input_ids"])
            logits = model(input_ids=torch.tensor([full])).logits[0]
            logp = F.log_softmax(logits, -1)
            totals.append(sum(logp[i - 1, full[i]].item() for i in range(n_prompt, len(full))))
        assert preds[row] == max(range(len(totals)), key=totals.__getitem__)


def _item(length: int, start: int):
    return (0, -1, [1] * length, start, [2])


def test_logit_batches_keep_order_and_bound_the_logits():
    lengths = [20, 21, 21, 22, 30, 31, 40, 41, 41, 41, 41, 41, 41, 41, 41, 60, 90, 91]
    items = [_item(n, n) for n in lengths]  # one label token after each prompt
    batches = logit_batches(items, batch_size=8)
    assert [it for b in batches for it in b] == items  # every item once, in order
    for b in batches:
        assert len(b) <= 8
        keep = len(b[-1][2]) - (min(it[3] for it in b) - 1)
        assert len(b) == 1 or keep * len(b) <= KEEP_PER_ROW * 8
    # prompts one token apart need two positions each: they fill a whole batch
    assert [len(it[2]) for it in batches[2]] == [40] + [41] * 7
    # a long row never shares a batch with short ones whose logits it would stretch
    assert [[len(it[2]) for it in b] for b in batches[-2:]] == [[60], [90, 91]]


def test_likelihood_predictions_do_not_depend_on_the_batch_size(setup):
    model, tok, task, pair = setup
    for t in (task, pair):
        one = likelihood_predictions(model, tok, t, t.eval, 64, batch_size=1)
        assert likelihood_predictions(model, tok, t, t.eval, 64, batch_size=32) == one


def _alone(model, tok, t, row, max_length=64):
    """Each class's label-word log-likelihood for one row, its prompt + word forwarded alone (no padding, no cache)."""
    pairs = t.eval["text_pair"] if t.is_pair else [None] * len(t.eval)
    enc = Encoder(tok, max_length)
    prompt = t.prompt(t.eval["text"][row], pairs[row])
    p = enc.prompt_ids(prompt)
    out = []
    for word in t.words:
        c = enc.continuation(prompt, p, word)
        q = enc.fit(p, c)
        logp = F.log_softmax(model(input_ids=torch.tensor([q + c])).logits[0].float(), -1)
        out.append(sum(logp[len(q) + j - 1, c[j]].item() for j in range(len(c))))
    return out


@pytest.fixture(scope="module")
def long_words(setup, tmp_path_factory):
    """The sentiment rows with label words of different lengths, each several tokens of the tiny tokenizer."""
    _, tok, _, _ = setup
    tmp = tmp_path_factory.mktemp("words")
    make_tasks(tmp)
    task = load_task(TaskConfig(name="sent", train_file=str(tmp / "sent.csv"), eval_size=16,
                                verbalizers={"0": "zq", "1": "xylophonic vortex"}))
    lengths = [len(tok(" " + w, add_special_tokens=False)["input_ids"]) for w in task.words]
    assert min(lengths) > 1 and len(set(lengths)) == 2  # the shared-prompt path, with continuations padded
    return task


def _tiny_gpt2(tok):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(5)
    cfg = GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=len(tok), n_positions=128,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    return GPT2LMHeadModel(cfg).eval()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])  # rotary and absolute position embeddings
def test_several_token_words_share_the_prompt_and_score_as_each_sequence_alone(setup, long_words, arch):
    model, tok, _, _ = setup
    if arch == "gpt2":
        model = _tiny_gpt2(tok)
    scores, gold = likelihood_scores(model, tok, long_words, long_words.eval, 64, batch_size=8)
    n = len(long_words.eval)
    assert scores.shape == (n, 2) and gold == list(long_words.eval["label_id"])
    with torch.no_grad():
        expected = torch.tensor([_alone(model, tok, long_words, row) for row in range(n)])
    assert torch.allclose(scores, expected, atol=1e-4)


def test_a_model_without_a_cache_scores_each_class_as_its_own_sequence(setup, long_words):
    model, tok, _, _ = setup

    class NoCache(torch.nn.Module):  # answers like a model that returns no KV cache
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, **kw):
            kw.pop("use_cache", None)
            out = self.inner(**kw, use_cache=False)
            assert getattr(out, "cache", None) is None
            return out

    forwarded = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, a, out: forwarded.append(a[0].numel()))
    try:
        shared, _ = likelihood_scores(model, tok, long_words, long_words.eval, 64, batch_size=8)
        n_shared = sum(forwarded)
        forwarded.clear()
        alone, _ = likelihood_scores(NoCache(model), tok, long_words, long_words.eval, 64, batch_size=8)
    finally:
        hook.remove()
    assert torch.allclose(shared, alone, atol=1e-4)
    # two classes: each prompt once (plus the words' tokens) instead of once per class
    assert n_shared < 0.7 * sum(forwarded)


def test_score_reports_mode_and_count(setup):
    model, tok, task, _ = setup
    res = score(model, tok, task, task.eval, "likelihood", 64, limit=7)
    assert res["n"] == 7 and res["mode"] == "likelihood" and 0 <= res["accuracy"] <= 1
    gen = score(model, tok, task, task.eval, "generate", 64, limit=4)
    assert gen["n"] == 4 and gen["mode"] == "generate"


def test_training_examples_mask_the_prompt(setup):
    _, tok, task, _ = setup
    enc = Encoder(tok, 64)
    ids, labels = enc.training_example("Text: the film was good\\nLabel:", "good")
    n_word = sum(1 for x in labels if x != -100)
    assert n_word >= 1 and labels[-n_word:] == ids[-n_word:] and all(x == -100 for x in labels[:-n_word])
    short = Encoder(tok, 8).training_example("the " * 50 + "Label:", "good")[0]
    assert len(short) <= 8  # long prompts are cut from the left; the word always fits
