"""Experience replay as a modifier of any trained method (issue 28): a share of each later task's training
examples drawn, seeded, from the earlier tasks' rows; the setting names it, so LoRA + replay is a row of its own.
And the joint (multi-task) upper bound: each task trained together with every earlier task's rows."""

import pytest

from curlora.errors import CurloraError
from curlora.experiment import ExperimentConfig
from curlora.run import train
from curlora.run.runner import load_everything, run_experiment
from tiny_experiment import make_experiment


@pytest.fixture
def exp(tmp_path):
    d = make_experiment(tmp_path / "exp", steps=2, methods=("lora",))
    d["evaluation"].update(probe_every=0, self_probe=False)
    return d


def test_replay_draws_its_share_from_earlier_tasks_seeded(exp):
    loaded = load_everything(ExperimentConfig.from_dict(exp))
    sent, pair = loaded.tasks
    tok = loaded.tokenizer
    earlier = train.training_examples(tok, sent, 48, head_mode=False)
    drawn = train.replay_examples(tok, [sent], len(pair.train), 0.2, seed=1, max_length=48)
    assert len(drawn) == round(len(pair.train) * 0.2 / 0.8)  # 20 % of the examples the task then trains on
    assert all(ex in earlier for ex in drawn)
    assert drawn == train.replay_examples(tok, [sent], len(pair.train), 0.2, seed=1, max_length=48)
    assert drawn != train.replay_examples(tok, [sent], len(pair.train), 0.2, seed=2, max_length=48)
    many = train.replay_examples(tok, [sent], 10 * len(sent.train), 0.5, seed=1, max_length=48)
    assert len(many) == 10 * len(sent.train) and all(ex in earlier for ex in many)  # past the pool: repeats
    assert all(many.count(ex) >= earlier.count(ex) for ex in earlier)  # every earlier row once before any twice
    assert train.replay_examples(tok, [], 10, 0.2, 1, 48) == []


def test_a_replay_method_trains_beside_its_plain_kind_and_says_so(exp, tmp_path, monkeypatch):
    exp["methods"] = [dict(exp["methods"][0]), dict(exp["methods"][0], name="lora-replay", replay=0.25),
                      dict(exp["methods"][0], name="lora-joint", joint=True)]
    seen = []
    real = train.train_task

    def counted(model, tokenizer, task, cfg, **kw):
        seen.append((task.name, len(kw.get("replay") or []), len(task.train)))
        return real(model, tokenizer, task, cfg, **kw)

    monkeypatch.setattr("curlora.run.runner.train_task", counted)
    run = run_experiment(ExperimentConfig.from_dict(exp), tmp_path / "runs")
    m = run.record()
    assert m.methods["lora-replay"].setting == {"lr": 0.05, "r": 4, "replay": 0.25}
    assert "replay" not in m.methods["lora"].setting
    n, earlier = seen[1][2], seen[0][2]  # pair's and sent's training rows
    assert seen == [("sent", 0, earlier), ("pair", 0, n), ("sent", 0, earlier), ("pair", round(n / 3), n),
                    ("sent", 0, earlier), ("pair", earlier, n)]  # joint: every earlier row beside the task's
    assert m.methods["lora-joint"].setting == {"lr": 0.05, "r": 4, "joint": True}
    from curlora.run.methods import described
    assert described("lora-replay", m.methods["lora-replay"].setting) == "lora-replay (lr 5e-2, r 4, replay 0.25)"


@pytest.mark.parametrize("change, message", [
    ({"replay": 1.0}, "above 0 and below 1"),
    ({"kind": "base", "replay": 0.1}, "does not train"),
    ({"kind": "base", "joint": True}, "joint: 'base' does not train"),
    ({"joint": True, "replay": 0.1}, "joint already trains on every earlier row"),
])
def test_replay_refusals_name_the_fix(exp, change, message):
    exp["methods"] = [dict(exp["methods"][0], **change)]
    with pytest.raises(CurloraError, match=message):
        ExperimentConfig.from_dict(exp)


def test_replay_is_refused_with_head_scoring(exp):
    exp["methods"] = [dict(exp["methods"][0], replay=0.1)]
    exp["evaluation"]["scoring"] = "head"
    with pytest.raises(CurloraError, match="use evaluation.scoring: likelihood"):
        ExperimentConfig.from_dict(exp)
