"""A hub token in the environment (HF_TOKEN) never reaches a run folder, the console or an error sentence.

One process runs the CLI with HF_TOKEN=hf_fake…: a tiny run on a local model, `list` and `show`, then `run` with hub
models that fail in every way a hub can fail, against a fake hub on loopback (HF_ENDPOINT) that echoes the token it
receives back in its error bodies and headers, as a buggy proxy or a hostile mirror would. The fake hub must have
seen the token (or the test proves nothing); the token must appear in no file of the data dir and nowhere in the
output.
"""

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from conftest import REPO
from tiny_experiment import make_experiment

TOKEN = "hf_fakeLeakCheck7Qz1x9Vw3Rt5Yu8Io2Pa4Sd6Fg"
SHA = "0123456789abcdef0123456789abcdef01234567"
HUB_MODELS = ["leak-org/echo500", "leak-org/missing", "leak-org/gated", "leak-org/files"]


class FakeHub(BaseHTTPRequestHandler):
    seen: list[str] = []

    def log_message(self, *args):  # quiet
        pass

    def reply(self, code: int, body: dict, **headers) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_GET(self):
        auth = self.headers.get("Authorization", "")
        FakeHub.seen.append(auth)
        echo = f"server trouble for {auth}"  # the token comes back in every error
        path = self.path.split("?")[0]
        if path.startswith("/api/models/leak-org/files"):
            self.reply(200, {"id": "leak-org/files", "sha": SHA, "private": False, "gated": False,
                             "siblings": [{"rfilename": "config.json"}, {"rfilename": "model.safetensors"}]})
        elif path.startswith("/api/models/leak-org/missing"):
            self.reply(404, {"error": echo}, X_Error_Code="RepoNotFound", X_Error_Message=echo)
        elif path.startswith("/api/models/leak-org/gated"):
            self.reply(401, {"error": echo}, X_Error_Code="GatedRepo", X_Error_Message=echo)
        elif path.startswith("/api/models/"):  # echo500
            self.reply(500, {"error": echo}, X_Error_Message=echo, X_Echo=auth)
        else:  # every file download of leak-org/files (403, not 5xx: huggingface_hub would retry for 23 s)
            self.reply(403, {"error": echo}, X_Error_Message=echo, X_Echo=auth)

    do_HEAD = do_GET


DRIVER = """
import sys, traceback
import torch
torch.set_num_threads(1)
from curlora.cli.main import main
from curlora.run.store import list_runs
for argv in {argvs!r}:
    print("$ python -m curlora", " ".join(argv), flush=True)
    try:
        print("exit", main(argv), flush=True)
    except BaseException:
        traceback.print_exc()
    if argv[0] == "run" and argv[1].endswith("tiny.yaml"):
        rid = list_runs()[0].id
        for more in (["list"], ["show", rid]):
            print("$ python -m curlora", " ".join(more), flush=True)
            print("exit", main(more), flush=True)
"""


@pytest.fixture
def fake_hub():
    FakeHub.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_hub_token_reaches_no_log_event_status_config_or_error(tmp_path, fake_hub):
    exp = make_experiment(tmp_path / "exp", steps=2)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(exp))
    argvs = [["run", str(tmp_path / "tiny.yaml")]]
    for repo in HUB_MODELS:
        bad = {**exp, "model": {"name": repo}}
        path = tmp_path / f"{repo.split('/')[1]}.yaml"
        path.write_text(yaml.safe_dump(bad))
        argvs.append(["run", str(path)])
    root = tmp_path / "runs"
    env = {**os.environ, "HF_TOKEN": TOKEN, "HF_ENDPOINT": fake_hub, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0",
           "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_ETAG_TIMEOUT": "5",
           "HF_HUB_DOWNLOAD_TIMEOUT": "5", "CURLORA_DATA_DIR": str(root), "OMP_NUM_THREADS": "1",
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    out = subprocess.run([sys.executable, "-c", DRIVER.format(argvs=argvs)], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    console = out.stdout + out.stderr
    assert out.returncode == 0, console[-3000:]

    # The token was really in play: the hub was asked with it, and answered with it in every error.
    assert any(TOKEN in auth for auth in FakeHub.seen), FakeHub.seen
    # The tiny run finished; every hub model failed as one sentence with exit code 2 and wrote nothing.
    assert console.count("exit 0") == 3 and console.count("exit 2") == len(HUB_MODELS), console[-3000:]
    assert "Traceback" not in console, console[-3000:]
    for phrase in ["There is no model 'leak-org/missing'", "'leak-org/gated' is gated",
                   "could not be reached for 'leak-org/echo500'", "could not be reached for 'leak-org/files'"]:
        assert phrase in console, console[-3000:]
    runs = [p for p in root.iterdir() if p.is_dir()]
    assert len(runs) == 1  # only the tiny run: a failed model load writes no run folder

    assert TOKEN not in console
    files = [p for p in root.rglob("*") if p.is_file()]
    assert {"config.yaml", "events.jsonl", "metrics.json", "status.json"} <= {p.name for p in files}
    for p in files:
        assert TOKEN.encode() not in p.read_bytes(), p
        assert b"hf_fake" not in p.read_bytes(), p
