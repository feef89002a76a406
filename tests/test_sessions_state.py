"""Per-browser state on the server: a refreshed page (a new gradio session) finds its task list through the
workspace token in the browser's local storage; other browsers never see it."""

from types import SimpleNamespace

import pytest

pytest.importorskip("gradio")

from curlora.data.task_config import TaskConfig  # noqa: E402
from curlora.ui.common import Sessions  # noqa: E402


def page(session_hash: str):
    return SimpleNamespace(session_hash=session_hash)


def test_a_refreshed_page_finds_its_tasks_and_other_browsers_do_not():
    sessions = Sessions()
    first = page("load-1")
    token = sessions.bind(first, "")
    assert len(token) == 32 and token != sessions.bind(page("other"), "")
    sessions.get(first).tasks.append(TaskConfig(name="a", train_file="a.csv"))
    refreshed = page("load-2")
    assert sessions.bind(refreshed, token) == token
    assert [t.name for t in sessions.get(refreshed).tasks] == ["a"]
    assert sessions.get(page("other")).tasks == []
    assert sessions.get(page("never-bound")).tasks == []


def test_a_forged_or_malformed_token_gets_a_fresh_workspace():
    sessions = Sessions()
    for bad in ["../etc", "x" * 32, None, 123, "A" * 32, "0" * 31]:
        token = sessions.bind(page(f"s-{bad}"), bad)
        assert token != bad and len(token) == 32


def test_work_done_before_the_page_bound_its_token_is_kept():
    sessions = Sessions()
    early = page("early")
    sessions.get(early).tasks.append(TaskConfig(name="b", train_file="b.csv"))
    token = sessions.bind(early, "")
    page_bound = page("later")
    sessions.bind(page_bound, token)
    assert [t.name for t in sessions.get(page_bound).tasks] == ["b"]


def test_other_sessions_cannot_push_a_task_list_out(tmp_path):
    """The in-memory cache holds `limit` lists; the rest come back from the data dir, whoever filled the cache."""
    sessions = Sessions(limit=8, root=lambda: tmp_path)
    mine = page("mine")
    token = sessions.bind(mine, "")
    sessions.get(mine).tasks.append(TaskConfig(name="kept", train_file="a.csv"))
    sessions.save(mine)
    for i in range(600):  # cheap requests from other sessions
        sessions.get(page(f"flood-{i}"))
    again = page("reloaded")
    sessions.bind(again, token)
    assert [t.name for t in sessions.get(again).tasks] == ["kept"]
    assert [t.name for t in sessions.get(mine).tasks] == ["kept"]
    assert sessions.get(page("flood-1")).tasks == []
    assert len(list(tmp_path.rglob("tasks.json"))) == 1  # a session that never saved writes nothing
