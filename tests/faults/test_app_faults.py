"""kill -9 of the APP process (python app.py) with a run in progress: while training, during an evaluation and
while an adapter is being saved. A finished stage is never lost, the run shows `interrupted`, resume finishes it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from app_server import free_port
from conftest import REPO
from curlora.experiment import ExperimentConfig
from curlora.measure.scoring import score
from curlora.methods import adapters
from curlora.run.runner import load_everything, resume
from curlora.run.store import Run
from tiny_experiment import make_experiment

gradio_client = pytest.importorskip("gradio_client")
HERE = Path(__file__).resolve().parent


class AppProcess:
    """`python app.py` (through pausing_app.py) in its own process, on a free port, runs under `root`."""

    def __init__(self, root: Path, log: Path, pause: str = ""):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.arm, self.paused = log.with_suffix(".arm"), log.with_suffix(".paused")
        env = {**os.environ, "CURLORA_DATA_DIR": str(root), "GRADIO_SERVER_PORT": str(self.port),
               "OMP_NUM_THREADS": "1", "CURLORA_TEST_PAUSE": pause, "CURLORA_TEST_ARM": str(self.arm),
               "CURLORA_TEST_PAUSED": str(self.paused)}
        env.pop("CURLORA_AUTH", None)
        self.log = log
        self.proc = subprocess.Popen([sys.executable, str(HERE / "pausing_app.py")], cwd=REPO, env=env,
                                     stdout=open(log, "w"), stderr=subprocess.STDOUT)
        self.client = self._connect()

    def _connect(self, timeout: float = 180):
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"the app exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "config", timeout=5).status_code == 200:
                    return gradio_client.Client(self.url, verbose=False)
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.kill()
        raise AssertionError(f"the app did not come up in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def arm_pause(self, nth: int) -> None:
        self.arm.write_text(str(nth))

    def wait_paused(self, timeout: float = 120) -> None:
        wait_for(self.paused.exists, timeout, f"the pause was never reached:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()  # reaped: the pid in status.json is gone, not a zombie

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_for(predicate, timeout: float, what: str):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(what)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("appkill")
    make_experiment(folder)  # the tiny model and task files, written once
    return folder


def experiment(world, steps: int) -> str:
    exp = make_experiment(world, steps=steps, lr=0.05)
    exp["evaluation"]["probe_every"] = 0
    return yaml.safe_dump(exp)


def stage_done(run: Run, method: str, stage: int) -> bool:
    return any(e["kind"] == "stage" and e.get("method") == method and e.get("stage") == stage for e in run.events())


def check_interrupted(run: Run, finished: int) -> dict:
    """The state a kill -9 must leave: interrupted, valid JSONL, `finished` curlora stages whose adapters reload to
    exactly the accuracies logged for them."""
    status = run.status()
    assert status["status"] == "interrupted", status
    lines = (run.path / "events.jsonl").read_text().splitlines()
    for line in lines[:-1]:
        json.loads(line)  # every complete line is valid JSON (only the last one may be torn)
    m = run.metrics()
    assert len(m["methods"]["curlora"]["matrix"]) == finished + 1  # base row + the finished stages
    cfg = ExperimentConfig.from_yaml(run.config_yaml)
    loaded = load_everything(cfg)
    for k in range(1, finished + 1):
        model = adapters.load_adapter(loaded.model, run.adapter_dir("curlora", k))
        accs = [score(model, loaded.tokenizer, t, t.eval, "likelihood", cfg.training.max_length)["accuracy"]
                for t in loaded.tasks]
        adapters.detach(model)
        assert accs == m["methods"]["curlora"]["matrix"][k]
    assert not list(run.path.glob(".*.tmp")) and not list(run.path.glob("*.tmp"))  # no torn metrics/status file
    return m


def shorten(run: Run, steps: int = 3) -> None:
    """Resume runs the config on disk: a short schedule keeps the test quick."""
    cfg = ExperimentConfig.from_yaml(run.config_yaml)
    cfg.training.max_steps = steps
    (run.path / "config.yaml").write_text(cfg.to_yaml())


def check_resumed(run: Run, before: dict) -> None:
    assert run.status()["status"] == "completed", run.status()
    after = run.metrics()
    done = len(before["methods"]["curlora"]["matrix"])
    assert after["methods"]["curlora"]["matrix"][:done] == before["methods"]["curlora"]["matrix"]
    assert all(len(r["matrix"]) == 3 and r["status"] == "completed" for r in after["methods"].values())
    assert not list((run.path / "adapters").rglob("*.partial"))
    for method in ("curlora", "lora"):
        for k in (1, 2):
            assert (run.adapter_dir(method, k) / "adapter_config.json").is_file()


def test_kill_9_of_the_app_while_training_then_the_restarted_app_resumes(world, tmp_path):
    root = tmp_path / "runs"
    app = AppProcess(root, tmp_path / "app1.log")
    try:
        run_id = app.client.predict(experiment(world, steps=150), api_name="/start_yaml")[0]
        waiting = app.client.predict(experiment(world, steps=3), api_name="/start_yaml")[0]  # queued behind it
        assert app.client.predict(waiting, api_name="/run_status")["status"] == "queued"
        run = Run.open(run_id, root)
        wait_for(lambda: any(e["kind"] == "step" and e["stage"] == 2 and e["step"] >= 3 for e in run.events()), 240,
                 "the run never reached curlora's second task")
    finally:
        app.kill()
    before = check_interrupted(run, finished=1)
    assert not run.adapter_dir("curlora", 2).exists()
    # The queue lived in the killed process: the run that waited is interrupted too, with nothing done yet.
    queued = Run.open(waiting, root)
    assert queued.status()["status"] == "interrupted" and not queued.metrics() and not queued.events()

    shorten(run)
    again = AppProcess(root, tmp_path / "app2.log")
    try:
        listed = {r["run"]: r["status"] for r in again.client.predict(api_name="/list_runs")}
        assert listed[run_id] == listed[waiting] == "interrupted"
        again.client.predict(run_id, api_name="/resume")
        again.client.predict(waiting, api_name="/resume")
        wait_for(lambda: all(again.client.predict(r, api_name="/run_status")["status"] in
                             ("completed", "failed", "cancelled") for r in (run_id, waiting)), 240,
                 "the resumed runs never finished")
    finally:
        again.terminate()
    check_resumed(run, before)
    assert queued.status()["status"] == "completed" and len(queued.metrics()["methods"]["lora"]["matrix"]) == 3


def test_kill_9_of_the_app_during_an_evaluation(world, tmp_path):
    root = tmp_path / "runs"
    app = AppProcess(root, tmp_path / "app.log", pause="evaluate")
    try:
        app.arm_pause(3)  # evaluations: base, curlora after task 1, curlora after task 2 <- here
        run_id = app.client.predict(experiment(world, steps=3), api_name="/start_yaml")[0]
        app.wait_paused()
    finally:
        app.kill()
    run = Run.open(run_id, root)
    assert stage_done(run, "curlora", 1) and not stage_done(run, "curlora", 2)
    before = check_interrupted(run, finished=1)
    # Stage 2 was saved before its evaluation began; it is complete on disk but not yet in the metrics.
    assert (run.adapter_dir("curlora", 2) / "adapter_model.safetensors").is_file()
    resume(run_id, root)  # redoes stage 2 and replaces its folder
    check_resumed(run, before)


def test_kill_9_of_the_app_while_an_adapter_is_saved(world, tmp_path):
    root = tmp_path / "runs"
    app = AppProcess(root, tmp_path / "app.log", pause="save")
    try:
        app.arm_pause(2)  # saves: curlora stage 1, curlora stage 2 <- here (files written, not yet renamed)
        run_id = app.client.predict(experiment(world, steps=3), api_name="/start_yaml")[0]
        app.wait_paused()
    finally:
        app.kill()
    run = Run.open(run_id, root)
    partial = run.adapter_dir("curlora", 2).with_name("stage-2.partial")
    assert partial.is_dir() and not run.adapter_dir("curlora", 2).exists()  # the half-done save never took its name
    before = check_interrupted(run, finished=1)
    from curlora.run.chat import pane_choices

    assert pane_choices(run) == {"curlora": [1]}  # chat offers only whole stages
    resume(run_id, root)
    check_resumed(run, before)


def test_sigterm_with_a_queue_stops_cooperatively_and_the_next_start_queues_them_again_in_order(world, tmp_path):
    """What a Space restart sends. Before: the process was gone in 1.2 s, the stage in progress lost, and every
    run read `interrupted` with its queue order gone."""
    root = tmp_path / "runs"
    app = AppProcess(root, tmp_path / "app1.log")
    try:
        first = app.client.predict(experiment(world, steps=60), api_name="/start_yaml")[0]
        waiting = [app.client.predict(experiment(world, steps=3), api_name="/start_yaml")[0] for _ in range(3)]
        for rid in waiting:  # queued on disk, not `running` with the server's pid
            assert json.loads((root / rid / "status.json").read_text())["status"] == "queued"
        assert Run.open(waiting[0], root).status()["status"] == "queued"
        run = Run.open(first, root)
        wait_for(lambda: any(e["kind"] == "step" and e["stage"] == 2 and e["step"] >= 3 for e in run.events()), 240,
                 "the run never reached curlora's second task")
        app.proc.send_signal(signal.SIGTERM)
        assert app.proc.wait(60) == 0, app.log.read_text()[-3000:]
    finally:
        app.kill()
    assert "SIGTERM: stopped; 4 run(s) will be queued again" in app.log.read_text()
    statuses = [Run.open(r, root).status() for r in [first, *waiting]]
    assert [s["status"] for s in statuses] == ["interrupted"] * 4
    assert [s["order"] for s in statuses] == [0, 1, 2, 3] and all(s["requeue"] for s in statuses)
    assert len(run.metrics()["methods"]["curlora"]["matrix"]) == 2  # task 1 finished and kept
    assert not run.is_locked()
    shorten(run)
    again = AppProcess(root, tmp_path / "app2.log")
    try:
        status = again.client.predict(waiting[-1], api_name="/run_status")
        assert status["status"] == "queued"  # re-queued, not lost
        wait_for(lambda: all(again.client.predict(r, api_name="/run_status")["status"] == "completed"
                             for r in [first, *waiting]), 300, "the re-queued runs never finished")
        # …and they ran behind `first`, in their old order (read from the runs' own logs: a queue position read
        # while `first` finishes its 3 steps would race it)
        ends = [max(e["t"] for e in Run.open(r, root).events() if e["kind"] == "run_end") for r in [first, *waiting]]
        assert ends == sorted(ends)
    finally:
        again.terminate()
    check_resumed(run, {"methods": {"curlora": {"matrix": run.metrics()["methods"]["curlora"]["matrix"][:2]}}})


def test_sigterm_during_a_study_requeues_it_as_a_study_and_no_run_is_trained_twice(world, tmp_path):
    """Before: `recover` queued a study as a plain run, and the worker trained the study's whole experiment as one
    run inside the study folder, leaving its plan unfinished."""
    from curlora.run import study as studies
    from curlora.run.store import Study, list_runs

    root = tmp_path / "runs"
    cfg = ExperimentConfig.from_yaml(experiment(world, steps=60))
    study = studies.create(cfg, studies.StudySettings(lrs={"curlora": [0.05], "lora": [0.001]}, seeds=[0]), root)
    study.set_status("cancelled", "made by the test; the app resumes it")
    app = AppProcess(root, tmp_path / "app1.log")
    try:
        app.client.predict(study.id, api_name="/resume")
        first = wait_for(lambda: (studies.read(study)["plan"][0]["run_id"]), 240, "the study never began a run")
        point = Run.open(first, root)
        wait_for(lambda: any(e["kind"] == "step" and e["stage"] == 2 and e["step"] >= 3 for e in point.events()), 240,
                 "the study's first run never reached its second task")
        app.proc.send_signal(signal.SIGTERM)
        assert app.proc.wait(60) == 0, app.log.read_text()[-3000:]
    finally:
        app.kill()
    assert "SIGTERM: stopped; 1 run(s) will be queued again" in app.log.read_text()
    status = study.status()
    assert status["status"] == "interrupted" and status["requeue"], status
    kept = point.metrics()["methods"]["curlora"]["matrix"][:2]
    assert len(point.metrics()["methods"]["curlora"]["matrix"]) == 2  # its first task finished and kept
    for run in (study, point):  # the rest quickly: new points read the study's config, the point its own
        shorten(run)
    again = AppProcess(root, tmp_path / "app2.log")
    try:
        wait_for(lambda: again.client.predict(study.id, api_name="/run_status")["status"] == "completed", 300,
                 f"the re-queued study never finished:\n{again.log.read_text()[-3000:]}")
    finally:
        again.terminate()
    body = studies.read(study)
    assert isinstance(Run.open(study.id, root), Study)
    assert [e["status"] for e in body["plan"]] == ["completed", "completed"] and len(body["points"]) == 2
    assert body["plan"][0]["run_id"] == first  # the interrupted run went on; no second run for that point
    assert not (study.path / "metrics.json").exists() and not (study.path / "adapters").exists()  # never a plain run
    assert {r.id for r in list_runs(root)} == {study.id, *(e["run_id"] for e in body["plan"])}
    stages = [(e["method"], e["stage"]) for e in point.events() if e["kind"] == "stage"]
    assert stages == [("curlora", 1), ("curlora", 2)]  # task 1 trained and measured once, then task 2
    assert point.metrics()["methods"]["curlora"]["matrix"][:2] == kept
