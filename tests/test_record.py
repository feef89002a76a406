"""The typed results record: a real run's metrics.json reads into it and writes back to exactly the same JSON, and a
metrics.json stored before the drift probes existed still loads (their lists read as None per stage)."""

import json

import pytest

from curlora.errors import CurloraError
from curlora.experiment import ExperimentConfig
from curlora.measure.record import MethodRecord, RunMetrics, TrainRecord
from curlora.run import events
from curlora.run.runner import run_experiment
from tiny_experiment import make_experiment

OLD = {  # the shape wave 1 stored, before self_ppl / kl_to_base / drift / comparison / learnability
    "run_id": "20260101-000000-old-abcd", "tasks": ["sent", "pair"], "scoring": "likelihood",
    "forgetting_definition": "Chaudhry et al. 2018: max accuracy at an earlier stage minus final",
    "probe": {"source": "probe.txt", "tokens": 300, "window": 32, "stride": 16}, "majority": [0.5, 0.5],
    "base": {"accuracy": [0.5, 0.4], "ppl": 80.0, "ppl_single_window": 70.0},
    "methods": {"lora": {"kind": "lora", "matrix": [[0.5, 0.4], [0.9, 0.5], [0.7, 0.8]], "ppl": [80.0, 90.0, 95.0],
                         "ppl_single_window": [70.0, 75.0, 79.0], "status": "completed", "trainable": 1024,
                         "train": [{"task": "sent", "steps": 4, "final_loss": 0.5, "seconds": 1.5},
                                   {"task": "pair", "steps": 4, "final_loss": 0.6, "seconds": 1.25}],
                         "summary": {"acc": 0.75, "bwt": -0.2}}},
}


def test_a_metrics_json_from_before_the_drift_probes_loads():
    m = RunMetrics.of(OLD)
    rec = m.methods["lora"]
    assert rec.self_ppl == rec.kl_to_base == rec.drift == [None, None, None]
    assert rec.stages_done == 2 and rec.seconds == 2.75 and rec.last("self_ppl") is None
    assert rec.train[0] == TrainRecord(task="sent", steps=4, final_loss=0.5, seconds=1.5)
    assert m.comparison == "equal_lr" and m.learnability == [] and m.self_probe is None and m.base.ppl == 80.0


def test_unknown_keys_survive_and_an_empty_record_is_falsy():
    data = json.loads(json.dumps(OLD))
    data["from_a_newer_version"] = {"x": 1}
    data["methods"]["lora"]["also_newer"] = [1, 2]
    back = RunMetrics.of(data).to_json()
    assert back["from_a_newer_version"] == {"x": 1} and back["methods"]["lora"]["also_newer"] == [1, 2]
    assert not RunMetrics.of({}) and not RunMetrics.of(None) and MethodRecord().stages_done == 0


def test_a_real_run_round_trips_exactly(tmp_path):
    cfg = ExperimentConfig.from_dict(make_experiment(tmp_path / "exp", steps=2))
    run = run_experiment(cfg, tmp_path / "runs")
    stored = json.loads((run.path / "metrics.json").read_text())
    assert RunMetrics.of(stored).to_json() == stored
    m = run.record()
    assert set(m.methods) == {"curlora", "lora"} and m.methods["lora"].train[1].task == "pair"
    assert m.methods["curlora"].matrix == stored["methods"]["curlora"]["matrix"]
    # every event the run logged is of a declared kind with its declared fields (curlora/run/events.py)
    logged = run.events()
    assert {e["kind"] for e in logged} >= {events.RUN_START, events.STAGE_START, events.STEP, events.STAGE,
                                           events.RUN_END}
    for e in logged:
        assert set(events.REQUIRED[e["kind"]]) <= set(e), e


def test_an_undeclared_event_or_a_missing_field_is_refused(tmp_path):
    with pytest.raises(CurloraError, match="unknown event kind 'stpe'"):
        events.make("stpe", method="lora")
    with pytest.raises(CurloraError, match="a step event needs .*loss"):
        events.make(events.STEP, method="lora", stage=1, task="t", step=1, steps=2, smoothed_loss=1.0, lr=1e-3,
                    elapsed=0.1)
