"""Studies: a grid of runs over learning rates and seeds as one object (curlora/run/study.py), on a tiny model."""

import dataclasses
import json
from pathlib import Path

import pytest

from curlora.cli.main import main as cli
from curlora.errors import CurloraError
from curlora.experiment import ExperimentConfig
from curlora.measure import study_analysis as A
from curlora.measure import stats
from curlora.measure.study_record import Group, Point, ProbeTrack, StudyRecord, StudySettings
from curlora.run import study as S

REPO = Path(__file__).resolve().parents[1]
from curlora.run.runner import Executor
from curlora.run.store import Run, list_runs
from tiny_experiment import make_experiment

GRID = {"curlora": [0.01, 0.05], "lora": [0.001, 0.01]}


@pytest.fixture
def cfg(tmp_path):
    d = make_experiment(tmp_path / "exp", steps=2)
    d["evaluation"].update(probe_every=0, self_probe_texts=2, self_probe_tokens=8)
    return ExperimentConfig.from_dict(d)


def test_a_study_runs_every_point_once_sharing_the_base_row(cfg, tmp_path, monkeypatch):
    calls = {"base_unit": 0}
    real = Executor.base_unit

    def counted(self):
        calls["base_unit"] += 1
        return real(self)

    monkeypatch.setattr(Executor, "base_unit", counted)
    study = S.run_study(cfg, S.StudySettings(lrs=GRID, seeds=[0, 1]), tmp_path / "runs")
    body = json.loads((study.path / "study.json").read_text())
    assert study.status()["status"] == "completed" and calls["base_unit"] == 0  # no run measured its own base
    assert len(body["plan"]) == 8 and all(e["status"] == "completed" for e in body["plan"])
    assert [(e["seed"]) for e in body["plan"]] == [0] * 4 + [1] * 4  # seed-major: every setting early
    runs = {r.id: r for r in list_runs(tmp_path / "runs")}
    assert study.id in runs and all(e["run_id"] in runs for e in body["plan"])  # ordinary runs, listed
    for e in body["plan"]:
        m = runs[e["run_id"]].record()
        assert list(m.methods) == [e["method"]] and m.methods[e["method"]].setting["lr"] == e["lr"]
        assert m.base.accuracy == body["base"]["accuracy"] and m.base.self_ppl == body["base"]["self_ppl"]
        assert runs[e["run_id"]].config().training.seed == e["seed"]
        assert not [x for x in runs[e["run_id"]].events() if x["kind"] == "stage" and x["stage"] == 0]
    assert len([x for x in study.events() if x["kind"] == "stage" and x["stage"] == 0]) == 1  # once per study
    # points, groups over seeds, the frontier, the best lr and the comparison
    assert len(body["points"]) == 8
    p = body["points"][0]
    for name in ("learning", "forgetting", "bwt", "acc", "kl_to_base", "self_ppl_ratio", "probe_ppl_ratio",
                 "final_loss", "constant_predictions", "learned", "run_id", "lr", "seed", "method"):
        assert name in p
    assert len(p["final_loss"]) == 2
    g = body["groups"]["lora@1e-3"]
    assert g["learning"]["n"] == 2 and len(g["learning"]["ci95"]) == 2 and g["seeds"] == [0, 1]
    mean = sum(q["learning"] for q in body["points"] if q["method"] == "lora" and q["lr"] == 0.001) / 2
    assert abs(g["learning"]["mean"] - mean) < 1e-9
    for label in GRID:
        front = body["frontier"][label]
        assert front and all(body["groups"][k]["method"] == label for k in front)
        ls = [body["groups"][k]["learning"]["mean"] for k in front]
        fs = [body["groups"][k]["forgetting"]["mean"] for k in front]
        assert ls == sorted(ls) and all(f1 >= f0 for f0, f1 in zip(fs, fs[1:]))  # more learning costs forgetting
        assert body["best"][label]["lr"] in GRID[label]
    (c,) = body["comparison"]
    assert c["methods"] == ["curlora", "lora"] and c["sentence"]


def test_frontier_best_and_matched_comparison_on_known_groups():
    def g(label, lr, learning, forgetting, kl):
        def s(x):
            return {"mean": x, "ci95": [x - 1, x + 1], "n": 3, "sd": 1.0}
        return Group.of({"method": label, "lr": lr, "setting": {"lr": lr}, "learning": s(learning),
                         "forgetting": s(forgetting), "kl_to_base": s(kl), "seeds": [0, 1, 2], "run_ids": []})

    groups = {"a@1e-3": g("a", 1e-3, 5, 1, 0.01), "a@1e-2": g("a", 1e-2, 10, 4, 0.05),
              "a@3e-2": g("a", 3e-2, 8, 6, 0.08),  # beaten by a@1e-2 on both: off the frontier
              "b@1e-3": g("b", 1e-3, 4, 0.5, 0.02), "b@1e-2": g("b", 1e-2, 12, 9, 0.2)}
    assert A.frontier_of(groups, "a") == ["a@1e-3", "a@1e-2"]
    assert A.best_of(groups, "a", 0.06).key == "a@1e-2" and A.best_of(groups, "a", 0.02).key == "a@1e-3"
    assert "no learning rate is within" in A.best_of(groups, "b", 0.001).chosen
    # a's learning 5, 10, 8: it peaks at 1e-2, and 3e-2 past the peak learns less (training breaking the model), so
    # the fits take a's rising branch only (pooled in, it would fit 5, 9, 9 and move the matched level to 7)
    assert [x.lr for x in A.rising(A._mine(groups, "a"))] == [1e-3, 1e-2]
    assert [x.lr for x in A.rising(A._mine(groups, "b"))] == [1e-3, 1e-2]
    c = A.compare(groups, [], "a", "b", None)
    # a's 5, 10 and b's 4, 12: both reach 5..10, matched at its middle
    assert c.learning == pytest.approx(7.5)
    # each measure on its own fitted curve in lr: a at log lr −2.5, b at −3 + 3.5/8
    assert c.forgetting["a"].mean == pytest.approx(2.5) and c.forgetting["b"].mean == pytest.approx(4.21875)
    assert c.nearest["a"] in ("a@1e-3", "a@1e-2")  # never the rate past the peak
    A.decide(c, groups, [])
    assert c.verdict == "inconclusive" and "run at least two seeds" in c.sentence
    far = {"a@1": g("a", 1, 1, 0, 0), "b@1": g("b", 1, 20, 3, 0)}
    c = A.compare(far, [], "a", "b", None)
    assert c.learning is None and "never reach the same learning" in c.sentence
    assert "a's fitted learning is 1.0 points, b's is 20.0;" in c.sentence
    far["a@2"] = g("a", 2, 3, 0, 0)
    c = A.compare(far, [], "a", "b", None)
    assert "a's fitted learning spans 1.0 to 3.0 points, b's is 20.0;" in c.sentence


def _points(label, forgetting_by_lr, noise, learned_earlier=1, learning=(5.0, 10.0)):
    """Constructed points: two learning rates of `label`, seeds 0..len(noise)-1, forgetting + noise[seed]."""
    return [Point(method=label, lr=lr, seed=seed, run_id=f"{label}-{lr}-{seed}", setting={"lr": lr},
                  learning=learn, forgetting=f + noise[seed], kl_to_base=0.01, learned_earlier=learned_earlier,
                  learned=["t1"] if learned_earlier else ["t2"], forgetting_learned=f + noise[seed])
            for lr, learn, f in zip((1e-3, 1e-2), learning, forgetting_by_lr) for seed in range(len(noise))]


SPREAD = [0.1, -0.1, 0.2, -0.2, 0.0]


def _verdict(b_forgetting, b_noise, b_learned=1, margin=3.0, a_noise=SPREAD):
    settings = StudySettings(lrs={"a": [1e-3, 1e-2], "b": [1e-3, 1e-2]}, seeds=list(range(5)), margin=margin)
    points = _points("a", (1.0, 2.0), a_noise) + _points("b", b_forgetting, b_noise, b_learned)
    rec = A.analyse(settings, None, [], points, None, tasks=["t1", "t2"])
    return rec, rec.comparison[0]


def test_the_four_verdicts_on_constructed_studies():
    rec, c = _verdict((8.0, 12.0), [0.3, -0.2, 0.1, 0.0, -0.1])  # b forgets about 7 points more
    assert c.verdict == "less" and c.p_adjusted < 0.05 and c.p_adjusted == c.p  # a family of one test
    assert c.learning == pytest.approx(7.5) and "Verdict: less — a forgets less than b" in c.sentence
    assert c.difference.mean == pytest.approx(1.5 - 10.02) and c.difference.ci95[1] < 0  # bootstrap over seeds
    rec, c = _verdict((1.0, 2.0), [0.2, -0.1, 0.1, -0.2, 0.0])  # the same within 3 points
    assert c.verdict == "equivalent" and c.tost_p < 0.05 and c.p > 0.05 and c.margin == 3.0
    rec, c = _verdict((1.0, 2.0), [0.2, -0.1, 0.1, -0.2, 0.0], margin=0.05)  # a margin tighter than the spread
    assert c.verdict == "inconclusive" and c.seeds_needed and f"about {c.seeds_needed} seeds" in c.sentence
    rec, c = _verdict((1.0, 2.0), [3.0, -4.0, 5.0, -2.0, 1.0])  # too noisy for either answer
    assert c.verdict == "inconclusive" and c.p > 0.05 and c.tost_p > 0.05 and c.seeds_needed > 5
    rec, c = _verdict((8.0, 12.0), [0.3, -0.2, 0.1, 0.0, -0.1], b_learned=0)  # b's runs learned no earlier task
    assert c.verdict == "nothing learned" and "the runs of b (lr 1e-" in c.sentence
    assert rec.warnings == []
    # no spread (every pair differs by the same amount): never p = 0, and decided as a setting against the base is
    rec, c = _verdict((3.0, 4.0), [0.0] * 5, a_noise=[0.0] * 5)  # b − a is 2 on every seed: inside ±3
    assert c.p is None and c.tost_p is None and c.verdict == "equivalent" and "no spread to test" in c.sentence
    assert "(every pair by exactly -2.00 pts: no spread left to test)" in c.sentence
    rec, c = _verdict((8.0, 12.0), [0.0] * 5, a_noise=[0.0] * 5)  # b − a beyond ±3 on every seed
    assert c.p is None and c.verdict == "less" and "at or beyond ±3: no spread left to test" in c.sentence


def test_a_family_of_comparisons_is_holm_adjusted_and_a_late_learnable_task_is_warned():
    settings = StudySettings(lrs={"a": [1e-3, 1e-2], "b": [1e-3, 1e-2], "c": [1e-3, 1e-2]}, seeds=list(range(5)))
    points = (_points("a", (1.0, 2.0), SPREAD) + _points("b", (1.5, 2.8), [0.9, -0.6, 0.4, -0.9, 0.3])
              + _points("c", (8.0, 12.0), [0.3, -0.2, 0.1, 0.0, -0.1]))
    rec = A.analyse(settings, None, [], points, None, tasks=["t1", "t2"])
    ps = [c.p for c in rec.comparison]
    assert [c.p_adjusted for c in rec.comparison] == pytest.approx(stats.holm(ps))
    assert all(c.family == A.FAMILY for c in rec.comparison) and all(c.p_adjusted >= c.p for c in rec.comparison)
    late = [dataclasses.replace(p, learned=["t2"]) for p in points]
    assert "Only the last task, t2, was learned" in A.analyse(settings, None, [], late, None,
                                                                tasks=["t1", "t2"]).warnings[0]


def test_the_matched_level_lies_inside_both_fitted_ranges_and_each_measure_is_fitted_monotone():
    def g(label, lr, learning, forgetting):
        return Group.of({"method": label, "lr": lr, "setting": {"lr": lr},
                         "learning": {"mean": learning, "n": 3}, "forgetting": {"mean": forgetting, "n": 3}})

    a = [g("a", 1e-3, 2, 4), g("a", 3e-3, 6, 2), g("a", 1e-2, 10, 6)]  # forgetting 4, 2, 6: not monotone
    fit = A.Fit(a, "forgetting")
    assert fit.y == [3, 3, 6]  # pooled to the monotone fit, not interpolated across the dip
    groups = {f"{x.method}@{x.lr}": x for x in a + [g("b", 1e-3, 4, 1), g("b", 1e-2, 8, 5)]}
    c = A.compare(groups, [], "a", "b", None)
    assert c.learning == pytest.approx(6)  # the middle of 4..8, not a's noisy top edge at 10
    assert c.forgetting["a"].mean == pytest.approx(3) and c.forgetting["b"].mean == pytest.approx(3)


def test_the_secondary_comparison_sits_at_the_most_learning_both_reach_in_a_family_of_its_own():
    settings = StudySettings(lrs={"a": [1e-3, 1e-2], "b": [1e-3, 1e-2], "c": [1e-3, 1e-2]}, seeds=list(range(5)))
    points = (_points("a", (1.0, 2.0), SPREAD) + _points("b", (1.5, 9.0), [0.9, -0.6, 0.4, -0.9, 0.3],
                                                           learning=(4.0, 9.0))
              + _points("c", (8.0, 12.0), [0.3, -0.2, 0.1, 0.0, -0.1]))
    rec = A.analyse(settings, None, [], points, None, tasks=["t1", "t2"])
    tops = A.top_comparisons(rec)
    assert [c.methods for c in tops] == [c.methods for c in rec.comparison]
    for c, primary in zip(tops, rec.comparison):
        assert c.family == A.FAMILY_TOP and "the most learning both fits reach" in c.sentence
        assert c.learning >= primary.learning and c.verdict in ("less", "more", "equivalent", "inconclusive")
    ab = tops[0]  # a reaches 5..10, b 4..9: the top both reach is 9, where b is at its lr 1e-2
    assert ab.learning == pytest.approx(9) and ab.forgetting["b"].mean == pytest.approx(9.02)  # its mean over seeds
    assert [c.p_adjusted for c in tops] == pytest.approx(stats.holm([c.p for c in tops]))
    assert "the middle of what both fits reach" in rec.comparison[0].sentence
    # analyse keeps them in the record (the app reads them; study.json round-trips them)
    assert [(c.methods, c.learning, c.verdict) for c in rec.comparison_top] == \
        [(c.methods, c.learning, c.verdict) for c in tops]
    again = StudyRecord.of(json.loads(json.dumps(rec.to_json())))
    assert [c.sentence for c in again.comparison_top] == [c.sentence for c in tops]
    assert "comparison_top" not in StudyRecord().to_json()  # an older study.json stays as it was
    from curlora.ui import compare_tab

    md = compare_tab.summary_md(rec, {"status": "completed"})
    assert f"Forgetting at the most learning both reach — **a vs b: {tops[0].verdict}**" in md


def test_study_json_round_trips_through_its_record_keeping_unknown_keys():
    from curlora.measure.study_record import StudyRecord

    body = {"settings": {"lrs": {"lora": [0.001]}, "seeds": [0], "kl_budget": None, "best_rule": "r",
                         "future_setting": 1},
            "base": None, "plan": [{"method": "lora", "lr": 0.001, "seed": 0, "run_id": "x", "status": "completed",
                                    "later_axis": [1, 0]}, {"method": "lora", "lr": 0.001, "seed": 1, "run_id": None,
                                                       "status": "pending"}],
            "points": [{"method": "lora", "lr": 0.001, "seed": 0, "run_id": "x", "setting": {"lr": 0.001},
                        "learning": 2.0, "forgetting": 1.0, "replay": 0.1}],
            "groups": {"lora@1e-3": {"method": "lora", "lr": 0.001, "learning": {"mean": 2.0, "ci95": None, "n": 1,
                                                                                   "sd": None, "new": 3}}},
            "frontier": {"lora": ["lora@1e-3"]}, "best": {"lora": None},
            "comparison": [{"methods": ["lora", "x"], "verdict_later": "kept", "forgetting": {"lora": None}}],
            "unknown_top": {"kept": True}}
    rec = StudyRecord.of(body)
    assert rec.point_run_ids() == ["x"] and rec.plan[0].extra == {"later_axis": [1, 0]}
    assert rec.groups["lora@1e-3"].learning.mean == 2.0 and rec.points[0].key == "lora@1e-3"
    out = rec.to_json()
    assert out["unknown_top"] == {"kept": True} and out["settings"]["future_setting"] == 1
    assert out["points"][0]["replay"] == 0.1 and out["groups"]["lora@1e-3"]["learning"]["new"] == 3
    assert out["comparison"][0]["verdict_later"] == "kept" and out["plan"][0]["later_axis"] == [1, 0]
    assert StudyRecord.of(out).to_json() == out


def test_a_killed_study_resumes_where_it_stopped(cfg, tmp_path):
    root = tmp_path / "runs"
    seen = {"runs": 0}

    def stop_after_first():
        return seen["runs"] >= 2

    def on_event(e):
        if e["kind"] == "run_end":
            seen["runs"] += 1

    from curlora.run.runner import load_everything
    loaded = load_everything(cfg)
    study = S.create(cfg, S.StudySettings(lrs={"curlora": [0.01], "lora": [0.001, 0.01]}, seeds=[0]), root)
    assert S.execute(study, loaded, should_stop=stop_after_first, on_event=on_event) == "cancelled"
    body = S.read(study)
    done = [e for e in body["plan"] if e["status"] == "completed"]
    assert study.status()["status"] == "cancelled" and len(done) == 2 and len(body["points"]) == 2
    first_ids = [e["run_id"] for e in done]
    S.execute(Run.open(study.id, root), loaded)
    body = S.read(study)
    assert all(e["status"] == "completed" for e in body["plan"]) and len(body["points"]) == 3
    assert [e["run_id"] for e in body["plan"][:2]] == first_ids  # kept, not run again
    assert len(list_runs(root)) == 4  # the study and its three runs: nothing duplicated


def test_bad_grids_are_refused_before_anything_is_written(cfg, tmp_path):
    root = tmp_path / "runs"
    with pytest.raises(CurloraError, match="--lrs: dora is not a trained method"):
        S.create(cfg, S.StudySettings(lrs={"dora": [1e-3]}), root)
    with pytest.raises(CurloraError, match="must be positive"):
        S.create(cfg, S.StudySettings(lrs={"lora": [0.0]}), root)
    with pytest.raises(CurloraError, match="distinct seeds"):
        S.create(cfg, S.StudySettings(seeds=[1, 1]), root)
    assert not root.exists() or not list_runs(root)


def test_the_cli_reads_a_study_section_and_flags(cfg, tmp_path, monkeypatch, capsys):
    import yaml
    monkeypatch.setenv("CURLORA_DATA_DIR", str(tmp_path / "store"))
    d = cfg.to_dict()
    d["methods"] = [m for m in d["methods"] if m["kind"] == "lora"]
    d["study"] = {"lrs": {"lora": [0.001]}, "seeds": [0]}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(d))
    assert cli(["study", str(path), "--seeds", "3"]) == 0
    out = capsys.readouterr().out
    assert "study.json" in out and "lora: best lr 0.001" in out
    (study,) = [r for r in list_runs(tmp_path / "store") if S.is_study(r)]
    assert S.read(study)["plan"][0]["seed"] == 3
    assert cli(["study", str(path), "--lrs", "lora=abc"]) == 2
    assert "not a comma-separated list" in capsys.readouterr().err


def test_the_job_queue_runs_a_study_and_the_compare_tab_draws_it(cfg, tmp_path):
    from curlora.serve.jobs import JobManager
    from curlora.ui import compare_tab, study_charts

    jobs = JobManager(tmp_path / "runs")
    try:
        sid = jobs.submit_study(cfg, S.StudySettings(lrs={"lora": [0.001, 0.01], "curlora": [0.05]}, seeds=[0]))
        assert jobs.wait(sid, timeout=300)
    finally:
        jobs.shutdown()
    study = Run.open(sid, tmp_path / "runs")
    body = S.read(study)
    assert study.status()["status"] == "completed" and len(body["points"]) == 3
    fig = study_charts.frontier_figure(body)
    names = {t.name for t in fig.data if t.name}
    assert any(n.startswith("lora") for n in names) and any(n.startswith("curlora") for n in names)
    assert fig.layout.uirevision == "frontier" and "3 of 3 runs finished" in fig.layout.title.text
    rows = compare_tab.best_table(body)
    assert {r[0].split(" ")[0] for r in rows} == {"lora", "curlora"} and all("lr " in r[0] for r in rows)
    md = compare_tab.summary_md(body, study.status())
    assert "completed" in md and body["comparison"][0]["sentence"] in md
    verdict = body["comparison"][0]["verdict"]
    assert verdict in ("less", "more", "equivalent", "inconclusive", "nothing learned")
    assert f"curlora vs lora: {verdict}**" in md or f"lora vs curlora: {verdict}**" in md
    assert compare_tab.parse_grids("lora=1e-3,2e-3; curlora=1e-2") == {"lora": [0.001, 0.002], "curlora": [0.01]}
    assert study_charts.frontier_figure({}).data == ()


def test_a_study_with_the_chat_probe_draws_the_chat_retention_frontier():
    """The committed SmolLM2 frontier pack ran the chat probe: the figure's panels are forgetting, chat KL and facts,
    each group a point at its mean, the chat KL line along the record's chat_frontier."""
    from curlora.ui import study_charts

    body = json.loads((REPO / "docs/studies/smollm2-frontier/study/study.json").read_text(encoding="utf-8"))
    rec = StudyRecord.of(body)
    known = ["forgetting_known"] if any(p.forgetting_known is not None for p in rec.points) else []
    assert study_charts.panels(rec) == ["forgetting", *known, "chat_kl", "facts"]
    fig = study_charts.frontier_figure(body)
    titles = [a.text for a in fig.layout.annotations]
    assert titles[:3 + len(known)] == [study_charts.PANELS[n][0] for n in ("forgetting", *known, "chat_kl", "facts")]
    assert "chat retention" in fig.layout.title.text
    by_uid = {t.uid: t for t in fig.data}
    for label in rec.labels:
        mine = sorted((g for g in rec.groups.values() if g.method == label), key=lambda g: g.lr)
        if not mine:
            continue
        assert list(by_uid[f"{label}:chat_kl:groups"].y) == [g.mean("chat_kl") for g in mine]
        assert list(by_uid[f"{label}:facts:groups"].y) == [g.mean("facts") for g in mine]
        assert f"{label}:facts:frontier" not in by_uid  # no fit along facts
        if len(rec.chat_frontier.get(label, [])) > 1:
            line = by_uid[f"{label}:chat_kl:frontier"]
            assert list(line.y) == [rec.groups[k].mean("chat_kl") for k in rec.chat_frontier[label]]
    base = [r for r in rec.bases.values()]
    share = sum(100 * r.facts / r.facts_n for r in base) / len(base)
    assert any(sh.y0 == share for sh in fig.layout.shapes)  # the base's facts share as a line
    assert study_charts.panels(StudyRecord.of({})) == ["forgetting", "kl_to_base"]
    # each panel's scale follows the points (every run and the base's facts line), never an interval's bar
    learning = [p.learning for p in rec.points]
    assert list(fig.layout.xaxis.range) == study_charts._span(learning)
    facts_axis = fig.layout[f"yaxis{study_charts.panels(rec).index('facts') + 1}"]
    assert list(facts_axis.range) == study_charts._span([p.facts for p in rec.points] + [share])
    # analysed with today's code from the pack's runs, every run carries forgetting_known: four panels
    bases = rec.bases
    rec = A.reanalyse(rec, metrics_of=lambda rid: Run.open(rid, REPO / "docs/studies/smollm2-frontier/runs").record())
    assert rec.bases == bases and rec.bases  # each seed's base row survives the analysis (it is measured, not derived)
    assert study_charts.panels(rec) == ["forgetting", "forgetting_known", "chat_kl", "facts"]
    fig = study_charts.frontier_figure(rec)
    by_uid = {t.uid: t for t in fig.data}
    for label in rec.labels:
        mine = sorted((g for g in rec.groups.values() if g.method == label), key=lambda g: g.lr)
        known = [g for g in mine if g.mean("forgetting_known") is not None]
        assert list(by_uid[f"{label}:forgetting_known:groups"].y) == [g.mean("forgetting_known") for g in known]


def test_every_method_of_a_study_figure_has_its_own_look():
    """Ten methods, ten looks: a kind keeps the run charts' colour, a replay variant its kind's with a diamond, every
    other method a colour no other uses; an axis spans its points, padded, and one value gets a scale of its own."""
    from curlora.ui import study_charts
    from curlora.ui.charts import KIND_COLOURS

    labels = ["curlora", "lora", "mica", "pissa", "corda", "full", "lora-replay25", "curlora-replay25", "dora", "osf"]
    look = study_charts.styles(labels)
    assert len(set(look.values())) == len(labels)
    assert look["lora-replay25"] == (KIND_COLOURS["lora"], "diamond")
    assert look["full"] == (KIND_COLOURS["full"], "circle")
    others = [look[m][0] for m in ("mica", "pissa", "corda", "dora", "osf")]
    assert len(set(others)) == 5 and not set(others) & set(KIND_COLOURS.values())
    assert study_charts._span([0.0, 10.0]) == pytest.approx([-0.8, 10.8])
    assert study_charts._span([5.0, None]) == pytest.approx([4.6, 5.4]) and study_charts._span([]) is None
    same = study_charts._span([100 * 26 / 36, 72.22222222222221])  # float noise is no spread (the control's facts)
    assert same[1] - same[0] == pytest.approx(2 * 0.08 * 72.2222, rel=1e-4)
    # a KL panel spanning two decades or more (a rate that broke the model: chat KL 10 beside 0.01) goes on a log
    # axis padded in decades; under that, or with a zero (an untouched model), or another measure: linear
    wide = study_charts._y_axis("chat_kl", [0.01, 0.04, 1.0, 10.0])
    assert wide["type"] == "log" and wide["range"] == pytest.approx([-2 - 0.24, 1 + 0.24])
    assert "(log scale)" in wide["title_text"]
    assert study_charts._y_axis("chat_kl", [0.05, 1.0])["type"] == "linear"
    assert study_charts._y_axis("chat_kl", [0.0, 10.0])["type"] == "linear"
    assert study_charts._y_axis("forgetting", [0.01, 10.0]) == {"type": "linear", "range": study_charts._span(
        [0.01, 10.0]), "title_text": study_charts.PANELS["forgetting"][1]}


def test_the_ray_executor_spreads_a_study_and_its_points_match_local_ones(cfg, tmp_path):
    """A study's points on a local Ray instance are the local executor's points: the SmolLM2 study's tail runs on
    Ray (bench/smollm2_queue.py run B --executor ray) beside points run locally, and a Ray worker loads its point's
    rows from the point's config, so with rows per seed (seed 1: not the experiment's own rows) and two task orders
    each point scores the same rows in the same order against its seed's base row, measured once by the study."""
    ray = pytest.importorskip("ray", reason="ray is an optional extra (requirements-extras.txt)")
    from curlora.run.runner import load_everything

    cfg.methods = [m for m in cfg.methods if m.label == "lora"]
    names = [t.name for t in cfg.tasks]
    settings = S.StudySettings(lrs={"lora": [0.01]}, seeds=[1], rows_per_seed=True, orders=[names, names[::-1]])
    local = S.run_study(cfg, settings, tmp_path / "local")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(S.Path(S.__file__).resolve().parents[2]),
                                       "HF_HUB_OFFLINE": "1"}})
    try:
        remote = S.create(cfg, settings, tmp_path / "ray")
        assert S.execute_ray(remote, load_everything(cfg)) == "completed"
    finally:
        ray.shutdown()
    a, b = local.study_record(), remote.study_record()
    assert [e.status for e in b.plan] == ["completed", "completed"] and len(b.points) == 2
    assert {k: r.accuracy for k, r in a.bases.items()} == {k: r.accuracy for k, r in b.bases.items()}
    assert [(e.seed, e.order) for e in a.plan] == [(e.seed, e.order) for e in b.plan] == [(1, 0), (1, 1)]
    for ea, eb in zip(a.plan, b.plan):
        ra, rb = Run.open(ea.run_id, tmp_path / "local"), Run.open(eb.run_id, tmp_path / "ray")
        assert [t.name for t in ra.config().tasks] == [t.name for t in rb.config().tasks]
        assert [t.seed for t in rb.config().tasks] == [1, 1]
        ma, mb = ra.record(), rb.record()
        assert ma.base.accuracy == mb.base.accuracy and ma.base.n == mb.base.n  # its seed's rows, in its order
        assert not [x for x in rb.events() if x["kind"] == "stage" and x["stage"] == 0]  # the study's base row
        assert ma.methods["lora"].matrix_n == mb.methods["lora"].matrix_n
        flat = lambda m: [x for row in m.methods["lora"].matrix for x in row]  # noqa: E731
        assert flat(ma) == flat(mb)  # the same rows, the same training: the same answers


def test_auto_picks_ray_only_where_there_is_something_to_spread_over(monkeypatch):
    import importlib.util

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
    assert S.pick_executor("auto") == "local" and S.pick_executor("ray") == "ray"
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert S.pick_executor("auto") == ("ray" if importlib.util.find_spec("ray") else "local")
    monkeypatch.delenv("RAY_ADDRESS")
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    assert S.pick_executor("auto") == ("ray" if importlib.util.find_spec("ray") else "local")
    with pytest.raises(CurloraError, match="not one of auto, local, ray"):
        S._dispatch(None, None, None, None, "slurm")


def test_a_studys_points_share_its_self_probe_reference(cfg, tmp_path, monkeypatch):
    """One reference file per study, not one per point (16.7 MB each on GPT-2's vocabulary): a point reads the
    study's, exports and deletes as any run, and samples its own again only if the study is gone."""
    import torch
    from safetensors.torch import load_file

    from curlora.measure import probes
    from curlora.serve.downloads import export_file
    from curlora.serve.jobs import JobManager

    root = tmp_path / "runs"
    cfg.methods = [m for m in cfg.methods if m.label == "lora"]
    study = S.run_study(cfg, S.StudySettings(lrs={"lora": [0.001, 0.01]}, seeds=[0]), root)
    first, second = study.point_run_ids()
    shared = study.path / probes.REF_FILE
    assert shared.is_file()
    for rid in (first, second):
        point = Run.open(rid, root)
        stored = json.loads((point.path / probes.PROBE_FILE).read_text())
        assert not (point.path / probes.REF_FILE).exists() and stored[probes.SHARED_REF] == study.id
        assert probes.reference_path(point.path, stored) == shared
        assert point.record().methods["lora"].kl_to_base[-1] is not None
    assert S.read(study)["points"][0]["kl_to_base"] is not None

    def never(*args, **kwargs):
        raise AssertionError("sampled again")

    monkeypatch.setattr(probes, "sample_self_probe", never)
    ids, ref, info = probes.load_or_sample(Run.open(first, root).path, None, None, 2, 8, 1.0, 0)
    assert info["texts"] == 2 and ids.shape[0] == 2
    assert all(torch.equal(ref[k], v) for k, v in load_file(str(shared)).items())

    jobs = JobManager(root)
    try:
        assert export_file(jobs, first, "adapters.zip").endswith(".zip")
        jobs.delete(first)
        assert shared.is_file() and Run.open(second, root).record().methods["lora"].status == "completed"
        jobs.delete(study.id)  # the study's folder, reference and all; its other run stays, complete
        point = Run.open(second, root)
        stored = json.loads((point.path / probes.PROBE_FILE).read_text())
        assert probes.reference_path(point.path, stored) is None  # a resume would sample it again, same seed
        assert point.record().methods["lora"].status == "completed"
    finally:
        jobs.shutdown()


def test_task_order_is_an_axis_of_the_analysis():
    settings = StudySettings(lrs={"a": [1e-3, 1e-2], "b": [1e-3, 1e-2]}, seeds=[0, 1, 2],
                             orders=[["t1", "t2"], ["t2", "t1"]])
    points = []
    for order in (0, 1):
        for label, forgetting in (("a", (1.0, 2.0)), ("b", (8.0 + order, 12.0 + order))):
            for p in _points(label, forgetting, [0.1, -0.1, 0.2], learned_earlier=1):
                points.append(dataclasses.replace(p, order=order, run_id=f"{p.run_id}-o{order}",
                                                  learned=["t2"] if label == "a" else ["t1"]))
    rec = A.analyse(settings, None, [], points, None, tasks=["t1", "t2"])
    assert rec.groups["a@1e-3"].learning.n == 6 and rec.groups["a@1e-3"].orders == [0, 0, 0, 1, 1, 1]
    (c,) = rec.comparison
    assert c.paired.n == 6 and c.paired.orders == [0, 1, 0, 1, 0, 1] and "6 runs (seed × task order)" in c.sentence
    assert c.verdict == "less"
    effect = {(o.method, o.order): o for o in rec.order_effect}
    assert effect[("b", 1)].forgetting.mean - effect[("b", 0)].forgetting.mean == pytest.approx(1.0)
    assert effect[("a", 1)].tasks == ["t2", "t1"]
    # in order 1 (t2, t1) every run learned only t1, its last task; in order 0 a learned t2 and b t1
    late = [dataclasses.replace(p, learned=[rec.order_of(p.order)[-1]]) for p in points]
    (warning,) = A.analyse(settings, None, [], late, None, tasks=["t1", "t2"]).warnings[:1]
    assert "in order 1 (t1, t2)" in warning


def test_a_study_over_two_task_orders_runs_each_point_in_its_order(cfg, tmp_path):
    root = tmp_path / "runs"
    cfg.methods = [m for m in cfg.methods if m.label == "lora"]
    with pytest.raises(CurloraError, match="is not an order of this experiment's tasks"):
        S.create(cfg, StudySettings(lrs={"lora": [0.01]}, orders=[["sent", "nope"]]), root)
    with pytest.raises(CurloraError, match="permutations: give a whole number from 1 to 2"):
        S.create(cfg, StudySettings(lrs={"lora": [0.01]}, permutations=3), root)
    study = S.run_study(cfg, StudySettings(lrs={"lora": [0.01]}, seeds=[0], permutations=2), root)
    rec = study.study_record()
    assert rec.settings.orders == [["sent", "pair"], ["pair", "sent"]] and [e.order for e in rec.plan] == [0, 1]
    assert all(e.status == "completed" for e in rec.plan) and len(rec.order_effect) == 2
    for e in rec.plan:
        m = Run.open(e.run_id, root).record()
        order = rec.order_of(e.order)
        assert m.tasks == order and [t.name for t in Run.open(e.run_id, root).config().tasks] == order
        perm = [rec.tasks.index(t) for t in order]  # the shared base row, each task's cell in the run's order
        assert m.base.accuracy == [rec.base.accuracy[i] for i in perm] and m.base.n == [rec.base.n[i] for i in perm]
        assert m.majority == [Run.open(rec.plan[0].run_id, root).record().majority[rec.order_of(0).index(t)]
                              for t in order]


def test_the_study_says_which_drift_probe_tracked_forgetting():
    points = [Point(method="a", lr=1e-3, seed=s, run_id=f"r{s}", forgetting=float(s), kl_to_base=0.01 * s + 0.001,
                    self_ppl_ratio=1.0 + 0.1 * ((s * 7) % 5), probe_ppl_ratio=None) for s in range(10)]
    tracks = {t.probe: t for t in A.probe_tracks(points)}
    assert tracks["kl_to_base"].rho == pytest.approx(1.0) and tracks["kl_to_base"].tracks
    assert tracks["kl_to_base"].n == 10 and tracks["kl_to_base"].ci95[0] > 0
    assert not tracks["self_ppl_ratio"].tracks and tracks["self_ppl_ratio"].ci95[0] < 0 < tracks["self_ppl_ratio"].ci95[1]
    assert tracks["probe_ppl_ratio"].rho is None and tracks["probe_ppl_ratio"].n == 0
    # a probe that falls as the model drifts: facts right falling with forgetting tracks it (ρ below 0)
    facts = [dataclasses.replace(p, facts=100.0 - p.seed) for p in points]
    fell = {t.probe: t for t in A.probe_tracks(facts)}["facts"]
    assert fell.rho == pytest.approx(-1.0) and fell.ci95[1] < 0 and fell.tracks
    # against forgetting of what each run knew, over the runs that knew an earlier task (the others have None)
    knew = [dataclasses.replace(p, forgetting_known=None if p.seed < 3 else 10.0 - p.seed) for p in points]
    known = {t.probe: t for t in A.probe_tracks(knew, "forgetting_known")}
    assert known["kl_to_base"].target == "forgetting_known" and known["kl_to_base"].n == 7
    assert known["kl_to_base"].rho == pytest.approx(-1.0) and not known["kl_to_base"].tracks
    rec = A.analyse(StudySettings(lrs={"a": [1e-3]}, seeds=list(range(10))), None, [], knew, None, tasks=["t1"])
    assert [t.target for t in rec.probes_known] == ["forgetting_known"] * len(rec.probes_known) and rec.probes_known
    assert StudyRecord.from_json(rec.to_json()).probes_known[0].n == rec.probes_known[0].n
    assert A.analyse(StudySettings(lrs={"a": [1e-3]}, seeds=list(range(10))), None, [], points, None,
                     tasks=["t1"]).probes_known == []


def test_whether_a_probe_tracks_forgetting_is_a_test_corrected_over_every_probe_and_target():
    """Spearman's ρ = 0 tested (t approximation) and Holm-adjusted over every probe against both targets: a probe
    that an uncorrected 95 % interval would call tracking (raw p about 0.02) does not track among a dozen tests."""
    from curlora.measure import stats

    assert stats.spearman_p(0.5, 36) == pytest.approx(0.00191, abs=2e-5)  # t = 3.37, 34 df
    assert stats.spearman_p(1.0, 10) == 0.0 and stats.spearman_p(0.9, 3) is None and stats.spearman_p(None, 9) is None
    weak = [ProbeTrack(probe=f"p{i}", rho=0.39, ci95=[0.05, 0.65], n=36, p=stats.spearman_p(0.39, 36))
            for i in range(12)]
    assert 0.01 < weak[0].p < 0.05
    A.decide_probes(weak)
    assert not any(t.tracks for t in weak) and all(t.p_adjusted > 0.05 for t in weak)
    A.decide_probes(weak[:1])  # alone, the same ρ is a finding
    assert weak[0].tracks and weak[0].p_adjusted == weak[0].p
    # a probe that falls as the model drifts (facts right) tracks on the other side of 0, and only there
    facts = [ProbeTrack(probe="facts", rho=r, ci95=[r - 0.2, r + 0.2], n=36, p=stats.spearman_p(r, 36),
                        rho_within=r, p_within=stats.spearman_p(r, 36)) for r in (-0.6, 0.6)]
    assert (A.drift_sign("facts"), A.drift_sign("kl_to_base")) == (-1, 1)
    for t in facts:
        A.decide_probes([t])
    assert [(t.tracks, t.tracks_within) for t in facts] == [(True, True), (False, False)]
    import sys

    sys.path.insert(0, str(REPO / "bench"))
    import smollm2_study

    assert [smollm2_study.wrong_way(t) for t in facts] == ["", ", the opposite way to drift"]
    points = [Point(method="a", lr=1e-3, seed=s, run_id=f"r{s}", forgetting=float(s), kl_to_base=0.01 * s + 0.001,
                    forgetting_known=float(s)) for s in range(12)]
    rec = A.analyse(StudySettings(lrs={"a": [1e-3]}, seeds=list(range(12))), None, [], points, None, tasks=["t1"])
    family = rec.probes + rec.probes_known
    assert {t.family for t in family} == {A.FAMILY_PROBES} and len(family) >= 2
    assert [t.p_adjusted for t in family] == stats.holm([t.p for t in family])  # one family over both targets
    # within settings: one setting here, so ρ within it is ρ over every run, tested by shuffling, Holm on its own
    kl = next(t for t in rec.probes if t.probe == "kl_to_base")
    assert kl.settings == 1 and kl.rho_within == pytest.approx(kl.rho) == pytest.approx(1.0)
    assert kl.p_within < 0.01 and kl.tracks_within
    assert [t.p_within_adjusted for t in family] == stats.holm([t.p_within for t in family])
    assert "within settings ρ = 1.00" in A.within_text(kl) and "tracked it there" in A.within_text(kl)


def test_a_probe_that_only_follows_the_learning_rate_does_not_track_within_a_setting():
    """Across rates the probe and forgetting rise together; within each rate the probe says nothing about which run
    forgets more: it tracks over every run, not within settings."""
    points, s = [], 0
    for lr, level in ((1e-4, 0.0), (1e-3, 10.0), (1e-2, 20.0)):
        for i, f in enumerate([1.0, 4.0, 2.0, 5.0, 3.0, 0.0]):  # forgetting within a rate: unrelated to the probe
            points.append(Point(method="a", lr=lr, seed=i, run_id=f"r{s}", forgetting=level + f,
                                kl_to_base=level / 10 + 0.01 * i))
            s += 1
    rec = A.analyse(StudySettings(lrs={"a": [1e-4, 1e-3, 1e-2]}, seeds=list(range(6))), None, [], points, None,
                    tasks=["t1"])
    kl = next(t for t in rec.probes if t.probe == "kl_to_base")
    assert kl.tracks and kl.settings == 3
    assert not kl.tracks_within and abs(kl.rho_within) < 0.3 and kl.p_within_adjusted > 0.05


def test_learning_rates_are_chosen_on_validation_rows_and_reported_on_test_rows():
    from curlora.measure.record import MethodRecord, Row, RunMetrics

    n = 8
    val = sorted(A.validation_rows("t1", n))
    assert len(val) == 4 and A.validation_rows("t1", n) == set(val)  # seeded by the task's name: always the same
    right = [i in val for i in range(n)]  # right on exactly the validation rows of t1
    bits = stats.to_bits(right)
    none = stats.to_bits([False] * n)
    base = Row(accuracy=[0.0, 0.0], n=[n, n], correct=[none, none])
    rec = MethodRecord(matrix=[[0.0, 0.0], [0.5, 0.0], [0.5, 0.5]], matrix_n=[[n, n]] * 3,
                       matrix_correct=[[none, none], [bits, none], [bits, stats.to_bits([True] * n)]],
                       matrix_pred_share=[None] * 3, summary={"forgetting": 0.0, "bwt": 0.0, "acc": 0.5})
    m = RunMetrics(tasks=["t1", "t2"], majority=[0.25, 0.25], base=base, methods={"a": rec})
    p = A.point_measures(m, "a")
    # t1: 100 % on its validation half, 0 % on its test half; t2: 100 % on both; each against the 25 % line
    assert p["learning_val"] == pytest.approx(((1 - 0.25) + (1 - 0.25)) / 2 * 100)
    assert p["learning_test"] == pytest.approx(((0 - 0.25) + (1 - 0.25)) / 2 * 100)

    def g(lr, learning, val, test):
        return Group.of({"method": "a", "lr": lr, "learning": {"mean": learning, "n": 2},
                         "learning_val": {"mean": val, "n": 2}, "learning_test": {"mean": test, "n": 2}})

    groups = {"a@1e-3": g(1e-3, 10, 4, 16), "a@1e-2": g(1e-2, 8, 6, 10)}  # all rows favour 1e-3, validation 1e-2
    best = A.best_of(groups, "a", None)
    assert best.key == "a@1e-2" and "on validation rows" in best.chosen and "validation rows" in best.rule
    from curlora.ui import compare_tab
    rec_ = StudyRecord(settings=StudySettings(lrs={"a": [1e-3, 1e-2]}), groups=groups, best={"a": best})
    assert compare_tab.best_table(rec_)[0][2] == "10.00"  # the chosen lr's learning on the test rows
    groups["a@1e-3"].learning_val.mean = None  # a study stored before per-row results: chosen on all rows
    assert A.best_of(groups, "a", None).key == "a@1e-3" and "all eval rows" in A.best_of(groups, "a", None).chosen


def test_with_rows_per_seed_each_seed_draws_its_own_rows_and_base_row(cfg, tmp_path):
    root = tmp_path / "runs"
    cfg.methods = [m for m in cfg.methods if m.label == "lora"]
    study = S.run_study(cfg, StudySettings(lrs={"lora": [0.01]}, seeds=[0, 1], rows_per_seed=True), root)
    rec = study.study_record()
    assert study.status()["status"] == "completed" and rec.settings.rows_per_seed
    assert sorted(rec.bases) == [0, 1] and rec.base == rec.bases[0]
    assert len([x for x in study.events() if x["kind"] == "stage" and x["stage"] == 0]) == 2  # once per seed
    texts = {}
    for e in rec.plan:
        run = Run.open(e.run_id, root)
        tasks = run.config().tasks
        assert [t.seed for t in tasks] == [e.seed] * 2 and run.config().training.seed == e.seed
        m = run.record()
        assert m.base.accuracy == rec.bases[e.seed].accuracy and m.base.n == rec.bases[e.seed].n
        from curlora.data.tasks import load_task
        texts[e.seed] = [load_task(t).eval["text"] for t in tasks]
    assert texts[0] != texts[1]  # other eval rows, not only another training order
    again = StudyRecord.from_json(json.loads((study.path / "study.json").read_text()))
    assert again.bases[1].accuracy == rec.bases[1].accuracy and again.settings.rows_per_seed
    with pytest.raises(CurloraError, match="rows_per_seed: give true or false"):
        StudySettings.from_dict({"rows_per_seed": "yes"})


def test_the_family_of_what_each_run_knew_compares_forgetting_known_with_its_own_guard():
    """Runs that learned nothing by the per-run test but knew an earlier task (a pretrained model's own ability)
    are compared on forgetting_known in their own Holm family; runs that knew nothing read 'nothing learned'."""
    import dataclasses

    settings = StudySettings(lrs={"a": [1e-3, 1e-2], "b": [1e-3, 1e-2]}, seeds=list(range(5)))

    def knew(points, known, shift=0.0):
        return [dataclasses.replace(p, learned_earlier=0, learned=[], known_earlier=known,
                                    forgetting_known=p.forgetting + shift) for p in points]

    points = knew(_points("a", (1.0, 2.0), SPREAD), 1) + \
        knew(_points("b", (8.0, 12.0), [0.3, -0.2, 0.1, 0.0, -0.1]), 1, shift=5.0)
    rec = A.analyse(settings, None, [], points, None, tasks=["t1", "t2"])
    (primary,), (c,) = rec.comparison, rec.comparison_known
    assert primary.verdict == "nothing learned"  # the per-run learned test: nothing
    assert c.family == A.FAMILY_KNOWN and c.measure == "forgetting_known" and c.rows is None
    assert c.verdict == "less" and c.p_adjusted < 0.05 and "on the earlier tasks each run knew" in c.sentence
    assert c.difference.mean == pytest.approx(1.5 - 15.02)  # b's forgetting_known is its forgetting + 5
    assert c.forgetting_known["b"].mean == pytest.approx(15.02)
    again = StudyRecord.from_json(rec.to_json())
    assert again.comparison_known[0].measure == "forgetting_known" and again.comparison_known[0].verdict == "less"
    points = knew(_points("a", (1.0, 2.0), SPREAD), 1) + knew(_points("b", (8.0, 12.0), SPREAD), 0)
    (c,) = A.analyse(settings, None, [], points, None, tasks=["t1", "t2"]).comparison_known
    assert c.verdict == "nothing learned" and "knew none of the earlier tasks" in c.sentence


def test_a_task_is_known_when_its_score_beats_the_majority_class_by_the_exact_binomial():
    """known_tasks: k of n right after training, one-sided exact binomial against the majority share at 0.05
    (32 of 50 against 0.5: p = 0.032, known; 31 of 50: p = 0.059, not); the last task is never an earlier one."""
    from curlora.measure.record import RunMetrics

    from curlora.measure.record import MethodRecord

    def metrics(k1, k2, n=50):
        rows = [[None, None, None], [k1 / n, None, None], [0.5, k2 / n, None], [0.5, 0.5, 0.9]]
        rec = MethodRecord(kind="lora", matrix=rows, matrix_n=[[None] * 3] + [[n] * 3] * 3)
        return RunMetrics(tasks=["t1", "t2", "t3"], majority=[0.5, 0.5, 0.5], methods={"m": rec})

    m = metrics(32, 31)
    rec = m.methods["m"]
    assert A.known_tasks(m, rec) == [0]  # 32/50 (p = 0.032) is known, 31/50 (p = 0.059) is not
    assert stats.binom_greater(32, 50, 0.5) < 0.05 < stats.binom_greater(31, 50, 0.5)


def test_a_saved_study_measures_every_finished_point_again_with_todays_code(tmp_path, shared_data):
    """A study resumed by a newer version gains what that version measures: the SmolLM2 frontier pack, its points
    stripped of forgetting_known as an older version stored them, is saved again and every point carries it; a
    point whose run cannot be read keeps what was stored."""
    import dataclasses

    from curlora.run.study_data import unpack

    study = unpack(REPO / "docs/studies/smollm2-frontier", tmp_path).study
    rec = study.study_record()
    old = [dataclasses.replace(p, known_earlier=None, forgetting_known=None) for p in rec.points]
    rec = dataclasses.replace(rec, points=old)
    gone = old[0].run_id
    import shutil

    shutil.rmtree(tmp_path / gone)
    new = S._save(study, rec.settings, rec)
    by = {p.run_id: p for p in new.points}
    assert set(by) == {p.run_id for p in old}
    assert by[gone].known_earlier is None  # its run is gone: kept as stored
    assert all(by[p.run_id].known_earlier is not None for p in old if p.run_id != gone)
    assert new.comparison_known and StudyRecord.of(S.read(study)).comparison_known


def test_chat_retention_is_tested_at_matched_learning_in_its_own_family():
    """chat_comparisons: per pair, chat KL and facts by a paired t-test over runs at the nearest settings, Holm over
    all of them; 'less' means the first method loses less of the chat model (more facts right, a lower chat KL);
    facts can be equivalent within the margin, chat KL has no margin; no chat probe, no family."""
    import dataclasses

    settings = StudySettings(lrs={"a": [1e-3, 1e-2], "b": [1e-3, 1e-2]}, seeds=list(range(5)))

    def chat(points, kl, facts):  # each method its own spread over seeds, so the paired differences vary
        wobble = [0.3, -0.2, 0.1, 0.0, -0.1] if points[0].method == "a" else [-0.1, 0.2, 0.0, -0.3, 0.1]
        return [dataclasses.replace(p, chat_kl=kl + 0.01 * wobble[p.seed], facts=facts + wobble[p.seed])
                for p in points]

    points = chat(_points("a", (1.0, 2.0), SPREAD), 0.05, 60.0) + chat(_points("b", (1.0, 2.0), SPREAD), 0.4, 20.0)
    rec = A.analyse(settings, None, [], points, None, tasks=["t1", "t2"])
    kl, facts, ppl = rec.comparison_chat
    assert (kl.measure, facts.measure, ppl.measure) == ("chat_kl", "facts", "probe_ppl_ratio")
    assert {kl.family, facts.family, ppl.family} == {A.FAMILY_CHAT} and ppl.p is None  # no perplexity measured
    assert kl.verdict == "less" and facts.verdict == "less"  # a drifts less and keeps more facts
    assert kl.margin is None and kl.tost_p is None and facts.margin == 3.0
    assert sorted([kl.p_adjusted, facts.p_adjusted]) == pytest.approx(
        sorted([2 * min(kl.p, facts.p), max(kl.p, facts.p, 2 * min(kl.p, facts.p))]))  # Holm over the two
    assert "a keeps more of the base model than b" in facts.sentence and facts.difference.mean == pytest.approx(40.04)
    # the other way round, and the same facts within the margin
    points = chat(_points("a", (1.0, 2.0), SPREAD), 0.4, 20.0) + chat(_points("b", (1.0, 2.0), SPREAD), 0.05, 20.0)
    kl, facts, _ = A.analyse(settings, None, [], points, None, tasks=["t1", "t2"]).comparison_chat
    assert kl.verdict == "more" and facts.verdict == "equivalent" and facts.tost_p < 0.05
    assert StudyRecord.from_json(rec.to_json()).comparison_chat[1].verdict == "less"
    assert A.analyse(settings, None, [], _points("a", (1.0, 2.0), SPREAD) + _points("b", (1.0, 2.0), SPREAD), None,
                     tasks=["t1", "t2"]).comparison_chat == []


def test_each_setting_is_tested_against_the_base_model_in_one_holm_family():
    """against_base: per (method, lr) and measure, each run's change from the base in its own run (facts: points
    minus the base's; perplexity: ratio minus 1), a t-test over runs and TOST within the margin (3 points, ±5 %),
    Holm over every setting and measure; loses / gains / keeps / inconclusive; one run, no test; stored and read."""
    import dataclasses

    settings = StudySettings(lrs={"a": [1e-3, 1e-2]}, seeds=list(range(5)))
    wobble = [0.3, -0.2, 0.1, 0.0, -0.1]

    def probed(p):  # lr 1e-3 keeps the base (facts within a point, perplexity within 1 %); 1e-2 loses both
        lost = p.lr == 1e-2
        return dataclasses.replace(p, facts=(30.0 if lost else 72.0) + wobble[p.seed], facts_base=72.2,
                                   probe_ppl_ratio=(1.5 if lost else 1.0) + 0.01 * wobble[p.seed])

    points = [probed(p) for p in _points("a", (1.0, 2.0), SPREAD)]
    rec = A.analyse(settings, None, [], points, None, tasks=["t1", "t2"])
    by = {(t.lr, t.measure): t for t in rec.against_base}
    assert set(by) == {(lr, m) for lr in (1e-3, 1e-2) for m in ("facts", "probe_ppl_ratio")}
    assert {t.family for t in rec.against_base} == {A.FAMILY_BASE}
    assert by[(1e-2, "facts")].verdict == "loses" and by[(1e-2, "probe_ppl_ratio")].verdict == "loses"
    assert by[(1e-3, "facts")].verdict == "keeps" and by[(1e-3, "probe_ppl_ratio")].verdict == "keeps"
    f = by[(1e-2, "facts")]
    assert f.change == pytest.approx(30.02 - 72.2) and f.base == pytest.approx(72.2) and f.n == 5
    assert f.margin == 3.0 and by[(1e-2, "probe_ppl_ratio")].margin == A.PPL_MARGIN
    ps = [t.p for t in rec.against_base]
    assert [t.p_adjusted for t in rec.against_base] == pytest.approx(stats.holm(ps))
    assert "answers" not in f.sentence and "factual questions right 30.0 pts against the base's 72.2 pts" in f.sentence
    assert "loses some of the base" in f.sentence
    # a perplexity that rose for real but stays inside the margin: kept in practice, and the sentence says the change
    # is real
    small = [dataclasses.replace(p, probe_ppl_ratio=1.02 + 0.001 * wobble[p.seed]) for p in points]
    t = next(t for t in A.against_base(small, A.groups_of(small)) if t.measure == "probe_ppl_ratio" and t.lr == 1e-3)
    assert t.verdict == "keeps" and t.p_adjusted < 0.05 and "a real but small change" in t.sentence
    # better than the base: gains
    up = [dataclasses.replace(p, facts=80.0 + wobble[p.seed]) for p in points]
    assert {t.verdict for t in A.against_base(up, A.groups_of(up)) if t.measure == "facts"} == {"gains"}
    # an untouched model: every run exactly the base's, so nothing to test and it keeps; exactly 10 points down: loses
    same = [dataclasses.replace(p, facts=72.2 - (10.0 if p.lr == 1e-2 else 0.0), probe_ppl_ratio=1.0) for p in points]
    got = {(t.lr, t.measure): t for t in A.against_base(same, A.groups_of(same))}
    assert got[(1e-3, "facts")].verdict == "keeps" and got[(1e-3, "probe_ppl_ratio")].verdict == "keeps"
    assert got[(1e-3, "facts")].p is None and "no spread is left to test" in got[(1e-3, "facts")].sentence
    assert got[(1e-2, "facts")].verdict == "loses"
    # one run per setting: no test
    one = [p for p in points if p.seed == 0]
    assert {(t.verdict, t.p, t.n) for t in A.against_base(one, A.groups_of(one))} == {("inconclusive", None, 1)}
    assert "One run: no test" in A.against_base(one, A.groups_of(one))[0].sentence
    # a ratio is tested on its log: runs at ×50 to ×10⁵ (a training that broke the model) are a change far beyond
    # ±5 %, which a t-test on the ratios themselves (mean 24,270, sd about 43,000) could not show
    import math

    broke = [dataclasses.replace(p, probe_ppl_ratio=r) for p, r in zip([p for p in points if p.lr == 1e-2],
                                                                        (50.0, 1e3, 1e5, 2e4, 300.0))]
    t = next(t for t in A.against_base(broke, A.groups_of(broke)) if t.measure == "probe_ppl_ratio")
    logs = [math.log(r) for r in (50.0, 1e3, 1e5, 2e4, 300.0)]
    assert t.scale == "log" and t.value == pytest.approx(math.exp(sum(logs) / 5))  # the geometric mean ratio
    assert t.change == pytest.approx(t.value - 1) and t.p == pytest.approx(stats.paired_t(logs)["p_value"])
    assert t.verdict == "loses" and "geometric mean" in t.sentence and "log of each ratio" in t.sentence
    assert stats.paired_t([r - 1 for r in (50.0, 1e3, 1e5, 2e4, 300.0)])["p_value"] > 0.05  # on ratios: nothing
    assert by[(1e-3, "facts")].scale == "linear"
    # without the probes, no family; stored and read back
    assert A.analyse(settings, None, [], _points("a", (1.0, 2.0), SPREAD), None, tasks=["t1"]).against_base == []
    from curlora.ui import compare_tab

    md = compare_tab.summary_md(rec, {"status": "completed"})  # the Compare tab: one table, the record's verdicts
    assert "**Against the base model**" in md and md.count("| **loses** |") == 2 and md.count("| **keeps** |") == 2
    back = StudyRecord.from_json(rec.to_json()).against_base
    assert [(t.key, t.measure, t.verdict, t.p_adjusted) for t in back] == \
        [(t.key, t.measure, t.verdict, t.p_adjusted) for t in rec.against_base]


def test_a_head_only_study_under_head_scoring_learns_above_the_majority_and_keeps_the_base(cfg, tmp_path):
    """The control phase's shape on the tiny model: head-only, head scoring, rows drawn per seed. Its points have
    learning (above the majority class: the base has no heads) and its untouched model's perplexity is exactly the
    base's, so each setting keeps it by the test against the base."""
    d = cfg.to_dict()
    d["evaluation"]["scoring"] = "head"
    d["methods"] = [{"kind": "head-only"}]
    head = ExperimentConfig.from_dict(d)
    study = S.run_study(head, S.StudySettings(lrs={"head-only": [1e-3, 1e-2]}, seeds=[0, 1], rows_per_seed=True),
                        tmp_path / "runs")
    rec = study.study_record()
    assert study.status()["status"] == "completed" and len(rec.points) == 4
    assert all(p.learning is not None and p.probe_ppl_ratio == 1.0 for p in rec.points)
    ppl = [t for t in rec.against_base if t.measure == "probe_ppl_ratio"]
    assert len(ppl) == 2 and {t.verdict for t in ppl} == {"keeps"} and {t.change for t in ppl} == {0.0}


def test_intervals_shown_are_clipped_to_the_range_a_measure_can_take():
    """A Student-t interval over two runs can reach below 0 for a KL or past 100 % for facts: the text, the Compare
    table and the chart's error bars clip it to the measure's range; the stored interval stays the raw one, and a
    measure that can be negative (learning) is not clipped."""
    from curlora.measure.study_record import Summary
    from curlora.ui import compare_tab, study_charts

    kl = Summary(mean=0.05, ci95=[-0.2, 0.3], n=2)
    assert kl.within("kl_to_base") == [0.0, 0.3] and kl.ci95 == [-0.2, 0.3]
    assert Summary(mean=98.0, ci95=[90.0, 106.0], n=2).within("facts") == [90.0, 100.0]
    assert Summary(mean=-1.0, ci95=[-5.0, 3.0], n=2).within("learning") == [-5.0, 3.0]
    assert A.interval_text(kl, 2, measure="kl_to_base") == "0.05 [0.00, 0.30]"
    assert A.interval_text(kl, 2) == "0.05 [-0.20, 0.30]"  # no measure named: the interval as stored
    group = Group.of({"method": "a", "lr": 1e-3, "learning": {"mean": 5.0, "ci95": [-1.0, 11.0], "n": 2},
                      "forgetting": {"mean": 2.0, "ci95": [-3.0, 7.0], "n": 2},
                      "kl_to_base": {"mean": 0.05, "ci95": [-0.2, 0.3], "n": 2}})
    best = A.best_of({"a@1e-3": group}, "a", None)
    rec = StudyRecord(settings=StudySettings(lrs={"a": [1e-3]}), groups={"a@1e-3": group}, best={"a": best},
                      points=[Point(method="a", lr=1e-3, seed=s, run_id=f"r{s}", learning=5.0, forgetting=2.0,
                                    kl_to_base=0.05) for s in (0, 1)])
    row = compare_tab.best_table(rec)[0]
    assert row[2] == "5.00 [-1.00, 11.00]" and row[3] == "2.00 [-3.00, 7.00]"  # learning, forgetting: may be < 0
    assert row[6] == "0.0500 [0.0000, 0.3000]"  # the KL to base: clipped at 0
    fig = study_charts.frontier_figure(rec)
    kl_trace = {t.uid: t for t in fig.data}["a:kl_to_base:groups"]
    assert list(kl_trace.error_y.arrayminus) == [pytest.approx(0.05)]  # down to 0, not to -0.2
    assert list(kl_trace.error_y.array) == [pytest.approx(0.25)]


def test_each_pair_at_its_chosen_rate_is_tested_where_matched_learning_cannot_reach():
    """A peer run at one rate that learns beyond the other method's whole range cannot be compared at matched
    learning; at_chosen pairs each method's chosen group over seed × order and tests each measure in its own Holm
    family: the peer learns more (test rows) and loses less chat KL; forgetting within the margin is equivalent."""
    seeds = range(4)
    noise = [0.3, -0.2, 0.1, -0.4]
    front = [Point(method="lora", lr=lr, seed=s, run_id=f"l{lr}{s}", setting={"lr": lr}, learning=learn + noise[s],
                   learning_val=learn, learning_test=learn + noise[s], forgetting=5.0 + noise[s],
                   chat_kl=0.2 + 0.01 * s, facts=50.0) for lr, learn in ((1e-4, 1.0), (1e-3, 4.0)) for s in seeds]
    peer = [Point(method="mica", lr=6e-4, seed=s, run_id=f"m{s}", setting={"lr": 6e-4}, learning=9.0 - noise[s],
                  learning_val=9.0, learning_test=9.0 - noise[s], forgetting=5.5 - noise[s], chat_kl=0.05,
                  facts=50.0) for s in seeds]
    settings = StudySettings(lrs={"lora": [1e-4, 1e-3], "mica": [6e-4]}, seeds=list(seeds))
    rec = A.analyse(settings, None, [], front + peer, None, tasks=["t1", "t2"])
    assert rec.best["lora"].key == "lora@1e-3"
    (matched,) = rec.comparison
    assert matched.verdict is None and "never reach the same learning" in matched.sentence
    got = {t.measure: t for t in rec.at_chosen}
    assert set(got) == {"learning_test", "forgetting", "chat_kl", "facts"}  # no forgetting_known, no perplexity
    learn = got["learning_test"]
    assert learn.methods == ["lora", "mica"] and learn.keys == ["lora@1e-3", "mica@6e-4"] and learn.n == 4
    assert learn.difference == pytest.approx(4.0 - 9.0 + 2 * sum(noise) / 4)
    assert learn.verdict == "less" and "lora learns less than mica" in learn.sentence  # lora, the first, learns less
    assert got["chat_kl"].verdict == "more" and got["chat_kl"].tost_p is None  # lora loses more; no margin
    assert got["forgetting"].verdict == "equivalent" and got["forgetting"].tost_p < 0.05
    assert got["facts"].verdict == "equivalent" and "no spread is left to test" in got["facts"].sentence
    assert {t.family for t in rec.at_chosen} == {f"{A.FAMILY_CHOSEN}: {m}" for m in got}  # a family per measure
    assert all(t.p_adjusted == t.p for t in rec.at_chosen)  # one pair: each family holds one test
    back = StudyRecord.from_json(json.loads(json.dumps(rec.to_json())))
    assert [(t.measure, t.verdict, t.difference) for t in back.at_chosen] == \
        [(t.measure, t.verdict, t.difference) for t in rec.at_chosen]
    # perplexity ratios pair on their logs: lora at ×1.1, mica at ×1.21 on every seed but one → mica's are 1.1 times
    # lora's (geometric means; the difference is mica's over lora's less 1 from lora's side: 1/1.1 − 1)
    import math

    ppl = [dataclasses.replace(p, probe_ppl_ratio=1.1 * (1 + 0.001 * p.seed)) for p in front] + \
        [dataclasses.replace(p, probe_ppl_ratio=1.21) for p in peer]
    t = next(t for t in A.analyse(settings, None, [], ppl, None, tasks=["t1", "t2"]).at_chosen
             if t.measure == "probe_ppl_ratio")
    logs = [math.log(1.1 * (1 + 0.001 * s) / 1.21) for s in seeds]
    assert t.scale == "log" and t.difference == pytest.approx(math.expm1(sum(logs) / 4))
    assert t.means[1] == pytest.approx(1.21) and t.p == pytest.approx(stats.paired_t(logs)["p_value"])
    assert t.verdict == "less" and "geometric means" in t.sentence  # lora's perplexity rose less
    # a run without its pair (seed 3 of mica missing) is left out; one pair is no test
    one = A.analyse(settings, None, [], front + peer[:1], None, tasks=["t1", "t2"]).at_chosen
    assert {t.n for t in one} == {1} and {t.verdict for t in one} == {"inconclusive"}
    assert "One pair: no test" in one[0].sentence
    from curlora.ui import compare_tab

    md = compare_tab.summary_md(A.analyse(settings, None, [], front + peer, None, tasks=["t1", "t2"]),
                                {"status": "completed"})
    assert "**Each method at its chosen learning rate**" in md
    assert md.count("| **equivalent** |") == 2 and "| chat KL to base | 0.2150 | 0.0500 | +0.1650" in md


def test_a_perplexity_ratio_is_compared_on_its_log_at_matched_learning():
    """The pair test at matched learning takes log(a / b) of each pair's perplexity ratio (Comparison.scale "log"):
    the paired mean reads as a's over b's less 1, the sentence says so, and a record read back keeps the scale."""
    import math

    from curlora.measure.study_record import Comparison

    points = []
    for m, grid in (("a", (1e-3, 1e-2)), ("b", (1e-4, 1e-3))):
        for lr, learn in zip(grid, (1.0, 5.0)):
            for s in range(4):
                ppl = (2.0 if m == "a" else 1.0) * (1.0 + 0.01 * s)  # a at twice b's, each seed its own
                points.append(Point(method=m, lr=lr, seed=s, run_id=f"{m}{lr}{s}", learning=learn + 0.1 * s,
                                    forgetting=1.0, chat_kl=0.1, facts=50.0, probe_ppl_ratio=ppl))
    rec = A.analyse(StudySettings(lrs={"a": [1e-3, 1e-2], "b": [1e-4, 1e-3]}, seeds=list(range(4))), None, [],
                    points, None, tasks=["t1"])
    (c,) = [c for c in rec.comparison_chat if c.measure == "probe_ppl_ratio"]
    assert c.scale == "log" and c.paired.mean == pytest.approx(1.0)  # every pair ×2: its ratio less 1
    assert c.p is None  # the same ratio in every pair: no spread to test, whatever the seeds' own ratios
    assert c.verdict == "more" and "a non-zero one: no spread left to test" in c.sentence  # ×2; no margin here
    kl = next(c for c in rec.comparison_chat if c.measure == "chat_kl")  # the same KL on every run: no margin
    assert kl.p is None and kl.verdict == "inconclusive"
    assert Comparison.from_json(c.to_json()).scale == "log"
    for p in points:  # a's ratio over b's now varies by seed: a test, said on the log scale
        if p.method == "a":
            p.probe_ppl_ratio *= 1.0 + 0.05 * (p.seed % 2)
    rec = A.analyse(StudySettings(lrs={"a": [1e-3, 1e-2], "b": [1e-4, 1e-3]}, seeds=list(range(4))), None, [],
                    points, None, tasks=["t1"])
    (c,) = [c for c in rec.comparison_chat if c.measure == "probe_ppl_ratio"]
    assert c.p < 0.05 and c.verdict == "more"  # a loses more of the base by it
    assert "on the log of each pair's ratio: a's over b's less 1 +1.0" in c.sentence
    chat = next(c for c in rec.comparison_chat if c.measure == "chat_kl")
    assert chat.scale == "linear"
    assert math.isclose(A._mean([1.0, 4.0], True), 2.0) and A._mean([1.0, 4.0], False) == 2.5
