"""Every event with an api_name, through gradio_client against the app running in this process."""

import time
from pathlib import Path

import pytest
import yaml

from app_server import serving
from tiny_experiment import make_experiment

gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    folder = tmp_path_factory.mktemp("app")
    with serving(folder / "runs") as (url, jobs):
        yield gradio_client.Client(url, verbose=False), folder, jobs


def experiment_yaml(folder: Path, steps: int) -> str:
    return yaml.safe_dump(make_experiment(folder / "exp", steps=steps, lr=0.2))


def start(client, text: str) -> str:
    run_id = client.predict(text, api_name="/start_yaml")[0]
    assert run_id
    return run_id


def follow(client, run_id, until=("completed", "failed", "cancelled"), timeout=120) -> list[dict]:
    seen = []
    end = time.time() + timeout
    while time.time() < end:
        st = client.predict(run_id, api_name="/run_status")
        seen.append(st)
        if st["status"] in until:
            return seen
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} never reached {until}: last {seen[-1]['status']}")


def test_quick_run_progresses_to_completed_and_its_results_and_exports_agree(app):
    client, folder, _ = app
    run_id = start(client, experiment_yaml(folder, steps=3))
    seen = follow(client, run_id)
    assert seen[-1]["status"] == "completed", seen[-1]
    counts = [s["events"] for s in seen]
    assert counts == sorted(counts) and counts[-1] > counts[0]  # updates streamed while it ran
    metrics = seen[-1]["metrics"]
    assert set(metrics["methods"]) == {"curlora", "lora"}
    header, summary, text, *figures = client.predict(run_id, api_name="/results")
    assert [row[0] for row in summary["data"]] == ["curlora", "lora"]
    acc = metrics["methods"]["curlora"]["summary"]["acc"]
    assert summary["data"][0][2] == f"{100 * acc:.1f}"  # the table shows the stored number
    assert "scoring: likelihood" in text and "likelihood" in header
    csv_path = client.predict(run_id, api_name="/export_metrics_csv")
    assert Path(csv_path).read_text().startswith("method,kind,stage,after_task,acc:sent,acc:pair")
    zip_path = client.predict(run_id, api_name="/export_adapters_zip")
    assert Path(zip_path).suffix == ".zip" and Path(zip_path).stat().st_size > 1000
    with pytest.raises(gradio_client.exceptions.AppError, match="already completed"):
        client.predict(run_id, api_name="/resume")
    # Chat: three panes, three different answers, each from its own weights.
    base, lora, curlora = client.predict(run_id, 2, "the king", 16, 0, 1, 0, api_name="/chat")
    assert len({base, lora, curlora}) == 3
    again = client.predict(run_id, 1, "the king", 16, 0, 1, 0, api_name="/chat")
    assert again[0] == base  # the base pane is the base model whatever the stage
    # Evaluate a finished stage on new data: a task CSV gives an accuracy, a .txt a perplexity; stage 0 is the base.
    lora_acc = client.predict(run_id, "lora", 2, gradio_client.handle_file(str(folder / "exp" / "sent.csv")),
                              api_name="/evaluate")
    assert "**lora** after task 2 on **sent**: accuracy" in lora_acc and "over 60 rows" in lora_acc
    from curlora.run.evaluate import evaluate_stage

    direct = evaluate_stage(run_id, "lora", 2, task_file=str(folder / "exp" / "sent.csv"), root=folder / "runs")
    assert f"**{100 * direct['accuracy']:.1f} %**" in lora_acc  # the engine's number, as `curlora eval` gives it
    base_ppl = client.predict(run_id, "lora", 0, gradio_client.handle_file(str(folder / "exp" / "probe.txt")),
                              api_name="/evaluate")
    assert base_ppl.startswith("the base model on **probe.txt**: perplexity")
    with pytest.raises(gradio_client.exceptions.AppError, match="Upload a task CSV"):
        client.predict(run_id, "lora", 1, None, api_name="/evaluate")
    bad = folder / "bad.csv"
    bad.write_text("text,label\nonly one class,1\nstill one,1\n")
    with pytest.raises(gradio_client.exceptions.AppError, match="bad.csv"):
        client.predict(run_id, "lora", 1, gradio_client.handle_file(str(bad)), api_name="/evaluate")
    # The merged models: each method's last stage folded in, loadable with transformers alone.
    import zipfile

    merged = client.predict(run_id, api_name="/export_merged_zip")
    with zipfile.ZipFile(merged) as z:
        names = z.namelist()
    assert f"{run_id}/merged/curlora/model.safetensors" in names and f"{run_id}/merged/lora/config.json" in names
    # What holds the device outside the run queue draws from one allowance: an evaluation, then a refused export
    jobs = app[2]
    jobs.policy.limits.device_actions_per_hour = 1
    try:
        client.predict(run_id, "lora", 0, gradio_client.handle_file(str(folder / "exp" / "probe.txt")),
                       api_name="/evaluate")
        for api, args in (("/export_merged_zip", (run_id,)), ("/export_stage", (run_id, "lora", 1, "lora"))):
            with pytest.raises(gradio_client.exceptions.AppError,
                               match=r"Time estimates, evaluations and exports per hour: the limit here is 1"):
                client.predict(*args, api_name=api)
    finally:
        jobs.policy.limits.device_actions_per_hour = None
    # chat replies have their own allowance (Engine.allow_chat): one a minute here, so the second is refused
    jobs.policy.limits.chat_per_minute = 1
    try:
        assert client.predict(run_id, 1, "the king", 4, 0, 1, 0, api_name="/chat")[0]
        with pytest.raises(gradio_client.exceptions.AppError,
                           match=r"Chat replies per minute: the limit here is 1; try again in"):
            client.predict(run_id, 1, "the king", 4, 0, 1, 0, api_name="/chat")
    finally:
        jobs.policy.limits.chat_per_minute = None


def test_stop_cancels_a_running_run_and_delete_asks_for_confirmation(app):
    client, folder, jobs = app
    run_id = start(client, experiment_yaml(folder, steps=300))
    follow(client, run_id, until=("running",))
    end = time.time() + 60
    while not any(e["kind"] == "step" for e in jobs_events(jobs, run_id)) and time.time() < end:
        time.sleep(0.1)
    client.predict(run_id, api_name="/stop")
    seen = follow(client, run_id)
    assert seen[-1]["status"] == "cancelled"
    steps = [e["step"] for e in jobs_events(jobs, run_id) if e["kind"] == "step"]
    assert steps and max(steps) < 300
    listed = {r["run"]: r["status"] for r in client.predict(api_name="/list_runs")}
    assert listed[run_id] == "cancelled"
    with pytest.raises(gradio_client.exceptions.AppError, match="Yes, delete it"):
        client.predict(run_id, False, api_name="/delete")
    client.predict(run_id, True, api_name="/delete")
    assert run_id not in {r["run"] for r in client.predict(api_name="/list_runs")}


def jobs_events(jobs, run_id):
    from curlora.run.store import Run

    return Run.open(run_id, jobs.root).events()


def form(model: str, steps: int = 1, comparison: str = "equal_lr", target=None, curlora_lr=None) -> list:
    """The Train tab's widgets in order (see train_tab.build: methods, targets, CURLoRA, LoRA, training, eval, model,
    comparison, CURLoRA's own learning rate)."""
    return [["curlora", "lora"], "q_proj, v_proj", 4, 1.0, "inverted", 0, 4, None, 0.0, steps, 0.05, 8, 64,
            "likelihood", 0, 8, "form", model, "auto", "cpu", comparison, target, curlora_lr]


def test_errors_arrive_as_the_engines_sentence(app):
    client, folder, _ = app
    with pytest.raises(gradio_client.exceptions.AppError, match=r"training\.lrr: unknown key\. Did you mean 'lr'"):
        client.predict("tasks: [{name: a, train_file: x.csv}]\ntraining: {lrr: 1}", api_name="/start_yaml")
    with pytest.raises(gradio_client.exceptions.AppError, match="No run 'nope'"):
        client.predict("nope", api_name="/run_status")
    with pytest.raises(gradio_client.exceptions.AppError, match="Add at least one task"):
        client.predict(*form("x"), api_name="/start")


def test_the_train_form_runs_the_demo_tasks(app):
    client, folder, _ = app
    rows, note, report = client.predict(api_name="/use_demo_tasks")
    assert [r[1] for r in rows["data"]] == ["testament", "reviews", "answers"] and "OK: usable as a task." in report
    with pytest.raises(gradio_client.exceptions.AppError, match="'/no/such/model'"):
        client.predict(*form("/no/such/model"), api_name="/start")
    make_experiment(folder / "exp")  # the tiny model folder
    run_id = client.predict(*form(str(folder / "exp" / "model"), curlora_lr=0.5), api_name="/start")[0]
    seen = follow(client, run_id, timeout=240)
    assert seen[-1]["status"] == "completed", seen[-1]
    assert seen[-1]["metrics"]["tasks"] == ["testament", "reviews", "answers"]
    lrs = {k: {t["lr"] for t in rec["train"]} for k, rec in seen[-1]["metrics"]["methods"].items()}
    assert lrs == {"curlora": {0.5}, "lora": {0.05}}  # CURLoRA's own rate from the form; LoRA the shared one
    # matched_loss from the form: LoRA sets each task's target, so it is moved to train first.
    # The empty target box shows and sends 0: that means "LoRA sets the target", not a target loss of 0.
    matched = client.predict(*form(str(folder / "exp" / "model"), comparison="matched_loss", target=0),
                             api_name="/start")[0]
    from curlora.experiment import ExperimentConfig
    from curlora.run.store import Run

    cfg = ExperimentConfig.from_yaml(Run.open(matched, folder / "runs").config_yaml)
    assert cfg.training.comparison == "matched_loss" and cfg.training.matched_loss_reference == "lora"
    assert cfg.training.target_loss is None
    assert [m.label for m in cfg.methods] == ["lora", "curlora"]
    client.predict(matched, api_name="/stop")
    assert follow(client, matched, timeout=240)[-1]["status"] in ("cancelled", "completed")  # the job thread is done


def test_chat_waits_for_the_device_while_a_training_stage_holds_it(app):
    """Training units, evaluations and chat replies share one gate: a reply asked for during a stage says what it
    waits for, then answers once the stage lets go."""
    client, folder, jobs = app
    run_id = start(client, experiment_yaml(folder, steps=2))
    assert follow(client, run_id)[-1]["status"] == "completed"
    jobs.gate.acquire("a training stage of run x")
    try:
        job = client.submit(run_id, 1, "the king", 4, 0, 1, 0, api_name="/chat")
        end = time.time() + 30
        while time.time() < end and not any("Waiting for the device" in out[0] for out in job.outputs()):
            time.sleep(0.1)
        assert any(out[0].startswith("Waiting for the device: a training stage of run x") for out in job.outputs())
    finally:
        jobs.gate.release()
    answer = job.result(timeout=60)
    assert answer[0] and "Waiting" not in answer[0]
    assert jobs.gate.holder is None and jobs.gate.acquire("check", timeout=1)  # the reply gave the gate back
    jobs.gate.release()
