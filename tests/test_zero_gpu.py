"""ZeroGPU: every GPU call is made inside the visitor's own request, with a duration measured from the run.

The fake `spaces` module below fails a GPU call made outside a gradio request, as the real one can only charge the
Space there (spaces/zero/wrappers.py reads gradio.context.LocalContext.request; client.schedule sends its
X-IP-Token header), and records the duration and token of every call."""

import contextvars
import sys
import threading
import time
import types

import pytest

from curlora.errors import CurloraError
from curlora.experiment import ExperimentConfig
from curlora.measure.record import RunMetrics
from curlora.run.store import Run
from curlora.serve.gpu_budget import Budget, eval_seconds, next_unit, step_seconds, unit_steps
from curlora.serve.handoff import Handoff, drive, paused
from curlora.serve.jobs import JobManager
from tiny_experiment import make_experiment

TOKEN = "visitor-quota-token"


@pytest.fixture
def fake_spaces(monkeypatch):
    calls = []

    gr = pytest.importorskip("gradio")

    def GPU(task=None, *, duration=None, size=None):
        def wrap(fn):
            def call(*args, **kwargs):
                from gradio.context import LocalContext

                request = LocalContext.request.get(None)
                if request is None:
                    raise RuntimeError("spaces.GPU called outside a gradio request: there is no visitor to charge")
                calls.append({"duration": duration, "token": request.headers.get("x-ip-token"),
                              "thread": threading.current_thread().name})
                try:
                    return fn(*args, **kwargs)
                except gr.Error:  # passed through with its text…
                    raise
                except Exception as err:  # …anything else reduced to its class name, as spaces does
                    raise gr.Error(type(err).__name__) from None
            return call
        return wrap(task) if callable(task) else wrap

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=GPU))
    monkeypatch.setenv("SPACES_ZERO_GPU", "1")
    monkeypatch.setenv("CURLORA_GPU_MIN_SECONDS", "1")
    return calls


def test_the_fake_refuses_a_call_outside_a_request(fake_spaces):
    pytest.importorskip("gradio")
    from curlora.ui.zero_gpu import on_device

    with pytest.raises(RuntimeError, match="outside a gradio request"):
        on_device(lambda: 1, 30)
    assert fake_spaces == []


def test_an_engine_error_raised_on_the_gpu_keeps_its_sentence(fake_spaces):
    from gradio.context import LocalContext

    from curlora.ui.zero_gpu import on_device

    def in_a_request(fn):
        LocalContext.request.set(types.SimpleNamespace(headers={"x-ip-token": TOKEN}))
        return on_device(fn, 30)

    def unit():
        raise CurloraError("Run x has no saved lora adapter after stage 3 (yet).")

    with pytest.raises(CurloraError, match=r"^Run x has no saved lora adapter after stage 3 \(yet\)\.$"):
        contextvars.copy_context().run(in_a_request, unit)
    with pytest.raises(CurloraError, match="^ZeroDivisionError$"):  # what spaces leaves of any other error
        contextvars.copy_context().run(in_a_request, lambda: 1 / 0)
    assert [c["duration"] for c in fake_spaces] == [30, 30]


def test_on_zerogpu_the_visitors_request_runs_every_unit_and_bad_input_never_reaches_the_gpu(fake_spaces, tmp_path):
    gradio_client = pytest.importorskip("gradio_client")
    import yaml

    from app_server import serving
    from curlora.ui.zero_gpu import default_jobs

    root = tmp_path / "runs"
    with serving(root, default_jobs) as (url, jobs):
        assert jobs.handoff is not None
        client = gradio_client.Client(url, verbose=False, headers={"x-ip-token": TOKEN})
        # Refused inputs are refused before any GPU call, with the engine's sentence.
        with pytest.raises(gradio_client.exceptions.AppError, match=r"training\.lrr: unknown key"):
            client.predict("tasks: [{name: a, train_file: x.csv}]\ntraining: {lrr: 1}", api_name="/start_yaml")
        with pytest.raises(gradio_client.exceptions.AppError, match="No run 'nope'"):
            client.predict("nope", 1, "the king", 4, 0, 1, 0, api_name="/chat")
        client.predict("", api_name="/train_units")  # nothing of this visitor's to train: returns at once
        assert fake_spaces == []

        text = yaml.safe_dump(make_experiment(tmp_path / "exp", steps=2, lr=0.2))
        run_id = client.predict(text, api_name="/start_yaml")[0]
        client.predict(run_id, api_name="/train_units")  # the request that gives the run its GPU time
        assert jobs.wait(run_id, timeout=300)
        assert jobs.status(run_id)["status"] == "completed"
        assert len(fake_spaces) == 1 + 2 * 2  # base row + (curlora, lora) × 2 tasks, each its own call
        assert {c["token"] for c in fake_spaces} == {TOKEN}  # …made in this visitor's request
        assert all(c["thread"] != "curlora-jobs" for c in fake_spaces)
        durations = [c["duration"] for c in fake_spaces]
        budget = Budget.from_env()
        assert durations[0] == budget.seconds(0, None, None)  # the base row: first guesses, nothing measured yet
        assert all(isinstance(d, int) and budget.floor <= d <= budget.cap for d in durations)
        assert len(set(durations)) > 1  # measured from the run, not one constant
        assert jobs.gate.holder is None

        # Chat on the GPU: the checks first (no GPU call), then one call per reply, in the request too.
        before = len(fake_spaces)
        with pytest.raises(gradio_client.exceptions.AppError, match="Type a message first"):
            client.predict(run_id, 2, " ", "", 4, 0, 1, 0, [], [], [], api_name="/chat_turn")
        assert len(fake_spaces) == before
        base, lora, cur, _ = client.predict(run_id, 2, "the king", "", 4, 0, 1, 0, [], [], [],
                                              api_name="/chat_turn")
        assert [m["role"] for m in base] == ["user", "assistant"] == [m["role"] for m in cur]
        assert len(fake_spaces) == before + 1 and fake_spaces[-1]["token"] == TOKEN


def test_a_unit_no_page_takes_pauses_the_run_and_its_owner_continues_it(tmp_path):
    """No request takes the next unit in time (the page was closed): the run pauses, resumable, and the queue moves
    on; opened again, the owner's request resumes it and runs its units to the end."""
    jobs = JobManager(tmp_path / "runs", handoff=Handoff(wait=0.5))
    cfg = ExperimentConfig.from_dict(make_experiment(tmp_path / "exp", steps=2))
    run_id = jobs.submit(cfg)
    assert jobs.wait(run_id, timeout=120)
    st = jobs.status(run_id)
    assert st["status"] == "interrupted" and st["paused"] and "open the app again" in st["message"]
    assert Run.open(run_id, jobs.root).metrics().get("base") is None  # no unit ran in the job thread
    assert paused(jobs, run_id)
    jobs.resume(run_id)
    seen, ran = [], []

    def on_device(fn, seconds):
        ran.append(seconds)
        return fn()

    for done in drive(jobs, None, on_device, poll=0.2):
        seen.append(done)
    assert jobs.status(run_id)["status"] == "completed" and len(ran) == 5 and seen.count(run_id) == 5
    assert not paused(jobs, run_id)


def test_stop_reaches_a_run_waiting_for_a_page_and_an_error_on_the_gpu_fails_it_with_its_sentence(tmp_path):
    jobs = JobManager(tmp_path / "runs", handoff=Handoff(wait=60))
    cfg = ExperimentConfig.from_dict(make_experiment(tmp_path / "exp", steps=2))
    waiting = jobs.submit(cfg)
    deadline = time.monotonic() + 120
    while not jobs.handoff.waiting() and time.monotonic() < deadline:  # its base row waits for a page
        time.sleep(0.05)
    assert jobs.handoff.waiting() == [waiting]
    assert jobs.cancel(waiting) == "stopping"
    assert jobs.wait(waiting, timeout=60) and jobs.status(waiting)["status"] == "cancelled"

    failing = jobs.resume(waiting)

    def refused(fn, seconds):
        raise CurloraError("You have exceeded your GPU quota; try again in 3 minutes.")

    list(drive(jobs, None, refused, poll=0.2))
    assert jobs.wait(failing, timeout=60)
    st = jobs.status(failing)
    assert st["status"] == "failed" and st["message"] == "You have exceeded your GPU quota; try again in 3 minutes."


def test_off_zerogpu_nothing_changes(monkeypatch):
    pytest.importorskip("gradio")
    from curlora.ui.zero_gpu import default_jobs

    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    jobs = default_jobs()
    assert jobs.handoff is None and jobs.gate._wrap is None  # the job thread runs every unit under the gate
    assert list(drive(jobs, None, lambda fn, s: fn())) == []


def test_a_units_duration_is_measured_steps_times_step_time_plus_an_evaluation(tmp_path):
    cfg = ExperimentConfig.from_dict(make_experiment(tmp_path / "exp", steps=40))
    budget = Budget(floor=20, cap=300, overhead=15, margin=1.5, step_guess=1.0, eval_guess=60)
    assert budget.seconds(0, None, None) == 15 + 90  # the base row before anything is measured
    assert budget.seconds(40, 0.5, 10) == 15 + 45  # 40 steps × 0.5 s + 10 s of evaluation, × 1.5
    assert budget.seconds(1, 0.01, 0.1) == 20 and budget.seconds(4000, 0.5, 10) == 300  # floor and cap
    events = [{"kind": "stage_start", "method": "base", "stage": 0, "t": 100.0},
              {"kind": "stage", "method": "base", "stage": 0, "t": 112.0},
              {"kind": "step", "method": "curlora", "stage": 1, "step": 10, "elapsed": 5.0, "t": 120.0},
              {"kind": "step", "method": "curlora", "stage": 1, "step": 40, "elapsed": 24.0, "t": 139.0},
              {"kind": "stage", "method": "curlora", "stage": 1, "t": 146.0}]
    assert eval_seconds(events[:2]) == 12.0 and eval_seconds(events) == 7.0
    assert step_seconds(events, "curlora") == 0.6 and step_seconds(events, "lora") == 0.6  # any method's, else
    assert step_seconds(events[:2], "lora") is None
    assert unit_steps(cfg, "curlora", 0, None) == 40 and unit_steps(cfg, "nope", 0, None) == 0
    assert next_unit(cfg, RunMetrics()) == ("base", 0)
