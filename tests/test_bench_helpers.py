"""The bench scripts' bookkeeping (no timing is asserted): experiment edits, stage times, ratios, report merging."""

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import adapter_speed  # noqa: E402
import cli_run  # noqa: E402
import run_memory  # noqa: E402

from curlora.experiment import ExperimentConfig  # noqa: E402


def test_a_reduced_quick_demo_is_a_valid_experiment_with_absolute_task_files(tmp_path):
    cfg = cli_run.experiment(methods=["lora"], max_steps=7, max_eval_rows=20, ppl_max_tokens=512, name="x")
    assert [m["kind"] for m in cfg["methods"]] == ["lora"]
    assert cfg["training"]["max_steps"] == 7 and cfg["evaluation"]["ppl_max_tokens"] == 512
    for t in cfg["tasks"]:
        assert Path(t["train_file"]).is_absolute() and Path(t["train_file"]).is_file()
        assert t["max_eval_rows"] == 20
    path = cli_run.write_experiment(cfg, tmp_path / "sub" / "e.yaml")
    loaded = ExperimentConfig.load(path)
    assert loaded.training.max_steps == 7 and [m.kind for m in loaded.methods] == ["lora"]


def test_stage_times_split_each_stage_into_training_and_the_rest(tmp_path):
    events = [
        {"t": 100.0, "kind": "run_start"},
        {"t": 100.5, "kind": "stage_start", "method": "base", "stage": 0},
        {"t": 102.0, "kind": "stage", "method": "base", "stage": 0},
        {"t": 102.0, "kind": "stage_start", "method": "lora", "stage": 1, "task": "a"},
        {"t": 103.0, "kind": "step", "method": "lora", "stage": 1, "step": 1},
        {"t": 110.0, "kind": "stage", "method": "lora", "stage": 1, "task": "a", "seconds": 6.0, "steps": 10},
        {"t": 110.2, "kind": "run_end"},
    ]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    stages = cli_run.stage_times(tmp_path)
    assert [(s["method"], s["stage"]) for s in stages] == [("base", 0), ("lora", 1)]
    assert stages[0]["train_s"] == 0 and stages[0]["eval_s"] == 1.5
    assert stages[1] == {"method": "lora", "stage": 1, "task": "a", "wall_s": 8.0, "train_s": 6.0, "eval_s": 2.0,
                         "steps": 10}
    assert cli_run.run_span(tmp_path)["events_s"] == pytest.approx(10.2)


def test_memory_summary_is_side_by_side_over_the_larger_single_run():
    mib = 2**20
    runs = {k: {"max_rss_bytes": v * mib} for k, v in {"base": 400, "curlora": 500, "lora": 520, "both": 530}.items()}
    s = run_memory.summarize(runs)
    assert s["side_by_side_ratio"] == round(530 / 520, 3) and s["met"] is True and s["goal"] == 1.1
    assert s["side_by_side_over_curlora"] == 1.06 and s["training_over_base_floor_mib"] == 120.0
    assert s["peak_rss_mib"] == {"base": 400.0, "curlora": 500.0, "lora": 520.0, "both": 530.0}


def test_an_adapter_speed_report_keeps_the_rows_of_models_not_rerun(tmp_path):
    row = {"model": "llama-style", "r": 8, "tokens": 512, "train_ratio": 0.9, "eval_ratio": 1.0,
           "merged_eval_ratio": 1.0, "overhead_vs_base": 0.01, "lora_overhead_vs_base": 0.05,
           "trainable": {"curlora": 1, "lora": 2}, "file_bytes": {"curlora": 3, "lora": 4}}
    old = tmp_path / "old.md"  # the first format: one header, a bare list of rows
    old.write_text("# Adapter speed\n\nCommand: `python bench/adapter_speed.py`  \nMachine: CPU  \nDate: 2026-01-01\n\n"
                   "Ratios ...\n\n```json\n" + json.dumps([row]) + "\n```\n")
    rows, runs = adapter_speed.previous(old)
    assert rows == [row] and runs[0]["command"] == "python bench/adapter_speed.py" and runs[0]["models"] == ["llama-style"]
    new_row = {**row, "model": "kjv-llama-5m", "base_params": 5_400_000}
    text = adapter_speed.markdown([row, new_row], runs + [{"command": "c2", "machine": "m2", "date": "d2",
                                                          "models": ["kjv-llama-5m"]}])
    assert "| kjv-llama-5m | 5.4M | 8 |" in text and "| llama-style |  | 8 |" in text
    again = tmp_path / "new.md"
    again.write_text(text)
    rows2, runs2 = adapter_speed.previous(again)
    assert rows2 == [row, new_row] and [r["command"] for r in runs2] == ["python bench/adapter_speed.py", "c2"]
