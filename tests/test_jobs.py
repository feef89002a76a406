"""The job queue: validation before anything is written, FIFO order with positions, cancel (queued and running),
resume, and a worker that survives a failing job."""

import time

import pytest

from curlora.errors import CurloraError
from curlora.experiment import ExperimentConfig
from curlora.run.store import Run, list_runs
from curlora.serve.jobs import JobManager
from tiny_experiment import make_experiment


@pytest.fixture
def setup(tmp_path):
    base = make_experiment(tmp_path / "exp")

    def cfg(steps=2, **over):
        d = make_experiment(tmp_path / "exp", steps=steps)
        d.update(over)
        return ExperimentConfig.from_dict(d)

    return JobManager(tmp_path / "runs"), cfg, tmp_path / "runs", base


def wait_for(predicate, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_bad_config_raises_and_writes_nothing(setup, tmp_path):
    jobs, cfg, root, base = setup
    bad = dict(base, tasks=[dict(base["tasks"][0], train_file=str(tmp_path / "missing.csv"))])
    with pytest.raises(CurloraError):
        jobs.submit(ExperimentConfig.from_dict(bad))
    assert list_runs(root) == [] and jobs.queued() == [] and jobs.current() is None


def test_fifo_queue_positions_and_cancel_of_a_queued_job(setup):
    jobs, cfg, root, _ = setup
    first = jobs.submit(cfg(steps=200))
    second = jobs.submit(cfg())
    third = jobs.submit(cfg())
    assert wait_for(lambda: jobs.current() == first)
    assert jobs.status(second) == {"status": "queued", "position": 1, "message": "queued: 1 job ahead of it"}
    assert jobs.status(third)["position"] == 2
    assert jobs.cancel(second) == "cancelled"
    assert Run.open(second, root).status()["status"] == "cancelled"
    assert jobs.status(third)["position"] == 1
    # A running job stops within a step: it never reaches its 200th.
    assert wait_for(lambda: any(e["kind"] == "step" for e in Run.open(first, root).events()))
    assert jobs.cancel(first) == "stopping"
    assert jobs.wait(first, timeout=60)
    assert jobs.status(first)["status"] == "cancelled"
    steps = [e["step"] for e in Run.open(first, root).events() if e["kind"] == "step"]
    assert max(steps) < 200
    assert jobs.wait(third, timeout=120) and jobs.status(third)["status"] == "completed"
    assert jobs.status(second)["status"] == "cancelled"  # a cancelled queued job never ran
    assert Run.open(second, root).metrics() == {}


def test_resume_finishes_a_cancelled_run(setup):
    jobs, cfg, root, _ = setup
    run_id = jobs.submit(cfg(steps=3))
    jobs.cancel(run_id)  # most likely still loading or in the base evaluation: stops at its first step
    assert jobs.wait(run_id, timeout=60)
    assert jobs.status(run_id)["status"] == "cancelled"
    assert jobs.resume(run_id) == run_id
    assert jobs.wait(run_id, timeout=120)
    assert jobs.status(run_id)["status"] == "completed"
    m = Run.open(run_id, root).metrics()
    assert all(len(rec["matrix"]) == 3 for rec in m["methods"].values())
    with pytest.raises(CurloraError, match="already completed"):
        jobs.resume(run_id)
    with pytest.raises(CurloraError, match="No run"):
        jobs.resume("no-such-run")


def test_a_failing_job_is_marked_failed_and_the_next_one_runs(setup, tmp_path):
    jobs, cfg, root, _ = setup
    doomed = jobs.submit(cfg(steps=100))
    # The second job waits behind the first, so it loads its files only when its turn comes: break one now.
    nxt = cfg(steps=2)
    nxt.evaluation.probe_text = str(tmp_path / "exp" / "probe.txt")
    later = jobs.submit(nxt)
    (tmp_path / "exp" / "probe.txt").unlink()  # `later` reloads when its turn comes, and fails on the probe
    jobs.cancel(doomed)
    assert jobs.wait(later, timeout=120)
    st = jobs.status(later)
    assert st["status"] == "failed" and "probe_text" in st["message"]
    assert jobs.current() is None
    ok = make_experiment(tmp_path / "exp2", steps=1)
    good = jobs.submit(ExperimentConfig.from_dict(ok))
    assert jobs.wait(good, timeout=120) and jobs.status(good)["status"] == "completed"


def test_delete_refuses_a_running_run_and_removes_a_finished_one(setup):
    jobs, cfg, root, _ = setup
    run_id = jobs.submit(cfg(steps=200))
    assert wait_for(lambda: jobs.current() == run_id)
    with pytest.raises(CurloraError, match="stop it before deleting"):
        jobs.delete(run_id)
    jobs.cancel(run_id)
    assert jobs.wait(run_id, timeout=60)
    jobs.delete(run_id)
    assert list_runs(root) == []


def test_two_job_queues_on_one_store_never_train_one_run_twice_and_a_stop_reaches_a_queued_run(setup):
    """Two app processes on one run store (two JobManagers here; the run lock is per open file, so it holds
    between them as between processes): the other queue sees a waiting run as queued, cannot resume or delete it,
    and its Stop cancels it before it starts."""
    a, cfg, root, _ = setup
    b = JobManager(root)
    blocker = a.submit(cfg(steps=200))
    waiting = a.submit(cfg(steps=2))
    assert wait_for(lambda: a.current() == blocker)
    assert b.status(waiting)["status"] == "queued" and b.status(blocker)["status"] == "running"
    with pytest.raises(CurloraError, match="already queued"):
        b.resume(waiting)
    with pytest.raises(CurloraError, match="stop it before deleting"):
        b.delete(waiting)
    with pytest.raises(CurloraError, match="stop it before deleting"):
        b.delete(blocker)
    assert b.cancel(waiting) == "stopping"  # through the run folder: it is not in b's queue
    assert b.cancel(blocker) == "stopping"
    assert a.wait(blocker, timeout=120) and a.wait(waiting, timeout=120)
    assert a.status(blocker)["status"] == "cancelled"
    assert a.status(waiting)["status"] == "cancelled" and Run.open(waiting, root).events() == []  # never started
    # Resume pressed in both processes: one queues it, the other is told it is queued.
    a.resume(waiting)
    with pytest.raises(CurloraError, match="already queued|being trained by another process|still running"):
        b.resume(waiting)
    assert a.wait(waiting, timeout=120) and a.status(waiting)["status"] == "completed"
    starts = [e for e in Run.open(waiting, root).events() if e["kind"] == "run_start"]
    assert len(starts) == 1
