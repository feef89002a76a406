"""A study's data packed without weights and resumed from the pack in another run store (curlora/run/study_data.py)."""

import json

import pytest

from curlora.cli.main import main as cli
from curlora.errors import CurloraError
from curlora.experiment import ExperimentConfig
from curlora.run import study as S
from curlora.run import study_data as D
from curlora.run.store import Run, list_runs
from tiny_experiment import make_experiment


@pytest.fixture
def cfg(tmp_path):
    d = make_experiment(tmp_path / "exp", steps=2)
    d["evaluation"].update(probe_every=0, self_probe_texts=2, self_probe_tokens=8)
    d["methods"] = [m for m in d["methods"] if m["kind"] == "lora"]
    return ExperimentConfig.from_dict(d)


def test_a_stopped_study_packs_without_weights_and_resumes_elsewhere_without_rerunning(cfg, tmp_path, monkeypatch):
    from curlora.run.runner import load_everything

    root, other = tmp_path / "runs", tmp_path / "elsewhere"
    seen = {"stages": 0}

    def stop_in_second_run():  # the first run finishes; the second stops after its first stage
        return seen["stages"] >= 3

    def on_event(e):
        if e["kind"] == "stage":
            seen["stages"] += 1

    loaded = load_everything(cfg)
    study = S.create(cfg, S.StudySettings(lrs={"lora": [0.001, 0.01, 0.02]}, seeds=[0]), root)
    assert S.execute(study, loaded, should_stop=stop_in_second_run, on_event=on_event) == "cancelled"
    rec = study.study_record()
    first = rec.plan[0].run_id
    assert [e.status for e in rec.plan][0] == "completed" and rec.plan[1].run_id  # the second one started

    pack = tmp_path / "pack"
    monkeypatch.setenv("CURLORA_DATA_DIR", str(root))
    assert cli(["study", "--pack", study.id, str(pack)]) == 0
    files = sorted(str(p.relative_to(pack)) for p in pack.rglob("*") if p.is_file())
    assert "pack.json" in files and "study/study.json" in files and f"runs/{first}/metrics.json" in files
    assert not [f for f in files if "adapters" in f or f.endswith("lock")]  # no weights, no live state
    assert not [f for f in files if rec.plan[1].run_id in f]  # the unfinished run is not packed …
    packed = json.loads((pack / "study" / "study.json").read_text())
    assert packed["plan"][1]["run_id"] is None and packed["plan"][1]["status"] == "pending"  # … and reruns
    meta = json.loads((pack / "pack.json").read_text())
    assert (meta["study"], meta["points"], meta["pending"]) == (study.id, 1, 2)
    assert meta["runs"] == {first: D.machine()} and "CPUs, torch" in D.machine()

    moved = D.unpack(pack, other).study
    assert moved.id == study.id and moved.status()["status"] == "cancelled"
    with pytest.raises(CurloraError, match="already holds"):
        D.unpack(pack, other)
    assert S.execute(Run.open(study.id, other), loaded) == "completed"
    rec2 = Run.open(study.id, other).study_record()
    assert all(e.status == "completed" for e in rec2.plan) and rec2.plan[0].run_id == first  # kept
    assert len(list_runs(other)) == 4 and len(rec2.points) == 3

    monkeypatch.setattr(D, "machine", lambda: "the other machine")
    D.pack(study.id, pack, other)  # packing again replaces the older pack whole
    meta = json.loads((pack / "pack.json").read_text())
    assert meta["points"] == 3 and meta["runs"][first] != "the other machine"  # where each run really ran
    assert sorted(meta["runs"].values()).count("the other machine") == 2
    assert not list(tmp_path.glob(".pack*"))  # no half-written pack left beside it


def test_unpack_refuses_a_folder_that_is_not_a_pack(tmp_path):
    with pytest.raises(CurloraError, match="is not a study pack"):
        D.unpack(tmp_path, tmp_path / "runs")


def test_the_study_document_is_rendered_from_a_pack(cfg, tmp_path):
    import sys

    from conftest import REPO
    sys.path.insert(0, str(REPO / "bench"))
    import smollm2_study

    root = tmp_path / "runs"
    study = S.run_study(cfg, S.StudySettings(lrs={"lora": [0.001, 0.01]}, seeds=[0, 1]), root)
    packs = {"pilot": tmp_path / "none", "pilot2": tmp_path / "none", "frontier": tmp_path / "frontier",
             "peers": tmp_path / "none"}
    D.pack(study.id, packs["frontier"], root)
    lines = smollm2_study.blocks(packs)["smollm2-status"]
    assert "| pilot | 0 | not started | — |" in lines
    assert any(line.startswith("| frontier | 4 | 0 | ") and "CPUs, torch" in line for line in lines)
    rows = [line for line in lines if line.startswith("| lora | ")]
    assert len(rows) == 2 and sum("(chosen" in r for r in rows) == 1 and all(" | 2 | " in r for r in rows)
    rec = study.study_record()
    g = rec.groups["lora@1e-3"]
    assert smollm2_study.summary_text(g.learning_test, 1, 1) in rows[0]  # the record's numbers, formatted


def test_a_pack_from_another_checkout_finds_its_files_here_by_their_bytes(cfg, tmp_path, monkeypatch, capsys):
    """A config names its task files by the absolute paths of the checkout it ran in; a pack records each file's
    project path and sha256, and unpack points the configs at this checkout's copies, only where the bytes match."""
    import shutil

    from curlora.data import portable

    here, there = tmp_path / "exp", tmp_path / "elsewhere" / "exp"  # the tasks sit in the project folder
    monkeypatch.setattr(portable, "REPO", tmp_path)
    study = S.create(cfg, S.StudySettings(lrs={"lora": [0.01]}, seeds=[0]), tmp_path / "runs")
    from curlora.run.runner import load_everything

    assert S.execute(study, load_everything(cfg)) == "completed"
    D.pack(study.id, tmp_path / "pack", tmp_path / "runs")
    files = {f["project"]: f for f in json.loads((tmp_path / "pack" / "pack.json").read_text())["files"]}
    assert set(files) >= {"exp/sent.csv", "exp/pair.csv", "exp/probe.txt"}
    assert files["exp/sent.csv"]["sha256"] == portable.sha256(here / "sent.csv")

    shutil.copytree(here, there)  # the same project, moved: the recorded paths are gone
    shutil.rmtree(here)
    monkeypatch.setattr(portable, "REPO", tmp_path / "elsewhere")
    done = D.unpack(tmp_path / "pack", tmp_path / "store")
    moved, st = done.study, done.study.status()
    assert done.finished and {(m.recorded, m.found, m.checked) for m in done.moved} == {
        (str(here / n), str(there / n), True) for n in ("sent.csv", "pair.csv", "probe.txt")}
    assert st["status"] == "completed"  # every run had finished: nothing to resume
    assert f"{here / 'sent.csv'} → {there / 'sent.csv'}" in st["message"] and "not checked" not in st["message"]
    run_id = moved.study_record().plan[0].run_id
    for run in (moved, Run.open(run_id, tmp_path / "store")):
        c = run.config()
        assert [t.train_file for t in c.tasks] == [str(there / "sent.csv"), str(there / "pair.csv")]
        assert c.evaluation.probe_text == str(there / "probe.txt")

    (there / "pair.csv").write_text("text,label\nchanged,0\n")  # a different file of the same name is not taken
    done = D.unpack(tmp_path / "pack", tmp_path / "store2")
    other = done.study
    assert [m.recorded for m in done.moved if m.found is None] == [str(here / "pair.csv")]
    monkeypatch.setenv("CURLORA_DATA_DIR", str(tmp_path / "store4"))  # the CLI prints each file's line
    assert cli(["study", "--unpack", str(tmp_path / "pack")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"study {study.id}: unpacked into") and sorted(lines[1:]) == sorted(
        f"  {m.sentence()}" for m in done.moved)
    assert f"  {here / 'pair.csv'} is not on this machine: put it there before resuming" in lines
    assert f"{here / 'pair.csv'} is not on this machine" in other.status()["message"]
    assert other.config().tasks[1].train_file == str(here / "pair.csv")  # left as recorded: resume names it
    assert other.config().tasks[0].train_file == str(there / "sent.csv")

    meta = json.loads((tmp_path / "pack" / "pack.json").read_text())
    del meta["files"]  # a pack made before files were recorded: found by the path's tail, said unchecked
    (tmp_path / "pack" / "pack.json").write_text(json.dumps(meta))
    old = D.unpack(tmp_path / "pack", tmp_path / "store3").study
    assert f"{here / 'sent.csv'} → {there / 'sent.csv'} (content not checked" in old.status()["message"]


def test_the_cli_says_an_unpacked_study_that_had_finished_needs_no_resume(cfg, tmp_path, monkeypatch, capsys):
    from curlora.run.runner import load_everything

    study = S.create(cfg, S.StudySettings(lrs={"lora": [0.01]}, seeds=[0]), tmp_path / "runs")
    assert S.execute(study, load_everything(cfg)) == "completed"
    D.pack(study.id, tmp_path / "pack", tmp_path / "runs")
    monkeypatch.setenv("CURLORA_DATA_DIR", str(tmp_path / "store"))
    assert cli(["study", "--unpack", str(tmp_path / "pack")]) == 0
    out = capsys.readouterr().out
    assert "every run had finished, nothing to resume" in out and "--resume" not in out
    assert len(out.splitlines()) == 1  # every file is where the pack recorded it: no line for one


def test_unpack_with_share_makes_the_study_a_shared_example_every_hosted_visitor_reads(cfg, tmp_path, monkeypatch,
                                                                                       capsys):
    """A host shows a committed study on a Space in one command: unpacked and shared, it is in every visitor's list
    and its Compare view reads for each; --share without --unpack is refused with the sentence that says what to
    give."""
    from curlora.run.runner import load_everything
    from curlora.serve.hosting import EXAMPLES, Policy, owner_key, read_owner
    from curlora.serve.jobs import JobManager

    study = S.create(cfg, S.StudySettings(lrs={"lora": [0.01]}, seeds=[0]), tmp_path / "runs")
    assert S.execute(study, load_everything(cfg)) == "completed"
    D.pack(study.id, tmp_path / "pack", tmp_path / "runs")
    monkeypatch.setenv("CURLORA_DATA_DIR", str(tmp_path / "store"))
    assert cli(["study", "--unpack", str(tmp_path / "pack"), "--share"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (f"study {study.id} is a shared, read-only example: hosted, "
                                                        "every visitor can read it")
    assert read_owner(tmp_path / "store" / study.id) == EXAMPLES
    jobs = JobManager(tmp_path / "store", policy=Policy(hosted=True))
    for visitor in (owner_key("user", "alice"), owner_key("session", "bob")):
        assert study.id in [r.id for r in jobs.runs(visitor)]
        assert jobs.status(study.id, visitor)["status"] == "completed"
    assert cli(["study", "--share"]) == 2
    assert "give it with --unpack DIR" in capsys.readouterr().err


def test_two_studies_of_one_experiment_are_analysed_as_one_and_others_are_refused(cfg, tmp_path, monkeypatch, capsys):
    """A study run in two phases (a rate added later) analysed together gives what one study of both rates gives:
    the same groups, best rate and verdicts; a study that trains otherwise, sets a method up otherwise or runs a
    setting again is refused with one sentence naming the difference. The CLI and the Compare tab ask the same."""
    import dataclasses

    from curlora.run.runner import load_everything

    root = tmp_path / "runs"
    loaded = load_everything(cfg)
    one = S.create(cfg, S.StudySettings(lrs={"lora": [0.001, 0.02]}, seeds=[0, 1]), root)
    first = S.create(cfg, S.StudySettings(lrs={"lora": [0.001]}, seeds=[0, 1]), root)
    later = S.create(cfg, S.StudySettings(lrs={"lora": [0.02]}, seeds=[0, 1]), root)
    for s in (one, first, later):
        assert S.execute(s, loaded) == "completed"
    assert D.mismatch(first, later) is None
    both = D.together([first, later])
    alone = one.study_record()
    assert both.settings.lrs == {"lora": [0.001, 0.02]} and len(both.points) == len(alone.points) == 4
    assert sorted(both.groups) == sorted(alone.groups) and both.best["lora"].key == alone.best["lora"].key
    for k, g in both.groups.items():  # the same runs' measures, so the same groups
        assert g.learning.mean == pytest.approx(alone.groups[k].learning.mean)
        assert g.forgetting.mean == pytest.approx(alone.groups[k].forgetting.mean)
    assert [(t.key, t.measure, t.verdict) for t in both.against_base] == [
        (t.key, t.measure, t.verdict) for t in alone.against_base]
    assert D.together([first, later]) is both  # kept while neither study.json changes

    assert D.mismatch(one, first).endswith("both run lora at lr 0.001, seed 0, task order 0 (and 1 more settings); "
                                           "analyse one of them with studies of other settings.")
    longer = ExperimentConfig.from_dict({**cfg.to_dict(), "training": {**cfg.to_dict()["training"], "max_steps": 3}})
    other = S.create(longer, S.StudySettings(lrs={"lora": [0.05]}, seeds=[0]), root)
    assert D.mismatch(first, other) == (f"Studies {first.id} and {other.id} cannot be analysed together: they differ "
                                        "in training.max_steps (2 against 3); only studies of the same model, tasks, "
                                        "training and evaluation can.")
    wider = ExperimentConfig.from_dict({**cfg.to_dict(), "methods": [
        dataclasses.asdict(dataclasses.replace(m, r=16)) for m in cfg.methods]})
    ranked = S.create(wider, S.StudySettings(lrs={"lora": [0.05]}, seeds=[0]), root)
    assert "both name lora, set up differently (lora.r: 4 against 16)" in D.mismatch(first, ranked)
    with pytest.raises(CurloraError, match="differ in training.max_steps"):
        D.together([first, later, other])

    monkeypatch.setenv("CURLORA_DATA_DIR", str(root))
    assert cli(["study", "--analyse", str(first.path), "--with", str(later.path / "study.json")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"2 studies analysed together, nothing trained ({first.id}, {later.id}: 4 finished runs)")
    assert cli(["study", "--analyse", str(first.path), "--with", str(other.path)]) == 2
    assert "differ in training.max_steps" in capsys.readouterr().err
    assert cli(["study", "--with", str(later.path)]) == 2
    assert "give the first with --analyse" in capsys.readouterr().err
    assert cli(["study", "--analyse", str(first.path), "--with", str(tmp_path)]) == 2
    assert "is not a study's folder in a run store" in capsys.readouterr().err

    gradio_client = pytest.importorskip("gradio_client")
    from app_server import serving

    with serving(root) as (url, _jobs):
        client = gradio_client.Client(url, verbose=False)
        text, *_ = client.predict(first.id, [later.id], api_name="/study_together")
        assert text.startswith(f"Analysed together with {later.id}: one study of 4 finished runs")
        with pytest.raises(gradio_client.exceptions.AppError, match="differ in training.max_steps"):
            client.predict(first.id, [other.id], api_name="/study_together")


def test_together_refuses_more_studies_than_its_limit_before_reading_any(monkeypatch):
    """More than TOGETHER_MOST studies with one are refused at once, with the limit named."""
    class Fake:
        def __init__(self, i):
            self.id = f"s{i}"

    with pytest.raises(CurloraError, match=f"^{D.TOGETHER_MOST + 1} studies to analyse with one; the limit is "
                                           f"{D.TOGETHER_MOST}\\.$"):
        D.together([Fake(i) for i in range(D.TOGETHER_MOST + 2)])


def test_analyses_together_run_one_at_a_time_and_a_combination_asked_at_once_is_analysed_once(monkeypatch,
                                                                                               tmp_path):
    """The Compare tab, the MCP read tool (no queue of its own) and the CLI share one analysis at a time: eight
    callers at once for two combinations start two analyses, never two together, and all get the kept record."""
    import threading

    import curlora.measure.study_analysis as A

    class Fake:
        def __init__(self, name):
            self.id, self.path, self.root = name, tmp_path / name, tmp_path

        def study_record(self):
            return self.id

    running, most, calls, lock = [0], [0], [], threading.Lock()

    def analyse(records, metrics_of, pairs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            calls.append(tuple(records))
        threading.Event().wait(0.05)
        with lock:
            running[0] -= 1
        return object()

    monkeypatch.setattr(D, "mismatch", lambda a, b: None)
    monkeypatch.setattr(A, "together", analyse)
    monkeypatch.setattr(D, "_TOGETHER", type(D._TOGETHER)())
    combos = [[Fake("a"), Fake("b")], [Fake("a"), Fake("c")]]
    got = [None] * 8
    threads = [threading.Thread(target=lambda i=i: got.__setitem__(i, D.together(combos[i % 2]))) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1 and sorted(calls) == [("a", "b"), ("a", "c")]
    assert len({id(g) for g in got[0::2]}) == 1 and len({id(g) for g in got[1::2]}) == 1 and got[0] is not got[1]
