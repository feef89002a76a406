"""Two and eight concurrent gradio_client sessions against one app server, while a run trains.

Each session starts a run (one in four from its own Tasks list through the Train form; the others, whose Tasks list
is empty, are refused by the form and send a YAML instead), two chat, all poll. Checked: the runs execute one at a
time in the order of the queue, each session was told its place in that queue, every submission either completes
or is refused with a sentence (nothing written), no session sees another's task list, and a chat sent while a
stage trains says it is waiting for the device and answers once that stage ends. The latency of a light event
(/run_status, what the Train tab's timer polls; /list_runs) is measured idle and while a run trains and printed
(run with -s; docs/reliability.md has the numbers); the only bound asserted is a sanity one (30 s).
"""

import statistics
import threading
import time

import pytest
import yaml

from app_server import serving
from curlora.run.store import Run, list_runs
from curlora.ui.tasks_tab import demo_tasks
from tiny_experiment import make_experiment

gradio_client = pytest.importorskip("gradio_client")
AppError = gradio_client.exceptions.AppError
TERMINAL = ("completed", "failed", "cancelled")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sessions")
    make_experiment(folder / "exp")  # the tiny model and task files
    with serving(folder / "runs") as (url, jobs):
        try:
            yield url, jobs, folder
        finally:  # a JobManager thread alive at exit aborts the interpreter: leave nothing queued or running
            for rid in [*jobs.queued(), jobs.current()]:
                if rid:
                    jobs.cancel(rid)
            for rid in [r.id for r in list_runs(jobs.root)]:
                jobs.wait(rid, 120)


def tiny_yaml(folder, name: str, steps: int = 2, methods=("curlora", "lora")) -> str:
    exp = make_experiment(folder / "exp", steps=steps, methods=methods)
    exp["evaluation"].update(self_probe=False, probe_every=0)
    exp["run"]["name"] = name
    return yaml.safe_dump(exp)


def form(model: str) -> list:
    """The Train tab's widgets (tests/test_app_api.py keeps their order), CURLoRA only, 1 step."""
    from test_app_api import form as app_form

    values = app_form(model, steps=1)
    values[0] = ["curlora"]
    return values


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def stats(samples: list[float]) -> str:
    ms = sorted(1000 * s for s in samples)
    p90 = ms[int(0.9 * (len(ms) - 1))]
    return f"n={len(ms)} median={statistics.median(ms):.0f} ms p90={p90:.0f} ms max={ms[-1]:.0f} ms"


def in_threads(n: int, target) -> list:
    """Run target(i) for i < n in n threads started together; return the results (re-raise the first error)."""
    results, errors = [None] * n, []
    barrier = threading.Barrier(n)

    def body(i):
        try:
            barrier.wait(30)
            results[i] = target(i)
        except BaseException as err:  # noqa: BLE001 — reported below
            errors.append(err)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    if errors:
        raise errors[0]
    hung = [t for t in threads if t.is_alive()]
    if hung:
        import sys
        import traceback

        frames = sys._current_frames()
        raise AssertionError("session thread(s) hung:\n" + "\n".join(
            "".join(traceback.format_stack(frames[t.ident])) for t in hung if t.ident in frames))
    return results


def first_event(run: Run, kind: str) -> float:
    return next(e["t"] for e in run.events() if e["kind"] == kind)


@pytest.fixture(scope="module")
def chat_run(server):
    """A finished run the sessions can chat with."""
    url, jobs, folder = server
    client = gradio_client.Client(url, verbose=False)
    rid = client.predict(tiny_yaml(folder, "chat", methods=("curlora", "lora")), api_name="/start_yaml")[0]
    assert jobs.wait(rid, 120) and jobs.status(rid)["status"] == "completed"
    client.close()
    return rid


@pytest.mark.parametrize("n", [2, 8])
def test_concurrent_sessions_queue_in_order_stay_apart_and_stay_responsive(server, chat_run, n):
    url, jobs, folder = server
    model = str(folder / "exp" / "model")
    clients = in_threads(n, lambda i: gradio_client.Client(url, verbose=False))
    owner = gradio_client.Client(url, verbose=False)
    before = {r.id for r in list_runs(jobs.root)}
    idle = sum(in_threads(n, lambda i: [timed(clients[i].predict, chat_run, api_name="/run_status")[1]
                                        for _ in range(2)]), [])

    # A long run trains while the sessions work: their runs queue behind it.
    blocker = owner.predict(tiny_yaml(folder, "blocker", steps=100_000, methods=("lora",)), api_name="/start_yaml")[0]
    blocker_run = Run.open(blocker, jobs.root)
    end = time.time() + 60
    while not any(e["kind"] == "step" for e in blocker_run.events()) and time.time() < end:
        time.sleep(0.05)
    assert jobs.current() == blocker

    def session(i):
        c = clients[i]
        out = {"latency": []}
        if i % 4 == 0:  # this session builds a task list and starts from the Train form
            rows, _, report = c.predict(api_name="/use_demo_tasks")
            assert [r[1] for r in rows["data"]] == demo_tasks() and "OK: usable as a task." in report
            out["run"] = c.predict(*form(model), api_name="/start")[0]
        else:  # an empty task list of its own, whatever the others added: the form refuses, a YAML goes in
            with pytest.raises(AppError, match="Add at least one task on the Tasks tab"):
                c.predict(*form(model), api_name="/start")
            out["run"] = c.predict(tiny_yaml(folder, f"s{i}", methods=("curlora",)), api_name="/start_yaml")[0]
        st, dt = timed(c.predict, out["run"], api_name="/run_status")
        out["latency"].append(dt)
        assert st["status"] == "queued", st
        out["position"] = st["position"]
        if i % 4 == 1:  # chat while a run trains: it waits for the device (the gate), saying so, then answers
            stamp = {}
            out["chat"] = (stamp, c.submit(chat_run, 2, "the king", 8, 0, 1, 0, api_name="/chat",
                                           result_callbacks=[lambda *_: stamp.setdefault("done", time.time())]))
        for k in range(4):  # what the Train tab's timer does, plus a Runs-tab listing
            _, dt = timed(c.predict, out["run"], api_name="/run_status")
            out["latency"].append(dt)
            if k % 2 == 0:
                _, dt = timed(c.predict, api_name="/list_runs")
                out["latency"].append(dt)
        return out

    done = []
    try:
        done = in_threads(n, session)
        queue = jobs.queued()
        assert jobs.current() == blocker  # everything above was measured while the blocker trained
        runs = [d["run"] for d in done]
        assert sorted(queue) == sorted(runs)
        for d in done:  # each session was told its real place in the queue
            assert d["position"] == queue.index(d["run"]) + 1
        with pytest.raises(AppError, match=r"training\.lrr: unknown key"):  # refused: nothing written
            clients[-1].predict("tasks: [{name: a, train_file: x.csv}]\ntraining: {lrr: 1}", api_name="/start_yaml")
        assert {r.id for r in list_runs(jobs.root)} == before | {blocker, *runs}
    finally:
        owner.predict(blocker, api_name="/stop")
        for rid in [blocker, *jobs.queued()]:
            assert jobs.wait(rid, 240), f"{rid} never finished"
        chat_jobs = [d["chat"] for d in done if "chat" in d]
        answers = [job.result(timeout=240) for _, job in chat_jobs]  # nothing left running in the server

    assert jobs.status(blocker)["status"] == "cancelled"
    for i, d in enumerate(done):
        st = clients[i].predict(d["run"], api_name="/run_status")
        assert st["status"] == "completed", st
        tasks = Run.open(d["run"], jobs.root).metrics()["tasks"]
        assert tasks == (demo_tasks() if i % 4 == 0 else ["sent", "pair"])  # each run got its own session's tasks
    # First in, first out, one at a time: each run starts after the one ahead of it has ended.
    order = [Run.open(r, jobs.root) for r in [blocker, *queue]]
    for a, b in zip(order, order[1:]):
        assert first_event(a, "run_end") <= first_event(b, "run_start")
    # Chat waited for the device while the blocker trained, saying so, then answered between training units.
    freed = first_event(blocker_run, "run_end")
    units = sorted(e["t"] for r in order[1:] for e in r.events() if e["kind"] == "stage")
    waits = []
    for (stamp, job), reply in zip(chat_jobs, answers):
        assert len(reply) == 3 and not any(a.startswith("Waiting for the device") for a in reply)
        waits.append((stamp["done"] - freed, sum(freed < t < stamp["done"] for t in units)))
    # The reply that ran first waited on the device and said so; the other one waited in gradio's one-at-a-time
    # chat group first, and may find the device free.
    assert any(str(o[0]).startswith("Waiting for the device") for _, job in chat_jobs for o in job.outputs())
    busy = [x for d in done for x in d["latency"]]
    assert max(busy) < 30  # a sanity bound only; the numbers go to docs/reliability.md
    print(f"\n[{n} sessions] light event idle: {stats(idle)}; while a run trains: {stats(busy)}; chat replies "
          "done (s after the blocker stopped, training units finished in between): "
          + ", ".join(f"{w:.1f} s/{u} of {len(units)}" for w, u in waits))
    for c in [*clients, owner]:
        c.close()
