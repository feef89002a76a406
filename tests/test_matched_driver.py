"""bench/forgetting_frontier.py matched: the matched-loss cross-check's runs, one per seed, resumable across
restarts (a finished seed is read back, a stopped one goes on), each seed on its own rows where asked, packed
without weights beside a summary with the paired tests."""

import json
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import forgetting_frontier  # noqa: E402
from tiny_experiment import make_experiment  # noqa: E402


def test_matched_runs_resume_read_back_and_pack(tmp_path):
    from curlora.experiment import ExperimentConfig
    from curlora.run.runner import execute, start
    from curlora.run.store import list_runs

    exp = make_experiment(tmp_path / "exp", steps=2, methods=("lora", "curlora"))
    exp["training"].update(comparison="matched_loss", matched_loss_reference="lora", matched_loss_max_steps=4)
    exp["evaluation"].update(probe_every=0, self_probe_texts=2, self_probe_tokens=8)
    exp["run"]["name"] = "matched"
    path = tmp_path / "matched.yaml"
    path.write_text(yaml.safe_dump(exp))
    data, out, pack = tmp_path / "runs", tmp_path / "summary.json", tmp_path / "pack"

    # seed 1's run was stopped before its first stage: the driver goes on with that run, not a new one
    cfg = ExperimentConfig.load(path)
    stopped, loaded = start(forgetting_frontier.matched_config(cfg, 1, True), data)
    assert execute(stopped, stopped.config(), loaded, should_stop=lambda: True) != "completed"

    args = ["matched", str(path), "--seeds", "0,1", "--data-dir", str(data), "--out", str(out), "--rows-per-seed",
            "--pack", str(pack)]
    assert forgetting_frontier.main(args) == 0
    body = json.loads(out.read_text())
    ids = [e["run_id"] for e in body["runs"]]
    assert body["seeds"] == [0, 1] and body["rows_per_seed"] and stopped.id in ids
    assert set(body["groups"]) == {"lora", "curlora"} and list(body["paired"]) == ["curlora - lora"]
    for e in body["runs"]:
        assert e["status"] == "completed" and e["machine"]
        assert all(t["target_loss"] is not None for t in e["methods"]["curlora"]["train"])
        files = {f.name for f in (pack / "runs" / e["run_id"]).iterdir()}
        assert "metrics.json" in files and "adapters" not in files
    # each seed drew its own rows
    configs = [ExperimentConfig.load(data / i / "config.yaml") for i in ids]
    assert [c.tasks[0].seed for c in configs] == [0, 1]

    # the store finds each seed's run by its name, and a folder whose config cannot be read is nobody's
    from curlora.run.store import runs_named

    (data / "20990101-000000-matched-s0-dead").mkdir()
    (data / "20990101-000000-matched-s0-dead" / "config.yaml").write_text("run: [not, a, config")
    assert [r.id for r in runs_named("matched-s0", data)] == [ids[0]]

    # run again: both seeds read back, nothing trained, same summary
    assert forgetting_frontier.main(args) == 0
    again = json.loads(out.read_text())
    assert [e["run_id"] for e in again["runs"]] == ids and len(list_runs(data)) == 3  # 2 runs + the dead folder
    assert again["groups"] == body["groups"] and again["paired"] == body["paired"]

    # the SmolLM2 document's block renders a committed summary as its matched-loss cross-check
    import smollm2_study

    block = smollm2_study.blocks(matched_paths={"matched-curlora-chases": out})["smollm2-status"]
    text = "\n".join(block)
    assert "| matched-curlora-chases | 2 | 1 |" in text and "| matched-lora-chases | 0 | not started | — |" in text
    assert "curlora chasing lora's loss" in text and "each seed's own eval rows" in text
    assert "**curlora - lora**" in text
