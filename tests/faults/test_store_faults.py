"""The run store under faults between processes: two trainers, a killed one, a reused pid, damaged files, torn event
lines, a full disk, symbolic links, colliding run ids. Everything is asserted exactly; nothing waits on a clock."""

import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

import curlora.run.store as store
from conftest import REPO
from curlora.errors import CurloraError
from curlora.experiment import ExperimentConfig
from curlora.measure.record import RunMetrics
from curlora.run.runner import Executor, load_everything, resumable, start
from curlora.run.store import DiskFull, Run, RunBusy, list_runs
from curlora.share.export import copy_finished_adapters
from test_runner import make_tasks
from tiny_models import save_tiny_llama_dir

HOLD_LOCK = """
import sys, time
from pathlib import Path
from curlora.run.store import Run
run = Run.open(sys.argv[1], Path(sys.argv[2]))
hold = run.lock()
run.set_status("running")
print("locked", flush=True)
time.sleep(600)
"""
TORN_METRICS = '{"run_id": "x", "tasks": ["sent", "pa'
DAMAGED_METRICS = "metrics.json is not valid JSON (truncated or corrupted)"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny model, two task files and the loaded experiment (one LoRA, two steps a task), shared by the module."""
    tmp = tmp_path_factory.mktemp("store-faults")
    save_tiny_llama_dir(tmp / "model")
    make_tasks(tmp)
    cfg = ExperimentConfig.from_dict({
        "model": {"name": str(tmp / "model")},
        "tasks": [{"name": "sent", "train_file": str(tmp / "sent.csv"), "eval_size": 8,
                   "verbalizers": {"0": "bad", "1": "good"}},
                  {"name": "pair", "train_file": str(tmp / "pair.csv"), "eval_size": 8}],
        "methods": [{"kind": "lora", "r": 4, "target_modules": ["q_proj", "v_proj"]}],
        "training": {"max_steps": 2, "batch_size": 4, "lr": 0.01, "max_length": 48},
        "evaluation": {"probe_text": str(tmp / "probe.txt"), "ppl_window": 32, "ppl_stride": 16},
        "run": {"name": "faults"},
    })
    return cfg, load_everything(cfg)


@pytest.fixture
def run(world, tmp_path):
    """A run folder as the CLI leaves it after a crash: config, status `interrupted`, two events, no metrics."""
    cfg, _ = world
    r = Run.create(cfg.to_yaml(), name="faults", root=tmp_path / "runs")
    r.set_status("interrupted", "the process running it stopped")
    r.log("run_start", tasks=["sent", "pair"])
    r.log("step", step=1)
    return r


def busy_sentence(run_id: str, pid: int) -> str:
    return (f"Run {run_id} is being trained by another process (pid {pid} on host {socket.gethostname()}); "
            "stop it there first.")


def cli(*args, root):
    env = {**os.environ, "CURLORA_DATA_DIR": str(root), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "curlora", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)


# -- 1. one trainer per run ------------------------------------------------------------------------------------
def test_a_second_process_is_refused_and_a_killed_trainer_frees_the_run(run):
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, run.id, str(run.root)], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert proc.stdout.readline() == "locked\n"
        assert run.is_locked() and run.status()["status"] == "running" and run.status()["pid"] == proc.pid
        assert run.lock_holder()["pid"] == proc.pid and run.lock_holder()["host"] == socket.gethostname()
        with pytest.raises(RunBusy) as busy:
            run.lock()
        assert str(busy.value) == busy_sentence(run.id, proc.pid)
        with pytest.raises(RunBusy) as busy:
            resumable(run.id, run.root)
        assert str(busy.value) == busy_sentence(run.id, proc.pid)
        assert run.is_locked()  # asking did not take it
    finally:
        proc.kill()  # SIGKILL: no cleanup runs in the trainer, the kernel drops its lock
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not run.is_locked()
    st = run.status()
    assert st["status"] == "interrupted" and st["message"] == "the process running it stopped"
    with run.lock():
        assert run.is_locked()
    assert not run.is_locked()


def test_another_handle_in_this_process_is_refused_too(run):
    hold = run.lock()
    with pytest.raises(RunBusy) as busy:
        Run.open(run.id, run.root).lock()
    assert str(busy.value) == busy_sentence(run.id, os.getpid())
    assert json.loads((run.path / "lock").read_text())["pid"] == os.getpid()
    hold.release()
    hold.release()  # releasing twice is harmless
    Run.open(run.id, run.root).lock().release()


def test_asking_whether_a_run_is_trained_takes_nothing_from_a_trainer(run):
    """is_locked() probes with a shared lock: a probe in flight (held here) is not taken for a trainer by another."""
    run.lock().release()
    probe = os.open(run.path / "lock", os.O_RDONLY)
    try:
        fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
        assert not run.is_locked() and run.status()["status"] == "interrupted"
    finally:
        os.close(probe)
    with run.lock():
        assert run.is_locked()


def test_a_reused_pid_reads_interrupted(run):
    """In a container the restarted app is pid 1 again: status.json's pid is alive, but the lock is free."""
    run.lock().release()  # the run was trained once: it has a lock file
    run.set_status("running")  # this very process's pid, host and start time
    body = json.loads((run.path / "status.json").read_text())
    assert body["pid"] == os.getpid() and body["host"] == socket.gethostname()
    assert body["started"] == pytest.approx(psutil.Process().create_time(), abs=0.01)
    assert run.status() == {**body, "status": "interrupted", "message": "the process running it stopped"}


def test_without_a_lock_file_the_pid_and_its_start_time_decide(run):
    """Runs stored before the lock file existed: the pid, and the process start time where it was recorded."""
    run.set_status("running")
    assert not (run.path / "lock").exists() and run.status()["status"] == "running"
    body = json.loads((run.path / "status.json").read_text())
    (run.path / "status.json").write_text(json.dumps({**body, "started": body["started"] - 3600}))
    assert run.status()["status"] == "interrupted"  # the same pid, another process
    (run.path / "status.json").write_text(json.dumps({"status": "running", "pid": os.getpid()}))  # an old run
    assert run.status()["status"] == "running"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run.path / "status.json").write_text(json.dumps({"status": "running", "pid": dead.pid}))
    assert run.status()["status"] == "interrupted"


def test_execute_refused_by_the_lock_leaves_the_status_alone(world, run):
    cfg, loaded = world
    before = (run.path / "status.json").read_bytes()
    with run.lock():
        with pytest.raises(RunBusy) as busy:
            Executor(Run.open(run.id, run.root), cfg, loaded).execute()
    assert str(busy.value) == busy_sentence(run.id, os.getpid())
    assert (run.path / "status.json").read_bytes() == before
    assert [e["kind"] for e in run.events()] == ["run_start", "step"]


# -- 2. queued ---------------------------------------------------------------------------------------------------
def test_queued_is_stored_without_a_pid_and_read_back_unchanged(run):
    run.lock().release()
    run.set_status("queued", "queued: 1 job ahead of it")
    body = json.loads((run.path / "status.json").read_text())
    assert body["status"] == "queued" and body["pid"] is None and "host" not in body
    assert run.status() == body
    assert [r.status()["status"] for r in list_runs(run.root)] == ["queued"]
    with pytest.raises(AssertionError):
        run.set_status("damaged")  # read, never stored


# -- 3. damaged files ----------------------------------------------------------------------------------------------
def test_a_truncated_metrics_json_is_listed_damaged_and_resume_restarts_the_run(run):
    (run.path / "metrics.json").write_text(TORN_METRICS)
    assert run.metrics() == {}
    assert run.problems() == [DAMAGED_METRICS]
    assert run.status() == {"status": "damaged", "message": f"{DAMAGED_METRICS}; resume the run to repair it"}
    assert [r.id for r in list_runs(run.root)] == [run.id]

    out = cli("list", root=run.root)
    assert out.returncode == 0, out.stderr
    cfg = run.config()  # its metrics are unreadable: the listing says what it is from its config
    assert out.stdout.splitlines() == [f"{run.id}  damaged      tasks: {', '.join(t.name for t in cfg.tasks)}  "
                                       f"methods: {', '.join(m.label for m in cfg.methods)}  done: 0",
                                       f"    damaged: {DAMAGED_METRICS}"]
    out = cli("show", run.id, root=run.root)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"run {run.id}: damaged — {DAMAGED_METRICS}; resume the run to repair it\n"
    out = cli("export", run.id, "--out", str(run.root.parent / "export"), root=run.root)
    assert out.returncode == 2
    assert out.stderr == f"error: Run {run.id} is damaged ({DAMAGED_METRICS}; resume the run to repair it).\n"

    again, _ = resumable(run.id, run.root)
    note = "metrics.json was damaged (kept as metrics.json.damaged), so the run restarts from the beginning"
    assert again.repaired == [note]
    assert (run.path / "metrics.json.damaged").read_text() == TORN_METRICS and not (run.path / "metrics.json").exists()
    assert run.problems() == [] and run.metrics() == {}
    assert run.status()["status"] == "interrupted" and run.status()["message"] == f"repaired: {note}"
    assert run.events()[-1]["kind"] == "repair" and run.events()[-1]["message"] == note


def test_a_damaged_metrics_json_is_restarted_from_the_beginning_by_the_runner(world, tmp_path):
    cfg, loaded = world
    run, _ = start(cfg, tmp_path, loaded)
    Executor(run, cfg, loaded).execute()
    stage_file = run.adapter_dir("lora", 2) / "adapter_model.safetensors"
    stale = stage_file.stat().st_mtime_ns
    (run.path / "metrics.json").write_text(TORN_METRICS)
    assert run.status()["status"] == "damaged"  # even a completed run: its results are gone
    again, cfg2 = resumable(run.id, tmp_path)
    seen, said = [], []

    def on_event(e):
        seen.append(e)
        if e["kind"] == "run_start":
            said.append(run.status())

    assert Executor(again, cfg2, loaded, on_event=on_event).execute() == "completed"
    note = "metrics.json was damaged (kept as metrics.json.damaged), so the run restarts from the beginning"
    assert said[0]["status"] == "running" and said[0]["message"] == note
    m = run.metrics()
    assert len(m["methods"]["lora"]["matrix"]) == 3 and m["base"] is not None
    assert [e["stage"] for e in seen if e["kind"] == "stage"] == [0, 1, 2]  # every stage again, base row first
    assert stage_file.stat().st_mtime_ns != stale  # the old stage folder was replaced as training saved it
    assert run.status() == {**run.status(), "status": "completed", "message": "finished"}


def test_a_truncated_or_missing_status_json_is_damaged_and_rewritten_on_resume(run):
    (run.path / "status.json").write_text('{"status": "runn')
    problem = "status.json is not valid JSON (truncated or corrupted)"
    assert run.problems() == [problem]
    assert run.status() == {"status": "damaged", "message": f"{problem}; resume the run to repair it"}
    out = cli("list", root=run.root)
    assert out.returncode == 0 and f"{run.id}  damaged" in out.stdout and f"    damaged: {problem}" in out.stdout
    resumable(run.id, run.root)
    assert run.problems() == []
    assert run.status()["status"] == "interrupted"
    assert run.status()["message"] == "repaired: status.json was damaged and has been rewritten"

    (run.path / "status.json").unlink()
    assert run.problems() == ["status.json is missing"]
    (run.path / "status.json").write_text('{"status": "sleeping"}')
    assert run.problems() == ["status.json does not hold a known status"]


def test_one_bad_folder_never_stops_the_listing(run):
    (run.path / "metrics.json").write_text("[1, 2")
    (run.path / "status.json").write_text("")
    (run.path / "events.jsonl").write_bytes(b'{"kind": "a"}\n{"kind"')
    odd = run.root / "a..b"  # matches the folder pattern, not a valid id
    odd.mkdir()
    (odd / "config.yaml").write_text("x: 1\n")
    (run.root / "stray-file").write_text("")
    assert [r.id for r in list_runs(run.root)] == [run.id]
    assert run.problems() == ["status.json is not valid JSON (truncated or corrupted)", DAMAGED_METRICS,
                              "events.jsonl has a torn line at line 2"]
    out = cli("list", root=run.root)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("    damaged: ") == 3


# -- 4. the event log ----------------------------------------------------------------------------------------------
def test_a_torn_last_line_is_reported_and_cut_off_on_resume(run):
    with open(run.path / "events.jsonl", "ab") as f:
        f.write(b'{"t": 1, "kind": "st')  # killed mid-write
    assert [e["kind"] for e in run.events()] == ["run_start", "step"]
    assert run.problems() == ["events.jsonl has a torn line at line 3"]
    assert run.status()["status"] == "interrupted"  # a torn event line does not damage the run's results
    whole = (run.path / "events.jsonl").read_bytes().rsplit(b"\n", 1)[0] + b"\n"
    with run.lock():
        assert run.problems() == []  # while a process trains the run its last line may be mid-write
    again, _ = resumable(run.id, run.root)
    assert again.repaired == ["the torn last line of events.jsonl was cut off"]
    assert (run.path / "events.jsonl").read_bytes().startswith(whole)
    assert [e["kind"] for e in run.events()] == ["run_start", "step", "repair"]
    assert run.problems() == []


def test_after_a_torn_line_in_the_middle_later_events_are_still_read(run):
    with open(run.path / "events.jsonl", "ab") as f:
        f.write(b'{"t": 1, "kind": "st')  # torn by a crash, then the resumed run appended after it
    run.log("stage", stage=1)
    run.log("run_end", status="completed")
    assert [e["kind"] for e in run.events()] == ["run_start", "step", "run_end"]  # the glued line is unreadable
    assert [e["kind"] for e in run.events(since=3)] == ["run_end"]  # `since` counts the file's lines
    run.log("step", step=2)
    assert run.events()[-1] == {**run.events()[-1], "kind": "step", "step": 2}
    assert run.problems() == ["events.jsonl has a torn line at line 3"]
    assert run.repair() == ["1 torn line(s) were cut from events.jsonl"]
    assert [e["kind"] for e in run.events()] == ["run_start", "step", "run_end", "step", "repair"]
    assert run.problems() == []


def test_read_events_is_incremental_and_waits_for_a_partial_last_line(run):
    events, offset = run.read_events()
    assert [e["kind"] for e in events] == ["run_start", "step"]
    assert offset == (run.path / "events.jsonl").stat().st_size
    assert run.read_events(offset) == ([], offset)
    line = json.dumps({"t": 2.0, "kind": "stage", "stage": 1}).encode() + b"\n"
    with open(run.path / "events.jsonl", "ab") as f:
        f.write(line[:9])  # a writer half-way through its line
        f.flush()
        assert run.read_events(offset) == ([], offset)
        f.write(line[9:])
    events, after = run.read_events(offset)
    assert events == [{"t": 2.0, "kind": "stage", "stage": 1}] and after == offset + len(line)
    # Only what follows the offset is read: damage before it costs nothing and breaks nothing.
    with open(run.path / "events.jsonl", "r+b") as f:
        f.write(b"\x00" * 10)
    assert run.read_events(after) == ([], after)
    logged = run.log("step", step=3)
    assert run.read_events(after) == ([logged], after + len(json.dumps(logged).encode()) + 1)
    assert run.read_events(10 ** 9) == ([], (run.path / "events.jsonl").stat().st_size)  # cut shorter by a repair
    assert Run.open(run.id, run.root).read_events()[0][0]["kind"] == "step"  # the first line, zeroed: skipped


# -- 5. a full disk ---------------------------------------------------------------------------------------------------
def _full_disk(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_logging_leaves_no_torn_line(run, monkeypatch):
    path = run.path / "events.jsonl"
    before = path.read_bytes()
    real = os.write

    def half_then_full(fd, data):
        real(fd, bytes(data[:7]))  # part of the line reaches the disk, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.os, "write", half_then_full)
    with pytest.raises(DiskFull) as full:
        run.log("step", step=2)
    monkeypatch.undo()
    assert str(full.value) == (f"The disk is full: run {run.id} could not write its event log; free some space and "
                               "resume the run (finished stages are kept).")
    assert path.read_bytes() == before

    def io_error(fd, data):
        real(fd, bytes(data[:7]))
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(store.os, "write", io_error)
    with pytest.raises(OSError) as err:
        run.log("step", step=2)
    monkeypatch.undo()
    assert not isinstance(err.value, CurloraError) and err.value.errno == errno.EIO
    assert str(err.value) == "[Errno 5] Input/output error" and path.read_bytes() == before


def test_a_full_disk_while_writing_metrics_keeps_the_old_file_and_no_temp_file(run, monkeypatch):
    run.write_metrics({"tasks": ["sent"]})
    monkeypatch.setattr(store.os, "fsync", _full_disk)
    with pytest.raises(DiskFull) as full:
        run.write_metrics({"tasks": ["sent", "pair"]})
    assert str(full.value) == (f"The disk is full: run {run.id} could not save its metrics; free some space and "
                               "resume the run (finished stages are kept).")
    assert run.metrics() == {"tasks": ["sent"]}
    assert sorted(p.name for p in run.path.iterdir()) == ["config.yaml", "events.jsonl", "metrics.json", "status.json"]
    with pytest.raises(DiskFull, match=r"^The disk is full: .*status\.json could not be written; free some space"):
        store.atomic_write_text(run.path / "status.json", "{}")


def test_a_full_disk_while_storing_the_status_tries_once_more_with_less(run, monkeypatch):
    real = store.atomic_write_text
    bodies = []

    def first_write_fails(path, text):
        bodies.append(json.loads(text))
        if len(bodies) == 1:
            raise DiskFull("The disk is full: (injected)")
        real(path, text)

    monkeypatch.setattr(store, "atomic_write_text", first_write_fails)
    run.set_status("running")
    assert set(bodies[0]) == {"status", "pid", "updated", "message", "host", "started"}
    assert bodies[1] == {"status": "running", "pid": os.getpid(), "message": ""}
    assert json.loads((run.path / "status.json").read_text()) == bodies[1]

    def always_full(path, text):
        bodies.append(json.loads(text))
        raise DiskFull("The disk is full: (injected)")

    monkeypatch.setattr(store, "atomic_write_text", always_full)
    del bodies[:]
    with pytest.raises(DiskFull) as full:
        run.set_status("failed", "boom")
    assert len(bodies) == 2
    assert str(full.value) == (f"The disk is full: run {run.id} could not store its status (failed); free some space "
                               "and resume the run (finished stages are kept).")


def test_a_full_disk_mid_run_ends_it_failed_with_finished_stages_kept(world, tmp_path, monkeypatch):
    """The disk fills after stage 1: the event log and metrics.json can no longer be written; the run ends failed
    with the disk-full sentence (status.json still fits) and the stage-1 results stay."""
    cfg, _ = world
    loaded = load_everything(cfg)  # its own model: a unit that fails saving metrics leaves its adapter attached
    run, _ = start(cfg, tmp_path, loaded)
    state = {"full": False}
    real_write, real_metrics = os.write, Run.write_metrics

    def write(fd, data):
        if state["full"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    def write_metrics(self, metrics):
        if state["full"]:
            raise DiskFull(f"The disk is full: run {self.id} could not save its metrics; free some space and resume "
                           "the run (finished stages are kept).")
        real_metrics(self, metrics)

    def on_event(e):
        if e["kind"] == "stage" and e.get("stage") == 1:
            state["full"] = True

    monkeypatch.setattr(store.os, "write", write)
    monkeypatch.setattr(Run, "write_metrics", write_metrics)
    with pytest.raises(DiskFull, match=r"^The disk is full: run .* could not (write its event log|save its metrics)"):
        Executor(run, cfg, loaded, on_event=on_event).execute()
    monkeypatch.undo()
    st = run.status()
    assert st["status"] == "failed" and st["message"].startswith(f"The disk is full: run {run.id} could not")
    assert st["message"].endswith("free some space and resume the run (finished stages are kept).")
    assert len(run.metrics()["methods"]["lora"]["matrix"]) == 2  # base row + stage 1
    assert (run.adapter_dir("lora", 1) / "adapter_model.safetensors").is_file()
    assert not run.is_locked() and run.problems() == []


def test_a_full_disk_outside_the_store_reads_as_disk_full(world, tmp_path, monkeypatch):
    import curlora.run.runner as runner

    cfg, loaded = world
    run, _ = start(cfg, tmp_path, loaded)
    monkeypatch.setattr(runner, "train_task", _full_disk)
    sentence = (f"The disk is full: run {run.id} stopped; free some space and resume the run (finished stages "
                "are kept).")
    with pytest.raises(DiskFull) as full:
        Executor(run, cfg, loaded).execute()
    assert str(full.value) == sentence and isinstance(full.value.__cause__, OSError)
    assert run.status()["status"] == "failed" and run.status()["message"] == sentence
    assert run.metrics()["base"] is not None


def test_finishing_a_failed_run_never_hides_its_error(world, tmp_path, monkeypatch):
    """The disk fills just as the run fails: neither metrics.json nor status.json can be written while it ends."""
    import curlora.run.runner as runner

    cfg, loaded = world
    run, _ = start(cfg, tmp_path, loaded)
    state = {"full": False}
    real_metrics, real_status, real_finish = Run.write_metrics, Run.set_status, Executor.finish

    def boom(*_a, **_k):
        raise CurloraError("The task broke (injected).")

    def finish(self, status, message):
        state["full"] = True
        real_finish(self, status, message)

    def write_metrics(self, metrics):
        if state["full"]:
            raise DiskFull("The disk is full: (injected metrics).")
        real_metrics(self, metrics)

    def set_status(self, status, message=""):
        if state["full"]:
            raise DiskFull("The disk is full: (injected status).")
        real_status(self, status, message)

    monkeypatch.setattr(runner, "train_task", boom)
    monkeypatch.setattr(Executor, "finish", finish)
    monkeypatch.setattr(Run, "write_metrics", write_metrics)
    monkeypatch.setattr(Run, "set_status", set_status)
    with pytest.raises(CurloraError) as err:
        Executor(run, cfg, loaded).execute()
    assert str(err.value) == "The task broke (injected)."
    monkeypatch.undo()
    assert run.events()[-1]["kind"] == "run_end" and run.events()[-1]["message"] == "The task broke (injected)."
    # status.json still says running and nobody holds the lock: it reads as the failure its log ends with (issue 31)
    assert run.status()["status"] == "failed" and run.status()["message"] == "The task broke (injected)."


def test_a_completed_run_whose_final_status_cannot_be_written_ends_failed(world, tmp_path, monkeypatch):
    cfg, loaded = world
    run, _ = start(cfg, tmp_path, loaded)
    real_status = Run.set_status
    full = DiskFull("The disk is full: (injected).")

    def status(self, s, msg=""):
        if s == "completed":
            raise full
        real_status(self, s, msg)

    monkeypatch.setattr(Run, "set_status", status)
    with pytest.raises(DiskFull) as err:
        Executor(run, cfg, loaded).execute()
    assert err.value is full
    assert run.status()["status"] == "failed" and run.status()["message"] == "The disk is full: (injected)."
    assert len(run.metrics()["methods"]["lora"]["matrix"]) == 3


# -- 6. symbolic links --------------------------------------------------------------------------------------------
def test_a_symlinked_run_folder_is_not_listed_opened_or_removed_through(run, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "config.yaml").write_text("x: 1\n")
    (run.root / "inside-link").symlink_to(run.path)
    (run.root / "outside-link").symlink_to(outside)
    assert [r.id for r in list_runs(run.root)] == [run.id]
    for name in ("inside-link", "outside-link"):
        with pytest.raises(CurloraError) as err:
            Run.open(name, run.root)
        assert str(err.value) == (f"No run {name!r} in {run.root.resolve()}; `python -m curlora list` shows the runs "
                                  "there.")
        with pytest.raises(CurloraError) as err:
            Run(run.root, name).remove()
        assert str(err.value) == f"{run.root.resolve() / name} is a symbolic link, not a run folder; remove it by hand."
    assert (outside / "config.yaml").is_file() and (run.path / "config.yaml").is_file()


def test_remove_deletes_links_inside_never_what_they_point_at(run, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("keep")
    (run.path / "adapters").mkdir()
    (run.path / "adapters" / "link").symlink_to(precious)
    (run.path / "file-link").symlink_to(precious / "keep.txt")
    with run.lock():
        with pytest.raises(RunBusy):
            Run.open(run.id, run.root).remove()
    Run.open(run.id, run.root).remove()
    assert not run.path.exists() and (precious / "keep.txt").read_text() == "keep"
    assert list_runs(run.root) == []


def test_export_skips_symlinks_inside_stage_folders(run, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    stage1, stage2 = run.adapter_dir("lora", 1), run.adapter_dir("lora", 2)
    stage1.mkdir(parents=True)
    (stage1 / "adapter_model.safetensors").write_bytes(b"weights")
    (stage1 / "leak.txt").symlink_to(secret)
    (stage1 / "leak-dir").symlink_to(tmp_path)
    stage2.symlink_to(tmp_path)  # a whole stage folder that is a link
    m = {"methods": {"lora": {"matrix": [[0.5], [0.6], [0.7]]}}}
    assert copy_finished_adapters(run, RunMetrics.of(m), tmp_path / "out") == 1
    copied = tmp_path / "out" / "lora"
    assert sorted(p.name for p in copied.iterdir()) == ["stage-1"]
    assert sorted(p.name for p in (copied / "stage-1").iterdir()) == ["adapter_model.safetensors"]


def test_what_leaves_the_machine_is_one_list(run, tmp_path):
    """store.outgoing_files: the one list every export, download, push and study pack copies from."""
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    (run.path / "lock").write_text("123")
    (run.path / "cancel").write_text("")
    (run.path / "big.bin").write_bytes(b"x" * 11)
    (run.path / "leak.txt").symlink_to(secret)
    (run.path / "leak-dir").symlink_to(tmp_path)
    stage = run.path / "adapters" / "lora" / "stage-1"
    stage.mkdir(parents=True)
    (stage / "adapter_model.safetensors").write_bytes(b"weights")
    (run.path / "adapters" / "lora" / "stage-2.partial").mkdir()
    (run.path / "adapters" / "lora" / "stage-2.partial" / "half.bin").write_bytes(b"h")
    names = [p.relative_to(run.path).as_posix() for p in store.outgoing_files(run.path)]
    assert "adapters/lora/stage-1/adapter_model.safetensors" in names and "big.bin" in names
    assert not {"lock", "cancel", "leak.txt"} & set(names) and not [n for n in names if "leak-dir" in n or "partial"
                                                                       in n]
    top = [p.name for p in store.outgoing_files(run.path, skip={"big.bin"}, recursive=False)]
    assert top == sorted(top) and "big.bin" not in top and "config.yaml" in top and "adapter_model.safetensors" \
        not in top
    assert "big.bin" not in [p.name for p in store.outgoing_files(run.path, max_bytes=10, recursive=False)]
    copies = store.copy_outgoing(stage, tmp_path / "out" / "stage-1", within=run.path)
    assert copies == [tmp_path / "out" / "stage-1" / "adapter_model.safetensors"]
    assert copies[0].read_bytes() == b"weights"
    linked = tmp_path / "linked-adapters"
    (run.path / "adapters").rename(linked)
    (run.path / "adapters").symlink_to(linked)  # a folder between the run and the stage is a link: nothing leaves
    assert store.outgoing_files(stage, within=run.path) == [] and store.outgoing_files(stage) != []


# -- 7. run id collisions -------------------------------------------------------------------------------------------
def test_a_colliding_run_id_is_retried_with_a_new_one(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    (root / "taken").mkdir(parents=True)
    ids = iter(["taken", "taken", "free"])
    monkeypatch.setattr(store, "new_run_id", lambda name: next(ids))
    run = Run.create("x: 1\n", root=root)
    assert run.id == "free" and run.config_yaml == "x: 1\n" and list(Path(root / "taken").iterdir()) == []
    monkeypatch.setattr(store, "new_run_id", lambda name: "taken")
    with pytest.raises(CurloraError) as err:
        Run.create("x: 1\n", root=root)
    assert str(err.value) == (f"Could not find a free run id in {root.resolve()} after {store.CREATE_TRIES} tries; "
                              "start the run again.")


def test_polling_reads_only_what_was_appended(tmp_path, monkeypatch):
    """The app's poll (EventCache) reads from where the last read ended: its cost does not grow with the run."""
    run = Run.create("x: 1\n", root=tmp_path)
    for i in range(3000):
        run.log("step", step=i)
    cache = store.EventCache()
    reads = []
    real = Run.read_events
    monkeypatch.setattr(Run, "read_events", lambda self, offset=0: reads.append(offset) or real(self, offset))
    assert [e["step"] for e in cache.events(run)] == list(range(3000))
    size = (run.path / "events.jsonl").stat().st_size
    run.log("step", step=3000)
    with open(run.path / "events.jsonl", "a") as f:
        f.write('{"kind": "step", "st')  # being written: not consumed yet
    assert cache.events(run)[-1]["step"] == 3000 and len(cache.events(run)) == 3001
    assert reads[0] == 0 and reads[1] == size  # the second poll started at the old end of the file
    run.repair()  # cuts the torn line (never consumed) and logs a `repair` event
    assert len(cache.events(run)) == 3002 and cache.events(run)[-1]["kind"] == "repair"
    replaced = run.path / "new.jsonl"
    replaced.write_text('{"kind": "run_start"}\n')
    os.replace(replaced, run.path / "events.jsonl")  # another file now: read from its start
    assert [e["kind"] for e in cache.events(run)] == ["run_start"] and reads[-1] == 0


def test_the_app_starts_and_lists_with_a_damaged_run_in_its_store(tmp_path):
    """Before: one truncated metrics.json kept the app from starting, with a traceback."""
    gradio_client = pytest.importorskip("gradio_client")
    from app_server import serving

    root = tmp_path / "runs"
    run = Run.create("x: 1\n", root=root)
    run.set_status("completed", "finished")
    (run.path / "metrics.json").write_text(TORN_METRICS)
    with serving(root) as (url, _jobs):
        client = gradio_client.Client(url, verbose=False)
        (row,) = client.predict(api_name="/list_runs")
        assert row["run"] == run.id and row["status"] == "damaged" and DAMAGED_METRICS in row["message"]
        header = client.predict(run.id, api_name="/results")[0]
        assert "damaged" in header
