"""The continual-learning baselines: experience replay as a modifier of any trained method (a seeded, exact share of
every batch from earlier tasks' rows, the same rows for every method) and the joint multi-task upper bound (a fresh
adapter per stage on every task so far)."""

import dataclasses
import json

import pytest

from curlora.errors import CurloraError
from curlora.experiment import ExperimentConfig, TrainingSettings, replayed_rows
from curlora.methods.registry import described, method, stage_steps
from curlora.run import train
from curlora.run.runner import load_everything, run_experiment
from tiny_experiment import make_experiment


@pytest.mark.parametrize("grouped", [True, False])
def test_every_batch_holds_the_stated_count_of_earlier_rows_seeded(grouped):
    cfg = TrainingSettings(batch_size=8, seed=3, group_by_length=grouped)
    lengths = [5 + (i * 7) % 11 for i in range(30)]
    k = replayed_rows(0.25, 8)
    assert k == 2

    def batches(seed=3, stage=1):
        sampler = train.stage_batches(lengths, dataclasses.replace(cfg, seed=seed), pool=20, share=0.25, stage=stage)
        return [list(b) for _ in range(2) for b in sampler]  # two epochs

    got = batches()
    assert len(got) == 2 * 5  # 30 own rows, 6 a batch
    for b in got:
        assert sum(i >= 30 for i in b) == k  # exactly k replayed rows in every batch, the rest the task's own
        assert all(i < 30 for i in b[:-k])
    # The own rows are the batches of plain training at batch_size − k: replay adds rows, it moves none.
    plain = train.stage_batches(lengths, dataclasses.replace(cfg, batch_size=6))
    assert [b[:-k] for b in got] == [list(b) for _ in range(2) for b in plain]
    # Two epochs draw 20 replayed rows: each of the pool's 20 exactly once (without replacement until used up).
    assert sorted(i for b in got for i in b[-k:]) == list(range(30, 50))
    assert batches() == got  # seeded: the same every time
    assert batches(seed=4) != got and batches(stage=2) != got
    # The first task has nothing to replay: full batches of its own rows.
    first = list(train.stage_batches(lengths, cfg, pool=0, share=0.25, stage=0))
    assert sorted(len(b) for b in first) == [6, 8, 8, 8] and max(i for b in first for i in b) < 30


def test_replay_and_joint_run_with_the_setting_in_every_label(tmp_path, monkeypatch):
    """lora + replay and curlora + replay replay the same earlier rows, each encoded by its own task; joint trains on
    both tasks at stage 2; the setting shows in the stored setting, the labels and the train records."""
    seen = []  # per train_task call: (examples, the batches its loader drew)
    real_loader = train.DataLoader

    class Recorder:
        def __init__(self, sampler):
            self.sampler, self.drawn = sampler, []

        def __len__(self):
            return len(self.sampler)

        def __iter__(self):
            for b in self.sampler:
                self.drawn.append(list(b))
                yield b

    def loader(examples, batch_sampler, collate_fn):
        rec = Recorder(batch_sampler)
        seen.append((examples, rec))
        return real_loader(examples, batch_sampler=rec, collate_fn=collate_fn)

    monkeypatch.setattr(train, "DataLoader", loader)
    exp = make_experiment(tmp_path, steps=2, methods=("lora", "curlora", "joint"))
    exp["methods"][0].update(name="lora-replay", replay=0.25)
    exp["methods"][1].update(name="curlora-replay", replay=0.25)
    exp["evaluation"].update(probe_every=0, self_probe_texts=2, self_probe_tokens=8)
    cfg = ExperimentConfig.from_dict(exp)
    run = run_experiment(cfg, root=tmp_path / "runs")
    m = run.record()
    assert {label: rec.status for label, rec in m.methods.items()} == dict.fromkeys(
        ["lora-replay", "curlora-replay", "joint"], "completed")

    assert m.methods["lora-replay"].setting == {"lr": 0.05, "r": 4, "replay": 0.25}
    assert described("lora-replay", m.methods["lora-replay"].setting) == "lora-replay (lr 5e-2, r 4, replay 0.25)"
    assert described("joint", m.methods["joint"].setting) == "joint (lr 5e-2, r 4)"
    stored = run.metrics()["methods"]["curlora-replay"]
    assert stored["setting"]["replay"] == 0.25 and [t["replayed_per_batch"] for t in stored["train"]] == [0, 1]

    (lr1, lr2), (cr1, cr2), (j1, j2) = seen[0:2], seen[2:4], seen[4:6]
    n_sent, n_pair = len(lr1[0]), len(j2[0]) - len(lr1[0])
    # Task 1: nothing to replay, full batches of its own rows.
    assert len(lr1[0]) == n_sent and all(max(b) < n_sent for b in lr1[1].drawn)
    # Task 2: one replayed row (0.25 × 4) in every batch, from sent's rows, encoded with sent's prompt and words.
    loaded = load_everything(cfg)
    tok, tasks = loaded.tokenizer, loaded.tasks
    sent_rows = train.training_examples(tok, tasks[0], cfg.training.max_length, False)
    pair_rows = train.training_examples(tok, tasks[1], cfg.training.max_length, False)
    assert lr2[0] == pair_rows + sent_rows
    drawn = lr2[1].drawn
    assert [sum(i >= n_pair for i in b) for b in drawn] == [1] * len(drawn) and len(drawn[0]) == 4
    assert all(len(b) <= 4 for b in drawn)  # 3 own rows a batch (fewer in an epoch's last), 1 replayed
    # The same replayed rows (the same batches) for both methods with the same replay and seed.
    assert lr2[1].drawn == cr2[1].drawn and lr1[1].drawn == cr1[1].drawn
    # Joint: stage 1 on sent alone, stage 2 on both tasks' rows shuffled together, max_steps for each, from fresh.
    assert j1[0] == sent_rows and j2[0] == sent_rows + pair_rows
    assert {i < n_sent for b in j2[1].drawn for i in b} == {True, False}
    joint = m.methods["joint"].train
    assert [t.trained_on for t in joint] == [["sent"], ["sent", "pair"]] and [t.steps for t in joint] == [2, 4]
    assert [t.trained_on for t in m.methods["lora-replay"].train] == [["sent"], ["pair"]]


def test_the_stage_steps_the_budgets_count():
    tasks = [{"name": "a", "train_file": "a.csv"}, {"name": "b", "train_file": "b.csv"}]
    cfg = ExperimentConfig.from_dict({"tasks": tasks,
                                      "methods": [{"kind": "joint"}, {"kind": "lora", "replay": 0.25}],
                                      "training": {"batch_size": 8, "epochs": 1}})
    joint, replay = cfg.methods
    assert [stage_steps(joint, cfg.training, i, 5, None) for i in range(2)] == [5, 10]
    assert [stage_steps(joint, cfg.training, i, None, [16, 24]) for i in range(2)] == [2, 5]
    # replay 0.25 of 8: 6 own rows a batch from stage 2 on, so an epoch of 24 rows is 4 steps
    assert [stage_steps(replay, cfg.training, i, None, [16, 24]) for i in range(2)] == [2, 4]


@pytest.mark.parametrize("method_cfg, scoring, message", [
    ({"kind": "lora", "replay": 1.5}, "likelihood",
     "methods[0].replay: 1.5 is not a share of a batch; use 0 (off) or more, below 1 (0.1 replays a tenth of every "
     "batch)."),
    ({"kind": "lora", "replay": -0.1}, "likelihood", "methods[0].replay: -0.1 is not a share of a batch"),
    ({"kind": "base", "replay": 0.25}, "likelihood",
     "methods[0].replay: 'base' trains nothing, so it has no batch to replay earlier rows into; set replay: 0 or "
     "drop it from this method."),
    ({"kind": "joint", "replay": 0.25}, "likelihood",
     "methods[0].replay: 'joint' already trains on every earlier task's rows, so replay adds nothing; set replay: 0 "
     "or drop it from this method."),
    ({"kind": "lora", "replay": 0.1}, "likelihood",
     "methods[0].replay: 0.1 of a batch of 4 rows rounds to no replayed row; raise replay to at least 0.125 or "
     "training.batch_size to at least 5."),
    ({"kind": "lora", "replay": 0.9}, "likelihood",
     "methods[0].replay: 0.9 of a batch of 4 rows leaves none of the task's own rows; lower replay below 0.875 or "
     "raise training.batch_size."),
    ({"kind": "lora", "replay": 0.25}, "head", "methods[0].replay: with head scoring every task trains its own head"),
    ({"kind": "head-only", "replay": 0.25}, "head", "methods[0].replay: 'head-only' trains one head per task"),
    ({"kind": "joint"}, "head", "methods[0]: 'joint' trains one label-word loss over every task so far"),
    ({"kind": "ewc"}, "head", "methods[0]: 'ewc' weighs the adapter by the label-word loss's Fisher"),
    ({"kind": "ewc", "ewc_lambda": -1}, "likelihood", "methods[0].ewc_lambda: must be 0 or more, got -1"),
])
def test_replay_and_joint_refusals_are_one_sentence(method_cfg, scoring, message):
    with pytest.raises(CurloraError) as err:
        ExperimentConfig.from_dict({"tasks": [{"name": "a", "train_file": "a.csv"}], "methods": [method_cfg],
                                    "training": {"batch_size": 4}, "evaluation": {"scoring": scoring}})
    assert str(err.value).startswith(message) and str(err.value).count(". ") == 0


def test_joint_is_a_registered_baseline_with_lora_boxes():
    joint = method("joint")
    assert (joint.group, joint.column, joint.has_adapter, joint.replays) == ("baselines", "lora", True, False)
    assert list(joint.stage_tasks(2)) == [0, 1, 2] and list(method("lora").stage_tasks(2)) == [2]


def test_a_study_takes_replay_as_an_axis_carries_it_in_its_points_and_runs_joint_on_its_grid(tmp_path):
    from curlora.run import study as S

    exp = make_experiment(tmp_path / "exp", steps=2, methods=("lora", "joint"))
    exp["evaluation"].update(probe_every=0, self_probe_texts=2, self_probe_tokens=8)
    cfg = ExperimentConfig.from_dict(exp)
    settings = S.StudySettings.from_dict({"lrs": {"lora": [0.01], "joint": [0.01]}, "seeds": [0], "replays": [0.25]})
    study = S.run_study(cfg, settings, tmp_path / "runs")
    body = json.loads((study.path / "study.json").read_text())
    assert study.status()["status"] == "completed"
    assert [m.label for m in study.config().methods] == ["lora", "lora-replay25", "joint"]  # joint never replays
    assert S.settings_of(study).replays == [0.25] and body["settings"]["lrs"]["lora-replay25"] == [0.01]
    settings = {p["method"]: p["setting"] for p in body["points"]}
    assert settings == {"lora": {"lr": 0.01, "r": 4}, "lora-replay25": {"lr": 0.01, "r": 4, "replay": 0.25},
                        "joint": {"lr": 0.01, "r": 4}}
    assert body["groups"]["lora-replay25@1e-2"]["setting"]["replay"] == 0.25
    with pytest.raises(CurloraError, match=r"^methods\[1\]\.replay: 1\.5 is not a share of a batch"):
        S.create(cfg, S.StudySettings(replays=[1.5]), tmp_path / "runs")
    assert S.replay_label("curlora", 0.125) == "curlora-replay12_5"
    assert S.parse_replays("0.1, 0.25") == [0.1, 0.25]
    with pytest.raises(CurloraError, match=r"^--replays: 'lots' is not a comma-separated list of shares"):
        S.parse_replays("lots")
    only_joint = ExperimentConfig.from_dict({**cfg.to_dict(), "methods": [{"kind": "joint"}, {"kind": "base"}]})
    with pytest.raises(CurloraError, match=r"^--replays: no trained method of this experiment can replay"):
        S.create(only_joint, S.StudySettings(replays=[0.25]), tmp_path / "runs")


def test_ewc_keeps_the_adapter_nearer_the_last_task_and_saves_its_fisher(tmp_path):
    """EWC on LoRA trains stage 1 exactly as LoRA does (same init, same data, nothing to keep yet); at stage 2 its
    penalty holds the adapter nearer stage 1's. Each stage folder keeps the anchor (that stage's adapter) and the
    summed Fisher, so a resumed run goes on with the same penalty."""
    from safetensors.torch import load_file

    from curlora.methods.baselines import EWC_FILE

    exp = make_experiment(tmp_path, steps=8, methods=("lora", "ewc"))
    exp["methods"][1]["ewc_lambda"] = 1e6
    exp["evaluation"].update(probe_every=0, self_probe_texts=2, self_probe_tokens=8)
    run = run_experiment(ExperimentConfig.from_dict(exp), root=tmp_path / "runs")
    m = run.record()
    assert [rec.status for rec in m.methods.values()] == ["completed", "completed"]
    assert described("ewc", m.methods["ewc"].setting) == "ewc (lr 5e-2, r 4, λ 1e+06)"

    def adapter(label, stage):
        return load_file(str(run.adapter_dir(label, stage) / "adapter_model.safetensors"))

    def moved(label):
        a, b = adapter(label, 1), adapter(label, 2)
        return sum(float((b[k] - a[k]).pow(2).sum()) for k in a) ** 0.5

    assert all((adapter("lora", 1)[k] == adapter("ewc", 1)[k]).all() for k in adapter("lora", 1))
    assert moved("ewc") < 0.5 * moved("lora")
    assert not (run.adapter_dir("ewc", 2) / EWC_FILE).exists()  # no stage follows the last: no Fisher for one
    saved = [load_file(str(run.adapter_dir("ewc", 1) / EWC_FILE))]
    fisher = {k: v for k, v in saved[0].items() if k.startswith("fisher.")}
    assert fisher and all((v >= 0).all() for v in fisher.values()) and any(v.sum() > 0 for v in fisher.values())
    anchors = {k.split(".", 1)[1].replace(".default", ""): v for k, v in saved[0].items() if k.startswith("anchor.")}
    weights = adapter("ewc", 1)  # PEFT's file drops the adapter name from the parameter names
    assert anchors.keys() == weights.keys() and all((anchors[k] == weights[k]).all() for k in weights)


def test_ewc_sums_the_fisher_over_tasks_and_anchors_at_the_last_and_its_penalty_is_the_quadratic():
    import torch

    ewc, settings = method("ewc"), ExperimentConfig.from_dict(
        {"tasks": [{"name": "a", "train_file": "a.csv"}], "methods": [{"kind": "ewc", "ewc_lambda": 4.0}]}).methods[0]
    model = torch.nn.Linear(2, 1, bias=False)
    model.ewc_state, model.ewc_next = None, None
    assert ewc.penalty(model, settings) is None  # the first task: nothing to keep yet
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
    ewc.consolidate(model, settings, lambda: {"weight": torch.tensor([[0.5, 1.0]])})
    model.ewc_state = model.ewc_next  # what the next stage's attach reads back from the stage folder
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, 2.0]]))
    assert float(ewc.penalty(model, settings)()) == 4.0 / 2 * 0.5 * (3.0 - 1.0) ** 2
    ewc.consolidate(model, settings, lambda: {"weight": torch.tensor([[0.25, 0.0]])})
    anchor, fisher = model.ewc_next
    assert anchor["weight"].tolist() == [[3.0, 2.0]] and fisher["weight"].tolist() == [[0.75, 1.0]]


def test_the_cost_estimate_counts_joints_steps_and_ewcs_fisher_pass(tmp_path):
    import math

    from curlora.run.cost import estimate_config

    exp = make_experiment(tmp_path, steps=6, methods=("joint", "ewc"))
    exp["evaluation"].update(probe_every=0, self_probe_texts=2, self_probe_tokens=8)
    cfg = ExperimentConfig.from_dict(exp)
    est = estimate_config(cfg)
    from curlora.run.cost import batch_tokens

    loaded = load_everything(cfg)
    sent_rows = len(loaded.tasks[0].train)
    per_batch = [sum(b) / len(b) for b in (batch_tokens(cfg, loaded, t) for t in loaded.tasks)]
    # each task's step time is the calibrated one carried by its batches' padded tokens
    steps = [s.train_s / (est.step_s[s.method] * per_batch[i % 2] / per_batch[0]) for i, s in enumerate(est.stages)]
    fisher = math.ceil(min(512, sent_rows) / cfg.training.batch_size)  # a forward and backward per batch
    assert steps == pytest.approx([6, 12, 6 + fisher, 6])  # joint: 6 per task so far; EWC: no Fisher after the last
