"""The chat-retention probe and the new-task KL (curlora/measure/chat_probe.py, curlora/measure/task_kl.py): KL
exactly 0 for the unchanged model and above 0 after a weight change, the exact-match normalisation, the repetition
rule, the unterminated count on a model that can never (or must at once) end its turn, resume reading the stored
replies back, old metrics.json files loading, the config's sentences, a whole run that stores every field per stage,
a model without a chat template (the probe off, one line in the log), and SmolLM2 where its cache is installed."""

import json

import pytest
import yaml
import torch

from chat_models import with_template
from curlora.errors import CurloraError
from curlora.experiment import ExperimentConfig
from curlora.measure import chat_probe as cp
from curlora.measure import probes, task_kl
from curlora.measure.record import STAGE_PROBES, MethodRecord, Row, RunMetrics
from curlora.measure.scoring import pad_id
from curlora.models.loading import load_model
from curlora.run.chat_format import chat_prompt, conversation, stop_tokens
from tiny_experiment import make_experiment
from tiny_models import save_tiny_llama_dir


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chat")
    plain = save_tiny_llama_dir(folder / "plain")
    model, tok, _ = load_model(str(with_template(plain, folder / "templated")), device="cpu", dtype="float32")
    return model, tok


def chat_of(model, tok) -> cp.Chat:
    ids, texts = stop_tokens(tok, model)
    return cp.Chat(render=lambda t: tok(chat_prompt(tok, conversation(None, t)), add_special_tokens=False).input_ids,
                   stop_ids=ids, stop_texts=texts, pad=pad_id(tok))


@pytest.fixture
def forced(chat_model):
    """Force the model's next token: `forced(ids, value)` sets those logits to value (restored afterwards)."""
    model, _ = chat_model
    handles = []

    def force(ids, value):
        def hook(_module, _inputs, out):
            out[..., list(ids)] = value
            return out
        handles.append(model.lm_head.register_forward_hook(hook))

    yield force
    for h in handles:
        h.remove()


# -- KL: 0 unchanged, > 0 after a weight change ---------------------------------------------------------------------
def test_chat_kl_is_exactly_zero_for_the_unchanged_model_and_positive_after_a_weight_change(chat_model, tmp_path):
    model, tok = chat_model
    chat = chat_of(model, tok)
    probe = cp.load_or_make(tmp_path, model, tok, chat, 4, 6, facts_n=3)
    assert len(probe.targets) == 4 and all(len(t) >= 1 for t in probe.targets)
    base = cp.measures(model, tok, probe, chat)
    assert base["chat_kl"] == 0.0 and base["facts_n"] == 3
    prompts = [[1, 5, 9, 12, 7], [1, 20, 21], [1, 30, 31, 32, 33, 34, 35]]
    refs, info = task_kl.load_or_make(tmp_path, model, {"t": prompts}, pad_id(tok), 3)
    assert task_kl.measure(model, refs["t"], pad_id(tok)) == 0.0 and info["reference"] == "full"
    weight = model.model.layers[0].mlp.down_proj.weight
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.add_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)) * 0.5)
        assert cp.measures(model, tok, probe, chat)["chat_kl"] > 0
        assert task_kl.measure(model, refs["t"], pad_id(tok)) > 0
    finally:
        with torch.no_grad():
            weight.copy_(saved)


def test_the_top_k_reference_is_exact_for_the_unchanged_model_too(chat_model, monkeypatch):
    model, tok = chat_model
    monkeypatch.setattr(probes, "FULL_VOCAB_MAX", 16)  # the tiny vocabulary then stores top-k + remainder
    seqs, spans = [[1, 5, 9, 12, 7], [1, 20, 21]], [4, 2]
    ref = probes.span_reference(model, seqs, spans, pad_id(tok), top_k=8)
    assert ref["logp"].shape == (6, 9) and ref["index"].shape == (6, 8)
    assert probes.span_kl(model, seqs, spans, pad_id(tok), ref) == 0.0


def test_left_padded_batches_give_the_same_replies_as_one_at_a_time(chat_model):
    model, tok = chat_model
    chat = chat_of(model, tok)
    prompts = [chat.render(x["instruction"]) for x in cp.instructions(3)]
    together = cp.greedy(model, tok, prompts, 5, chat)
    alone = [cp.greedy(model, tok, [p], 5, chat)[0] for p in prompts]
    assert [r.ids for r in together] == [r.ids for r in alone]


# -- scoring rules -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("Paris", "paris"), ("Paris.", "paris"), ("  The Pacific Ocean!\nmore text", "pacific ocean"),
    ("\n\nAu\n", "au"), ("an apple", "apple"), ("Fifty-six", "fifty six"), ("1945.", "1945"), ("", ""),
    ("It's THE answer", "it s answer"),
])
def test_the_normalisation(text, expected):
    assert cp.normalise(text) == expected


def test_a_fact_is_right_when_its_answer_stands_in_the_reply_as_whole_words():
    fact = cp.Fact("f", "What is 7 times 8?", "56", ("fifty-six", "fifty six"))
    assert fact.correct("56") and fact.correct("56.") and fact.correct("Fifty six!") and fact.correct("fifty-six")
    assert fact.correct("The answer is 56.") and fact.correct("7 times 8 is 56")
    assert not fact.correct("57") and not fact.correct("560") and not fact.correct("5 6") and not fact.correct("")
    assert not fact.correct("I think\n56")  # the first non-empty line only
    ocean = cp.Fact("o", "Largest ocean?", "Pacific", ("Pacific Ocean",))
    assert ocean.correct("The Pacific.") and ocean.correct("the pacific ocean") and not ocean.correct("Atlantic")
    zero = cp.Fact("z", "Freezing point?", "0", ("zero",))
    assert not zero.correct("The freezing point of water is -18.00 degrees Celsius.") and zero.correct("0 °C")
    paris = cp.Fact("p", "What is the capital of France?", "Paris")
    assert paris.correct("The capital of France is Paris.") and not paris.correct("It is Lyon, not Parisian.")


def test_no_answer_stands_in_its_own_question():
    for f in cp.facts():
        assert not f.correct(f.question), f.id


def test_the_repetition_rule():
    assert cp.longest_run([1, 2, 2, 2, 3]) == 3 and cp.longest_run([]) == 0
    assert cp.repetitive([5] * 8, "") and not cp.repetitive([5] * 7 + [6] + [5] * 7, "")
    assert cp.most_repeated("a b c d a b c d a b c d") == 3  # overlapping 4-grams: 'a b c d' three times
    # a three-word phrase said three times: each 4-gram across it ('i like it. i') occurs twice, not three times
    assert cp.most_repeated("I like it. I like it. I like it.") == 2
    assert not cp.repetitive([1, 2, 3], "I like it. I like it. I like it.")
    assert cp.repetitive([1, 2, 3], "I like it. I like it. I like it. I like it.")  # four times: three
    assert not cp.repetitive(list(range(40)), "one two three four five six seven eight nine ten")
    assert cp.repetitive([1, 2], "go home now please go home now please go home now please")


def test_the_probe_data_is_what_the_readme_promises():
    asked = cp.instructions()
    assert len(asked) >= 32 and len({x["id"] for x in asked}) == len(asked)
    assert {x["kind"] for x in asked} >= {"howto", "explain", "rewrite", "list", "creative", "advice"}
    fs = cp.facts()
    assert len(fs) >= 30 and all(f.source and f.answer for f in fs) and len({f.id for f in fs}) == len(fs)
    assert all(f.question.endswith(("Answer with one word.", "Answer with a number.")) for f in fs)
    assert cp.instructions(5) == asked[:5] and cp.facts(4) == fs[:4]


# -- unterminated replies ------------------------------------------------------------------------------------------
def test_a_model_that_never_ends_its_turn_leaves_every_reply_unterminated(chat_model, forced, tmp_path):
    model, tok = chat_model
    chat = chat_of(model, tok)
    probe = cp.load_or_make(None, model, tok, chat, 4, 5, facts_n=2)
    forced(chat.stop_ids, -1e9)
    m = cp.measures(model, tok, probe, chat)
    assert m["replies_unterminated"] == 4


def test_a_model_that_ends_at_once_leaves_none_unterminated(chat_model, forced):
    model, tok = chat_model
    chat = chat_of(model, tok)
    forced([min(chat.stop_ids)], 1e9)
    probe = cp.load_or_make(None, model, tok, chat, 4, 5, facts_n=2)
    assert all(t == [min(chat.stop_ids)] for t in probe.targets)  # the end of turn, and nothing before it
    m = cp.measures(model, tok, probe, chat)
    assert m["replies_unterminated"] == 0 and m["replies_repetitive"] == 0 and m["chat_kl"] == 0.0
    assert m["facts"] == 0 and m["facts_n"] == 2


# -- resume ---------------------------------------------------------------------------------------------------------
def test_resume_reads_the_stored_replies_back_instead_of_generating(chat_model, tmp_path, monkeypatch):
    model, tok = chat_model
    chat = chat_of(model, tok)
    study, run = tmp_path / "study", tmp_path / "run"
    study.mkdir()
    run.mkdir()
    made = cp.load_or_make(study, model, tok, chat, 3, 4, facts_n=2)
    body = json.loads((study / cp.PROBE_FILE).read_text())
    assert body["prompt_ids"] == made.prompts and len(body["replies"]) == 3 and body["info"]["tokens"] == 4
    assert (study / cp.REF_FILE).is_file()

    def refuse(*a, **k):
        raise AssertionError("regenerated")

    monkeypatch.setattr(cp, "greedy", refuse)
    again = cp.load_or_make(study, model, tok, chat, 3, 4, facts_n=2)
    assert again.targets == made.targets and torch.equal(again.ref["logp"], made.ref["logp"])
    # a study's run names the study folder that holds the reference, and reads it from there
    assert probes.share_reference(study, run, cp.PROBE_FILE, cp.REF_FILE)
    shared = cp.load_or_make(run, model, tok, chat, 3, 4, facts_n=2)
    assert shared.targets == made.targets and not (run / cp.REF_FILE).exists()
    monkeypatch.undo()
    other = cp.load_or_make(study, model, tok, chat, 2, 4, facts_n=2)  # other settings: made again
    assert len(other.targets) == 2


# -- records and config --------------------------------------------------------------------------------------------
def test_old_metrics_json_without_the_fields_loads():
    from test_record import OLD

    m = RunMetrics.of(OLD)
    rec = m.methods["lora"]
    for name in STAGE_PROBES:
        assert getattr(rec, name) == [None, None, None]
    assert m.chat_probe is None and m.task_kl is None and m.base.chat_kl is None and m.base.facts_accuracy is None
    assert rec.row(2).task_kl is None and rec.last("chat_kl") is None
    row = Row(accuracy=[1.0], chat_kl=0.5, facts=3, facts_n=4, facts_correct="e", task_kl=0.25)
    rec2 = MethodRecord()
    rec2.append(row, {"total": 0.0, "per_matrix": {}})
    assert rec2.row(0) == row and row.facts_accuracy == 0.75
    assert "facts_correct" not in row.event() and row.event()["chat_kl"] == 0.5
    assert MethodRecord.from_json(rec2.to_json()).chat_kl == [0.5]


@pytest.mark.parametrize("evaluation, said", [
    ({"chat_probe": True, "chat_probe_instructions": 40},
     "evaluation.chat_probe_instructions: 40 is more than the 36 bundled instructions; use 36 or fewer."),
    ({"chat_probe": True, "chat_probe_facts": 99},
     "evaluation.chat_probe_facts: 99 is more than the 36 bundled factual questions; use 36 or fewer."),
    ({"chat_probe_instructions": 0}, "evaluation.chat_probe_instructions: must be at least 1, got 0."),
    ({"chat_probe_tokens": 0}, "evaluation.chat_probe_tokens: must be at least 1, got 0."),
    ({"chat_probe_facts": 0}, "evaluation.chat_probe_facts: must be at least 1, got 0."),
    ({"task_kl_rows": -1}, "evaluation.task_kl_rows: must be at least 0, got -1."),
    ({"chat_probe_tokens": 5000}, "evaluation.chat_probe_tokens: 5,000 is above the upper bound of 4,096; use 4,096 "
                                  "or less."),
])
def test_config_sentences(evaluation, said):
    with pytest.raises(CurloraError) as err:
        ExperimentConfig.from_dict({"tasks": [{"name": "a", "train_file": "a.csv"}], "evaluation": evaluation})
    assert str(err.value) == said


def test_defaults_the_real_demo_leaves_it_off_and_the_study_turns_it_on():
    from curlora.paths import REAL_DEMO, REPO

    ev = ExperimentConfig.from_dict({"tasks": [{"name": "a", "train_file": "a.csv"}]}).evaluation
    assert (ev.chat_probe, ev.chat_probe_instructions, ev.chat_probe_tokens, ev.chat_probe_facts,
            ev.task_kl_rows) == (False, 32, 64, None, 0)
    demo = ExperimentConfig.from_yaml(REAL_DEMO.read_text(), source=str(REAL_DEMO)).evaluation
    assert not demo.chat_probe and demo.task_kl_rows == 0  # its time was measured without them
    study = yaml.safe_load((REPO / "bench" / "studies" / "smollm2-frontier.yaml").read_text())["evaluation"]
    assert study["chat_probe"] and study["chat_probe_instructions"] >= 32 and study["task_kl_rows"] > 0


# -- a whole run -----------------------------------------------------------------------------------------------------
def _tiny(tmp_path, templated: bool) -> ExperimentConfig:
    exp = make_experiment(tmp_path / "exp", steps=2)
    if templated:
        exp["model"]["name"] = str(with_template(tmp_path / "exp" / "model", tmp_path / "chat-model"))
    exp["methods"] = exp["methods"][1:]  # lora alone
    exp["evaluation"].update(probe_every=0, self_probe=False, chat_probe=True, chat_probe_instructions=3,
                             chat_probe_tokens=5, chat_probe_facts=3, task_kl_rows=4)
    return ExperimentConfig.from_dict(exp)


def test_a_run_stores_the_chat_probe_and_the_new_task_kl_per_stage(tmp_path):
    from curlora.run.runner import run_experiment

    run = run_experiment(_tiny(tmp_path, True), root=tmp_path / "runs")
    m = run.record()
    base, rec = m.base, m.methods["lora"]
    assert base.chat_kl == 0.0 and base.task_kl is None and base.facts_n == 3
    assert len(rec.chat_kl) == 3 and rec.chat_kl[0] == 0.0 and all(x > 0 for x in rec.chat_kl[1:])
    assert rec.task_kl[0] is None and all(x > 0 for x in rec.task_kl[1:])
    assert all(0 <= x <= 3 for x in rec.replies_unterminated + rec.replies_repetitive + rec.facts)
    assert m.chat_probe["instructions"] == 3 and m.chat_probe["tokens"] == 5 and m.task_kl["rows"] == 4
    assert (run.path / cp.PROBE_FILE).is_file() and (run.path / task_kl.REF_FILE).is_file()
    stages = [e for e in run.events() if e["kind"] == "stage"]
    assert [e["chat_kl"] for e in stages if e["method"] == "lora"] == rec.chat_kl[1:]
    assert json.loads((run.path / "metrics.json").read_text())["methods"]["lora"]["task_kl"] == rec.task_kl


def test_without_a_chat_template_the_probe_is_off_with_one_line_in_the_log(tmp_path):
    from curlora.run.runner import run_experiment

    run = run_experiment(_tiny(tmp_path, False), root=tmp_path / "runs")
    m = run.record()
    assert m.base.chat_kl is None and m.methods["lora"].chat_kl == [None, None, None]
    assert m.chat_probe is None and all(x is not None for x in m.methods["lora"].task_kl[1:])
    notes = [e["message"] for e in run.events() if e["kind"] == "note"]
    assert notes == ["The chat probe is off for this run: the model's tokenizer has no chat template, so it has no "
                     "chat turn to measure."]


# -- SmolLM2, where its converted cache is installed ----------------------------------------------------------------
def test_smollm2_base_replies_end_their_turn_and_know_a_capital():
    from curlora.models import gguf

    try:
        gguf.packaged(gguf.SMOLLM2)
    except CurloraError as err:
        pytest.skip(f"SmolLM2 is not installed here ({err})")
    model, tok, _ = load_model(gguf.SMOLLM2, device="cpu")
    chat = chat_of(model, tok)
    assert 2 in chat.stop_ids  # <|im_end|>
    probe = cp.load_or_make(None, model, tok, chat, 2, 24, facts_n=2)
    m = cp.measures(model, tok, probe, chat)
    assert m["chat_kl"] == 0.0 and m["facts_n"] == 2 and m["facts"] >= 1  # Paris, at least
    assert 0 <= m["replies_unterminated"] <= 2


def test_the_cost_estimate_counts_the_chat_probe_only_where_it_runs(chat_model):
    from curlora.run.cost import _chat_probe_seconds

    model, tok = chat_model
    plain = ExperimentConfig.from_dict({"tasks": [{"name": "a", "train_file": "a.csv"}]})
    on = ExperimentConfig.from_dict({"tasks": [{"name": "a", "train_file": "a.csv"}],
                                     "evaluation": {"chat_probe": True, "chat_probe_instructions": 2,
                                                    "chat_probe_tokens": 4}})
    assert _chat_probe_seconds(plain, model, tok, 1e-3) == (0.0, 0.0)
    stage, base = _chat_probe_seconds(on, model, tok, 1e-3)
    assert stage > 0 and base > 0
    untemplated = type("Tok", (), {"chat_template": None})()
    assert _chat_probe_seconds(on, model, untemplated, 1e-3) == (0.0, 0.0)


# -- the study: per-run chat measures into points, groups, a retention frontier and the sentence ---------------------
def test_the_chat_measures_flow_into_a_studys_points_groups_frontier_and_sentence():
    from curlora.measure import study_analysis as A
    from curlora.measure.study_record import Comparison, Group, Interpolated, Point, StudyRecord

    rec = MethodRecord(matrix=[[0.5], [0.9]], chat_kl=[0.0, 0.2], facts=[20, 15], facts_n=[30, 30],
                       replies_unterminated=[1, 4], replies_repetitive=[0, 2], task_kl=[None, 0.3])
    assert A.chat_measures(rec) == {"chat_kl": 0.2, "facts": 50.0, "facts_base": None, "replies_unterminated": 4,
                                    "replies_repetitive": 2, "task_kl": 0.3}
    base = Row(accuracy=[0.5], facts=24, facts_n=30)  # the base's own row in the same run
    assert A.chat_measures(rec, base)["facts_base"] == pytest.approx(80.0)
    old = MethodRecord.from_json({"matrix": [[0.5], [0.9]]})
    assert set(A.chat_measures(old).values()) == {None}

    pts = [Point(method="a", lr=lr, seed=s, run_id=f"{lr}-{s}", learning=learn + s, forgetting=1.0,
                 chat_kl=kl + s / 100, facts=facts) for lr, learn, kl, facts in ((1e-3, 5.0, 0.1, 60.0), (1e-2, 10.0, 0.3, 50.0),
                                                             (3e-2, 8.0, 0.4, 40.0)) for s in (0, 1)]
    groups = A.groups_of(pts)
    assert groups["a@1e-3"].chat_kl.mean == pytest.approx(0.105) and groups["a@1e-3"].chat_kl.n == 2
    # a@3e-2 learns less than a@1e-2 and drifts more in chat: off the learning-against-chat-retention frontier
    assert A.frontier_of(groups, "a", "chat_kl") == ["a@1e-3", "a@1e-2"]
    assert A.frontier_of(groups, "a", "facts") == ["a@1e-3", "a@1e-2"]  # facts: higher is better
    study = A.analyse(A.StudySettings(lrs={"a": [1e-3, 1e-2, 3e-2]}), None, [], pts, None, tasks=["t"])
    assert study.chat_frontier == {"a": ["a@1e-3", "a@1e-2"]}
    assert StudyRecord.of(study.to_json()).chat_frontier == study.chat_frontier
    assert {t.probe for t in study.probes} >= {"chat_kl", "task_kl"}

    c = Comparison(methods=["a", "b"], chat_kl={"a": Interpolated(mean=0.1234, ci95=[0.1, 0.2]),
                                                 "b": Interpolated(mean=0.5, ci95=None)},
                   facts={"a": Interpolated(mean=60.0, ci95=[50.0, 70.0]), "b": Interpolated(mean=40.0)})
    assert A.chat_sentence(c) == (" Chat retention there: KL to the base on its chat replies a 0.1234 [0.1000, "
                                  "0.2000], b 0.5000 (one seed: no interval); factual questions right a 60.0 pts "
                                  "[50.0, 70.0], b 40.0 pts (one seed: no interval).")
    assert A.chat_sentence(Comparison(methods=["a", "b"])) == ""
    back = Comparison.from_json(c.to_json())
    assert back.chat_kl["a"].mean == 0.1234 and back.facts["b"].mean == 40.0
    assert Group.of(groups["a@1e-2"].to_json()).facts.mean == 50.0


def test_a_task_kl_reference_measured_on_other_rows_is_never_read(chat_model, tmp_path):
    """rows_per_seed: another seed's base row replaces the study's reference; a run that names it measures its own."""
    model, tok = chat_model
    study, run = tmp_path / "study", tmp_path / "run"
    study.mkdir()
    run.mkdir()
    mine = {"t": [[1, 5, 9, 12, 7], [1, 20, 21]]}
    task_kl.load_or_make(study, model, mine, pad_id(tok), 2)
    assert probes.share_reference(study, run, task_kl.FILE, task_kl.REF_FILE)
    other = {"t": [[1, 40, 41, 42], [1, 50, 51]]}
    task_kl.load_or_make(study, model, other, pad_id(tok), 2)  # the study's files now hold the other rows
    refs, _ = task_kl.load_or_make(run, model, mine, pad_id(tok), 2)
    assert (run / task_kl.REF_FILE).is_file()  # measured again, on its own prompts
    assert refs["t"][1]["logp"].shape[0] == 4 + 2 and task_kl.measure(model, refs["t"], pad_id(tok)) == 0.0
