"""The cost told before Start: a calibration on the loaded model turns the run's counts of steps, rows and tokens
into seconds per stage; evaluation over a third of the run is warned about with what to change; the eval rows'
precision is the Wilson half-width; `run --dry-run` prints it and writes nothing."""

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from curlora.experiment import ExperimentConfig
from curlora.run.cost import CostEstimate, StageCost, estimate_config, half_width
from tiny_experiment import make_experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_half_width_is_the_wilson_interval_at_fifty_percent():
    assert half_width(100) == pytest.approx(100 * (0.59617 - 0.40383) / 2, abs=0.001)
    assert half_width(64) > half_width(100) > half_width(400)


def test_the_estimate_scales_the_calibration_by_the_runs_counts(tmp_path):
    exp = make_experiment(tmp_path / "exp", steps=6)
    exp["evaluation"].update(self_probe_texts=2, self_probe_tokens=8)
    cfg = ExperimentConfig.from_dict(exp)
    est = estimate_config(cfg)
    assert [(s.method) for s in est.stages] == ["curlora", "curlora", "lora", "lora"]
    assert set(est.step_s) == {"curlora", "lora"} and all(v > 0 for v in est.step_s.values())
    for s in est.stages:  # later tasks: their own rows' length, plus in-task probes every 2 steps
        assert s.train_s > 0 and s.eval_s > 0
    assert est.stages[0].train_s == pytest.approx(6 * est.step_s["curlora"])  # the first task: as calibrated
    assert est.stages[2].train_s == pytest.approx(6 * est.step_s["lora"])
    assert est.total_s == pytest.approx(est.load_s + est.train_s + est.eval_s)
    assert 0 < est.eval_share < 1
    for name, line in zip(("sent", "pair"), est.precision):
        n = int(re.fullmatch(rf"{name} ±\d+ points \(n=(\d+)\)", line).group(1))
        assert line == f"{name} ±{half_width(n):.0f} points (n={n})"
    text = est.text()
    assert "Estimated time on this machine" in text and "calibration measured just now" in text


def test_a_steps_time_is_carried_to_each_task_by_its_batches_padded_tokens(tmp_path):
    from curlora.run.cost import batch_tokens
    from curlora.run.runner import load_everything

    exp = make_experiment(tmp_path / "exp", steps=6)
    exp["evaluation"].update(probe_every=0, self_probe=False)
    cfg = ExperimentConfig.from_dict(exp)
    loaded = load_everything(cfg)
    sizes = [batch_tokens(cfg, loaded, t) for t in loaded.tasks]
    assert all(sizes) and sum(len(b) for b in sizes) > 0
    est = estimate_config(cfg)
    share = [sum(b) / len(b) for b in sizes]
    first, second = est.stages[0].train_s, est.stages[1].train_s
    assert second / first == pytest.approx(share[1] / share[0], rel=1e-6)


def test_evaluation_over_a_third_is_warned_about_with_what_to_change():
    est = CostEstimate("x", {"lora": 1.0}, 0.0, 30.0, [StageCost("lora", 10.0, 30.0)], ["t ±10 points (n=100)"],
                       ["score fewer eval rows (evaluation.eval_rows)", "fewer perplexity-probe tokens"])
    assert est.eval_share == pytest.approx(60 / 70)
    assert est.warning.startswith("Evaluation is 86 % of this run (more than a third): score fewer eval rows")
    assert "WARNING" in est.text()
    quiet = CostEstimate("x", {"lora": 1.0}, 0.0, 1.0, [StageCost("lora", 100.0, 1.0)], [], [])
    assert quiet.warning is None and "WARNING" not in quiet.text()


def test_dry_run_prints_the_estimate_and_writes_nothing(tmp_path):
    exp = make_experiment(tmp_path / "exp", steps=2)
    exp["evaluation"].update(probe_every=0, self_probe=False)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    runs = tmp_path / "runs"
    env = {**os.environ, "CURLORA_DATA_DIR": str(runs), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "curlora", "run", str(path), "--dry-run"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Estimated time on this machine" in out.stdout and "Precision the eval rows buy" in out.stdout
    assert not runs.exists() or not any(runs.iterdir())


def test_a_busy_machine_with_several_threads_is_noted_with_what_to_set():
    from dataclasses import replace

    est = CostEstimate("x", {"lora": 1.0}, 0.0, 1.0, [StageCost("lora", 100.0, 1.0)], [], [], threads=2, load=7.3,
                       cores=2)
    assert est.contention == ("this machine is busy (load average 7.3 on 2 cores) and torch runs 2 threads, so each "
                              "step waits for cores that other work holds and the times above can be several times "
                              "the work; on a shared machine run with OMP_NUM_THREADS=1 (one thread per process)")
    assert est.text().splitlines()[-2] == "NOTE: " + est.contention + "."
    assert est.to_json()["contention"] == est.contention and est.to_json()["load"] == 7.3
    for calm in (replace(est, threads=1), replace(est, load=1.9)):  # one thread, or a load under the cores
        assert calm.contention is None and "NOTE" not in calm.text() and calm.to_json()["contention"] is None


def test_the_estimate_records_the_threads_and_load_it_was_measured_under(tmp_path):
    import torch

    exp = make_experiment(tmp_path / "exp", steps=2)
    exp["evaluation"].update(probe_every=0, self_probe=False)
    est = estimate_config(ExperimentConfig.from_dict(exp))
    assert est.threads == torch.get_num_threads() and est.cores == os.cpu_count() and est.load >= 0


def test_with_score_untrained_off_an_early_stage_scores_fewer_tasks(tmp_path):
    exp = make_experiment(tmp_path / "exp", steps=2, methods=("lora",))
    exp["evaluation"].update(self_probe_texts=2, self_probe_tokens=8, score_untrained=False)
    est = estimate_config(ExperimentConfig.from_dict(exp))
    first, last = est.stages
    assert 0 < first.eval_s < last.eval_s  # after task 1 'pair' is not scored yet; after task 2 both are


def test_a_studys_estimate_prices_one_calibration_over_its_plan(tmp_path, monkeypatch, capsys):
    """Every point is a run of one method: its stages' training and evaluation, times its learning rates × seeds ×
    task orders (a replay variant a method of its own); the base row once, or once per seed that draws its own rows;
    the model loaded once. `study --dry-run` prints it and writes nothing."""
    from curlora.cli.main import main as cli
    from curlora.measure.study_record import StudySettings
    from curlora.run.cost import estimate_study

    exp = make_experiment(tmp_path / "exp", steps=2)
    exp["evaluation"].update(probe_every=0, self_probe=False)
    cfg = ExperimentConfig.from_dict(exp)
    settings = StudySettings(lrs={"curlora": [0.01, 0.03], "lora": [0.001]}, seeds=[0, 1], permutations=2,
                             replays=[0.25])
    est = estimate_study(cfg, settings)
    assert est.runs == {"curlora": 8, "curlora-replay25": 8, "lora": 4, "lora-replay25": 4} and est.base_rows == 1
    assert {s.method for s in est.run.stages} == set(est.runs)  # the study's methods only, each calibrated
    assert est.run_s("lora") == pytest.approx(sum(s.train_s + s.eval_s for s in est.run.stages if s.method == "lora"))
    assert est.total_s == pytest.approx(est.run.load_s + est.run.base_s
                                        + sum(n * est.run_s(m) for m, n in est.runs.items()))
    assert est.text().startswith("Estimated time of this study on this machine: about ")
    assert "for 24 runs, one after another (8 curlora × " in est.text() and "1 base row × " in est.text()
    own = estimate_study(cfg, StudySettings(lrs={"lora": [0.001]}, seeds=[0, 1, 2], rows_per_seed=True))
    assert own.base_rows == 3 and own.runs["lora"] == 3 and "3 base rows × " in own.text()
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    runs = tmp_path / "runs"
    monkeypatch.setenv("CURLORA_DATA_DIR", str(runs))
    assert cli(["study", str(path), "--lrs", "lora=1e-3,1e-2", "--lrs", "curlora=1e-2", "--seeds", "0,1",
                "--dry-run", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["runs"] == {"curlora": 2, "lora": 4} and body["total_s"] > 0
    assert cli(["study", "--resume", "20261206-000000-x-0000", "--dry-run"]) == 2  # never trains: refused first
    assert "--dry-run estimates a study before it starts" in capsys.readouterr().err
    assert not runs.exists() or not any(runs.iterdir())
