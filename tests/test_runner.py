"""The runner end to end on a tiny model: matrices, store, adapters that reload to the logged numbers, cancel/resume."""


import pytest
import torch

from curlora.errors import CurloraError
from curlora.experiment import ExperimentConfig
from curlora.measure.scoring import score
from curlora.methods import adapters
from curlora.run.runner import Executor, load_everything, resume, start
from curlora.run.store import Run, list_runs
from tiny_experiment import write_tasks as make_tasks
from tiny_models import save_tiny_llama_dir


@pytest.fixture
def experiment(tmp_path):
    model_dir = save_tiny_llama_dir(tmp_path / "model")
    make_tasks(tmp_path)
    cfg = {
        "model": {"name": str(model_dir)},
        "tasks": [
            {"name": "sent", "train_file": str(tmp_path / "sent.csv"), "eval_size": 12,
             "verbalizers": {"0": "bad", "1": "good"}},
            {"name": "pair", "train_file": str(tmp_path / "pair.csv"), "eval_size": 10},
        ],
        "methods": [{"kind": "curlora", "r": 4, "target_modules": ["q_proj", "v_proj"]},
                    {"kind": "lora", "r": 4, "target_modules": ["q_proj", "v_proj"]},
                    {"kind": "base"}],
        "training": {"max_steps": 4, "batch_size": 4, "lr": 0.01, "max_length": 48},
        "evaluation": {"probe_text": str(tmp_path / "probe.txt"), "ppl_window": 32, "ppl_stride": 16,
                       "probe_every": 2, "probe_rows": 4},
        "run": {"name": "tiny"},
    }
    return ExperimentConfig.from_dict(cfg), tmp_path / "runs"


def test_full_run_fills_the_store(experiment):
    cfg, root = experiment
    run, loaded = start(cfg, root)
    assert Executor(run, cfg, loaded).execute() == "completed"
    assert run.status()["status"] == "completed"
    m = run.metrics()
    assert m["tasks"] == ["sent", "pair"] and set(m["methods"]) == {"curlora", "lora", "base"}
    for name, rec in m["methods"].items():
        assert len(rec["matrix"]) == 3 and all(len(r) == 2 for r in rec["matrix"])
        assert rec["matrix"][0] == m["base"]["accuracy"]  # row 0 is the base model for every method
        assert len(rec["ppl"]) == 3 and all(p > 1 for p in rec["ppl"])
        assert rec["ppl_relative"][0] == 1.0 and len(rec["ppl_relative"]) == 3
        assert rec["status"] == "completed" and rec["summary"]["stages"] == 2
    assert m["methods"]["curlora"]["trainable"] == 2 * 2 * 16  # q, v in 2 layers, r²
    assert m["methods"]["base"]["matrix"][2] == m["base"]["accuracy"]
    # The config as run, the events, the adapters of every stage.
    assert ExperimentConfig.from_yaml(run.config_yaml).to_dict() == cfg.to_dict()
    kinds = [e["kind"] for e in run.events()]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end" and "probe" in kinds and "step" in kinds
    for method in ("curlora", "lora"):
        for stage in (1, 2):
            assert (run.adapter_dir(method, stage) / "adapter_model.safetensors").is_file()
    assert [r.id for r in list_runs(root)] == [run.id]


def test_saved_adapters_reload_to_the_logged_accuracies(experiment):
    cfg, root = experiment
    run, loaded = start(cfg, root)
    Executor(run, cfg, loaded).execute()
    m = run.metrics()
    for method in ("curlora", "lora"):
        model = adapters.load_adapter(loaded.model, run.adapter_dir(method, 1))
        accs = [score(model, loaded.tokenizer, t, t.eval, "likelihood", 48)["accuracy"] for t in loaded.tasks]
        assert accs == m["methods"][method]["matrix"][1]
        adapters.detach(model)


def test_cancel_then_resume_completes_with_the_same_finished_stages(experiment):
    cfg, root = experiment
    run, loaded = start(cfg, root)
    seen = {"stages": 0}

    def stop():  # cancel during the second stage of the first method
        return seen["stages"] >= 2

    def on_event(e):
        if e["kind"] == "stage":
            seen["stages"] += 1

    assert Executor(run, cfg, loaded, should_stop=stop, on_event=on_event).execute() == "cancelled"
    assert run.status()["status"] == "cancelled"
    before = run.metrics()
    first = before["methods"]["curlora"]["matrix"][:2]
    assert len(before["methods"]["curlora"]["matrix"]) == 2 and before["methods"]["curlora"]["status"] == "cancelled"
    resume(run.id, root)
    after = run.metrics()
    assert run.status()["status"] == "completed"
    assert after["methods"]["curlora"]["matrix"][:2] == first
    assert all(len(r["matrix"]) == 3 for r in after["methods"].values())


def test_a_run_stored_before_the_drift_probes_existed_resumes(experiment):
    """metrics.json of older versions had no self_ppl / kl_to_base / drift lists: resume fills them with None."""
    cfg, root = experiment
    run, loaded = start(cfg, root)
    seen = {"stages": 0}

    def on_event(e):
        seen["stages"] += e["kind"] == "stage"

    Executor(run, cfg, loaded, should_stop=lambda: seen["stages"] >= 2, on_event=on_event).execute()
    old = run.metrics()
    for rec in old["methods"].values():
        for key in ("self_ppl", "kl_to_base", "drift"):
            rec.pop(key, None)
    run.write_metrics(old)
    resume(run.id, root)
    after = run.metrics()["methods"]["curlora"]
    assert run.status()["status"] == "completed" and len(after["matrix"]) == 3
    assert after["self_ppl"][:2] == [None, None] and after["self_ppl"][2] is not None
    assert len(after["drift"]) == 3 and after["drift"][2]["total"] > 0


def test_head_scoring_mode_with_head_only_control(experiment):
    cfg, root = experiment
    d = cfg.to_dict()
    d["evaluation"]["scoring"] = "head"
    d["methods"] = [{"kind": "curlora", "r": 4, "target_modules": ["q_proj"]}, {"kind": "head-only"}]
    cfg = ExperimentConfig.from_dict(d)
    run, loaded = start(cfg, root)
    Executor(run, cfg, loaded).execute()
    m = run.metrics()
    assert m["scoring"] == "head"
    for rec in m["methods"].values():
        assert rec["matrix"][0] == [None, None]  # no head yet for an untrained task
        assert rec["matrix"][1][0] is not None and rec["matrix"][1][1] is None
        assert None not in rec["matrix"][2]
    assert (run.adapter_dir("head-only", 2) / "heads.safetensors").is_file()


def test_heads_save_every_kept_head_and_read_each_back_from_the_stage_that_trained_it(tmp_path):
    from safetensors.torch import load_file, save_file

    from curlora.models.loading import load_model
    from curlora.run.train import Heads

    model, _, _ = load_model(str(save_tiny_llama_dir(tmp_path / "model")), device="cpu", dtype="float32")
    heads = Heads(model, [2, 3])
    (tmp_path / "none").mkdir()
    heads.save(tmp_path / "none")
    assert len(heads) == 0 and not (tmp_path / "none" / Heads.FILE).exists()  # no head: no file
    stages = {}
    for i in range(2):
        head = heads.new(i, seed=i)
        assert head.weight.requires_grad and head.out_features == [2, 3][i]
        heads.keep(i, head)
        assert not head.weight.requires_grad and heads.by_task[i] is head
        stages[i + 1] = tmp_path / f"stage-{i + 1}"
        stages[i + 1].mkdir()
        heads.save(stages[i + 1])
    state = load_file(stages[2] / Heads.FILE)
    assert sorted(state) == ["0.bias", "0.weight", "1.bias", "1.weight"]  # every head kept so far
    save_file({**state, "0.weight": torch.zeros_like(state["0.weight"])}, str(stages[2] / Heads.FILE))
    again = Heads(model, [2, 3])
    again.read(stages.__getitem__, 2)
    assert sorted(again.by_task) == [0, 1]
    for j in range(2):  # task 0 from stage 1 (not stage 2's altered copy), task 1 from stage 2
        assert torch.equal(again.by_task[j].weight, heads.by_task[j].weight)
        assert torch.equal(again.by_task[j].bias, heads.by_task[j].bias)


def test_bad_task_file_writes_nothing(experiment, tmp_path):
    cfg, root = experiment
    (tmp_path / "bad.csv").write_text("text,label\nonly one class,1\nagain,1\n")
    d = cfg.to_dict()
    d["tasks"][0]["train_file"] = str(tmp_path / "bad.csv")
    with pytest.raises(CurloraError):
        start(ExperimentConfig.from_dict(d), root)
    assert not root.exists() or not any(root.iterdir())


def test_config_errors_name_the_key():
    with pytest.raises(CurloraError, match=r"training\.lrr: unknown key\. Did you mean 'lr'\?"):
        ExperimentConfig.from_dict({"tasks": [{"name": "a", "train_file": "x.csv"}], "training": {"lrr": 1}})
    with pytest.raises(CurloraError, match=r"training\.lr: expected a number"):
        ExperimentConfig.from_dict({"tasks": [{"name": "a", "train_file": "x.csv"}], "training": {"lr": "fast"}})
    with pytest.raises(CurloraError, match=r"methods\[0\]\.kind"):
        ExperimentConfig.from_dict({"tasks": [{"name": "a", "train_file": "x.csv"}], "methods": [{"kind": "qlora"}]})
    with pytest.raises(CurloraError, match="head-only"):
        ExperimentConfig.from_dict({"tasks": [{"name": "a", "train_file": "x.csv"}], "methods": [{"kind": "head-only"}]})


def test_run_ids_never_leave_the_data_dir(tmp_path):
    for bad in ["../x", "/etc", "a/b", "x\x00y", "..", ""]:
        with pytest.raises(CurloraError):
            Run.open(bad, tmp_path)


def test_run_on_real_stories260k_with_shared_sst2_and_mrpc(shared_data, tmp_path):
    cfg = ExperimentConfig.from_dict({
        "model": {"name": str(shared_data / "models" / "stories260K" / "hf")},
        "tasks": [
            {"name": "sst2", "preset": "sst2", "train_file": str(shared_data / "sst2" / "train.csv"),
             "eval_file": str(shared_data / "sst2" / "validation.csv"), "max_train_rows": 64, "max_eval_rows": 24},
            {"name": "mrpc", "preset": "mrpc", "train_file": str(shared_data / "mrpc" / "train.csv"),
             "eval_file": str(shared_data / "mrpc" / "validation.csv"), "max_train_rows": 64, "max_eval_rows": 24},
        ],
        "methods": [{"kind": "curlora", "r": 8}, {"kind": "lora", "r": 8}],
        "training": {"max_steps": 4, "batch_size": 8, "max_length": 128},
        "evaluation": {"probe_text": str(shared_data / "wikitext2" / "test.txt"), "ppl_window": 128,
                       "ppl_stride": 64, "ppl_max_tokens": 1024},
    })
    run, loaded = start(cfg, tmp_path / "runs")
    assert Executor(run, cfg, loaded).execute() == "completed"
    m = run.metrics()
    # Seeded stratified eval samples keep each file's class shares (never the first rows of a sorted file).
    assert m["majority"][0] == pytest.approx(444 / 872, abs=1 / 24)
    assert m["majority"][1] == pytest.approx(279 / 408, abs=1 / 24)
    assert 50 < m["base"]["ppl"] < 1000  # stories260K on WikiText: ~122 token-level ppl (data README)
    assert m["methods"]["curlora"]["trainable"] == 5 * 3 * 64  # q, k, v (the paper's choice) in 5 layers, r²
    for rec in m["methods"].values():
        assert len(rec["matrix"]) == 3 and rec["status"] == "completed"


def test_a_diverging_method_stops_with_advice_and_the_others_finish(experiment):
    cfg, root = experiment
    d = cfg.to_dict()
    d["methods"] = [{"kind": "lora", "r": 4, "target_modules": ["q_proj", "v_proj"], "lr": 1e12, "name": "lora-hot"},
                    {"kind": "curlora", "r": 4, "target_modules": ["q_proj", "v_proj"]}]
    d["training"]["max_steps"] = 6
    cfg = ExperimentConfig.from_dict(d)
    run, loaded = start(cfg, root)
    assert Executor(run, cfg, loaded).execute() == "completed"
    m = run.metrics()
    hot = m["methods"]["lora-hot"]
    assert hot["status"] == "failed" and "lower the learning rate" in hot["message"]
    assert m["methods"]["curlora"]["status"] == "completed" and len(m["methods"]["curlora"]["matrix"]) == 3
    assert "lora-hot" in run.status()["message"]
    assert any(e["kind"] == "error" and e["method"] == "lora-hot" for e in run.events())


def test_full_fine_tune_with_tied_embeddings_saves_resumes_and_restores_the_base(tmp_path):
    folder = save_tiny_llama_dir(tmp_path / "tied", tied=True)
    make_tasks(tmp_path)
    cfg = ExperimentConfig.from_dict({
        "model": {"name": str(folder)},
        "tasks": [{"name": "sent", "train_file": str(tmp_path / "sent.csv"), "eval_size": 12},
                  {"name": "pair", "train_file": str(tmp_path / "pair.csv"), "eval_size": 10}],
        "methods": [{"kind": "full"}, {"kind": "curlora", "r": 2, "target_modules": ["q_proj"]}],
        "training": {"max_steps": 2, "batch_size": 4, "lr": 0.01, "max_length": 48},
        "evaluation": {"probe_text": str(tmp_path / "probe.txt"), "ppl_window": 32, "ppl_stride": 16},
    })
    run, loaded = start(cfg, tmp_path / "runs")
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    stops = {"n": 0}

    def stop_after_first_stage(e):
        if e["kind"] == "stage" and e["method"] == "full":
            stops["n"] += 1

    assert Executor(run, cfg, loaded, should_stop=lambda: stops["n"] >= 1,
                    on_event=stop_after_first_stage).execute() == "cancelled"
    assert (run.adapter_dir("full", 1) / "model.safetensors").is_file()
    assert all(torch.equal(before[k], v) for k, v in loaded.model.state_dict().items())  # base restored
    resume(run.id, tmp_path / "runs")
    m = run.metrics()
    assert m["methods"]["full"]["status"] == "completed" and len(m["methods"]["full"]["matrix"]) == 3
    assert m["methods"]["full"]["trainable"] == sum(v.numel() for v in loaded.model.parameters())


def _in_a_forked_process(fn) -> None:
    """Run one unit of work the way a ZeroGPU worker does: in another process, whose memory is thrown away after.
    Errors come back to the caller; nothing else does."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    out = ctx.SimpleQueue()

    def target():
        try:
            fn()
            out.put(None)
        except BaseException as err:  # noqa: BLE001 - handed back to the parent, as spaces.GPU does
            out.put(err)

    proc = ctx.Process(target=target)
    proc.start()
    err = out.get()
    proc.join()
    if err is not None:
        raise err


def test_units_run_in_another_process_give_the_same_run(experiment, tmp_path):
    """device_call may run each unit (base row, one method on one task) in a process of its own: every unit reads
    its inputs from the store and writes its results there, so the run comes out exactly as when run here."""
    cfg, root = experiment
    calls = []

    def device_call(fn):
        calls.append(fn)
        _in_a_forked_process(fn)

    here, loaded = start(cfg, root)
    assert Executor(here, cfg, loaded).execute() == "completed"
    away, _ = start(cfg, root, loaded)
    assert Executor(away, cfg, loaded).execute(device_call) == "completed"
    assert len(calls) == 1 + 2 * 2 + 1  # base row, curlora × 2 tasks, lora × 2 tasks, the base method at once
    a, b = here.metrics(), away.metrics()
    assert a["base"] == b["base"]
    for name in ("curlora", "lora", "base"):
        assert b["methods"][name]["matrix"] == a["methods"][name]["matrix"]
        assert b["methods"][name]["ppl"] == pytest.approx(a["methods"][name]["ppl"], rel=1e-6)
        assert b["methods"][name]["status"] == "completed"
    assert away.status()["status"] == "completed"
    for method in ("curlora", "lora"):
        for stage in (1, 2):
            assert (away.adapter_dir(method, stage) / "adapter_model.safetensors").is_file()
    # The parent's copy of the base model was never trained on: nothing of any unit stayed attached.
    assert not any("lora" in n or "curlora" in n for n, _ in loaded.model.named_modules())


def test_a_cancel_inside_an_isolated_unit_reaches_the_run(experiment):
    cfg, root = experiment
    run, loaded = start(cfg, root)
    run.request_cancel()  # seen by the unit in the other process, through the store

    def device_call(fn):
        run.request_cancel()
        _in_a_forked_process(fn)

    assert Executor(run, cfg, loaded).execute(device_call) == "cancelled"
    assert run.status()["status"] == "cancelled"


def test_score_untrained_off_scores_only_the_tasks_trained_so_far(tmp_path):
    from curlora.measure.metrics import summarize
    from curlora.run.runner import run_experiment
    from tiny_experiment import make_experiment

    exp = make_experiment(tmp_path / "exp", steps=2, methods=("lora",))
    exp["evaluation"].update(probe_every=0, self_probe_texts=2, self_probe_tokens=8, score_untrained=False)
    run = run_experiment(ExperimentConfig.from_dict(exp), root=tmp_path / "runs")
    m = run.record()
    assert m.base.accuracy[1] is not None  # the base row scores every task
    lora = m.methods["lora"]
    assert lora.row(1).accuracy[0] is not None and lora.row(1).accuracy[1] is None  # 'pair' not trained yet
    assert all(x is not None for x in lora.row(2).accuracy)
    matrix = [m.base.accuracy] + [lora.row(i).accuracy for i in (1, 2)]
    s = summarize(matrix)
    assert s["fwt"] is None and s["forgetting"] is not None and s["bwt"] is not None
    with pytest.raises(CurloraError, match="score_untrained"):
        ExperimentConfig.from_dict({**exp, "evaluation": {**exp["evaluation"], "score_untrained": "no"}})
