"""bench/real_step.py's batches: the bundled reviews rows and SST-2's from ../shared/data (the issue's case), batch 8,
shuffled or grouped by length, each row's label tokens kept, grouping cutting the padding."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import real_step  # noqa: E402


def test_sst2_rows_come_from_the_shared_data_and_grouping_cuts_their_padding(shared_data):
    from curlora.models.loading import BUNDLED_DEFAULT, load_model

    cfg = real_step.task_config("sst2")
    assert (cfg.name, cfg.preset, cfg.train_file) == ("sst2", "sst2", str(shared_data / "sst2" / "train.csv"))
    assert real_step.task_config("reviews").train_file == str(REPO / "assets/tasks/reviews/train.csv")
    _, tok, _ = load_model(BUNDLED_DEFAULT, device="cpu")
    shuffled = real_step.batches(tok, False, 6, task_name="sst2")
    grouped = real_step.batches(tok, True, 6, task_name="sst2")
    for data in (shuffled, grouped):
        assert len(data) == 6 and all(b["input_ids"].shape[0] == real_step.BATCH for b in data)
        assert all(((b["labels"] != -100).sum(dim=1) >= 1).all() for b in data)  # every row predicts its label word
        assert all(b["input_ids"].shape[1] <= real_step.MAX_LENGTH for b in data)
    assert real_step.padding(grouped) < real_step.padding(shuffled)
    assert real_step.tokens(shuffled) == sum(int(b["attention_mask"].sum()) for b in shuffled)


def test_goal_rows_and_floors_read_each_measured_case():
    smol = {"before_s_per_token": 0.010, "after_s_per_token": 0.007, "limit_s_per_token": 0.0061,
            "curlora_after_s": 0.0068, "curlora_vs_lora": 0.9}
    qwen = {"before_s_per_token": 0.020, "after_s_per_token": 0.010, "limit_s_per_token": 0.009}
    rows = real_step.goal_rows({"smollm2": smol, "qwen2.5-0.5b-shape-sst2": qwen})
    assert [round(r, 4) for _, r, _ in rows] == [0.7, 0.5, round(0.0068 / 0.0061, 4), 0.9]
    assert [g for _, _, g in rows] == [0.6, 0.6, 1.25, 1.0]
    assert "SST-2" in rows[1][0] and "Qwen" in rows[1][0]
    assert [round(f, 4) for _, f in real_step.floors({"smollm2": smol, "qwen2.5-0.5b-shape-sst2": qwen})] == [0.61, 0.45]
    assert real_step.floors({"smollm2": {"before_s_per_token": 1.0, "after_s_per_token": 0.5}}) == []
