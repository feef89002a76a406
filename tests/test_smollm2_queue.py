"""bench/smollm2_queue.py: each lane takes its phases in order, resumes the unfinished one, unpacks a committed pack
before resuming it, never starts the next phase after one stopped unfinished, and packs the pilots (the peers'
rates come from their packs)."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import smollm2_queue as Q  # noqa: E402


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
