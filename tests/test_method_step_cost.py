"""bench/method_step_cost.py's document from its measurements: a row per method with its ratio to the LoRA step
measured beside it, the 2-thread table and the sentences that quote them; --keep re-renders the committed JSON
without measuring, and the committed docs/method-step-cost.md is what today's renderer writes from its own JSON."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import method_step_cost as msc  # noqa: E402


def _result(step: float, ratio: float) -> dict:
    return {"attach_cpu_s": 1.5, "attach_wall_s": 2.0, "first_step_cpu_s": 2.0, "step_cpu_s": step,
            "step_wall_s": 2 * step, "steps_cpu_s": [step], "top_ops": [["aten::mm", 0.8], ["aten::add", 0.1]],
            "lora_step_cpu_s": step / ratio, "lora_step_wall_s": 2 * step / ratio, "ratio_cpu": ratio,
            "ratio_wall": ratio}


def _results() -> dict:
    out = {"lora": _result(1.5, 1.0)}
    for kind, ratio in zip(msc.METHODS, (1.0, 1.03, 1.01, 1.0, 4.5, 1.33, 1.34)):
        out[kind] = _result(1.5 * ratio, ratio)
    out["contention"] = {"threads": 2, "load": 5.6, "lora": {"step_cpu_s": 13.0, "step_wall_s": 26.0},
                         "dora": {"step_cpu_s": 19.7, "step_wall_s": 39.5},
                         "lora_after": {"step_cpu_s": 31.4, "step_wall_s": 63.0}}
    out["loads"] = [7.7, 8.2]
    return out


class Args:
    steps, threads = 3, 1


def test_each_method_gets_a_row_with_its_ratio_the_dry_run_figure_and_where_its_time_goes():
    doc = msc.render(_results(), Args, (7.7, 8.2), msc.DRY_RUN)
    rows = [line for line in doc.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    assert [r.split(" | ")[0][2:] for r in rows[:8]] == ["lora", *msc.METHODS]
    dora = rows[1 + msc.METHODS.index("dora")].split(" | ")
    assert dora[:7] == ["| dora", "2.00", "1.33", "3.99", "1.33", "35.63", "1.5"] and dora[7] == msc.WHERE["dora"] + " |"
    assert "load average 7.7 at the start and 8.2 at the end" in doc
    assert "- dora: aten::mm 80 %, aten::add 10 %" in doc
    assert "| lora | 13.00 | 26.00 |" in doc and "| lora_after | 31.40 | 63.00 |" in doc
    assert "DoRA costs 1.33x LoRA's step, full fine-tuning 1.34x, OSF 4.50x, CorDA 1.00x" in doc
    assert "LoRA's own step took 26.0 s before DoRA's and 63.0 s after it" in doc
    assert "took 13.0 s of CPU for 1.50 s of work" in doc


def test_keep_renders_the_json_already_in_the_document_without_measuring(tmp_path, monkeypatch):
    out = tmp_path / "doc.md"
    out.write_text(msc.render(_results(), Args, (7.7, 8.2), msc.DRY_RUN), encoding="utf-8")
    before = out.read_text(encoding="utf-8")
    monkeypatch.setattr(msc, "measure", lambda *a, **k: pytest.fail("--keep measured"))
    monkeypatch.setattr(msc, "contention", lambda *a, **k: pytest.fail("--keep measured"))
    assert msc.main(["--keep", "--steps", "3", "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == before


def test_the_committed_document_is_what_the_renderer_writes_from_its_own_json(tmp_path):
    doc = REPO / "docs" / "method-step-cost.md"
    if not doc.is_file():
        pytest.skip("docs/method-step-cost.md is not here")
    out = tmp_path / "doc.md"
    out.write_text(doc.read_text(encoding="utf-8"), encoding="utf-8")
    assert msc.main(["--keep", "--steps", "3", "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == doc.read_text(encoding="utf-8")
