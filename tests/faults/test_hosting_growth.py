"""Hosting, round two (issue 31), the medium cases: every byte a visitor stores counts while runs grow and in their
uploads, evaluation work is bounded, files are read only up to the row limit and a few at a time, and on ZeroGPU a
run nobody drives gives its turn away at once."""

import threading
import time

import pytest

from curlora.data.csvfile import read_table
from curlora.errors import Cancelled, CurloraError
from curlora.experiment import ExperimentConfig
from curlora.measure.record import RunMetrics
from curlora.run.store import Run
from curlora.serve.handoff import Handoff
from curlora.serve.hosting import Client, Policy, owner_key
from curlora.serve.jobs import JobManager
from curlora.serve.limits import Limits, reading_tasks
from tiny_experiment import finished_run

A, B = owner_key("user", "alice"), owner_key("user", "bob")


def hosted_cfg(methods=({"kind": "curlora", "r": 2},), tasks=("testament",), **evaluation) -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "model": {"name": "kjv-llama-5m"},
        "tasks": [{"name": t, "train_file": f"bundled:tasks/{t}/train.csv", "eval_file": f"bundled:tasks/{t}/eval.csv",
                   "max_train_rows": 16, "max_eval_rows": 8} for t in tasks],
        "methods": list(methods),
        "training": {"max_steps": 1, "batch_size": 2, "max_length": 32, "lr": 0.01},
        "evaluation": {"eval_rows": 4, "self_probe": False, "ppl_max_tokens": 128, "ppl_window": 64,
                       "ppl_stride": 64, **evaluation},
        "run": {"name": "visitor"},
    })


def csv_of(path, mb: float, tag: str = ""):
    """A valid two-class task CSV of about `mb` megabytes."""
    row = f"a sentence of some length to fill the file {tag},{{}}\n"
    n = int(mb * 1e6 / len(row))
    path.write_text("text,label\n" + "".join(row.format(i % 2) for i in range(n)))
    return path


# -- every byte counts -------------------------------------------------------------------------------------------
def test_a_run_that_outgrows_its_owners_share_stops_with_a_sentence_and_nobody_elses_does(tmp_path):
    limits = Limits.load(hosted=True)
    limits.store_mb_per_visitor = 10  # a full fine-tune of the bundled model saves ~20 MB a stage
    jobs = JobManager(tmp_path / "runs", policy=Policy(hosted=True, limits=limits))
    jobs.gate.acquire("the test holds the device")  # both queued before either trains
    try:
        grows = jobs.submit(hosted_cfg(methods=({"kind": "full"},), tasks=("testament", "reviews")), A,
                            client=Client(A))
        small = jobs.submit(hosted_cfg(), B, client=Client(B))
    finally:
        jobs.gate.release()
    assert jobs.wait(grows, timeout=300) and jobs.wait(small, timeout=300)
    st = jobs.status(grows, A)
    assert st["status"] == "failed"
    assert st["message"].startswith("Stored runs per visitor: your runs and uploads take ")
    assert st["message"].endswith(f"over the limit of 10 MB here, so run {grows} stopped after its finished stages "
                                  "(kept); delete some of your runs or uploads, then resume it.")
    record = Run.open(grows, jobs.root).record()
    assert record.methods["full"].stages_done == 1  # the stage that outgrew the share is kept, the next never began
    assert jobs.status(small, B)["status"] == "completed"  # the other visitor's run is untouched


def test_kept_uploads_count_can_be_listed_and_deleted(tmp_path):
    limits = Limits.load(hosted=True)
    limits.store_mb_per_visitor = 5
    policy = Policy(hosted=True, limits=limits)
    jobs = JobManager(tmp_path / "runs", policy=policy)
    kept = []
    for i in range(2):
        kept.append(policy.keep_upload(csv_of(tmp_path / f"t{i}.csv", 2, str(i)), jobs.root, A, validate=read_table,
                                       stored=jobs.stored_bytes(A)))
    assert jobs.stored_bytes(A) > 3.9e6  # the two 2 MB uploads count
    with pytest.raises(CurloraError) as err:  # a third would take the visitor over their share
        policy.keep_upload(csv_of(tmp_path / "t2.csv", 2, "2"), jobs.root, A, validate=read_table,
                           stored=jobs.stored_bytes(A))
    assert "the limit here is 5 MB; delete some of your runs or uploads (Tasks tab, Your uploads) first." in str(err.value)
    # the same content again is not a new byte
    again = policy.keep_upload(tmp_path / "t0.csv", jobs.root, A, stored=jobs.stored_bytes(A))
    assert again == kept[0]
    listed = policy.list_uploads(jobs.root, A, jobs.runs(A))
    assert sorted(u.name for u in listed) == ["t0.csv", "t1.csv"] and all(u.size > 1.9e6 for u in listed)
    assert policy.list_uploads(jobs.root, B, jobs.runs(B)) == []  # nobody else sees them
    with pytest.raises(CurloraError, match="You have no such upload"):
        policy.delete_upload(jobs.root, B, listed[0].digest, jobs.runs(B))
    gone = policy.delete_upload(jobs.root, A, listed[0].digest, jobs.runs(A))
    assert [u.name for u in policy.list_uploads(jobs.root, A, jobs.runs(A))] == [listed[1].name]
    assert not (jobs.root / ".owners" / A / "uploads" / gone.digest).exists()
    with pytest.raises(CurloraError, match="Pick one of your uploads"):
        policy.delete_upload(jobs.root, A, "../../x", jobs.runs(A))


def test_an_upload_a_queued_run_uses_cannot_be_deleted(tmp_path):
    policy = Policy(hosted=True)
    jobs = JobManager(tmp_path / "runs", policy=policy)
    src = tmp_path / "mine.csv"
    src.write_text("text,label\n" + "".join(f"words {i} here,{i % 2}\n" for i in range(40)))
    policy.keep_upload(src, jobs.root, A, validate=read_table)
    cfg = hosted_cfg()
    cfg.tasks[0].train_file, cfg.tasks[0].eval_file, cfg.tasks[0].eval_size = "upload:mine.csv", None, 0.25
    jobs.gate.acquire("the test holds the device")
    try:
        rid = jobs.submit(cfg, A, client=Client(A))
        (upload,) = policy.list_uploads(jobs.root, A, jobs.runs(A))
        assert upload.used_by == [rid]
        with pytest.raises(CurloraError, match=f"Upload 'mine.csv' is used by run {rid}, which is queued or training"):
            policy.delete_upload(jobs.root, A, upload.digest, jobs.runs(A), busy=jobs.active(A))
        jobs.cancel(rid, A)
    finally:
        jobs.gate.release()
    jobs.wait(rid, timeout=120)


# -- bounded evaluation and reading ------------------------------------------------------------------------------
@pytest.mark.parametrize("evaluation, sentence", [
    ({"self_probe": True, "self_probe_texts": 1024, "self_probe_tokens": 400},
     "Self-probe tokens per stage (evaluation.self_probe_texts × self_probe_tokens): this run asks for 409,600, the "
     "limit here is 4,096; lower self_probe_texts or self_probe_tokens."),
    ({"ppl_max_tokens": None}, "Perplexity probe tokens per stage (evaluation.ppl_max_tokens): this run reads the "
                               "whole probe text, the limit here is 16,384; set ppl_max_tokens to that or less."),
    ({"ppl_max_tokens": 10**6}, "Perplexity probe tokens per stage (evaluation.ppl_max_tokens): this run asks for "
                                "1,000,000, the limit here is 16,384; lower it."),
    ({"eval_rows": 1000, "probe_every": 1, "probe_rows": 1024},
     "Eval rows scored per run (eval rows × stages, over tasks, with in-task probes): this run asks for "),
])
def test_hosted_limits_cover_evaluation_work(tmp_path, evaluation, sentence):
    jobs = JobManager(tmp_path / "runs", policy=Policy(hosted=True))
    cfg = hosted_cfg(methods=({"kind": "curlora", "r": 2}, {"kind": "lora", "r": 2}),
                     tasks=("testament", "reviews", "answers"), **evaluation)
    if "probe_every" in evaluation:
        cfg.training.max_steps = 1000
    with pytest.raises(CurloraError) as err:
        jobs.submit(cfg, A, client=Client(A))
    assert str(err.value).startswith(sentence)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_reading_stops_at_the_row_limit(tmp_path):
    big = tmp_path / "big.csv"
    big.write_text("text,label\n" + "".join(f"r{i},{i % 2}\n" for i in range(200_000)))
    with pytest.raises(CurloraError) as err:
        read_table(big, max_rows=1_000)
    assert str(err.value) == ("big.csv has more than 1,000 data rows, the most this server reads from one file "
                              "(reading stopped at line 1,002); upload a sample of at most 1,000 rows.")
    assert len(read_table(big, max_rows=200_000).rows) == 200_000  # at the limit is fine
    # a run naming such a file is refused the same way, before the model loads
    policy = Policy(hosted=True)
    policy.limits.rows_per_file = 1_000
    jobs = JobManager(tmp_path / "runs", policy=policy)
    policy.keep_upload(big, jobs.root, A)
    cfg = hosted_cfg()
    cfg.tasks[0].train_file, cfg.tasks[0].eval_file, cfg.tasks[0].eval_size = "upload:big.csv", None, 0.25
    with pytest.raises(CurloraError, match="big.csv has more than 1,000 data rows"):
        jobs.submit(cfg, A, client=Client(A))


def test_task_files_are_read_a_few_at_a_time():
    limits = Limits(task_loads_at_once=1)
    inside, release = threading.Event(), threading.Event()

    def holder():
        with reading_tasks(limits):
            inside.set()
            release.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    assert inside.wait(30)
    try:
        with pytest.raises(CurloraError, match=r"Task files read at once: 1 are being read for other visitors, the "
                                               r"limit here is 1; try again in a minute."):
            with reading_tasks(limits, wait=0.2):
                pass
    finally:
        release.set()
        t.join()
    with reading_tasks(limits, wait=5):  # the place is free again
        pass


def test_evaluate_honours_the_row_limit_reports_progress_and_stops(tmp_path):
    _, run = finished_run(tmp_path / "exp", tmp_path / "runs")
    new = csv_of(tmp_path / "new.csv", 0.05)  # ~900 rows
    limits = Limits(eval_rows_per_task=20, rows_per_file=5_000)
    from curlora.run.evaluate import evaluate_stage

    seen = []
    res = evaluate_stage(run.id, "lora", 1, task_file=str(new), root=tmp_path / "runs", limits=limits,
                         on_progress=lambda done, total: seen.append((done, total)))
    assert res["n"] == 20 and res["rows_limited_to"] == 20
    assert seen and seen[-1][1] is not None and all(total == seen[0][1] for _, total in seen)
    with pytest.raises(Cancelled):
        evaluate_stage(run.id, "lora", 1, task_file=str(new), root=tmp_path / "runs", limits=limits,
                       should_stop=lambda: True)
    with pytest.raises(CurloraError, match="new.csv has more than 100 data rows"):
        evaluate_stage(run.id, "lora", 1, task_file=str(new), root=tmp_path / "runs", limits=Limits(rows_per_file=100))


# -- ZeroGPU: an undriven run gives its turn away at once -----------------------------------------------------------
def test_a_run_whose_owner_never_drives_it_pauses_at_once_and_the_next_run_goes_on(tmp_path):
    jobs = JobManager(tmp_path / "runs", handoff=Handoff(wait=600, grace=0.2))  # the default wait is minutes
    first = jobs.submit(ExperimentConfig.from_dict(_tiny(tmp_path)), client=Client("absent"))
    began = time.monotonic()
    assert jobs.wait(first, timeout=60)  # far below the 600 s wait: no page of its owner was there
    assert time.monotonic() - began < 60
    st = jobs.status(first)
    assert st["status"] == "interrupted" and st["paused"] and "open the app again" in st["message"]


def _tiny(tmp_path) -> dict:
    from tiny_experiment import make_experiment

    d = make_experiment(tmp_path / "exp", steps=1, methods=("lora",))
    d["evaluation"].update(probe_every=0, self_probe=False)
    return d


# -- cheap polling ------------------------------------------------------------------------------------------------
def test_a_300k_step_loss_chart_is_downsampled_and_a_poll_redraws_it_only_when_it_moved():
    pytest.importorskip("gradio")
    from curlora.ui import charts, live

    steps = [{"kind": "step", "method": "lora", "stage": 1, "task": "t", "step": i + 1, "steps": 300_000,
              "loss": 1.0, "smoothed_loss": 1.0 / (i + 1), "lr": 0.1, "elapsed": i * 0.01} for i in range(300_000)]
    events = [{"kind": "run_start", "tasks": ["t"], "methods": ["lora"]}, *steps]
    metrics = RunMetrics.of({"tasks": ["t"], "methods": {}})
    fig = charts.loss_figure(metrics, events)
    (trace,) = fig.data
    assert len(trace.x) <= charts.LOSS_POINTS + 1 and trace.x[-1] == 300_000 and trace.x[0] == 1
    assert "at most 400 points per curve" in fig.layout.title.text
    drawn = {}
    first = live.redraw(drawn, "r", metrics, events)
    assert all(f is not live.gr.skip() for f in first[:1])
    more = events + [dict(steps[-1], step=300_000 + i) for i in range(1, 100)]  # 99 new steps: under 1 %
    loss, heat, ppl, probes = live.redraw(drawn, "r", metrics, more)
    assert isinstance(loss, dict) and loss.get("__type__") == "update" and not loss.get("value")  # gr.skip()
    many = more + [dict(steps[-1], step=400_000 + i) for i in range(3_100)]
    loss, *_ = live.redraw(drawn, "r", metrics, many)
    assert hasattr(loss, "data")  # grown by more than a hundredth: drawn again


def test_fresh_sessions_from_one_address_share_one_store_allowance(tmp_path):
    limits = Limits.load(hosted=True)
    limits.store_mb_per_visitor = 3
    policy = Policy(hosted=True, limits=limits)
    jobs = JobManager(tmp_path / "runs", policy=policy)
    from curlora.serve.hosting import client_of

    address = client_of(None, "203.0.113.7", True)
    first, second, third = (owner_key("session", f"fresh-{i}") for i in range(3))
    policy.keep_upload(csv_of(tmp_path / "a.csv", 2, "a"), jobs.root, first, stored=jobs.payer_bytes(address))
    policy.note_payer(jobs.root, first, address)
    assert jobs.payer_bytes(address) > 1.9e6 and jobs.stored_bytes(second) < 1e5  # the new session owns nothing
    with pytest.raises(CurloraError, match="the limit here is 3 MB"):  # but pays from the same allowance
        policy.keep_upload(csv_of(tmp_path / "b.csv", 2, "b"), jobs.root, second, stored=jobs.payer_bytes(address))
    policy.keep_upload(csv_of(tmp_path / "c.csv", 1.5, "c"), jobs.root, first)  # (as if kept before the check)
    with pytest.raises(CurloraError) as err:
        jobs.submit(hosted_cfg(), third, client=address)
    assert str(err.value).startswith("Stored runs per visitor: what you store here over all your sessions takes ")
    # another address is another allowance
    jobs.gate.acquire("the test holds the device")
    try:
        other = client_of(None, "198.51.100.9", True)
        rid = jobs.submit(hosted_cfg(), owner_key("session", "elsewhere"), client=other)
        jobs.cancel(rid, owner_key("session", "elsewhere"))
    finally:
        jobs.gate.release()
    jobs.wait(rid, timeout=120)
