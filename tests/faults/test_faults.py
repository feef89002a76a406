"""Faults really injected: kill -9 mid-run, out of memory, disk full. A finished stage is never lost."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from conftest import REPO
from curlora.errors import CurloraError
from curlora.experiment import ExperimentConfig
from curlora.measure.scoring import score
from curlora.methods import adapters
from curlora.run.runner import Executor, load_everything, resume, start
from curlora.run.store import Run
from test_runner import make_tasks
from tiny_models import save_tiny_llama_dir


def experiment_dict(tmp, steps=4):
    return {
        "model": {"name": str(tmp / "model")},
        "tasks": [{"name": "sent", "train_file": str(tmp / "sent.csv"), "eval_size": 12,
                   "verbalizers": {"0": "bad", "1": "good"}},
                  {"name": "pair", "train_file": str(tmp / "pair.csv"), "eval_size": 10}],
        "methods": [{"kind": "curlora", "r": 4, "target_modules": ["q_proj", "v_proj"]},
                    {"kind": "lora", "r": 4, "target_modules": ["q_proj", "v_proj"]}],
        "training": {"max_steps": steps, "batch_size": 4, "lr": 0.01, "max_length": 48},
        "evaluation": {"probe_text": str(tmp / "probe.txt"), "ppl_window": 32, "ppl_stride": 16},
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    save_tiny_llama_dir(tmp / "model")
    make_tasks(tmp)
    return tmp


def test_kill_9_mid_run_keeps_finished_stages_and_resume_finishes(world, tmp_path):
    exp = experiment_dict(world, steps=400)  # long enough to be killed inside curlora's second task
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(exp))
    root = tmp_path / "runs"
    env = {**os.environ, "CURLORA_DATA_DIR": str(root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "curlora", "run", str(tmp_path / "exp.yaml")], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    run = None
    while time.time() < deadline:
        runs = list(root.iterdir()) if root.exists() else []
        if runs:
            run = Run(root.resolve(), runs[0].name)
            events = run.events()
            if any(e["kind"] == "step" and e["stage"] == 2 and e["step"] >= 5 for e in events):
                break
        time.sleep(0.3)
    assert run is not None, "the run never started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    assert run.status()["status"] == "interrupted"
    lines = (run.path / "events.jsonl").read_text().splitlines()
    for line in lines[:-1]:
        json.loads(line)  # every complete line is valid JSON (the last one may be torn)
    m = run.metrics()
    assert len(m["methods"]["curlora"]["matrix"]) == 2  # base row + stage 1
    assert not (run.adapter_dir("curlora", 2)).exists()
    # The finished stage reloads to the accuracies it logged.
    cfg = ExperimentConfig.from_yaml(run.config_yaml)
    loaded = load_everything(cfg)
    model = adapters.load_adapter(loaded.model, run.adapter_dir("curlora", 1))
    accs = [score(model, loaded.tokenizer, t, t.eval, "likelihood", 48)["accuracy"] for t in loaded.tasks]
    assert accs == m["methods"]["curlora"]["matrix"][1]
    adapters.detach(model)

    # Resume with a short schedule so the test stays quick: the config on disk is what resume runs.
    short = ExperimentConfig.from_yaml(run.config_yaml)
    short.training.max_steps = 3
    (run.path / "config.yaml").write_text(short.to_yaml())
    resume(run.id, root)
    assert run.status()["status"] == "completed"
    after = run.metrics()
    assert after["methods"]["curlora"]["matrix"][:2] == m["methods"]["curlora"]["matrix"]
    assert all(len(r["matrix"]) == 3 for r in after["methods"].values())


def test_out_of_memory_stops_one_method_with_advice(world, tmp_path, monkeypatch):
    import curlora.run.runner as runner

    real = runner.train_task

    def oom_for_lora(model, *a, **kw):
        if adapters.method_of(model) == "lora":  # CURLoRA is a PeftModel too now: ask which method it carries
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(model, *a, **kw)

    monkeypatch.setattr(runner, "train_task", oom_for_lora)
    cfg = ExperimentConfig.from_dict(experiment_dict(world))
    run, loaded = start(cfg, tmp_path)
    ref = loaded.model(torch.tensor([[1, 5, 9]])).logits
    assert Executor(run, cfg, loaded).execute() == "completed"
    m = run.metrics()
    assert m["methods"]["lora"]["status"] == "failed" and "lower training.batch_size" in m["methods"]["lora"]["message"]
    assert m["methods"]["curlora"]["status"] == "completed"
    # The base model was handed back untouched for whatever comes next.
    assert torch.equal(loaded.model(torch.tensor([[1, 5, 9]])).logits, ref)
    assert not any("lora" in n for n, _ in loaded.model.named_modules())


def test_disk_full_while_saving_keeps_the_previous_stage(world, tmp_path, monkeypatch):
    import curlora.run.runner as runner

    real = adapters.save_adapter
    calls = {"n": 0}

    def full_disk(model, folder):
        calls["n"] += 1
        if calls["n"] == 2:
            real(model, folder)  # half-written files first, as a real full disk would leave them
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(model, folder)

    monkeypatch.setattr(adapters, "save_adapter", full_disk)
    cfg = ExperimentConfig.from_dict(experiment_dict(world))
    run, loaded = start(cfg, tmp_path)
    with pytest.raises(CurloraError, match="disk is full.*resume"):
        Executor(run, cfg, loaded).execute()
    assert run.status()["status"] == "failed" and "disk is full" in run.status()["message"]
    assert (run.adapter_dir("curlora", 1) / "adapter_model.safetensors").is_file()
    assert not run.adapter_dir("curlora", 2).exists()
    assert not any(p.name.endswith(".partial") for p in (run.path / "adapters" / "curlora").iterdir())
    assert len(run.metrics()["methods"]["curlora"]["matrix"]) == 2
