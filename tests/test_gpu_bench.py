"""bench/gpu.py runs anywhere: without a GPU it measures tiny shapes and says so in docs/gpu.md's place."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_gpu_benchmark_runs_in_its_tiny_cpu_mode(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_bench", REPO / "bench" / "gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "gpu.md"
    body = bench.main(["--tiny", "--methods", "lora,curlora", "--steps", "1", "--batch", "2", "--out", str(out)])
    assert body["tiny"] is True and body["demo_study_s"] is None
    assert [(r["shape"], r["method"]) for r in body["rows"]] == [
        ("gpt2-tiny", "lora"), ("gpt2-tiny", "curlora"), ("qwen2-tiny", "lora"), ("qwen2-tiny", "curlora")]
    assert all(r["steps"] == 1 and r["eval_rows"] == 64 and r["step_vs_lora"] > 0 for r in body["rows"])
    text = out.read_text()
    assert "this is the tiny CPU mode" in text and "| gpt2-tiny | curlora |" in text
    assert out.with_suffix(".json").is_file()
