"""Chat panes use their own weights: base is the plain base model, each method@stage its own adapter."""

import pytest
import torch

from curlora.errors import CurloraError
from curlora.experiment import ExperimentConfig
from curlora.models.loading import load_model
from curlora.run.chat import Chat, pane_choices, parse_pane
from curlora.run.store import Run
from curlora.serve.jobs import JobManager
from tiny_experiment import make_experiment

PROMPT = "the king"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chat")
    cfg = ExperimentConfig.from_dict(make_experiment(folder, steps=4, lr=0.2))
    jobs = JobManager(folder / "runs")
    run_id = jobs.submit(cfg)
    assert jobs.wait(run_id, timeout=300)
    assert jobs.status(run_id)["status"] == "completed"
    return Run.open(run_id, folder / "runs"), cfg


def reply(chat, run, pane, **kw):
    return list(chat.stream(run.id, pane, PROMPT, max_new_tokens=16, root=run.root, **kw))[-1]


def test_three_panes_differ_and_base_is_the_plain_base_model(trained):
    run, cfg = trained
    chat = Chat()
    base, lora, cur = (reply(chat, run, p) for p in ("base", "lora@2", "curlora@2"))
    assert len({base, lora, cur}) == 3, (base, lora, cur)
    # The base pane, asked again after adapters were attached and detached, is the untouched base model…
    assert reply(chat, run, "base") == base
    # …and equals transformers' own greedy generation from a freshly loaded copy.
    model, tok, _ = load_model(cfg.model.name)
    ids = tok(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=16, do_sample=False, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id)
    assert tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True) == base


def test_streaming_grows_and_sampling_is_seeded(trained):
    run, _ = trained
    chat = Chat()
    # the base pane: a trained pane's 8 tokens may all be pieces of characters, which are held back until whole
    parts = list(chat.stream(run.id, "base", PROMPT, max_new_tokens=8, root=run.root))
    assert len(parts) > 1 and all(parts[i + 1].startswith(parts[i][:1]) for i in range(len(parts) - 1))
    a = reply(chat, run, "lora@1", temperature=1.0, top_p=0.9, seed=3)
    b = reply(chat, run, "lora@1", temperature=1.0, top_p=0.9, seed=3)
    assert a == b


def test_panes_are_checked(trained):
    run, _ = trained
    assert pane_choices(run) == {"curlora": [1, 2], "lora": [1, 2]}
    assert parse_pane("lora@2") == ("lora", 2) and parse_pane("base") == ("base", 0)
    chat = Chat()
    with pytest.raises(CurloraError, match="not a chat pane"):
        reply(chat, run, "lora")
    with pytest.raises(CurloraError, match="no saved lora adapter after stage 3"):
        reply(chat, run, "lora@3")
    with pytest.raises(CurloraError, match="Pick a run"):
        list(chat.stream(None, "base", PROMPT))
    with pytest.raises(CurloraError, match="prompt"):
        list(chat.stream(run.id, "base", "  ", root=run.root))


def test_a_run_without_lora_or_curlora_shows_its_other_methods_in_the_trained_panes():
    from curlora.ui.chat_tab import pane_methods

    assert pane_methods({"curlora": [1], "lora": [1], "full": [1]}) == {"lora": "lora", "curlora": "curlora"}
    assert pane_methods({"curlora": [1, 2], "full": [1, 2]}) == {"lora": "full", "curlora": "curlora"}
    assert pane_methods({"full": [1], "pissa": [1]}) == {"lora": "full", "curlora": "pissa"}
    assert pane_methods({"lora-replay25": [1]}) == {"lora": "lora-replay25", "curlora": "curlora"}


def test_the_trained_panes_follow_each_methods_kind_not_its_label():
    """A LoRA named 'baseline' fills the LoRA pane and a DoRA named 'lora-dora' does not (a label prefix would have
    put it there); a CURLoRA named 'mine' fills the CURLoRA pane."""
    from curlora.measure.record import RunMetrics
    from curlora.ui.chat_tab import pane_methods

    record = RunMetrics.of({"tasks": ["a"], "methods": {"lora-dora": {"kind": "dora"}, "baseline": {"kind": "lora"},
                                                        "mine": {"kind": "curlora"}}})
    choices = {"lora-dora": [1], "baseline": [1], "mine": [1]}
    assert pane_methods(choices, record) == {"lora": "baseline", "curlora": "mine"}
    assert pane_methods({"lora-dora": [1], "mine": [1]}, record) == {"lora": "lora-dora", "curlora": "mine"}


@pytest.mark.parametrize("top,low", [(1, 1), (3, 1), (0, 0), (1, 0), (5, 0)])
def test_a_stage_slider_is_valid_for_one_stage_or_none(top, low):
    """Gradio refuses a slider whose minimum is not below its maximum: a run with one saved stage (a one-task run)
    once broke the Chat tab's pick that way."""
    import gradio as gr

    from curlora.ui.common import stage_slider

    u = stage_slider(top, low=low)
    assert u["minimum"] == low and u["maximum"] > low and u["value"] == top and u["interactive"] == (top > low)
    gr.Slider(minimum=u["minimum"], maximum=u["maximum"], value=u["value"], step=u["step"])  # accepted
