"""A stored study analysed again with today's code, nothing retrained (`curlora study --analyse`,
curlora/measure/study_analysis.py `reanalyse`), and the drift probes its correlation reads, whichever a run has."""

import json

import pytest

from curlora.cli.main import main as cli
from curlora.errors import CurloraError
from curlora.experiment import ExperimentConfig
from curlora.measure import study_analysis as A
from curlora.measure.study_record import PlanEntry, Point, StudyRecord, StudySettings
from curlora.run import study as S
from tiny_experiment import make_experiment


def _old_points() -> list[Point]:
    """Points as a study.json from before learned_earlier / forgetting_learned / learning_val were stored: two
    methods, two seeds; 'a' learned its first task t1 in both runs, 'b' learned only the last task."""
    out = []
    for seed in (0, 1):
        out.append(Point(method="a", lr=1e-2, seed=seed, run_id=f"a{seed}", learning=5.0 + seed,
                         forgetting=2.0 + seed, kl_to_base=0.1 + 0.1 * seed, learned=["t1", "t3"]))
        out.append(Point(method="b", lr=1e-3, seed=seed, run_id=f"b{seed}", learning=5.0 + seed,
                         forgetting=9.0 + 2 * seed, kl_to_base=0.5 + 0.2 * seed, learned=["t3"]))
    return out


def _old_record() -> StudyRecord:
    points = _old_points()
    plan = [PlanEntry(method=p.method, lr=p.lr, seed=p.seed, run_id=p.run_id, status="completed") for p in points]
    return StudyRecord(settings=StudySettings(lrs={"a": [1e-2], "b": [1e-3]}, seeds=[0, 1]), plan=plan,
                       points=points)


def test_an_old_study_json_is_upgraded_and_says_what_it_cannot_recompute():
    rec = _old_record()
    with pytest.raises(CurloraError, match="does not store its tasks"):
        A.reanalyse(rec)
    # an accuracy matrix for a0 only: t1 0.8 after t1, 0.6 at the end -> 20 points of forgetting over learned tasks
    matrix = [[0.5, 0.5, 0.5], [0.8, 0.5, 0.5], [0.7, 0.5, 0.5], [0.6, 0.5, 0.9]]
    new = A.reanalyse(rec, ["t1", "t2", "t3"], matrices={"a0": matrix}, source="old/study.json")
    by = {p.run_id: p for p in new.points}
    assert [by[r].learned_earlier for r in ("a0", "a1", "b0", "b1")] == [1, 1, 0, 0]
    assert by["a0"].forgetting_learned == pytest.approx(20.0) and by["a0"].bwt_learned == pytest.approx(-20.0)
    assert by["a1"].forgetting_learned is None  # learned t1, but no matrix to measure it on
    assert by["b0"].forgetting_learned is None  # learned no earlier task: nothing to measure
    r = new.reanalysis
    assert (r.source, r.remeasured, r.stored) == ("old/study.json", 0, 4)
    assert [x.split(":")[0] for x in r.not_recomputed] == [
        "the McNemar row test", "learning on validation and test rows (learning_val, learning_test)",
        "forgetting and BWT over the learned earlier tasks, for the points that learned one",
        "forgetting of what each run knew (forgetting_known) and its family of comparisons"]
    (c,) = new.comparison
    assert c.rows is None and c.verdict == "nothing learned" and "the runs of b learned none" in c.sentence
    assert c.p is not None and c.p_adjusted == c.p  # a family of one paired test
    assert "no row test" in new.notes["family"]
    assert new.best["a"].chosen.endswith("on all eval rows (no per-row results stored)")
    # the stored form keeps the reanalysis and reads back the same
    again = StudyRecord.from_json(json.loads(json.dumps(new.to_json())))
    assert again.reanalysis.to_json() == r.to_json() and "reanalysis" not in _old_record().to_json()


def test_a_margin_given_again_re_decides_the_verdict():
    rec = _old_record()
    for p in rec.points:
        p.learned = ["t1", "t2", "t3"]  # every run learned every task: the guard does not apply
        if p.method == "b":
            p.forgetting = [2.5, 5.0][p.seed]  # a − b: −0.5 and −2.0
    (c,) = A.reanalyse(rec, ["t1", "t2", "t3"]).comparison
    assert c.margin == 3.0 and c.verdict == "inconclusive"
    rec.settings.margin = 50.0
    (c,) = A.reanalyse(rec, ["t1", "t2", "t3"]).comparison
    assert c.margin == 50.0 and c.verdict == "equivalent" and c.tost_p < 0.05


def test_every_drift_probe_a_run_has_is_correlated_with_forgetting():
    points = [Point(method="a", lr=1e-3, seed=s, run_id=f"r{s}", forgetting=float(s), kl_to_base=0.5,
                    chat_kl=0.1 * s, task_kl=1.0 - 0.1 * s, extra={"future_kl": 0.2 * s, "note": "x"})
              for s in range(8)]
    assert A.probe_fields(points) == ["kl_to_base", "self_ppl_ratio", "probe_ppl_ratio", "chat_kl", "facts",
                                      "task_kl", "future_kl"]  # declared ones, then a newer version's (extra)
    tracks = {t.probe: t for t in A.probe_tracks(points)}
    assert tracks["future_kl"].rho == pytest.approx(1.0) and tracks["future_kl"].tracks
    assert tracks["chat_kl"].rho == pytest.approx(1.0) and tracks["chat_kl"].tracks and tracks["chat_kl"].n == 8
    assert tracks["task_kl"].rho == pytest.approx(-1.0) and not tracks["task_kl"].tracks
    assert tracks["kl_to_base"].rho is None and tracks["kl_to_base"].n == 8  # constant: no rank correlation


def test_the_cli_analyses_a_study_folder_again_from_its_runs(tmp_path, capsys):
    d = make_experiment(tmp_path / "exp", steps=2)
    d["evaluation"].update(probe_every=0, self_probe_texts=2, self_probe_tokens=8)
    cfg = ExperimentConfig.from_dict(d)
    study = S.run_study(cfg, StudySettings(lrs={"curlora": [0.05], "lora": [0.01]}, seeds=[0, 1]), tmp_path / "runs")
    own = json.loads((study.path / "study.json").read_text())
    out = tmp_path / "again.json"
    assert cli(["study", "--analyse", str(study.path / "study.json"), "--write", str(out)]) == 0
    said = capsys.readouterr().out
    assert "analysed again, nothing trained (4 points measured from their runs, 0 as stored)" in said
    assert "not recomputed" not in said and "probe kl_to_base: Spearman ρ" in said
    assert "Forgetting at the most learning both reach: curlora vs lora:" in said  # every family, each labelled
    assert "against the base, curlora@5e-2 by probe_ppl_ratio:" in said
    assert "each at its chosen rate, curlora@" in said and " by learning_test: " in said
    again = json.loads(out.read_text())
    assert again.pop("reanalysis")["not_recomputed"] == []
    assert again == own  # the same code on the same runs: the same analysis
    # a copy of study.json away from its runs: the stored points, and it says what it could not recompute
    copy = tmp_path / "elsewhere" / "x" / "study.json"
    copy.parent.mkdir(parents=True)
    copy.write_text(json.dumps(own))
    assert cli(["study", "--analyse", str(copy), "--margin", "5", "--write", str(out)]) == 0
    said = capsys.readouterr().out
    assert "(0 points measured from their runs, 4 as stored)" in said and "not recomputed: the McNemar row test" in said
    moved = json.loads(out.read_text())
    assert moved["settings"]["margin"] == 5 and moved["comparison"][0]["margin"] == 5
    assert moved["points"] == own["points"] and moved["comparison"][0]["rows"] is None
    assert cli(["study", "--analyse", str(tmp_path / "none.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
