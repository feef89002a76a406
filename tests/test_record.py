"""The typed results record: a real run's metrics.json reads into it and writes back to exactly the same JSON, and a
metrics.json stored before the drift probes existed still loads (their lists read as None per stage)."""

import json
from pathlib import Path

import pytest

from curlora.errors import CurloraError
from curlora.experiment import ExperimentConfig
from curlora.measure.record import STAGE_LISTS, MethodRecord, Row, RunMetrics, TrainRecord
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


# a real run's metrics.json (the tiny experiment with curlora, lora and base), stored before MethodRecord held Rows
STORED = Path(__file__).parent / "data" / "metrics_stored.json"


def test_a_stored_metrics_json_round_trips_byte_for_byte():
    raw = STORED.read_text()
    back = RunMetrics.from_json(json.loads(raw)).to_json()
    assert json.dumps(back, indent=1, default=float) + "\n" == raw  # as Run.write_metrics writes it


def test_a_method_record_holds_one_row_per_stage():
    stored = json.loads(STORED.read_text())["methods"]["lora"]
    rec = MethodRecord.from_json(stored)
    assert len(rec.rows) == len(rec.drift) == 3 and all(isinstance(r, Row) for r in rec.rows)
    for name, field_name in STAGE_LISTS.items():  # every stored list is the Rows' field, stage by stage
        assert getattr(rec, name) == stored[name] == [getattr(r, field_name) for r in rec.rows]
    assert rec.row(1) == rec.rows[1] and rec.row(1) is not rec.rows[1] and rec.row(3) == Row()
    assert rec.cell(2, 1)["n"] == stored["matrix_n"][2][1]
    row = Row(accuracy=[0.25, 0.75], ppl=9.0, kl_to_base=0.5)
    rec.append(row, {"total": 1.0, "per_matrix": {}})
    row.accuracy.append(1.0)  # the record keeps its own copy
    assert rec.matrix[3] == [0.25, 0.75] and rec.ppl[3] == 9.0 and rec.last("kl_to_base") == 0.5
    assert rec.stages_done == 3 and rec.drift[3] == {"total": 1.0, "per_matrix": {}}
    assert MethodRecord(matrix=[[0.5], [0.75]], ppl=[3.0, 4.0]).rows == [Row(accuracy=[0.5], ppl=3.0),
                                                                          Row(accuracy=[0.75], ppl=4.0)]
    with pytest.raises(TypeError, match="matrx"):
        MethodRecord(matrx=[[0.5]])


def test_a_partial_records_stages_are_its_accuracy_matrixs_rows():
    from curlora.measure.record import MethodRecord

    rec = MethodRecord.from_json({"kind": "lora", "matrix": [[0.5, 0.5], [0.6, 0.5]], "ppl": [10.0, 11.0, 12.0],
                                  "kl_to_base": [0.0]})
    assert rec.stages_done == 1 and len(rec.rows) == 2  # row 0 is the base
    assert rec.ppl == [10.0, 11.0] and rec.kl_to_base == [0.0, None]  # past the matrix: no finished stage
