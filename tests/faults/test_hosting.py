"""Hosted mode: no visitor runs code or reads files on the server, and visitors own their runs.

The attacks are the ones tried against the app before hosted mode existed: an uploaded folder loaded as a model with
trust_remote_code (its Python ran inside the app during validation), a task file naming a server file (its content
came back in the error sentence), and a second visitor listing, reading, stopping and deleting the first one's runs.
The payload only writes a marker file; the secret is a file outside the run store."""

import json
import time
from pathlib import Path

import pytest
import yaml

from app_server import serving
from curlora.errors import CurloraError
from curlora.experiment import ExperimentConfig
from curlora.models.remote_code import allow_remote_code
from curlora.serve.hosting import ASSETS, Policy, owner_key, public_message, read_owner
from curlora.serve.jobs import JobManager
from tiny_experiment import tiny_hosted

gradio_client = pytest.importorskip("gradio_client")

SECRET = "hunter2-TOPSECRET-token"


def payload_folder(folder: Path, marker: Path) -> Path:
    """A 'model' whose config.json sends transformers to Python shipped beside it (it writes `marker`)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evil", "auto_map": {"AutoConfig": "configuration_evil.EvilConfig",
                                           "AutoModelForCausalLM": "configuration_evil.EvilConfig"}}))
    (folder / "configuration_evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import PretrainedConfig\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n")
    return folder


@pytest.fixture
def hosted_jobs(tmp_path):
    return JobManager(tmp_path / "runs", policy=Policy(hosted=True))


def test_remote_code_never_runs_locally_without_the_flag_nor_ever_when_hosted(tmp_path, hosted_jobs):
    marker = tmp_path / "ran.txt"
    folder = payload_folder(tmp_path / "upload", marker)
    cfg = ExperimentConfig.from_dict({**tiny_hosted(name=str(folder), trust_remote_code=True)})
    local = JobManager(tmp_path / "local-runs", policy=Policy(hosted=False))
    with pytest.raises(CurloraError, match="not started with --trust-remote-code"):
        local.submit(cfg)
    with pytest.raises(CurloraError, match="trust_remote_code is not allowed on this server"):
        hosted_jobs.submit(cfg)
    allow_remote_code(True)  # even a process started with the flag refuses it when hosted
    try:
        with pytest.raises(CurloraError, match="not allowed on this server"):
            hosted_jobs.submit(cfg)
    finally:
        allow_remote_code(False)
    # Without trust_remote_code, an upload folder is still no model when hosted: folders are refused by name.
    plain = ExperimentConfig.from_dict(tiny_hosted(name=str(folder)))
    with pytest.raises(CurloraError, match="folders on the server cannot be used here"):
        hosted_jobs.submit(plain)
    assert not marker.exists()
    assert not (tmp_path / "runs").exists() and not (tmp_path / "local-runs").exists()  # nothing written


def test_the_model_loader_itself_refuses_remote_code_without_the_flag(tmp_path):
    from curlora.models.loading import describe_model, load_model

    marker = tmp_path / "ran.txt"
    folder = payload_folder(tmp_path / "m", marker)
    for call in (load_model, describe_model):
        with pytest.raises(CurloraError, match="--trust-remote-code"):
            call(str(folder), trust_remote_code=True)
    assert not marker.exists()


@pytest.mark.parametrize("key", ["train_file", "eval_file", "probe_text"])
def test_a_server_file_is_never_read_and_its_existence_not_told(tmp_path, hosted_jobs, key):
    secret = tmp_path / "secret.env"
    secret.write_text(f"TOKEN,label\n{SECRET},1\n{SECRET},0\n")
    messages = []
    for path in (secret, tmp_path / "no-such.env", ASSETS / ".." / ".." / secret.name,
                 f"bundled:../../{secret.name}"):
        data = tiny_hosted()
        if key == "probe_text":
            data["evaluation"]["probe_text"] = str(path)
        else:
            data["tasks"][0][key] = str(path)
        with pytest.raises(CurloraError) as err:
            hosted_jobs.submit(ExperimentConfig.from_dict(data))
        text = str(err.value)
        assert SECRET not in text and str(tmp_path) not in text and "only your own uploads" in text
        messages.append(text.replace(Path(str(path)).name, "NAME"))
    assert len(set(messages)) == 1, messages  # a path that exists reads exactly like one that doesn't
    assert not (tmp_path / "runs").exists()


def test_uploads_are_checked_before_kept_stored_once_and_go_with_the_last_run(tmp_path):
    policy = Policy(hosted=True)
    root = tmp_path / "runs"
    owner = owner_key("workspace", "a" * 32)
    good = tmp_path / "good.csv"
    good.write_text("text,label\n" + "".join(f"row {i} is fine,{i % 2}\n" for i in range(20)))
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\x00\x01binary")

    from curlora.data.csvfile import read_table

    with pytest.raises(CurloraError):
        policy.keep_upload(bad, root, owner, validate=read_table)
    assert not (root / ".owners").exists() or not any((root / ".owners").rglob("*.csv"))
    first = policy.keep_upload(good, root, owner, validate=read_table)
    renamed = tmp_path / "other-name.csv"
    renamed.write_bytes(good.read_bytes())
    assert policy.keep_upload(renamed, root, owner, validate=read_table) == first  # one copy per content
    other = policy.keep_upload(good, root, owner_key("workspace", "b" * 32))
    assert other != first and other.read_bytes() == first.read_bytes()  # owners never share a file
    assert policy.resolve_path("upload:good.csv", root, owner) == str(first)
    with pytest.raises(CurloraError, match="no upload named 'missing.csv' of yours"):
        policy.resolve_path("upload:missing.csv", root, owner)
    policy.limits.upload_mb = 0.0001
    with pytest.raises(CurloraError, match="Upload size: 'good.csv' is .* the limit here is 0.0001 MB"):
        policy.keep_upload(good, root, owner)


def test_error_sentences_lose_absolute_paths():
    text = ("/data/runs/.owners/0123/uploads/ab12/sent.csv: line 3 has 4 cells; "
            "'/srv/app/assets/tasks/x/train.csv' is a folder, and No run 'r' in /data/runs.")
    assert public_message(text) == ("sent.csv: line 3 has 4 cells; 'train.csv' is a folder, and No run 'r' in "
                                    "runs.")


# -- two visitors against one hosted server ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hosted")
    mp = pytest.MonkeyPatch()
    mp.setenv("CURLORA_MULTI_USER", "1")
    try:
        with serving(folder / "runs") as (url, jobs):
            assert jobs.policy.hosted
            yield url, jobs, folder
    finally:
        mp.undo()


def refused(client, *args, api_name):
    with pytest.raises(gradio_client.exceptions.AppError) as err:
        client.predict(*args, api_name=api_name)
    return str(err.value)


def test_two_visitors_see_and_touch_only_their_own_runs(server):
    url, jobs, folder = server
    alice, bob = gradio_client.Client(url, verbose=False), gradio_client.Client(url, verbose=False)
    rid = alice.predict(yaml.safe_dump(tiny_hosted()), api_name="/start_yaml")[0]
    assert jobs.wait(rid, timeout=300)
    assert alice.predict(rid, api_name="/run_status")["status"] == "completed"
    assert read_owner(jobs.root / rid) not in (None, "local")
    assert [r["run"] for r in alice.predict(api_name="/list_runs")] == [rid]
    assert bob.predict(api_name="/list_runs") == []

    unknown = "20990101-000000-visitor-ffff"
    probe = (folder / "probe.txt")
    probe.write_text("And the king said unto them, " * 20)
    calls = {
        "/results": (), "/run_status": (), "/stop": (), "/resume": (), "/rerun": (),
        "/delete": (True,), "/chat": (1, "the king", 4, 0, 1, 0),
        "/evaluate": ("lora", 1, gradio_client.handle_file(str(probe))),
        "/export_metrics_csv": (), "/export_metrics_json": (), "/export_results_md": (),
        "/export_adapters_zip": (), "/export_merged_zip": (),
    }
    for api, rest in calls.items():
        theirs = refused(bob, rid, *rest, api_name=api)
        nobody = refused(bob, unknown, *rest, api_name=api)
        assert theirs.replace(rid, "ID") == nobody.replace(unknown, "ID"), api  # exactly as an unknown id
        assert "No run" in theirs, (api, theirs)
    # Alice still has everything, untouched.
    assert jobs.status(rid, read_owner(jobs.root / rid))["status"] == "completed"
    header, summary, *_ = alice.predict(rid, api_name="/results")
    assert [row[0] for row in summary["data"]] == ["curlora", "lora"]
    exported = Path(alice.predict(rid, api_name="/export_adapters_zip"))
    import zipfile

    with zipfile.ZipFile(exported) as z:
        config = z.read(f"{rid}/config.yaml").decode()
    assert "bundled:tasks/testament/train.csv" in config and str(jobs.root) not in config and str(ASSETS) not in config
    # Nor through gradio's file route: nothing under the run store is served by its path, her export included.
    import httpx

    zips = list(jobs.root.rglob("*.zip"))
    assert zips
    for path in (jobs.root / rid / "config.yaml", jobs.root / rid / "metrics.json", *zips):
        assert httpx.get(f"{url}gradio_api/file={path}").status_code == 403, path
    assert alice.predict(rid, 1, "the king", 4, 0, 1, 0, api_name="/chat")[0]


def test_a_visitor_yaml_naming_server_paths_or_remote_code_is_refused_with_nothing_written(server):
    url, jobs, folder = server
    before = sorted(p.name for p in jobs.root.iterdir()) if jobs.root.exists() else []
    client = gradio_client.Client(url, verbose=False)
    marker = folder / "ran.txt"
    evil = payload_folder(folder / "evil", marker)
    for data, expect in [
        (tiny_hosted(name=str(evil), trust_remote_code=True), "not allowed on this server"),
        (tiny_hosted(name=str(evil)), "folders on the server cannot be used here"),
        ({**tiny_hosted(), "tasks": [{"name": "t", "train_file": "/etc/passwd"}]}, "only your own uploads"),
    ]:
        message = refused(client, yaml.safe_dump(data), api_name="/start_yaml")
        assert expect in message and "/etc" not in message and str(folder) not in message
    assert not marker.exists()
    assert sorted(p.name for p in jobs.root.iterdir()) == before


def test_a_shared_example_is_readable_by_every_visitor_and_changeable_by_none(tmp_path, monkeypatch):
    from curlora.cli.main import main
    from curlora.run.store import Run

    root = tmp_path / "runs"
    monkeypatch.setenv("CURLORA_DATA_DIR", str(root))
    run = Run.create("model: {name: kjv-llama-5m}\n", root=root)
    run.set_status("completed", "finished")
    jobs = JobManager(root, policy=Policy(hosted=True))
    visitor = owner_key("session", "anyone")
    assert jobs.runs(visitor) == []  # a CLI run belongs to the local user: no visitor sees it
    assert main(["share", run.id]) == 0
    assert [r.id for r in jobs.runs(visitor)] == [run.id] and jobs.status(run.id, visitor)["status"] == "completed"
    for change in (jobs.cancel, jobs.delete, jobs.resume):
        with pytest.raises(CurloraError, match="is a shared example: it can be read"):
            change(run.id, visitor)
    assert main(["share", run.id, "--off"]) == 0 and jobs.runs(visitor) == []


def test_the_cli_runs_remote_code_only_with_its_flag(tmp_path, monkeypatch, capsys):
    from curlora.cli.main import main

    marker = tmp_path / "ran.txt"
    folder = payload_folder(tmp_path / "m", marker)
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump(tiny_hosted(name=str(folder), trust_remote_code=True)))
    monkeypatch.setenv("CURLORA_DATA_DIR", str(tmp_path / "runs"))
    assert main(["run", str(exp)]) == 2
    assert "not started with --trust-remote-code" in capsys.readouterr().err and not marker.exists()


def test_per_visitor_and_global_limits_are_refused_with_their_sentence(tmp_path):
    from curlora.serve.limits import Limits

    limits = Limits(runs_per_visitor=1, queue_length=2)
    jobs = JobManager(tmp_path / "runs", policy=Policy(hosted=True, limits=limits))
    alice, bob, carol = (owner_key("session", n) for n in ("alice", "bob", "carol"))
    long = tiny_hosted()
    long["training"]["max_steps"] = 400
    first = jobs.submit(ExperimentConfig.from_dict(long), alice)
    with pytest.raises(CurloraError, match=r"^Runs per visitor: you have 1 run\(s\) training or queued, the limit "
                                           r"here is 1; wait for one to finish or stop one\.$"):
        jobs.submit(ExperimentConfig.from_dict(tiny_hosted()), alice)
    second = jobs.submit(ExperimentConfig.from_dict(tiny_hosted()), bob)
    with pytest.raises(CurloraError, match=r"^Queue length: 2 runs are training or queued on this server, the "
                                           r"limit here is 2; try again when one has finished\.$"):
        jobs.submit(ExperimentConfig.from_dict(tiny_hosted()), carol)
    assert len([p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]) == 2  # nothing written
    jobs.cancel(first, alice)
    jobs.cancel(second, bob)
    assert jobs.wait(first, 120) and jobs.wait(second, 120)


def test_a_visitor_over_their_store_quota_loses_their_oldest_finished_runs_first(tmp_path):
    from curlora.serve.limits import Limits

    root = tmp_path / "runs"
    jobs = JobManager(root, policy=Policy(hosted=True, limits=Limits()))
    alice, bob = owner_key("session", "alice"), owner_key("session", "bob")
    old = [jobs.submit(ExperimentConfig.from_dict(tiny_hosted()), alice) for _ in range(2)]
    theirs = jobs.submit(ExperimentConfig.from_dict(tiny_hosted()), bob)
    for rid in (*old, theirs):
        assert jobs.wait(rid, 300)
    from curlora.serve.jobs import folder_bytes

    one = folder_bytes(root / old[0])
    jobs.policy.limits.store_mb_per_visitor = (one * 1.5) / 1e6  # room for one run of hers, not two
    notices = []
    new = jobs.submit(ExperimentConfig.from_dict(tiny_hosted()), alice, notices)
    assert not (root / old[0]).exists() and (root / old[1]).exists() and (root / theirs).exists()
    assert notices == [f"Deleted your oldest run {old[0]} ({one / 1e6:.1f} MB) to stay within the "
                       f"{jobs.policy.limits.store_mb_per_visitor:g} MB each visitor may store here."]
    assert jobs.wait(new, 300)
    jobs.policy.limits.store_mb_total = 0.001
    with pytest.raises(CurloraError, match=r"^Stored runs in total: this server's run store holds \d+ MB, the "
                                           r"limit here is 0.001 MB; try again after older runs are deleted\.$"):
        jobs.submit(ExperimentConfig.from_dict(tiny_hosted()), bob)


def test_device_actions_per_hour_per_visitor_and_for_the_anonymous_pool():
    """A time estimate, an evaluation or an export holds the device outside the run queue: a visitor gets
    device_actions_per_hour of them in any hour, those not signed in a pool together, and a refused one counts
    against nothing."""
    from curlora.serve.hosting import client_of
    from curlora.serve.limits import HOSTED, Limits

    assert (HOSTED["device_actions_per_hour"], HOSTED["device_actions_per_hour_anonymous"]) == (20, 60)
    policy = Policy(hosted=True, limits=Limits(device_actions_per_hour=2, device_actions_per_hour_anonymous=3))
    alice, bob = owner_key("user", "alice"), owner_key("user", "bob")
    policy.allow_device(alice, now=0.0)
    policy.allow_device(alice, now=600.0)
    with pytest.raises(CurloraError, match=r"^Time estimates, evaluations and exports per hour: the limit here is 2; try again in 50 min\.$"):
        policy.allow_device(alice, now=600.0)
    policy.allow_device(bob, now=600.0)  # every visitor has their own
    policy.allow_device(alice, now=3600.0)  # the first is an hour old
    policy.allow_chat(alice, now=3600.0)  # chat is counted apart
    walkers = [client_of(None, f"10.1.{i}.1", True) for i in range(4)]  # four addresses, none signed in
    for w in walkers[:3]:
        policy.allow_device(w, now=100.0)
    with pytest.raises(CurloraError, match=r"not signed in: the limit here is 3; try again in 59 min \(or sign in"):
        policy.allow_device(walkers[3], now=160.0)
    policy.allow_device(walkers[3], now=3700.0)  # the pool's first three are an hour old


def test_chat_replies_per_minute():
    from curlora.serve.limits import Limits

    policy = Policy(hosted=True, limits=Limits(chat_per_minute=2))
    alice, bob = owner_key("session", "alice"), owner_key("session", "bob")
    policy.allow_chat(alice, now=0.0)
    policy.allow_chat(alice, now=10.0)
    with pytest.raises(CurloraError, match=r"^Chat replies per minute: the limit here is 2; try again in 50 s\.$"):
        policy.allow_chat(alice, now=10.0)
    policy.allow_chat(bob, now=10.0)  # every visitor has their own
    policy.allow_chat(alice, now=60.0)  # the first reply is a minute old
