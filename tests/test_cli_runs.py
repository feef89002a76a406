"""The CLI over the run store, as a user types it: run, list, show, eval, export, resume — and torchrun."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from test_runner import make_tasks
from tiny_models import save_tiny_llama_dir


def cli(*args, env=None, timeout=300):
    full = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "curlora", *args], cwd=REPO, capture_output=True, text=True,
                          env=full, timeout=timeout)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    model = save_tiny_llama_dir(tmp / "model")
    make_tasks(tmp)
    exp = {
        "model": {"name": str(model)},
        "tasks": [{"name": "sent", "train_file": "sent.csv", "eval_size": 12, "verbalizers": {"0": "bad", "1": "good"}},
                  {"name": "pair", "train_file": "pair.csv", "eval_size": 10}],
        "methods": [{"kind": "curlora", "r": 4, "target_modules": ["q_proj", "v_proj"]},
                    {"kind": "lora", "r": 4, "target_modules": ["q_proj", "v_proj"]}],
        "training": {"max_steps": 3, "batch_size": 4, "lr": 0.01, "max_length": 48},
        "evaluation": {"probe_text": "probe.txt", "ppl_window": 32, "ppl_stride": 16},
        "run": {"name": "cli"},
    }
    (tmp / "exp.yaml").write_text(yaml.safe_dump(exp))
    env = {"CURLORA_DATA_DIR": str(tmp / "runs")}
    out = cli("run", str(tmp / "exp.yaml"), env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    run_id = next((tmp / "runs").iterdir()).name
    return tmp, env, run_id, out.stdout


def test_run_prints_progress_and_the_final_table(workspace):
    tmp, env, run_id, stdout = workspace
    assert f"run {run_id}" in stdout
    assert "[curlora stage 2]" in stdout and "[lora stage 2]" in stdout
    assert "ACC" in stdout and "BWT" in stdout


def test_list_and_show(workspace):
    tmp, env, run_id, _ = workspace
    out = cli("list", env=env)
    assert out.returncode == 0 and run_id in out.stdout and "completed" in out.stdout
    out = cli("show", run_id, env=env)
    assert out.returncode == 0 and "| after | sent | pair | ppl |" in out.stdout


def test_eval_a_stage_on_a_new_csv_and_a_text(workspace):
    tmp, env, run_id, _ = workspace
    out = cli("eval", run_id, "--method", "curlora", "--stage", "2", "--task", str(tmp / "sent.csv"),
              "--label-words", "0=bad", "1=good", env=env)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["n"] == 60 and 0 <= res["accuracy"] <= 1 and res["mode"] == "likelihood"
    out = cli("eval", run_id, "--method", "lora", "--stage", "0", "--text", str(tmp / "probe.txt"), env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["ppl"] > 1
    out = cli("eval", run_id, "--method", "lora", "--stage", "9", "--text", str(tmp / "probe.txt"), env=env)
    assert out.returncode == 2 and "Stage must be between 0 (base) and 2" in out.stderr


def test_export_writes_everything_and_escapes_formulas(workspace):
    tmp, env, run_id, _ = workspace
    dest = tmp / "export"
    out = cli("export", run_id, "--out", str(dest), env=env)
    assert out.returncode == 0, out.stderr
    names = {p.name for p in dest.iterdir()}
    assert names == {"metrics.json", "metrics.csv", "results.md", "config.yaml", "adapters"}
    assert (dest / "adapters" / "curlora" / "stage-2" / "adapter_model.safetensors").is_file()
    out = cli("export", run_id, "--out", str(dest), env=env)
    assert out.returncode == 2 and "already exists" in out.stderr
    # Leftovers of a killed save (stage-k.partial) or a stage saved but never evaluated stay out of an export.
    from curlora.run.store import Run

    run = Run.open(run_id, tmp / "runs")
    (run.path / "adapters" / "curlora" / "stage-3.partial").mkdir()
    (run.path / "adapters" / "lora" / "stage-3").mkdir()
    clean = tmp / "export-clean"
    assert cli("export", run_id, "--out", str(clean), env=env).returncode == 0
    assert sorted(p.name for p in (clean / "adapters" / "curlora").iterdir()) == ["stage-1", "stage-2"]
    assert sorted(p.name for p in (clean / "adapters" / "lora").iterdir()) == ["stage-1", "stage-2"]
    (run.path / "adapters" / "curlora" / "stage-3.partial").rmdir()
    (run.path / "adapters" / "lora" / "stage-3").rmdir()
    out = cli("export", run_id, "--out", str(dest), env=env)
    assert out.returncode == 2 and "already exists" in out.stderr
    merged = tmp / "export-merged"
    out = cli("export", run_id, "--out", str(merged), "--merged", env=env)
    assert out.returncode == 0, out.stderr
    for method in ("curlora", "lora"):
        folder = merged / "merged" / method
        assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
        assert not (folder / "adapter_config.json").exists()  # a plain model, no adapter left
    from curlora.share.export import escape_cell

    assert escape_cell("=HYPERLINK(\"x\")") == "'=HYPERLINK(\"x\")" and escape_cell("-0.5") == "-0.5"


def test_bad_run_ids_and_missing_files_are_one_sentence(workspace):
    tmp, env, _, _ = workspace
    for args in (["show", "../etc"], ["resume", "nope"], ["run", str(tmp / "missing.yaml")]):
        out = cli(*args, env=env)
        assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr


def test_resume_of_a_completed_run_is_refused(workspace):
    tmp, env, run_id, _ = workspace
    out = cli("resume", run_id, env=env)
    assert out.returncode == 2 and "already completed" in out.stderr


def test_torchrun_two_cpu_processes_write_one_run(workspace, tmp_path):
    tmp, _, _, _ = workspace
    env = {**os.environ, "CURLORA_DATA_DIR": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1"}
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    out = subprocess.run([torchrun, "--nproc_per_node", "2", "-m", "curlora", "run", str(tmp / "exp.yaml")],
                         cwd=REPO, capture_output=True, text=True, env=env, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert json.loads((runs[0] / "status.json").read_text())["status"] == "completed"
    assert all(len(m["matrix"]) == 3 for m in metrics["methods"].values())
