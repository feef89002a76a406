"""Upper bounds every config obeys, the limits a host sets, the model's positions, out of memory, Stop anywhere."""

import os
from types import SimpleNamespace

import pytest
import torch
import yaml

import curlora.run.runner as runner
from curlora.adapter.layer import CURLoRALayer
from curlora.cli import main as cli
from curlora.errors import Cancelled, CurloraError
from curlora.experiment import UPPER_BOUNDS, ExperimentConfig
from curlora.measure.perplexity import perplexity
from curlora.measure.probes import sample_self_probe
from curlora.methods import adapters
from curlora.run.runner import Executor, load_everything, start
from curlora.serve.limits import HOSTED, Limits, training_tokens
from tiny_experiment import make_experiment

TASK = {"name": "t", "train_file": "x.csv"}
OOM = "DefaultCPUAllocator: can't allocate memory: you tried to allocate 68719476736 bytes. Error code 12"


@pytest.fixture(autouse=True)
def no_host_settings(monkeypatch):
    """The machine's own CURLORA_LIMIT_* and CURLORA_LIMITS_FILE settings must not leak into these tests."""
    for var in [v for v in os.environ if v.startswith("CURLORA_LIMIT")]:
        monkeypatch.delenv(var)


# -- absolute upper bounds ---------------------------------------------------------------------------------
def _with(key: str, value) -> dict:
    """Config keys that set the bound `key` of UPPER_BOUNDS to `value` (a count of tasks for "tasks")."""
    section, _, name = key.partition(".")
    if key == "tasks":
        return {"tasks": [{"name": f"t{i}", "train_file": "x.csv"} for i in range(value)]}
    if section == "methods":
        return {"methods": [{"kind": "lora", name: value}]}
    return {section: {name: value}}


def _one_over(key: str):
    value = UPPER_BOUNDS[key] + 1
    return float(value) if key in ("training.epochs", "methods.alpha") else value


@pytest.mark.parametrize("key", list(UPPER_BOUNDS))
def test_every_upper_bound_is_refused_with_its_sentence(key):
    value, bound = _one_over(key), UPPER_BOUNDS[key]
    path = key.replace("methods.", "methods[0].")
    shown = f"{value:g}" if isinstance(value, float) else f"{value:,}"
    with pytest.raises(CurloraError) as err:
        ExperimentConfig.from_dict({"tasks": [TASK], **_with(key, value)})
    assert str(err.value) == f"{path}: {shown} is above the upper bound of {bound:,}; use {bound:,} or less."


@pytest.mark.parametrize("key", list(UPPER_BOUNDS))
def test_every_upper_bound_itself_is_allowed(key):
    ExperimentConfig.from_dict({"tasks": [TASK], **_with(key, UPPER_BOUNDS[key])})


@pytest.mark.parametrize("bad, message", [
    ({"training": {"max_steps": 0}}, "training.max_steps: must be at least 1, got 0."),
    ({"training": {"warmup_steps": -1}}, "training.warmup_steps: must be at least 0, got -1."),
    ({"evaluation": {"batch_size": 0}}, "evaluation.batch_size: must be at least 1, got 0."),
    ({"evaluation": {"eval_rows": 0}}, "evaluation.eval_rows: must be at least 1, got 0."),
    ({"evaluation": {"probe_every": -2}}, "evaluation.probe_every: must be at least 0, got -2."),
    ({"evaluation": {"probe_rows": 0}}, "evaluation.probe_rows: must be at least 1, got 0."),
    ({"methods": [{"kind": "lora", "dropout": 1.0}]},
     "methods[0].dropout: 1 is not a probability below 1; use 0 (off) or more, below 1."),
    ({"methods": [{"kind": "lora", "dropout": -0.1}]},
     "methods[0].dropout: -0.1 is not a probability below 1; use 0 (off) or more, below 1."),
    ({"methods": [{"kind": "curlora", "alpha": 0}]},
     "methods[0].alpha: must be positive, got 0 (leave it empty for the default)."),
    ({"methods": [{"kind": "curlora", "lr": -1e-3}]},
     "methods[0].lr: must be positive, got -0.001 (leave it empty for training.lr)."),
])
def test_lower_ends_are_refused_too(bad, message):
    with pytest.raises(CurloraError) as err:
        ExperimentConfig.from_dict({"tasks": [TASK], **bad})
    assert str(err.value) == message


@pytest.mark.parametrize("hostile, message", [
    ("training: {max_steps: 1000000000000}", "training.max_steps: 1,000,000,000,000 is above the upper bound"),
    ("training: {epochs: 1.0e+9}", "training.epochs: 1e+09 is above the upper bound of 1,000"),
    ("training: {batch_size: 1000000000}", "training.batch_size: 1,000,000,000 is above the upper bound of 4,096"),
    ("training: {max_length: 1000000000}", "training.max_length: 1,000,000,000 is above the upper bound"),
    ("methods: [{kind: curlora, r: 200000}]", r"methods[0].r: 200,000 is above the upper bound of 4,096"),
    ("tasks: [" + ", ".join(f"{{name: t{i}, train_file: x.csv}}" for i in range(300)) + "]",
     "tasks: 300 is above the upper bound of 100"),
    ("evaluation: {ppl_window: 1000000000}", "evaluation.ppl_window: 1,000,000,000 is above the upper bound"),
])
def test_a_hostile_yaml_is_refused_by_the_cli_before_anything_is_written(hostile, message, tmp_path, monkeypatch,
                                                                          capsys):
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("CURLORA_DATA_DIR", str(data))
    body = yaml.safe_load(hostile)
    exp = {"tasks": [{"name": "t", "train_file": "x.csv"}], **body}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(exp))
    assert cli.main(["run", str(tmp_path / "exp.yaml")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert list(data.iterdir()) == []


# -- the host's limits ----------------------------------------------------------------------------------------
def test_hosted_and_local_defaults():
    hosted = Limits.load(hosted=True)
    assert hosted.runs_per_visitor == 2 and hosted.tasks_per_run == 10 and hosted.rows_per_task == 5_000
    assert hosted.tokens_per_run == 20_000_000 and hosted.max_rank == 64
    assert all(getattr(hosted, k) is not None for k in HOSTED)
    local = Limits.load(hosted=False)
    assert local.upload_mb == 50 and local.tasks_per_run is None and local.tokens_per_run is None


def test_describe_rows_for_the_page():
    rows = dict(Limits.load(hosted=True).describe())
    assert rows["runs per visitor (active + queued)"] == "2"
    assert rows["training tokens per run (steps × batch_size × grad_accum × max_length)"] == "20,000,000"
    assert rows["upload size"] == "20 MB"
    assert dict(Limits.load(hosted=False).describe())["tasks per run"] == "no limit"


def test_env_vars_override_and_none_lifts(monkeypatch):
    monkeypatch.setenv("CURLORA_LIMIT_TASKS_PER_RUN", "20")
    monkeypatch.setenv("CURLORA_LIMIT_TOKENS_PER_RUN", "2e8")
    monkeypatch.setenv("CURLORA_LIMIT_MAX_RANK", "None")
    monkeypatch.setenv("CURLORA_LIMIT_UPLOAD_MB", "7.5")
    monkeypatch.setenv("CURLORA_LIMIT_QUEUE_LENGTH", "  ")  # empty: unset
    lim = Limits.load(hosted=True)
    assert (lim.tasks_per_run, lim.tokens_per_run, lim.max_rank, lim.upload_mb) == (20, 200_000_000, None, 7.5)
    assert lim.queue_length == HOSTED["queue_length"]
    monkeypatch.setenv("CURLORA_LIMIT_ROWS_PER_TASK", "100")
    assert Limits.load(hosted=False).rows_per_task == 100


def test_a_limits_file_then_the_env_vars(tmp_path, monkeypatch):
    path = tmp_path / "limits.yaml"
    path.write_text("tasks_per_run: 3\nrows_per_task: null\nmax_rank: none\nstore_mb_total: 1.5e3\n")
    monkeypatch.setenv("CURLORA_LIMITS_FILE", str(path))
    lim = Limits.load(hosted=True)
    assert (lim.tasks_per_run, lim.rows_per_task, lim.max_rank, lim.store_mb_total) == (3, None, None, 1500.0)
    monkeypatch.setenv("CURLORA_LIMIT_TASKS_PER_RUN", "4")
    assert Limits.load(hosted=True).tasks_per_run == 4  # the environment wins


@pytest.mark.parametrize("var, raw, message", [
    ("CURLORA_LIMIT_TASKS_PER_RUN", "ten",
     "CURLORA_LIMIT_TASKS_PER_RUN: 'ten' is not a number; give a number such as 10, or none to lift the limit."),
    ("CURLORA_LIMIT_TASKS_PER_RUN", "2.5",
     "CURLORA_LIMIT_TASKS_PER_RUN: '2.5' is not a whole number; give one such as 10, or none to lift the limit."),
    ("CURLORA_LIMIT_RUNS_PER_VISITOR", "-1",
     "CURLORA_LIMIT_RUNS_PER_VISITOR: '-1' is not a limit; give a number of at least 0, or none to lift it."),
    ("CURLORA_LIMIT_UPLOAD_MB", "inf",
     "CURLORA_LIMIT_UPLOAD_MB: 'inf' is not a limit; give a number of at least 0, or none to lift it."),
    ("CURLORA_LIMIT_UPLOAD_MB", "20MB",
     "CURLORA_LIMIT_UPLOAD_MB: '20MB' is not a number; give a number such as 20.5, or none to lift the limit."),
])
def test_a_bad_env_value_is_one_sentence_naming_the_variable(var, raw, message, monkeypatch):
    monkeypatch.setenv(var, raw)
    with pytest.raises(CurloraError) as err:
        Limits.load(hosted=True)
    assert str(err.value) == message


@pytest.mark.parametrize("text, message", [
    ("tasks_per_rum: 3\n", "unknown limit 'tasks_per_rum'; did you mean 'tasks_per_run'? known limits are "
                           "runs_per_visitor, tokens_per_run"),
    ("max_rank: true\n", "max_rank: True is not a number; give a number such as 10, or none to lift the limit."),
    ("- 3\n", "must be a mapping of limit names to numbers, such as 'tasks_per_run: 10'."),
    ("a: [\n", "is not valid YAML at line 2; write one 'name: number' per line."),
])
def test_a_bad_limits_file_is_one_sentence_naming_it(text, message, tmp_path, monkeypatch):
    path = tmp_path / "limits.yaml"
    path.write_text(text)
    monkeypatch.setenv("CURLORA_LIMITS_FILE", str(path))
    with pytest.raises(CurloraError) as err:
        Limits.load(hosted=True)
    assert str(err.value).startswith(f"CURLORA_LIMITS_FILE ({path})") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_missing_limits_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("CURLORA_LIMITS_FILE", str(tmp_path / "nope.yaml"))
    with pytest.raises(CurloraError, match=r"CURLORA_LIMITS_FILE \(.*nope\.yaml\) cannot be read"):
        Limits.load(hosted=False)


def _cfg(**training) -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "tasks": [{"name": "a", "train_file": "a.csv"}, {"name": "b", "train_file": "b.csv"}],
        "methods": [{"kind": "curlora", "r": 8}, {"kind": "lora", "r": 8}, {"kind": "base"}],
        "training": {"batch_size": 8, "grad_accum": 1, "max_length": 32, **training},
    })


def _tasks(train_rows, eval_rows=(10, 10)):
    return [SimpleNamespace(name=n, train=[0] * r, eval=[0] * e) for n, r, e in zip("ab", train_rows, eval_rows)]


def test_training_tokens_as_documented():
    # max_steps: 2 trained methods (base trains nothing) × 2 tasks × 10 steps × 8 × 2 × 32
    assert training_tokens(_cfg(max_steps=10, grad_accum=2)) == 2 * 2 * 10 * 8 * 2 * 32
    # epochs: steps = ceil(epochs × ceil(rows / batch)) per task: ceil(2 × 13) = 26 and ceil(2 × 7) = 14
    assert training_tokens(_cfg(epochs=2.0)) is None
    assert training_tokens(_cfg(epochs=2.0), [100, 50]) == 2 * (26 + 14) * 8 * 32
    # matched_loss: the methods chasing the reference may use matched_loss_max_steps (the larger budget counts)
    matched = _cfg(max_steps=10, comparison="matched_loss", matched_loss_reference="curlora",
                   matched_loss_max_steps=30)
    assert training_tokens(matched) == (2 * 10 + 2 * 30) * 8 * 32


@pytest.mark.parametrize("limits, cfg, message", [
    (Limits(tasks_per_run=1), _cfg(max_steps=10),
     "Tasks per run: this run asks for 2, the limit here is 1; remove tasks or split the sequence over several runs."),
    (Limits(max_rank=4), _cfg(max_steps=10),
     "Rank (methods[0].r of curlora): this run asks for 8, the limit here is 4; lower it."),
    (Limits(tokens_per_run=1_000), _cfg(max_steps=10),
     "Training tokens per run (steps × batch_size × grad_accum × max_length, over tasks and methods): this run asks "
     "for 10,240, the limit here is 1,000; lower training.max_steps (or epochs), batch_size, grad_accum or "
     "max_length, or train fewer tasks or methods."),
])
def test_check_experiment_refuses_from_the_config_alone(limits, cfg, message):
    with pytest.raises(CurloraError) as err:
        limits.check_experiment(cfg)
    assert str(err.value) == message


def test_check_experiment_leaves_epochs_to_check_loaded():
    limits = Limits(tokens_per_run=1_000, rows_per_task=80)
    limits.check_experiment(_cfg(epochs=2.0))  # the steps depend on the rows: nothing to refuse yet
    with pytest.raises(CurloraError, match="Training rows per task \\(task 'a'\\): this run asks for 100, the limit "
                                           "here is 80; set its max_train_rows to the limit or less"):
        limits.check_loaded(_cfg(epochs=2.0), _tasks([100, 50]))
    with pytest.raises(CurloraError, match="Training tokens per run .*this run asks for 17,408, the limit here is "
                                           "1,000"):
        limits.check_loaded(_cfg(epochs=2.0), _tasks([80, 50]))
    Limits().check_loaded(_cfg(epochs=2.0), _tasks([100, 50]))  # no limits: nothing refused


def test_eval_rows_limit_counts_the_rows_scored():
    limits = Limits(eval_rows_per_task=20)
    with pytest.raises(CurloraError, match=r"Eval rows per task \(task 'b'\): this run asks for 30, the limit here is "
                                           r"20; set evaluation.eval_rows"):
        limits.check_loaded(_cfg(max_steps=1), _tasks([10, 10], eval_rows=(5, 30)))
    capped = _cfg(max_steps=1)
    capped.evaluation.eval_rows = 20
    limits.check_loaded(capped, _tasks([10, 10], eval_rows=(5, 30)))
    capped.evaluation.eval_rows = 21
    with pytest.raises(CurloraError, match=r"Eval rows per task \(evaluation.eval_rows\): this run asks for 21"):
        limits.check_experiment(capped)


# -- through the runner -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    return folder, make_experiment(folder, steps=2)


def test_load_everything_checks_the_limits_before_the_model_loads(tiny, monkeypatch):
    import curlora.models.loading

    _, exp = tiny
    cfg = ExperimentConfig.from_dict(exp)
    monkeypatch.setattr(curlora.models.loading, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(CurloraError, match=r"Training rows per task \(task 'sent'\): this run asks for 41, the limit "
                                           r"here is 40"):
        load_everything(cfg, limits=Limits(rows_per_task=40))
    with pytest.raises(CurloraError, match="Tasks per run: this run asks for 2, the limit here is 1"):
        load_everything(cfg, limits=Limits(tasks_per_run=1))


def test_stop_while_loading_tasks(tiny, monkeypatch):
    import curlora.run.runner

    _, exp = tiny
    calls = {"tasks": 0}
    real = curlora.run.runner.load_task

    def counting(*a, **k):
        calls["tasks"] += 1
        return real(*a, **k)

    monkeypatch.setattr(curlora.run.runner, "load_task", counting)
    with pytest.raises(Cancelled):
        load_everything(ExperimentConfig.from_dict(exp), should_stop=lambda: calls["tasks"] >= 1)
    assert calls["tasks"] == 1  # the second task was never read


@pytest.mark.parametrize("key, value", [("evaluation.ppl_window", 1024), ("training.max_length", 1024)])
def test_windows_longer_than_the_bundled_models_positions_are_refused(tiny, key, value, tmp_path):
    folder, exp = tiny
    section, name = key.split(".")
    exp = {**exp, "model": {"name": "kjv-llama-5m"}, section: {**exp[section], name: value}}
    cfg = ExperimentConfig.from_dict(exp)
    with pytest.raises(CurloraError) as err:
        start(cfg, tmp_path / "runs")
    assert str(err.value) == f"{key}: 1024 tokens is longer than this model's 512 positions; use at most 512."
    assert not (tmp_path / "runs").exists()


def _run(tiny, tmp_path, **changes):
    _, exp = tiny
    exp = {**exp, "evaluation": {**exp["evaluation"], "probe_every": 0, **changes.pop("evaluation", {})}, **changes}
    cfg = ExperimentConfig.from_dict(exp)
    run, loaded = start(cfg, tmp_path / "runs")
    return cfg, run, loaded


@pytest.mark.parametrize("where", ["attach", "train"])
def test_an_allocator_error_fails_one_method_with_the_out_of_memory_sentence(where, tiny, tmp_path, monkeypatch):
    cfg, run, loaded = _run(tiny, tmp_path)
    probe = torch.tensor([[1, 5, 9]])
    ref = loaded.model(probe).logits
    if where == "attach":  # the second adapted layer fails: the first is already wrapped in the base
        real, calls = CURLoRALayer.update_layer, {"n": 0}

        def update_layer(self, *a, **k):
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError(OOM)
            return real(self, *a, **k)

        monkeypatch.setattr(CURLoRALayer, "update_layer", update_layer)
    else:
        real_train = runner.train_task

        def train(model, *a, **k):
            if adapters.method_of(model) == "curlora":
                raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] not enough memory: you tried to allocate 9 GB")
            return real_train(model, *a, **k)

        monkeypatch.setattr(runner, "train_task", train)
    assert Executor(run, cfg, loaded).execute() == "completed"
    m = run.metrics()
    assert m["methods"]["curlora"]["status"] == "failed"
    assert m["methods"]["curlora"]["message"] == (
        "curlora ran out of memory at stage 1; lower training.batch_size (now 4) or max_length, raise grad_accum, "
        "lower r (now 4), or pick a smaller model.")
    assert m["methods"]["lora"]["status"] == "completed" and len(m["methods"]["lora"]["matrix"]) == 3
    assert "curlora" in run.status()["message"]
    assert not any(isinstance(mod, CURLoRALayer) or "lora" in n for n, mod in loaded.model.named_modules())
    assert torch.equal(loaded.model(probe).logits, ref)  # the base is handed back clean


def test_any_other_runtime_error_still_fails_the_run(tiny, tmp_path, monkeypatch):
    cfg, run, loaded = _run(tiny, tmp_path)

    def train(*a, **k):
        raise RuntimeError("a bug")

    monkeypatch.setattr(runner, "train_task", train)
    with pytest.raises(RuntimeError, match="a bug"):
        Executor(run, cfg, loaded).execute()
    assert run.status()["status"] == "failed"
    assert not any(isinstance(mod, CURLoRALayer) for _, mod in loaded.model.named_modules())


def test_stop_while_the_base_row_evaluates_ends_cancelled_within_one_batch(tiny, tmp_path):
    cfg, run, loaded = _run(tiny, tmp_path, evaluation={"batch_size": 2, "self_probe": False})
    forwards = {"n": 0, "at_stop": None}
    hook = loaded.model.register_forward_pre_hook(lambda *a: forwards.__setitem__("n", forwards["n"] + 1))
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        if calls["n"] >= 4:
            forwards["at_stop"] = forwards["at_stop"] if forwards["at_stop"] is not None else forwards["n"]
            return True
        return False

    try:
        assert Executor(run, cfg, loaded, should_stop=stop).execute() == "cancelled"
    finally:
        hook.remove()
    assert forwards["at_stop"] > 0  # Stop came in the middle of scoring the first task...
    assert forwards["n"] == forwards["at_stop"]  # ...and not one more batch ran
    assert run.status()["status"] == "cancelled" and run.metrics()["base"] is None


def test_stop_inside_perplexity_and_self_probe_sampling(tiny, tmp_path):
    _, _, loaded = _run(tiny, tmp_path)
    calls = {"n": 0}

    def second_call():
        calls["n"] += 1
        return calls["n"] >= 2

    with pytest.raises(Cancelled):
        perplexity(loaded.model, loaded.probe_ids, window=16, stride=16, batch_size=1, should_stop=second_call)
    calls["n"] = 0
    with pytest.raises(Cancelled):
        sample_self_probe(loaded.model, loaded.tokenizer, texts=2, tokens=8, should_stop=second_call)
