"""Hosting, round two (issue 31), the low items: each refused or fixed with its sentence."""

import os
import time

import pytest

from curlora.errors import CurloraError
from curlora.experiment import ExperimentConfig
from curlora.run.store import Run
from curlora.serve.hosting import EXAMPLES, Client, LoginGuard, Policy, owner_key, read_owner, share, unshare, write_owner
from curlora.serve.jobs import JobManager


def hosted_dict(**model) -> dict:
    return {"model": {"name": "kjv-llama-5m", **model},
            "tasks": [{"name": "testament", "train_file": "bundled:tasks/testament/train.csv",
                       "eval_file": "bundled:tasks/testament/eval.csv", "max_train_rows": 16, "max_eval_rows": 8}],
            "methods": [{"kind": "curlora", "r": 2}],
            "training": {"max_steps": 1, "batch_size": 2, "max_length": 32, "lr": 0.01},
            "evaluation": {"eval_rows": 4, "self_probe": False, "ppl_max_tokens": 128, "ppl_window": 64,
                           "ppl_stride": 64}}


def test_11_the_compare_tabs_default_grid_fits_the_train_forms_default_methods():
    pytest.importorskip("gradio")
    from curlora.run import study as studies
    from curlora.ui.compare_tab import default_grids, parse_grids
    from curlora.ui.train_tab import DEFAULT_METHODS

    grids = parse_grids(default_grids())
    assert sorted(grids) == sorted(DEFAULT_METHODS)
    cfg = ExperimentConfig.from_dict({**hosted_dict(), "methods": [{"kind": k} for k in DEFAULT_METHODS]})
    planned = studies.plan_settings(cfg, studies.StudySettings(lrs=grids, seeds=[0, 1]))  # no refusal
    assert sorted(planned.lrs) == sorted(DEFAULT_METHODS)


@pytest.mark.parametrize("name", ["app.py", "curlora", "tests", "no-such-thing"])
def test_12_hosted_a_hub_id_shaped_name_is_never_looked_up_on_the_server(tmp_path, name, monkeypatch):
    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))  # the repo: app.py exists here
    jobs = JobManager(tmp_path / "runs", policy=Policy(hosted=True))
    with pytest.raises(CurloraError) as err:
        jobs.submit(ExperimentConfig.from_dict(hosted_dict(name=name)), owner_key("user", "a"))
    text = str(err.value)
    assert text == (f"'{name}' is not a bundled name or a local folder, and it is not in the Hugging Face cache while "
                    "the hub is offline (HF_HUB_OFFLINE=1); download it once with network access, or choose the "
                    "bundled model or a local folder.")  # the same whether a file or folder of that name exists


def test_13_the_probe_source_names_no_server_path(tmp_path):
    from curlora.paths import ASSETS
    from curlora.run.runner import source_name

    assert source_name(ASSETS / "models" / "kjv-llama-5m" / "probe.txt") == "bundled:models/kjv-llama-5m/probe.txt"
    upload = tmp_path / "runs" / ".owners" / ("a" * 32) / "uploads" / "0123456789abcdef" / "my.txt"
    upload.parent.mkdir(parents=True)
    upload.write_text("hello")
    assert source_name(upload) == "upload:my.txt"
    assert source_name(tmp_path / "local.txt") == str(tmp_path / "local.txt")  # locally the path is kept


def test_14_share_off_gives_the_run_back_to_its_owner(tmp_path):
    run = Run.create("model: {name: kjv-llama-5m}\n", root=tmp_path)
    visitor = owner_key("user", "al")
    write_owner(run.path, visitor)
    share(run.path)
    assert read_owner(run.path) == EXAMPLES
    share(run.path)  # twice changes nothing
    assert unshare(run.path) == visitor and read_owner(run.path) == visitor


@pytest.mark.parametrize("group", ["../x", "a/b", "/etc", "..", "x" * 200])
def test_15_run_group_is_a_name_not_a_path(group):
    with pytest.raises(CurloraError) as err:
        ExperimentConfig.from_dict({**hosted_dict(), "run": {"group": group}})
    assert str(err.value).startswith("run.group: ") and "use letters, digits, '.', '_' and '-' only" in str(err.value)
    assert ExperimentConfig.from_dict({**hosted_dict(), "run": {"group": "20261206-010203-study-ab12"}})


def test_16_mcp_wrong_logins_back_off():
    guard = LoginGuard()
    who = Client(owner_key("address", "203.0.113.7"), pooled=True)
    for i in range(LoginGuard.FREE):
        guard.check(who, now=100.0)
        guard.failed(who, now=100.0)
    guard.check(who, now=100.0)  # five wrong tries cost nothing yet
    guard.failed(who, now=100.0)
    with pytest.raises(CurloraError, match="Too many wrong logins from here: try again in 1 s."):
        guard.check(who, now=100.5)
    tries, now = 0, 101.0
    while now < 160.0:  # a minute of guessing as fast as the lock allows
        try:
            guard.check(who, now=now)
            guard.failed(who, now=now)
            tries += 1
        except CurloraError:
            pass
        now += 0.05
    assert tries <= 7  # 100 guesses took 7.7 s before
    guard.check(Client(owner_key("address", "198.51.100.1"), pooled=True), now=now)  # another address is not locked


def test_17_listing_a_visitors_runs_reads_no_other_owner_file_twice(tmp_path, monkeypatch):
    jobs = JobManager(tmp_path, policy=Policy(hosted=True))
    mine = owner_key("user", "me")
    for i in range(30):
        run = Run.create("model: {name: kjv-llama-5m}\n", root=tmp_path)
        write_owner(run.path, mine if i == 0 else owner_key("user", f"other{i}"))
    assert len(jobs.runs(mine)) == 1
    import curlora.serve.jobs as jobs_module

    reads = []
    real = jobs_module.read_owner
    monkeypatch.setattr(jobs_module, "read_owner", lambda p: reads.append(p) or real(p))
    assert len(jobs.runs(mine)) == 1 and reads == []  # the second listing stats, it does not read


def test_18_a_run_whose_status_could_not_be_stored_reads_as_its_logged_failure(tmp_path):
    run = Run.create("model: {name: kjv-llama-5m}\n", root=tmp_path)
    run.set_status("running", "")
    sentence = ("The disk is full: run x stopped; free some space and resume the run (finished stages are kept).")
    run.log("run_end", status="failed", message=sentence)
    import json
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    body = json.loads((run.path / "status.json").read_text())
    body["pid"] = int(gone.stdout)  # the process that trained it is gone, and its status still says running
    (run.path / "status.json").write_text(json.dumps(body))
    st = run.status()
    assert st["status"] == "failed" and st["message"] == sentence


def test_18_a_probe_text_that_is_a_device_is_named_as_such(tmp_path):
    from curlora.run.runner import probe_missing

    assert str(probe_missing(type(tmp_path)("/dev/zero"))) == (
        "evaluation.probe_text: /dev/zero is not a regular text file (a folder, a device or a pipe); give the path "
        "of a .txt file.")
    assert str(probe_missing(tmp_path / "none.txt")).endswith("none.txt does not exist.")


def test_the_study_form_refuses_a_huge_grid_text_before_parsing_it(tmp_path, monkeypatch):
    gradio_client = pytest.importorskip("gradio_client")
    from app_server import serving

    monkeypatch.setenv("CURLORA_MULTI_USER", "1")
    with serving(tmp_path / "runs") as (url, jobs):
        client = gradio_client.Client(url, verbose=False)
        info = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/start_study"]
        args = [p.get("parameter_default") for p in info["parameters"]]
        args[0], args[1] = "curlora=" + ",".join(["0.001"] * 2000), "0"
        with pytest.raises(gradio_client.exceptions.AppError) as err:
            client.predict(*args, api_name="/start_study")
        assert str(err.value).startswith("The learning-rate grids are 12,007 characters long; the limit here is 2,000")
