"""Experiment trackers (run.log_with, curlora/run/trackers.py): a tiny run logged live to TensorBoard, Trackio and
MLflow (and W&B offline where it is installed), each read back with the tracker's own reader and compared with the
numbers the run store holds; `export --tensorboard` writes the same from the store, for an old run too; a study's
runs land in the study's group."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from curlora.errors import CurloraError
from curlora.experiment import ExperimentConfig
from curlora.run import trackers
from curlora.serve.hosting import Policy
from tiny_experiment import make_experiment

HAS = {name: importlib.util.find_spec(module) is not None for name, module in trackers.MODULES.items()}
needs_tensorboard = pytest.mark.skipif(not HAS["tensorboard"], reason="tensorboard is not installed "
                                       "(requirements-extras.txt)")


def cli(*args, env, timeout=400):
    return subprocess.run([sys.executable, "-m", "curlora", *args], cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=timeout)


def scalars(folder) -> dict:
    """{tag: [(step, value)]} of the TensorBoard event files in `folder`, read by tensorboard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def stored(run_dir) -> dict:
    """{tag: [(step, value)]} as the trackers should show them, from metrics.json and events.jsonl themselves."""
    m = json.loads((run_dir / "metrics.json").read_text())
    out = {}
    for label, rec in m["methods"].items():
        for j, task in enumerate(m["tasks"]):
            out[f"{label}/{task}/accuracy"] = [(i, row[j]) for i, row in enumerate(rec["matrix"])]
        for name, key in (("perplexity", "ppl"), ("self_perplexity", "self_ppl"), ("kl_to_base", "kl_to_base")):
            out[f"{label}/{name}"] = [(i, v) for i, v in enumerate(rec[key]) if v is not None]
        out[f"{label}/weight_drift"] = [(i, d["total"]) for i, d in enumerate(rec["drift"])]
        for k in trackers.SUMMARY:
            if rec["summary"].get(k) is not None:
                out[f"{label}/summary/{k}"] = [(len(rec["matrix"]) - 1, rec["summary"][k])]
    done = {}
    for line in (run_dir / "events.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e["kind"] == "stage" and e["stage"] > 0:
            done[(e["method"], e["stage"])] = e["steps"]
        if e["kind"] == "step":
            before = sum(done.get((e["method"], s), 0) for s in range(1, e["stage"]))
            for name, key in (("loss", "loss"), ("smoothed_loss", "smoothed_loss"), ("learning_rate", "lr")):
                out.setdefault(f"{e['method']}/train/{name}", []).append((before + e["step"], e[key]))
    return {k: v for k, v in out.items() if v}


def same(got: dict, want: dict) -> None:
    assert set(got) == set(want), set(got) ^ set(want)
    for tag, points in want.items():
        assert [s for s, _ in got[tag]] == [s for s, _ in points], tag
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in points], rel=1e-6, abs=1e-7), tag


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A tiny run (CURLoRA, LoRA and the untrained base) logged live to every tracker installed here."""
    names = [n for n in ("tensorboard", "trackio", "mlflow", "wandb") if HAS[n]]
    if not names:
        pytest.skip("no experiment tracker is installed (requirements-extras.txt)")
    tmp = tmp_path_factory.mktemp("trackers")
    exp = make_experiment(tmp / "exp", steps=3, methods=("curlora", "lora"))
    exp["methods"].append({"kind": "base"})
    exp["run"]["log_with"] = names
    (tmp / "exp.yaml").write_text(yaml.safe_dump(exp))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CURLORA_DATA_DIR": str(tmp / "runs"),
           "CURLORA_TRACKING_DIR": str(tmp / "tracking"), "TRACKIO_DIR": str(tmp / "trackio"),
           "MLFLOW_TRACKING_URI": (tmp / "mlruns").as_uri(), "MLFLOW_ALLOW_FILE_STORE": "true",
           "WANDB_MODE": "offline", "WANDB_DIR": str(tmp / "wandb"), "WANDB_SILENT": "true"}
    out = cli("run", str(tmp / "exp.yaml"), env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "experiment tracking stopped" not in out.stdout + out.stderr, (out.stdout + out.stderr)[-3000:]
    run_id = next(p for p in (tmp / "runs").iterdir() if (p / "config.yaml").is_file()).name
    return tmp, env, run_id


@needs_tensorboard
def test_tensorboard_shows_the_stored_numbers_with_stage_and_step_axes(tracked):
    tmp, _, run_id = tracked
    got = scalars(tmp / "tracking" / "tensorboard" / run_id)
    want = stored(tmp / "runs" / run_id)
    same(got, want)
    assert [s for s, _ in got["lora/sent/accuracy"]] == [0, 1, 2]  # the stage is the step; 0 = the base model
    assert [s for s, _ in got["lora/train/loss"]] == list(range(1, 7))  # 3 steps per task, counted across tasks
    assert "base/pair/accuracy" in got and "base/train/loss" not in got  # an untrained method: its rows only
    hparams = next((tmp / "tracking" / "tensorboard" / run_id).glob("*/hparams.yml"))
    params = yaml.safe_load(hparams.read_text())
    assert params["training.max_steps"] == 3 and params["methods.1.kind"] == "lora"


@needs_tensorboard
def test_export_tensorboard_from_the_store_writes_the_same_also_for_an_old_run(tracked):
    tmp, env, run_id = tracked
    out = cli("export", run_id, "--tensorboard", str(tmp / "tb-export"), env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    same(scalars(tmp / "tb-export" / run_id), stored(tmp / "runs" / run_id))

    # A run stored before the drift probes and the intervals: what it has is exported, nothing is made up.
    old = tmp / "runs" / "old-run"
    shutil.copytree(tmp / "runs" / run_id, old, ignore=shutil.ignore_patterns("lock"))
    m = json.loads((old / "metrics.json").read_text())
    for rec in m["methods"].values():
        for key in ("self_ppl", "kl_to_base", "drift", "matrix_n", "matrix_ci95", "matrix_correct"):
            rec.pop(key, None)
    (old / "metrics.json").write_text(json.dumps(m))
    out = cli("export", "old-run", "--tensorboard", str(tmp / "tb-old"), env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    got = scalars(tmp / "tb-old" / "old-run")
    assert got["lora/sent/accuracy"] == scalars(tmp / "tb-export" / run_id)["lora/sent/accuracy"]
    assert "lora/kl_to_base" not in got and "lora/weight_drift" not in got
    out = cli("export", run_id, env=env)
    assert out.returncode == 2 and "export needs --out FOLDER" in out.stderr


@pytest.mark.skipif(not HAS["trackio"], reason="trackio is not installed (requirements-extras.txt)")
def test_trackio_local_mode_holds_the_stored_numbers(tracked):
    tmp, env, run_id = tracked
    read = ("import json, sys\nfrom trackio.sqlite_storage import SQLiteStorage\n"
            "print(json.dumps(SQLiteStorage.get_logs('curlora-studio', sys.argv[1])))")
    out = subprocess.run([sys.executable, "-c", read, run_id], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = {}
    for row in json.loads(out.stdout.strip().splitlines()[-1]):
        for k, v in row.items():
            if "/" in k and isinstance(v, (int, float)):
                got.setdefault(k, []).append((row["step"], v))
    same({k: sorted(v) for k, v in got.items()}, stored(tmp / "runs" / run_id))


@pytest.mark.skipif(not HAS["mlflow"], reason="mlflow is not installed (requirements-extras.txt: mlflow-skinny)")
def test_mlflow_file_store_holds_the_stored_numbers_and_the_config(tracked):
    tmp, env, run_id = tracked
    read = ("import json, sys\nfrom mlflow.tracking import MlflowClient\n"
            "c = MlflowClient(sys.argv[1])\nexp = c.get_experiment_by_name('curlora-studio')\n"
            "run = c.search_runs([exp.experiment_id], f\"tags.`curlora.run_id` = '{sys.argv[2]}'\")[0]\n"
            "history = lambda k: [(m.step, m.value) for m in c.get_metric_history(run.info.run_id, k)]\n"
            "out = {k: history(k) for k in run.data.metrics}\n"
            "print(json.dumps({'metrics': out, 'params': run.data.params, 'name': run.info.run_name}))")
    out = subprocess.run([sys.executable, "-c", read, env["MLFLOW_TRACKING_URI"], run_id], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    body = json.loads(out.stdout.strip().splitlines()[-1])
    same({k: sorted(map(tuple, v)) for k, v in body["metrics"].items()}, stored(tmp / "runs" / run_id))
    assert body["name"] == run_id and body["params"]["training.lr"] == "0.05"


@pytest.mark.skipif(not HAS["wandb"], reason="wandb is not installed (not in requirements-extras.txt: see below)")
def test_wandb_offline_run_is_written(tracked):
    tmp, _, run_id = tracked
    assert list((tmp / "wandb").glob("wandb/offline-run-*/run-*.wandb"))  # the run went to W&B's offline store
    pytest.skip("W&B writes offline runs in its binary .wandb log, which only its Go core or a W&B server reads "
                "back: its numbers cannot be checked offline here")


@needs_tensorboard
def test_a_study_logs_each_run_with_the_study_as_its_group(tmp_path):
    exp = make_experiment(tmp_path / "exp", steps=2, methods=("lora",))
    exp["run"]["log_with"] = ["tensorboard"]
    exp["evaluation"].update(probe_every=0, self_probe_texts=2, self_probe_tokens=8)
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(exp))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CURLORA_DATA_DIR": str(tmp_path / "runs"),
           "CURLORA_TRACKING_DIR": str(tmp_path / "tracking")}
    out = cli("study", str(tmp_path / "exp.yaml"), "--lrs", "lora=0.05", "--seeds", "0", "--executor", "local",
              env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    study = next(p.name for p in (tmp_path / "runs").iterdir() if (p / "study.yaml").is_file())
    (point,) = [p for p in (tmp_path / "tracking" / "tensorboard" / study).iterdir()]
    got = scalars(point)
    want = stored(tmp_path / "runs" / point.name)
    same(got, want)
    out = cli("export", study, "--tensorboard", str(tmp_path / "tb"), env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    same(scalars(tmp_path / "tb" / study / point.name), want)


def test_tracker_names_are_checked_and_a_missing_one_names_its_package(tmp_path, monkeypatch):
    exp = make_experiment(tmp_path / "exp", steps=2)
    exp["run"]["log_with"] = ["neptune"]
    with pytest.raises(CurloraError, match=r"run.log_with\[0\]: 'neptune' is not one of tensorboard, trackio"):
        ExperimentConfig.from_dict(exp)
    exp["run"]["log_with"] = ["tensorboard"]
    cfg = ExperimentConfig.from_dict(exp)
    monkeypatch.setattr(trackers.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CurloraError, match=r"tensorboard is not installed here; install it with `pip install "
                                           r"tensorboard==2\.21\.0`"):
        trackers.check_installed(cfg.run.log_with)
    with pytest.raises(CurloraError, match="experiment trackers are off on this server"):
        Policy(hosted=True).check_config(cfg, tmp_path, "0" * 32)
    assert ExperimentConfig.from_dict({**exp, "run": {"name": "x"}}).run.log_with == []  # none by default


@needs_tensorboard
def test_a_resumed_run_logs_on_from_where_it_stopped(tmp_path, monkeypatch):
    from curlora.run.runner import Executor, resume, start

    monkeypatch.setenv("CURLORA_TRACKING_DIR", str(tmp_path / "tracking"))
    exp = make_experiment(tmp_path / "exp", steps=2, methods=("lora",))
    exp["run"]["log_with"] = ["tensorboard"]
    exp["evaluation"].update(probe_every=0, self_probe_texts=2, self_probe_tokens=8)
    cfg = ExperimentConfig.from_dict(exp)
    run, loaded = start(cfg, tmp_path / "runs")
    seen = {"stages": 0}

    def on_event(e):
        seen["stages"] += e["kind"] == "stage"

    # stop during the second task (the base row and the first task are stored), then resume in a new Executor
    assert Executor(run, cfg, loaded, should_stop=lambda: seen["stages"] >= 2, on_event=on_event).execute() \
        == "cancelled"
    resume(run.id, tmp_path / "runs")
    got = scalars(tmp_path / "tracking" / "tensorboard" / run.id)
    want = stored(run.path)
    rows = [t for t in want if "/train/" not in t and "/summary/" not in t]
    same({t: got[t] for t in rows}, {t: want[t] for t in rows})  # each stored row once: nothing logged twice
    assert [s for s, _ in got["lora/summary/forgetting"]] == [2]
