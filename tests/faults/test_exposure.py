"""Exposure: a login from CURLORA_AUTH, a warning when the app is reachable without one, app.py's flags."""

import httpx
import pytest

from app_server import serve
from conftest import REPO
from curlora.errors import CurloraError

gradio_client = pytest.importorskip("gradio_client")


class FakeDemo:
    """Records what launch() hands gradio, without binding anything."""

    def queue(self, **kwargs):
        self.queued = kwargs

    def launch(self, **options):
        self.options = options
        return options


def launched(monkeypatch, capsys, env=None, **kwargs):
    from curlora.ui.app import launch

    for key in ("CURLORA_AUTH", "GRADIO_SERVER_NAME", "GRADIO_SHARE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    options = launch(FakeDemo(), **kwargs)
    return options, capsys.readouterr().err


def test_loopback_without_login_is_quiet(monkeypatch, capsys):
    options, err = launched(monkeypatch, capsys)
    assert options["server_name"] == "127.0.0.1" and "auth" not in options and err == ""
    for host in ("localhost", "::1", "127.0.0.2"):
        assert launched(monkeypatch, capsys, server_name=host)[1] == ""


@pytest.mark.parametrize("how", [{"server_name": "0.0.0.0"}, {"server_name": "192.168.1.20"},
                                 {"server_name": "myhost.example"}, {"share": True}, {"env": {"GRADIO_SHARE": "True"}},
                                 {"env": {"GRADIO_SERVER_NAME": "0.0.0.0"}}])
def test_exposed_without_login_warns(monkeypatch, capsys, how):
    how = dict(how)
    options, err = launched(monkeypatch, capsys, env=how.pop("env", None), **how)
    assert "auth" not in options
    assert err.startswith("WARNING: CURLoRA Studio is served on") and "CURLORA_AUTH=user:password" in err


def test_login_comes_from_the_environment_and_silences_the_warning(monkeypatch, capsys):
    options, err = launched(monkeypatch, capsys, env={"CURLORA_AUTH": "alice:pa:ss word"}, server_name="0.0.0.0",
                            share=True)
    assert options["auth"] == ("alice", "pa:ss word") and err == ""  # split at the first colon only


@pytest.mark.parametrize("bad", ["alice", "alice:", ":secret", " :secret"])
def test_a_malformed_login_is_refused_without_echoing_it(monkeypatch, capsys, bad):
    with pytest.raises(CurloraError, match="CURLORA_AUTH must be 'user:password'") as info:
        launched(monkeypatch, capsys, env={"CURLORA_AUTH": bad})
    assert "secret" not in str(info.value)


def test_no_password_in_the_code():
    for path in [REPO / "app.py", REPO / "curlora" / "ui" / "app.py"]:
        text = path.read_text()
        assert "auth=(" not in text and "password=" not in text.replace("user:password", "")


def test_a_real_server_with_a_login_refuses_anonymous_requests(tmp_path, monkeypatch):
    monkeypatch.setenv("CURLORA_AUTH", "alice:correct horse:battery")
    demo, url, _ = serve(tmp_path / "runs")  # build_app + launch on a free loopback port
    try:
        page = httpx.get(url)
        assert page.status_code == 200 and "Use the 3 demo tasks" not in page.text  # the login page, not the app
        for path in ("config", "gradio_api/info", "gradio_api/file=/etc/passwd"):
            assert httpx.get(url + path).status_code == 401, path
        assert httpx.post(url + "gradio_api/call/list_runs", json={"data": []}).status_code == 401
        with pytest.raises(gradio_client.exceptions.AuthenticationError):
            gradio_client.Client(url, verbose=False)
        with pytest.raises(ValueError, match="Could not login"):
            gradio_client.Client(url, verbose=False, auth=("alice", "wrong"))
        client = gradio_client.Client(url, verbose=False, auth=("alice", "correct horse:battery"))
        assert client.predict(api_name="/list_runs") == []
    finally:
        demo.close()


def test_app_py_flags():
    from app import parse_args

    # loopback, no link, no remote code by default
    assert vars(parse_args([])) == {"host": None, "port": None, "share": False, "trust_remote_code": False,
                                    "mcp": False}  # no MCP server either
    assert parse_args(["--mcp"]).mcp is True
    args = parse_args(["--host", "0.0.0.0", "--port", "8080", "--share"])
    assert (args.host, args.port, args.share) == ("0.0.0.0", 8080, True)
