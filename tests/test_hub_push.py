"""`python -m curlora push` and the Results tab's "Push to Hub" against a fake hub on loopback (tests/fake_hub.py): the
repo gets the finished stages, a model card written from the run and its numbers; the token (HF_TOKEN) reaches the
hub and nothing else; a refused token (401) and a hub that cannot be reached are one sentence each."""

import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import REPO
from curlora.errors import CurloraError
from curlora.run.store import Run
from curlora.share import hub
from curlora.share.export import cell_text
from fake_hub import fake_hub
from tiny_experiment import finished_run

TOKEN = "hf_fakePushCheck4Kd8Lq2Zx7Wc1Vb9Nm3As5Df"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("push")
    _, run = finished_run(tmp / "exp", tmp / "runs")
    return tmp, run


def push_cli(tmp, run, endpoint, *args, token=TOKEN):
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp / "hf-home"),
           "CURLORA_DATA_DIR": str(run.root), "OMP_NUM_THREADS": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    env.pop("HF_TOKEN", None)
    if token:
        env["HF_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "curlora", "push", run.id, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def last_line(out) -> str:
    """The sentence the CLI ended with (a library may print a warning of its own before it); never a traceback."""
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    return out.stderr.strip().splitlines()[-1]


def no_token_anywhere(tmp, out) -> None:
    assert TOKEN not in out.stdout + out.stderr
    for path in tmp.rglob("*"):
        if path.is_file() and "hf-home" not in path.parts:
            assert TOKEN.encode() not in path.read_bytes(), path


def test_push_one_method_with_a_merged_model_card_and_numbers(finished):
    tmp, run = finished
    with fake_hub() as fake:
        out = push_cli(tmp, run, fake.url, "--repo", "me/tiny-run", "--method", "lora", "--merged")
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"pushed run {run.id} to {fake.url}/me/tiny-run" in out.stdout
    assert any(TOKEN in a for a in fake.auth) and fake.repos == ["me/tiny-run"]  # the hub got the token
    no_token_anywhere(tmp, out)
    files = fake.files["me/tiny-run"]
    for stage in (1, 2):  # every finished stage, in PEFT's layout, byte for byte
        folder = run.adapter_dir("lora", stage)
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            assert files[f"adapters/lora/stage-{stage}/{name}"] == (folder / name).read_bytes()
    assert not any(p.startswith("adapters/curlora") for p in files)  # --method lora only
    assert "merged/lora/config.json" in files and any(p.startswith("merged/lora/model") for p in files)
    assert json.loads(files["metrics.json"]) == run.metrics()
    assert files["config.yaml"].decode() == run.config_yaml

    card = files["README.md"].decode()
    assert card.startswith("---\n") and "library_name: peft" in card
    m = run.record()
    for label, rec in m.methods.items():  # each method's matrix: every cell with its n and interval, as stored
        for i in range(len(rec.matrix)):
            row = " | ".join(cell_text(rec.cell(i, j)) for j in range(len(m.tasks)))
            assert f"| {'base' if i == 0 else m.tasks[i - 1]} | {row} | {rec.ppl[i]:.2f} |" in card, (label, i)
        assert f"{rec.kl_to_base[-1]:.4f}" in card
    assert run.config_yaml.strip() in card and 'subfolder="adapters/lora/stage-2"' in card


def test_push_every_adapter_method_by_default(finished):
    tmp, run = finished
    with fake_hub() as fake:
        out = push_cli(tmp, run, fake.url, "--repo", "team/all-methods")
    assert out.returncode == 0, out.stderr[-3000:]
    files = fake.files["team/all-methods"]
    assert {p.split("/")[1] for p in files if p.startswith("adapters/")} == {"curlora", "lora"}
    assert not any(p.startswith("merged/") for p in files)


def test_a_refused_token_is_one_sentence_without_the_echoed_token(finished):
    tmp, run = finished
    with fake_hub(refuse=True) as fake:
        out = push_cli(tmp, run, fake.url, "--repo", "me/tiny-run")
    assert out.returncode == 2
    assert last_line(out) == (f"error: The hub at {fake.url} refused the token (401 Unauthorized): set a valid "
                              "HF_TOKEN or log in again with `hf auth login`, then push again.")
    assert any(TOKEN in a for a in fake.auth)  # it was sent, and echoed back: and still never shown
    no_token_anywhere(tmp, out)


def test_an_unreachable_hub_is_one_sentence(finished):
    tmp, run = finished
    with socket.socket() as s:  # a port that nothing listens on: connection refused
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    out = push_cli(tmp, run, closed, "--repo", "me/tiny-run")
    assert out.returncode == 2
    assert last_line(out) == (f"error: Could not reach the hub at {closed} (the connection was refused); check the "
                              "network (and HF_ENDPOINT) and push again.")
    out = push_cli(tmp, run, closed, "--repo", "me/tiny-run", token=None)
    assert out.returncode == 2 and last_line(out).startswith("error: No Hugging Face token: set HF_TOKEN")


def test_bad_requests_are_refused_before_anything_is_sent(finished):
    _, run = finished
    with pytest.raises(CurloraError, match="is not a hub repo name"):
        hub.push(run, "not a repo!", token="hf_x")
    with pytest.raises(CurloraError, match=r"has no method 'nope'; its methods: curlora, lora"):
        hub.push(run, "me/x", only="nope", token="hf_x")
    with pytest.raises(CurloraError, match=r"Pushing needs the network, and HF_HUB_OFFLINE=1 is set here"):
        hub.push(run, "me/x", token="hf_x")  # the tests run offline (conftest): nothing leaves this machine


def test_the_results_tab_pushes_through_the_app(finished, monkeypatch):
    gradio_client = pytest.importorskip("gradio_client")
    import huggingface_hub.constants

    from app_server import serving

    tmp, run = finished
    with fake_hub() as fake:
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        with serving(run.root) as (url, _):
            client = gradio_client.Client(url, verbose=False)
            text = client.predict(run.id, "me/from-the-app", "curlora", False, True, api_name="/push_to_hub")
            assert text == f"Pushed run `{run.id}` to [{fake.url}/me/from-the-app]({fake.url}/me/from-the-app)."
            with pytest.raises(Exception, match="is not a hub repo name"):
                client.predict(run.id, "bad name", "", False, True, api_name="/push_to_hub")
    files = fake.files["me/from-the-app"]
    assert "adapters/curlora/stage-2/adapter_config.json" in files and "README.md" in files
    assert TOKEN not in text and Run.open(run.id, run.root).metrics() == json.loads(files["metrics.json"])


def test_a_hosted_app_never_pushes_with_the_servers_token(finished, tmp_path, monkeypatch):
    gradio_client = pytest.importorskip("gradio_client")
    import shutil

    from app_server import serving
    from curlora.serve.hosting import EXAMPLES, Policy, write_owner
    from curlora.serve.jobs import JobManager

    tmp, run = finished
    root = tmp_path / "runs"
    shutil.copytree(run.path, root / run.id, ignore=shutil.ignore_patterns("lock"))
    write_owner(root / run.id, EXAMPLES)  # a shared example: every visitor may read it
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # the server's own token: a visitor's push must not use it
    with serving(root, JobManager(root, policy=Policy(hosted=True))) as (url, _):
        client = gradio_client.Client(url, verbose=False)
        with pytest.raises(Exception, match="Sign in with Hugging Face first"):
            client.predict(run.id, "me/x", "", False, True, api_name="/push_to_hub")
