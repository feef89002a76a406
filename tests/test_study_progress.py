"""A study's progress (curlora/run/study_data.py progress): runs done and left, each method priced at the median of its
own finished runs (else its base method's, else every run's, and said so), a run in flight less its finished
stages, the range from the fastest to the slowest run, and the same in the CLI, the Compare tab and the MCP tool."""

import json

import pytest

from curlora.cli.main import main as cli
from curlora.measure.study_record import PlanEntry, StudyRecord
from curlora.run import study as S
from curlora.run import study_data as P
from curlora.run.store import Run, list_runs
from curlora.run.study_data import RunTimes, minutes_per_run, run_times
from tiny_experiment import make_experiment


def test_a_runs_cost_counts_each_finished_stage_once_from_its_events():
    """Training seconds and steps from the stage events, evaluation from the last step to the stage event, and a
    stage stopped and run again counted once (its finished attempt); no finished stage, no times."""
    ev = [{"kind": "run_start", "t": 0}, {"kind": "stage_start", "t": 1, "stage": 1},
          {"kind": "step", "t": 5}, {"kind": "step", "t": 41}, {"kind": "stage", "t": 141, "stage": 1, "seconds": 40,
                                                                   "steps": 40},
          {"kind": "stage_start", "t": 142, "stage": 2}, {"kind": "step", "t": 150}, {"kind": "run_end", "t": 151},
          {"kind": "run_start", "t": 1000}, {"kind": "stage_start", "t": 1001, "stage": 2},
          {"kind": "step", "t": 1041}, {"kind": "stage", "t": 1101, "stage": 2, "seconds": 40, "steps": 40}]
    t = run_times(ev)
    assert t == RunTimes(train_s=80.0, steps=80, eval_s=[100, 60], stage_s=140 + 100) and t.minutes == 4.0
    assert run_times(ev[:3]) is None
    assert run_times([{"kind": "stage", "t": 3, "stage": 0}]) is None  # the base row is no stage of the run's own


def test_a_method_is_priced_at_its_own_median_else_its_base_methods_else_every_runs():
    minutes = {"curlora": [10.0, 12.0, 14.0], "lora": [20.0]}
    assert minutes_per_run("curlora", minutes) == (12.0, "")
    assert minutes_per_run("curlora-uniform", minutes) == (12.0, "at curlora's median")
    assert minutes_per_run("lora-replay25", minutes) == (20.0, "at lora's median")
    assert minutes_per_run("osf", minutes) == (13.0, "never run: at the median of all runs")
    assert minutes_per_run("osf", {}) == (None, "")


class FakeStudy:
    """A study as progress() reads it: its record, its status and a root where its runs are (their events)."""

    def __init__(self, root, plan, status="running"):
        self.id, self.root, self._status = "s", root, status
        self._rec = StudyRecord.of({"plan": [e.to_json() for e in plan]})

    def study_record(self):
        return self._rec

    def status(self):
        return {"status": self._status}


def _run(root, rid, stage_minutes, status="completed"):
    """A point run in the store whose events hold one finished stage per entry of stage_minutes."""
    path = root / rid
    path.mkdir(parents=True)
    (path / "config.yaml").write_text("{}\n")
    (path / "status.json").write_text(json.dumps({"status": status}))
    t, lines = 0.0, [{"kind": "run_start", "t": 0.0}]
    for i, m in enumerate(stage_minutes, 1):
        lines += [{"kind": "stage_start", "t": t, "stage": i}, {"kind": "step", "t": t + 30},
                  {"kind": "stage", "t": t + m * 60, "stage": i, "seconds": 30, "steps": 4}]
        t += m * 60
    (path / "events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return rid


def test_progress_prices_what_is_left_and_takes_off_what_a_run_in_flight_has_done(tmp_path, monkeypatch):
    alive = {"fly": True}
    monkeypatch.setattr(Run, "_trainer_alive", lambda self, body: alive["fly"])  # a process trains the "fly" run
    ids = {name: f"20261206-000000-{name}-0000" for name in ("c1", "c2", "c3", "l1", "fly")}
    _run(tmp_path, ids["c1"], [3, 3])  # curlora: 6, 8 and 10 minutes: median 8
    _run(tmp_path, ids["c2"], [4, 4])
    _run(tmp_path, ids["c3"], [5, 5])
    _run(tmp_path, ids["l1"], [10, 10])  # lora: 20 minutes
    _run(tmp_path, ids["fly"], [5], status="running")  # a lora run in flight, one stage (5 min) finished
    plan = [PlanEntry(method="curlora", lr=0.01, seed=s, run_id=ids[f"c{s + 1}"], status="completed")
            for s in range(3)]
    plan += [PlanEntry(method="lora", lr=0.001, seed=0, run_id=ids["l1"], status="completed"),
             PlanEntry(method="lora", lr=0.001, seed=1, run_id=ids["fly"], status="running"),
             PlanEntry(method="lora", lr=0.001, seed=2),
             PlanEntry(method="curlora-uniform", lr=0.01, seed=0)]
    p = P.progress(FakeStudy(tmp_path, plan))
    assert (p.done, p.total, p.left, p.in_flight, p.measured_runs) == (4, 7, 3, 1, 4)
    paces = {x.method: x for x in p.paces}
    assert (paces["lora"].minutes, paces["lora"].left, paces["lora"].done) == (20.0, 2, 1)
    assert (paces["curlora-uniform"].minutes, paces["curlora-uniform"].priced) == (8.0, "at curlora's median")
    assert (paces["curlora-uniform"].fastest, paces["curlora-uniform"].slowest) == (6.0, 10.0)
    # lora: 20 − 5 (in flight) + 20; curlora-uniform: 8 (6 to 10 from curlora's fastest and slowest)
    assert p.hours * 60 == pytest.approx(15 + 20 + 8)
    assert p.hours_fastest * 60 == pytest.approx(15 + 20 + 6) and p.hours_slowest * 60 == pytest.approx(15 + 20 + 10)
    s = p.sentence()
    assert s.startswith("4 of 7 runs finished; 3 left (1 in flight): about 43 min run one after another")
    assert "1 curlora-uniform × 8 min (at curlora's median)" in s and "over this study's 4 finished runs" in s
    assert s.endswith("between 41 min and 45 min at each method's fastest and slowest run so far.")
    assert p.to_json()["left"] == 3 and p.to_json()["paces"][0]["method"] == "curlora"
    # a killed study leaves its last run marked running, but no process trains it: nothing is in flight then
    alive["fly"] = False
    assert P.progress(FakeStudy(tmp_path, plan, status="cancelled")).in_flight == 0


def test_before_any_run_finishes_there_is_no_estimate_and_a_finished_study_says_only_its_count(tmp_path):
    plan = [PlanEntry(method="lora", lr=0.001, seed=s) for s in range(2)]
    p = P.progress(FakeStudy(tmp_path, plan))
    assert p.hours is None and p.sentence() == "0 of 2 runs finished; 2 left: no run has finished yet, so no time " \
                                               "estimate."
    rid = _run(tmp_path, "20261206-000000-l-0000", [1])
    done = [PlanEntry(method="lora", lr=0.001, seed=0, run_id=rid, status="completed")]
    assert P.progress(FakeStudy(tmp_path, done, status="completed")).sentence() == "1 of 1 runs finished."
    one = P.progress(FakeStudy(tmp_path, done + [PlanEntry(method="lora", lr=0.001, seed=1)]))
    assert one.sentence().endswith("; no range yet: one finished run per method.")
    gone = [PlanEntry(method="lora", lr=0.001, seed=0, run_id="20261206-000000-gone-0000", status="completed")]
    assert P.progress(FakeStudy(tmp_path, gone + plan)).hours is None  # a deleted point run prices nothing


def test_a_real_study_stopped_part_way_reports_its_progress_in_the_cli_tabs_and_mcp(tmp_path, monkeypatch, capsys):
    d = make_experiment(tmp_path / "exp", steps=2)
    d["evaluation"].update(probe_every=0, self_probe_texts=2, self_probe_tokens=8)
    from curlora.experiment import ExperimentConfig
    from curlora.run.runner import load_everything
    from curlora.serve.jobs import JobManager
    from curlora.serve.mcp_tools import Tools
    from curlora.ui import compare_tab

    cfg = ExperimentConfig.from_dict(d)
    root = tmp_path / "runs"
    seen = {"runs": 0}

    def on_event(e):
        seen["runs"] += e["kind"] == "run_end"
    study = S.create(cfg, S.StudySettings(lrs={"lora": [0.001, 0.01]}, seeds=[0]), root)
    assert S.execute(study, load_everything(cfg), should_stop=lambda: seen["runs"] >= 1, on_event=on_event) \
        == "cancelled"
    study = Run.open(study.id, root)
    first = study.study_record().plan[0]
    each = run_times(Run.open(first.run_id, root).events()).minutes
    p = P.progress(study)
    n = len(study.study_record().plan)
    assert n > 1 and (p.status, p.done, p.left, p.in_flight) == ("cancelled", 1, n - 1, 0)
    assert p.hours * 60 == pytest.approx(each * (n - 1))  # every run left priced at the one finished run's minutes
    md = compare_tab.summary_md(study.study_record(), study.status(), p)
    assert f"1 of {n} runs finished; {n - 1} left" in md
    assert "runs finished" not in compare_tab.summary_md(study.study_record(), {"status": "completed"},
                                                         P.StudyProgress("s", "completed", 2, 2))
    # the Runs tab and `curlora list`: a study's tasks, its methods and its runs finished of its plan
    o = study.outline()
    assert o.tasks == [t.name for t in cfg.tasks] and o.methods == list(study.study_record().settings.lrs)
    assert o.progress == f"1 of {n} runs"
    from curlora.ui import runs_tab

    jobs = JobManager(root)
    try:
        row = dict(zip(runs_tab.HEADERS, next(r for r in runs_tab.rows(jobs) if r[0] == study.id)))
    finally:
        jobs.shutdown()
    assert row["progress"] == f"1 of {n} runs" and row["tasks"] == ", ".join(o.tasks)
    fresh = Run.create(cfg.to_yaml(), name="fresh", root=root)  # no stage finished yet: its config says what it is
    assert fresh.outline().tasks == o.tasks and fresh.outline().methods == [m.label for m in cfg.methods]
    assert fresh.outline().progress == "0"
    monkeypatch.setenv("CURLORA_DATA_DIR", str(root))
    assert cli(["list"]) == 0
    listed = capsys.readouterr().out
    assert f"{study.id}  cancelled    tasks: {', '.join(o.tasks)}  methods: {', '.join(o.methods)}  done: 1 of {n} " \
           "runs" in listed
    assert cli(["study", "--progress", study.id]) == 0
    assert capsys.readouterr().out.startswith(f"study {study.id} (cancelled): 1 of {n} runs finished; {n - 1} left: "
                                              "about ")
    assert cli(["study", "--progress", study.id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["left"] == n - 1
    assert cli(["study", "--progress", first.run_id]) == 2
    assert "is a run, not a study" in capsys.readouterr().err
    jobs = JobManager(root)
    try:
        body = json.loads(Tools(jobs, None).compare_methods(study.id))
    finally:
        jobs.shutdown()
    assert body["progress"]["done"] == 1 and body["progress"]["total"] == n


def test_the_compare_tab_estimates_a_studys_time_before_it_starts(tmp_path):
    """The Compare tab's button: the Train tab's experiment and this tab's grids and seeds, priced by one calibration
    (curlora/run/cost.py estimate_study); nothing is written to the store."""
    gradio_client = pytest.importorskip("gradio_client")
    from app_server import serving

    with serving(tmp_path / "runs") as (url, jobs):
        client = gradio_client.Client(url, verbose=False)
        client.predict(api_name="/use_demo_tasks")
        info = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/estimate_study_time"]
        args = [p.get("parameter_default") for p in info["parameters"]]
        labels = [p.get("label") or "" for p in info["parameters"]]
        args[0], args[1] = "lora=1e-3,1e-2; curlora=1e-2", "0,1"
        args[next(i for i, x in enumerate(labels) if x.startswith("Base model"))] = "kjv-llama-5m"  # the bundled one
        args[labels.index("steps per task")] = 4
        jobs.policy.limits.device_actions_per_hour = 1  # one an hour: the second estimate is refused, untrained
        text = client.predict(*args, api_name="/estimate_study_time")
        with pytest.raises(gradio_client.exceptions.AppError,
                           match=r"Time estimates, evaluations and exports per hour: the limit here is 1; try again in 60 min\."):
            client.predict(*args, api_name="/estimate_study_time")
    assert text.startswith("Estimated time of this study on this machine: about ")
    assert "runs, one after another (" in text and "1 base row × " in text
    assert list_runs(tmp_path / "runs") == []  # no study, no run
