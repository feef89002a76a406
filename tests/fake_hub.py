"""A fake Hugging Face hub on loopback for uploads (HF_ENDPOINT points at it, as tests/faults/test_token_leak.py does
for downloads): it creates repos, answers the upload pre-check with "regular" (every file inline in the commit) and
keeps each commit's files. `refuse=True` answers 401 to everything and echoes the token it was sent in the error,
as a hostile mirror would."""

import base64
import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeHub:
    def __init__(self, refuse: bool = False):
        self.refuse = refuse
        self.auth: list[str] = []  # the Authorization header of every request
        self.repos: list[str] = []
        self.files: dict[str, dict[str, bytes]] = {}  # repo -> path -> content, from the commits
        self.url = ""

    def handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if code == 401:
                    self.send_header("X-Error-Message", f"bad credentials {self.headers.get('Authorization')}")
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                hub.auth.append(self.headers.get("Authorization", ""))
                self.reply(401 if hub.refuse else 404, {"error": f"no route for {self.headers.get('Authorization')}"})

            def do_POST(self):
                auth = self.headers.get("Authorization", "")
                hub.auth.append(auth)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = self.path.split("?")[0]
                if hub.refuse:
                    return self.reply(401, {"error": f"Invalid credentials in Authorization header {auth}"})
                if path == "/api/repos/create":
                    d = json.loads(body)
                    repo = f"{d['organization']}/{d['name']}" if d.get("organization") else f"me/{d['name']}"
                    hub.repos.append(repo)
                    return self.reply(200, {"url": f"{hub.url}/{repo}", "name": repo})
                if path == "/api/validate-yaml":
                    return self.reply(200, {"errors": [], "warnings": []})
                if "/preupload/" in path:
                    files = json.loads(body)["files"]
                    return self.reply(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                       "shouldIgnore": False} for f in files]})
                if "/commit/" in path:
                    repo = path.split("/api/models/")[1].split("/commit/")[0]
                    got = hub.files.setdefault(repo, {})
                    for line in body.decode().splitlines():
                        item = json.loads(line) if line.strip() else {}
                        if item.get("key") == "file":
                            got[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    return self.reply(200, {"commitUrl": f"{hub.url}/{repo}/commit/{'0' * 40}",
                                            "commitOid": "0" * 40, "success": True})
                return self.reply(404, {"error": "no such route"})

        return Handler


@contextlib.contextmanager
def fake_hub(refuse: bool = False):
    """Yields the running FakeHub (its `url` is the HF_ENDPOINT to use)."""
    hub = FakeHub(refuse)
    server = ThreadingHTTPServer(("127.0.0.1", 0), hub.handler())
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
