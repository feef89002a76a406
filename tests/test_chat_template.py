"""A chat model in the Chat panes: the template applied to the pane's history and system prompt exactly, replies
streamed as growing prefixes of what greedy generation gives, and a reply ending at the end-of-turn marker."""

import pytest
import torch

from chat_models import EOS_TEMPLATE, NO_SYSTEM, bundled_chat_model, with_template
from curlora.errors import CurloraError
from curlora.experiment import ExperimentConfig
from curlora.models.loading import load_model
from curlora.run.chat import CHAT, COMPLETION, Chat, generate
from curlora.run.chat_format import chat_prompt, conversation, end_of_turn, has_template, stop_tokens
from curlora.run.runner import start
from tiny_experiment import make_experiment

SYSTEM = "Answer in the words of the king."
# Two earlier turns as gradio's Chatbot sends them back: content as a list of text parts.
HISTORY = [{"role": "user", "content": [{"type": "text", "text": "Who was king in Israel?"}], "metadata": None},
           {"role": "assistant", "content": [{"type": "text", "text": "David the son of Jesse."}]}]
MESSAGE = "And after him?"
EXPECTED = ("<|system|>\nAnswer in the words of the king.<|end|>\n"
            "<|user|>\nWho was king in Israel?<|end|>\n"
            "<|assistant|>\nDavid the son of Jesse.<|end|>\n"
            "<|user|>\nAnd after him?<|end|>\n"
            "<|assistant|>\n")


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory):
    """A run (created, not trained: the base pane needs only its config) on the bundled model with a template."""
    folder = tmp_path_factory.mktemp("chat-template")
    model_dir = bundled_chat_model(folder / "chat-model")
    d = make_experiment(folder / "exp")
    d["model"] = {"name": str(model_dir)}
    run, _ = start(ExperimentConfig.from_dict(d), folder / "runs")
    return run, model_dir


def test_the_prompt_is_the_template_applied_to_system_history_and_message(chat_run):
    run, model_dir = chat_run
    _, tok, _ = load_model(str(model_dir))
    assert has_template(tok)
    assert chat_prompt(tok, conversation(HISTORY, MESSAGE, SYSTEM)) == EXPECTED
    assert Chat().check(run.id, MESSAGE, [HISTORY], SYSTEM, root=run.root) == CHAT
    # No system prompt: no system turn; an empty turn is left out.
    assert conversation([{"role": "assistant", "content": ""}], "hi") == [{"role": "user", "content": "hi"}]


def test_streaming_grows_to_the_greedy_reply_and_stops_at_the_end_of_turn(chat_run):
    run, model_dir = chat_run
    chat = Chat()
    parts = list(chat.stream(run.id, "base", MESSAGE, history=HISTORY, system=SYSTEM, max_new_tokens=24,
                             root=run.root))
    assert len(parts) > 1 and all(b.startswith(a) and b != a for a, b in zip(parts, parts[1:]))
    # transformers' own greedy generation from the same prompt, stopped at eos or the end-of-turn text
    model, tok, _ = load_model(str(model_dir))
    ids = tok(EXPECTED, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=24, do_sample=False, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id, stop_strings=["<|end|>"], tokenizer=tok)
    reference = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).split("<|end|>")[0]
    assert parts[-1] == reference
    # the base pane is a plain completion of the prompt text when the tokenizer has no template
    d = make_experiment(run.root.parent / "plain")
    plain, _ = start(ExperimentConfig.from_dict(d), run.root)
    assert chat.check(plain.id, MESSAGE, [HISTORY], SYSTEM, root=run.root) == COMPLETION


def test_a_reply_ends_at_a_stop_token_or_a_stop_text(chat_run):
    _, model_dir = chat_run
    model, tok, _ = load_model(str(model_dir))
    ids = tok(EXPECTED, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        free = model.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=None,
                              pad_token_id=tok.pad_token_id)[0, ids.shape[1]:].tolist()
    # a stop token: the reply is what came before its first appearance, the token itself not shown
    k = next(i for i in range(2, len(free)) if free[i] not in free[:i])
    reply = list(generate(model, tok, ids, 12, stop_ids={free[k]}))[-1]
    assert reply == tok.decode(free[:k], skip_special_tokens=True)
    # a stop text (a marker split over tokens): the reply is cut where it begins, and never shown in a part
    whole = tok.decode(free, skip_special_tokens=True)
    marker = tok.decode(free[4:6], skip_special_tokens=True)
    parts = list(generate(model, tok, ids, 12, stop_ids=set(), stop_texts=(marker,)))
    assert parts[-1] == whole[:whole.find(marker)] and not any(marker in p for p in parts)


def test_the_end_of_turn_marker_is_read_from_the_template(chat_run, tmp_path):
    _, model_dir = chat_run
    _, tok, _ = load_model(str(model_dir))
    assert end_of_turn(tok) == "<|end|>"
    ids, texts = stop_tokens(tok, templated=True)
    assert texts == ("<|end|>",) and tok.eos_token_id in ids  # several tokens here: it stops as text
    eos_dir = with_template(model_dir, tmp_path / "eos", EOS_TEMPLATE)
    _, eos_tok, _ = load_model(str(eos_dir))
    assert end_of_turn(eos_tok) == eos_tok.eos_token
    assert stop_tokens(eos_tok)[0] == {eos_tok.eos_token_id}
    assert stop_tokens(tok, templated=False) == ({tok.eos_token_id}, ())  # plain completion: eos only, as before


def test_a_template_that_refuses_a_system_prompt_says_so_before_any_reply(chat_run, tmp_path):
    run, model_dir = chat_run
    refusing = with_template(model_dir, tmp_path / "refusing", NO_SYSTEM)
    d = make_experiment(tmp_path / "exp")
    d["model"] = {"name": str(refusing)}
    strict, _ = start(ExperimentConfig.from_dict(d), run.root)
    chat = Chat()
    with pytest.raises(CurloraError, match=r"refused the conversation \(System role not supported\); leave the "
                                           r"system prompt empty"):
        chat.check(strict.id, MESSAGE, [HISTORY], SYSTEM, root=run.root)
    assert chat.check(strict.id, MESSAGE, [HISTORY], "", root=run.root) == CHAT
    with pytest.raises(CurloraError, match="Type a prompt"):
        chat.check(strict.id, " ", root=run.root)
