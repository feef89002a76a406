"""bench/smollm2_queue.py: each lane takes its phases in order, resumes the unfinished one, unpacks a committed pack
before resuming it, never starts the next phase after one stopped unfinished, and packs the pilots (the peers'
rates come from their packs)."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import smollm2_queue as Q  # noqa: E402
from curlora.run.study_data import RunTimes  # noqa: E402


def scripted(monkeypatch, states: dict):
    """plan() answers from a list per phase (its last state repeats); returns the commands called."""
    calls, packed = [], []

    def plan(phase, root, executor="local"):
        seq = states[phase]
        what = seq.pop(0) if len(seq) > 1 else seq[0]
        return what, None if what == "done" else [what, phase]
    monkeypatch.setattr(Q, "plan", plan)
    monkeypatch.setattr(Q, "pack", lambda phase, root: packed.append(phase))
    return calls, packed


def test_a_lane_resumes_unpacks_and_goes_on_in_order(monkeypatch, tmp_path):
    calls, packed = scripted(monkeypatch, {"pilot": ["done"], "pilot2": ["unpack", "resume", "done"],
                                           "peers": ["start", "done"]})
    monkeypatch.setattr(Q, "ensure_peers_yaml", lambda: calls.append(["peers yaml"]))
    code = Q.run_lane("B", tmp_path, call=lambda cmd: calls.append(cmd) or 0)
    assert code == 0
    assert calls == [["unpack", "pilot2"], ["resume", "pilot2"], ["peers yaml"], ["start", "peers"], ["peers yaml"]]
    assert packed == ["pilot", "pilot2"]


def test_a_phase_that_stops_unfinished_stops_its_lane(monkeypatch, tmp_path):
    calls, packed = scripted(monkeypatch, {"frontier": ["resume"], "sampling": ["start"]})
    code = Q.run_lane("A", tmp_path, call=lambda cmd: calls.append(cmd) or 143)
    assert code == 143 and calls == [["resume", "frontier"]] and packed == []


def test_the_plan_reads_the_store_and_the_packs(tmp_path, monkeypatch):
    monkeypatch.setattr(Q, "DOCS", tmp_path / "docs")
    what, cmd = Q.plan("sampling", tmp_path / "store")
    assert what == "start" and cmd[-1].endswith("smollm2-sampling.yaml")
    (tmp_path / "docs" / "smollm2-sampling").mkdir(parents=True)
    (tmp_path / "docs" / "smollm2-sampling" / "pack.json").write_text("{}")
    what, cmd = Q.plan("sampling", tmp_path / "store")
    assert what == "unpack" and cmd[-2:] == ["--unpack", str(tmp_path / "docs" / "smollm2-sampling")]
    what, cmd = Q.plan("matched-lora-chases", tmp_path / "store")
    assert what == "run" and "--rows-per-seed" in cmd and cmd[cmd.index("--data-dir") + 1].endswith("matched")


def test_the_executor_reaches_each_study_command_and_not_the_matched_driver(monkeypatch, tmp_path):
    """`run B --executor ray` resumes (or starts) a study with `--executor ray`; local adds nothing; the matched-loss
    driver has no executor; the flag reaches plan() from run_lane."""
    class Found:
        id = "S1"

        def status(self):
            return {"status": "cancelled"}

    monkeypatch.setattr(Q, "study_of", lambda phase, root: Found())
    assert Q.plan("peers", tmp_path, "ray")[1][-4:] == ["--resume", "S1", "--executor", "ray"]
    assert Q.plan("peers", tmp_path)[1][-2:] == ["--resume", "S1"]
    monkeypatch.setattr(Q, "study_of", lambda phase, root: None)
    monkeypatch.setattr(Q, "DOCS", tmp_path)  # no pack committed: started from its YAML
    assert Q.plan("sampling", tmp_path, "ray")[1][-3:] == [str(Q.STUDIES / "smollm2-sampling.yaml"), "--executor", "ray"]
    monkeypatch.setattr(Q, "matched_done", lambda phase: False)
    assert "--executor" not in Q.plan("matched-lora-chases", tmp_path, "ray")[1]
    seen = []
    monkeypatch.setattr(Q, "plan", lambda phase, root, executor="local": seen.append(executor) or ("done", None))
    monkeypatch.setattr(Q, "pack", lambda phase, root: None)
    assert Q.run_lane("A", tmp_path, executor="ray") == 0 and set(seen) == {"ray"}


def test_eta_sums_each_lanes_runs_left_at_their_methods_median_minutes(monkeypatch, tmp_path):
    """Minutes per run: a method's own median, a variant's base method's, a never-run method's the median of all
    runs (said so); a matched-loss run the sum of its two methods (a floor); each lane's hours and both side by side."""
    def times(*minutes):
        return [RunTimes(stage_s=m * 60) for m in minutes]
    monkeypatch.setattr(Q.smollm2_study, "load_all", lambda: {})
    monkeypatch.setattr(Q.smollm2_study, "run_costs", lambda loaded: {
        "frontier": {"curlora": times(10, 12, 14), "lora": times(20)}, "peers": {"osf": times(30)}})
    left = {"frontier": {"lora": 3}, "control": {"head-only": 2}, "frontier-edge": {},
            "matched-curlora-chases": {"curlora+lora": 1},
            "matched-lora-chases": {}, "sampling": {"curlora-uniform": 6}, "sampling-low": {}, "pilot": {},
            "pilot2": {}, "peers": {"osf": 4}}
    monkeypatch.setattr(Q, "pending", lambda phase, root: left[phase])
    lines = Q.eta(tmp_path)
    assert "lane A frontier: 3 runs left, about 1.0 h (3 lora × 20 min)" in lines
    assert any(line.startswith("lane A control: 2 runs left") and "never run: at the median of all runs" in line
               for line in lines)  # the median of 10, 12, 14, 20, 30: 14 min
    assert any("1 curlora+lora × 32 min (a floor" in line for line in lines)
    assert any("6 curlora-uniform × 12 min (at curlora's median)" in line for line in lines)
    a = 3 * 20 + 2 * 14 + 32 + 6 * 12
    assert f"lane A: about {a / 60:.1f} h of runs left" in lines and "lane B: about 2.0 h of runs left" in lines
    assert lines[-1].startswith(f"both lanes side by side: about {a / 60:.1f} h; about {(2 + (a / 60 - 2) / 2):.1f} h")


def test_pending_reads_the_store_then_the_pack_then_the_yaml(monkeypatch, tmp_path):
    from curlora.measure.study_record import PlanEntry, StudyRecord

    monkeypatch.setattr(Q, "study_of", lambda phase, root: None)
    monkeypatch.setattr(Q, "DOCS", tmp_path)  # no pack: the YAML's grid
    assert Q.pending("control", tmp_path) == {"head-only": 9}  # 3 learning rates × 3 seeds × 1 order
    assert Q.pending("matched-lora-chases", tmp_path) == {"curlora+lora": 3}

    class Found:
        def study_record(self):
            return StudyRecord(plan=[PlanEntry(method="osf", status="completed"), PlanEntry(method="osf"),
                                     PlanEntry(method="dora", status="cancelled")])
    monkeypatch.setattr(Q, "study_of", lambda phase, root: Found())
    assert Q.pending("peers", tmp_path) == {"osf": 1, "dora": 1}
