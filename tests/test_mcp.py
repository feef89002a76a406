"""The app as an MCP server (CURLORA_MCP=1, curlora/ui/mcp.py): its schema lists exactly the tools, and calling them
through the MCP client (the `mcp` package) returns the numbers the run store holds; with a login set, start_run
appears and every call needs the login; with the server off nothing of it exists."""

import asyncio
import base64
import json

import pytest
import yaml

from curlora.experiment import ExperimentConfig
from curlora.run.chat import Chat
from curlora.run.study import StudySettings, run_study
from tiny_experiment import finished_run

pytest.importorskip("mcp", reason="gradio's mcp extra is not installed (requirements-extras.txt)")
from mcp import ClientSession  # noqa: E402
from mcp.client.streamable_http import streamablehttp_client  # noqa: E402

READ_TOOLS = {"list_runs", "get_run_summary", "get_accuracy_matrix", "compare_methods", "generate"}
PROMPT = "the king said"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A finished run and a finished two-method study in one run store."""
    tmp = tmp_path_factory.mktemp("mcp")
    root = tmp / "runs"
    exp, run = finished_run(tmp / "exp", root)
    study = run_study(ExperimentConfig.from_dict(exp), StudySettings(lrs={"curlora": [0.05], "lora": [0.05]}),
                      root=root, executor="local")
    return root, run, study, exp


def call(url: str, calls: list[tuple[str, dict]], headers: dict | None = None):
    """[(is_error, text)] of each tool call, and the tool names the server lists, over one MCP session."""
    async def go():
        async with streamablehttp_client(url + "gradio_api/mcp/", headers=headers) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                names = {t.name for t in (await session.list_tools()).tools}
                out = []
                for name, args in calls:
                    res = await session.call_tool(name, args)
                    out.append((bool(res.isError), "".join(c.text for c in res.content if c.type == "text")))
                return names, out
    return asyncio.run(go())


def schema(url: str, headers: dict | None = None) -> list[dict]:
    import httpx

    r = httpx.get(url + "gradio_api/mcp/schema", headers=headers, timeout=30)
    r.raise_for_status()
    return r.json()


def test_the_schema_lists_exactly_the_tools_and_they_return_the_stored_numbers(store, monkeypatch):
    from app_server import serving

    root, run, study, _ = store
    monkeypatch.setenv("CURLORA_MCP", "1")
    monkeypatch.delenv("CURLORA_AUTH", raising=False)
    with serving(root) as (url, _):
        import httpx

        assert httpx.get(url + "config", timeout=30).json()["run_history"] is False  # uploads stay off the browser
        tools = schema(url)
        assert {t["name"] for t in tools} == READ_TOOLS and len(tools) == len(READ_TOOLS)
        described = {t["name"]: t for t in tools}
        assert "run_id" in described["get_run_summary"]["inputSchema"]["properties"]
        assert "ACC" in described["get_run_summary"]["description"]
        assert described["generate"]["inputSchema"]["required"] == ["run_id", "method", "stage", "prompt"]
        point = json.loads((study.path / "study.json").read_text())["plan"][0]["run_id"]
        names, out = call(url, [
            ("compare_methods", {"run_id": point}),
            ("list_runs", {}),
            ("get_run_summary", {"run_id": run.id}),
            ("get_accuracy_matrix", {"run_id": run.id, "method": "lora"}),
            ("compare_methods", {"run_id": study.id}),
            ("compare_methods", {"run_id": run.id}),
            ("generate", {"run_id": run.id, "method": "lora", "stage": 2, "prompt": PROMPT}),
            ("get_accuracy_matrix", {"run_id": run.id, "method": "nope"}),
            ("get_run_summary", {"run_id": "no-such-run"}),
        ])
    assert names == READ_TOOLS
    via_point, out = json.loads(out[0][1]), out[1:]
    assert not any(err for err, _ in out[:6]), out
    listed, summary, matrix, compared, lone, generated = (json.loads(text) for _, text in out[:6])
    stored = run.metrics()

    assert {r["run_id"] for r in listed} >= {run.id, study.id} and \
        next(r for r in listed if r["run_id"] == study.id)["kind"] == "study"
    plan = json.loads((study.path / "study.json").read_text())["plan"]
    assert next(r for r in listed if r["run_id"] == study.id)["progress"] == f"{len(plan)} of {len(plan)} runs"
    assert next(r for r in listed if r["run_id"] == run.id)["progress"] == "curlora 2, lora 2"
    assert summary["status"] == "completed" and summary["tasks"] == ["sent", "pair"]
    for label, rec in stored["methods"].items():
        got = summary["methods"][label]
        assert got["summary"] == {k: rec["summary"].get(k) for k in got["summary"]}
        assert got["setting"] == rec["setting"] and got["kl_to_base"] == rec["kl_to_base"]
        assert got["perplexity"] == rec["ppl"] and got["self_perplexity"] == rec["self_ppl"]
        last = len(rec["matrix"]) - 1
        for j, task in enumerate(stored["tasks"]):
            assert got["final_accuracy"][task] == {"accuracy": rec["matrix"][last][j], "n": rec["matrix_n"][last][j],
                                                   "ci95": rec["matrix_ci95"][last][j]}
    lora = stored["methods"]["lora"]
    assert [r["after"] for r in matrix["rows"]] == ["base", "sent", "pair"]
    for i, row in enumerate(matrix["rows"]):
        assert [row["cells"][t]["accuracy"] for t in stored["tasks"]] == lora["matrix"][i]
        assert [row["cells"][t]["n"] for t in stored["tasks"]] == lora["matrix_n"][i]
        assert [row["cells"][t]["ci95"] for t in stored["tasks"]] == lora["matrix_ci95"][i]

    body = json.loads((study.path / "study.json").read_text())
    assert compared["study_id"] == study.id
    assert compared["comparison"] == body["comparison"] and compared["best"] == body["best"]
    assert compared["comparison"][0]["sentence"]
    for family in ("comparison_top", "comparison_known", "comparison_chat", "against_base", "at_chosen"):
        assert compared[family] == body.get(family, [])  # every family, as study.json stores it
    assert via_point["study_id"] == study.id  # one of the study's runs leads to the study's comparison
    assert lone["study"] is None and set(lone["methods"]) == {"curlora", "lora"}

    want = list(Chat().stream(run.id, "lora@2", PROMPT, max_new_tokens=48, root=root))[-1]
    assert generated["reply"] == want and generated["stage"] == 2

    assert out[6][0] and "has no method 'nope'; its methods: curlora, lora." in out[6][1]
    assert out[7][0] and "No run 'no-such-run'" in out[7][1]


def test_with_a_login_start_run_appears_and_every_call_needs_the_login(store, monkeypatch):
    from app_server import serving

    root, run, _, exp = store
    monkeypatch.setenv("CURLORA_MCP", "1")
    monkeypatch.setenv("CURLORA_AUTH", "alice:s3cret:pw")
    good = {"Authorization": "Basic " + base64.b64encode(b"alice:s3cret:pw").decode()}
    bad = {"Authorization": "Basic " + base64.b64encode(b"alice:wrong").decode()}
    with serving(root) as (url, jobs):
        assert {t["name"] for t in schema(url)} == READ_TOOLS | {"start_run"}
        _, refused = call(url, [("get_run_summary", {"run_id": run.id}), ("start_run", {"experiment_yaml": "x"})],
                          headers=bad)
        assert all(err and "This app has a login: send it with every MCP request" in text for err, text in refused)
        _, out = call(url, [("get_run_summary", {"run_id": run.id}),
                            ("start_run", {"experiment_yaml": yaml.safe_dump(exp)})], headers=good)
        assert not out[0][0] and json.loads(out[0][1])["run_id"] == run.id
        assert not out[1][0], out[1]
        started = json.loads(out[1][1])["run_id"]
        assert jobs.wait(started, timeout=300)
        assert jobs.status(started)["status"] == "completed"


def test_without_the_switch_there_is_no_mcp_tool(monkeypatch, tmp_path):
    from curlora.serve.jobs import JobManager
    from curlora.ui.app import build_app

    monkeypatch.delenv("CURLORA_MCP", raising=False)
    demo = build_app(jobs=JobManager(tmp_path))
    names = {f.api_name: f.api_visibility for f in demo.fns.values()}
    assert not any(n.startswith("mcp_") for n in names)
    assert names["start_yaml"] == "public" and names["results"] == "public"  # the app's API as before
    assert all(v == "private" for n, v in names.items() if n.startswith("lambda"))  # UI plumbing is no endpoint
    monkeypatch.setenv("CURLORA_MCP", "1")
    names = {f.api_name: f.api_visibility for f in build_app(jobs=JobManager(tmp_path)).fns.values()}
    assert {n for n, v in names.items() if v == "public"} == {f"mcp_{t}" for t in READ_TOOLS}
    assert names["start_yaml"] == "undocumented"  # still callable by gradio_client, not an MCP tool


def test_compare_methods_analyses_a_study_together_with_others(store):
    """with_studies: a second study of the same experiment (another lr) is analysed with the first as one; a run
    that is not a study, an unknown id or a study of another experiment is refused with one sentence."""
    from curlora.errors import CurloraError
    from curlora.serve.jobs import JobManager
    from curlora.serve.mcp_tools import Tools

    root, run, study, exp = store
    lora_only = {**exp, "methods": [m for m in exp["methods"] if m["kind"] == "lora"]}
    more = run_study(ExperimentConfig.from_dict(lora_only), StudySettings(lrs={"lora": [0.1]}), root=root,
                     executor="local")
    jobs = JobManager(root)
    try:
        tools = Tools(jobs, None)
        body = json.loads(tools.compare_methods(study.id, None, f"{more.id}, {study.id}"))
        assert body["together"] == [more.id]  # the study itself is not added twice
        assert sorted(body["groups"]) == ["curlora@5e-2", "lora@1e-1", "lora@5e-2"]
        assert json.loads(tools.compare_methods(study.id))["together"] == []
        with pytest.raises(CurloraError, match="with_studies: give studies' ids"):
            tools.compare_methods(study.id, None, run.id)
        with pytest.raises(CurloraError, match="not part of a study"):
            tools.compare_methods(run.id, None, more.id)
        with pytest.raises(CurloraError):
            tools.compare_methods(study.id, None, "no-such-study")
    finally:
        jobs.shutdown()
