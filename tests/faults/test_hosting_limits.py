"""Hosting, round two (issue 31): a study or a fresh session cannot buy the whole server, nothing a visitor sends is
expanded or echoed without a bound, and the queue shares the device fairly between visitors.

Each case is the issue's attack made small: a 100,000-run study, a 5-level alias YAML, four fresh sessions behind one
address, 24 fresh sessions asking for chat, and an 8-run study beside another visitor's 1-run job."""

import json
import time

import pytest

from curlora.errors import CurloraError, clip
from curlora.experiment import YAML_MAX_CHARS, ExperimentConfig
from curlora.run import study as studies
from curlora.run.chat import MAX_PROMPT_CHARS, check_prompt
from curlora.run.store import Run, list_runs
from curlora.serve.hosting import ANONYMOUS, Client, Policy, client_of, owner_key
from curlora.serve.jobs import JobManager
from curlora.serve.limits import Limits
from tiny_experiment import make_experiment, tiny_hosted


def alias_yaml(levels: int) -> str:
    """training.lr as a list of lists `levels` deep, each level nine aliases of the one below (9**levels leaves)."""
    words = ",".join(['"xxxxxxxxxxxxxxxx"'] * 9)
    lines = ["training:", " lr:", f"  - &a0 [{words}]"]
    lines += [f"  - &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


# -- nothing a visitor sends is expanded or echoed without a bound ---------------------------------------------
def test_an_alias_yaml_is_refused_at_once_when_hosted_with_a_short_sentence(tmp_path):
    jobs = JobManager(tmp_path / "runs", policy=Policy(hosted=True))
    from curlora.serve.mcp_tools import Tools

    text = alias_yaml(5)
    assert len(text) < 500
    began = time.perf_counter()
    with pytest.raises(CurloraError) as err:
        ExperimentConfig.from_yaml(text, source="the YAML box", aliases=False)
    took = time.perf_counter() - began
    assert str(err.value) == ("the YAML box uses a YAML anchor or alias (&name / *name) at line 3, which this server "
                              "does not accept; write the values out in full.")
    assert took < 5  # a generous bound: the scanner reads 0.4 KB; building and echoing the tree took 13 s before
    with pytest.raises(CurloraError, match="anchor or alias"):  # MCP's start_run reads YAML the same way
        Tools(jobs).start_run(text, owner=None)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("levels", [5, 8])
def test_even_where_aliases_are_allowed_the_sentence_shows_a_short_prefix(levels):
    with pytest.raises(CurloraError) as err:
        ExperimentConfig.from_yaml(alias_yaml(levels))  # locally: anchors are fine, the expanded value is not echoed
    assert str(err.value).startswith("training.lr: expected a number, got [[")
    assert len(str(err.value)) < 200


def test_every_yaml_is_size_limited():
    text = "run: {name: x}\n" + "# padding\n" * (YAML_MAX_CHARS // 10)
    with pytest.raises(CurloraError, match=r"over the limit of 100,000 for an experiment YAML"):
        ExperimentConfig.from_yaml(text)


HUGE = ["y" * 1000] * 1000


@pytest.mark.parametrize("data", [
    {"training": {"lr": HUGE}}, {"training": {"max_steps": "z" * 10**6}}, {"model": {"name": HUGE}},
    {"methods": [{"kind": "z" * 10**6}]}, {"training": {"scheduler": "s" * 10**6}},
    {"model": {"quantization": "q" * 10**6}}, {"evaluation": {"self_probe": HUGE}},
    {"tasks": [{"name": "t", "train_file": HUGE}]}, {"tasks": [{"name": "t", "train_file": "a.csv", "eval_size": HUGE}]},
    {"run": HUGE}, {"training": {"comparison": "c" * 10**6}},
])
def test_a_rejected_value_is_cut_to_a_short_prefix_in_every_config_sentence(data):
    base = {"tasks": [{"name": "t", "train_file": "a.csv"}]}
    with pytest.raises(CurloraError) as err:
        ExperimentConfig.from_dict({**base, **data})
    assert len(str(err.value)) < 400, str(err.value)[:500]


def test_clip_is_bounded_and_one_line():
    nested = [[[[["x" * 100] * 100] * 100] * 100]]  # 10**8 leaves by reference: repr() would not finish
    assert len(clip(nested)) <= 80 and "\n" not in clip("a\nb" * 1000)


def test_prompts_and_chat_messages_have_the_same_cap(tmp_path):
    with pytest.raises(CurloraError, match="The prompt is 1,000,000 characters long; the limit here is 4,000"):
        check_prompt("p" * 10**6)
    with pytest.raises(CurloraError, match="The system prompt is"):
        check_prompt("hi", system="s" * (MAX_PROMPT_CHARS + 1))
    with pytest.raises(CurloraError, match="The conversation so far is"):
        check_prompt("hi", histories=[[{"role": "user", "content": "h" * 70_000}]])
    from curlora.serve.mcp_tools import Tools

    jobs = JobManager(tmp_path / "runs", policy=Policy(hosted=True))
    with pytest.raises(CurloraError, match="The prompt is 1,000,000 characters"):  # before the run id is looked up
        Tools(jobs).generate("no-such-run", "base", 0, "p" * 10**6)


# -- a study is admitted against its whole grid -------------------------------------------------------------------
def test_a_100000_run_study_is_refused_at_admission_and_writes_nothing(tmp_path):
    jobs = JobManager(tmp_path / "runs", policy=Policy(hosted=True))
    cfg = ExperimentConfig.from_dict(tiny_hosted())
    grid = studies.StudySettings(lrs={"curlora": [1e-3 * (i + 1) for i in range(1000)]}, seeds=list(range(100)))
    began = time.perf_counter()
    with pytest.raises(CurloraError) as err:
        jobs.submit_study(cfg, grid, owner_key("user", "a"))
    assert time.perf_counter() - began < 5
    # the lora method gets its default grid of 4 learning rates: 1000 × 100 + 4 × 100 runs
    assert str(err.value) == ("Runs per study (methods × learning rates × seeds): this study asks for 100,400, the "
                              "limit here is 16; use fewer learning rates or seeds (or fewer methods).")
    assert not (tmp_path / "runs").exists() or list_runs(tmp_path / "runs") == []


def test_a_study_is_refused_for_its_training_tokens_summed_over_its_runs(tmp_path):
    limits = Limits.load(hosted=True)
    limits.tokens_per_study = 1_000
    jobs = JobManager(tmp_path / "runs", policy=Policy(hosted=True, limits=limits))
    cfg = ExperimentConfig.from_dict(tiny_hosted())
    # one run's tokens: 2 steps × 2 × 32 = 128 per method per task; 2 × 2 lrs × 2 seeds = 8 runs → 1,024
    assert Limits.load(hosted=True).tokens_per_run >= 256
    with pytest.raises(CurloraError, match=r"Training tokens per study \(summed over its runs\): this study asks for "
                                           r"1,024, the limit here is 1,000"):
        jobs.submit_study(cfg, studies.StudySettings(lrs={"curlora": [0.01, 0.1], "lora": [0.001, 0.01]},
                                                     seeds=[0, 1]), owner_key("user", "a"))
    assert not (tmp_path / "runs").exists() or list_runs(tmp_path / "runs") == []


def test_a_study_is_refused_when_its_runs_would_not_fit_the_visitors_store(tmp_path):
    limits = Limits.load(hosted=True)
    limits.store_mb_per_visitor = 0.05  # 50 kB: less than 4 runs' adapters of the bundled model
    jobs = JobManager(tmp_path / "runs", policy=Policy(hosted=True, limits=limits))
    cfg = ExperimentConfig.from_dict(tiny_hosted())
    with pytest.raises(CurloraError, match=r"Stored runs: this study's 4 runs would store about .* MB and your share "
                                           r"already holds 0.0 MB, over the limit of 0.05 MB here"):
        jobs.submit_study(cfg, studies.StudySettings(lrs={"curlora": [0.01], "lora": [0.001]}, seeds=[0, 1]),
                          owner_key("user", "a"))
    assert not (tmp_path / "runs").exists() or list_runs(tmp_path / "runs") == []


# -- identity that costs something -----------------------------------------------------------------------------
def test_who_pays_signed_in_users_alone_everyone_else_pooled_by_the_proxys_address(monkeypatch):
    monkeypatch.delenv("CURLORA_PROXY_HOPS", raising=False)
    assert client_of(owner_key("user", "al"), "1.2.3.4", True) == Client(owner_key("user", "al"))
    # behind the Space's proxy: the entry the proxy appended (the last), whatever the caller put before it
    assert client_of(None, "9.9.9.9, 1.2.3.4", True) == client_of(None, "1.2.3.4", True)
    assert client_of(None, "1.2.3.4", True).pooled and client_of(None, "1.2.3.4", True) != client_of(None, "5.6.7.8",
                                                                                                      True)
    # without the proxy the header is the caller's own word: one anonymous pool
    assert client_of(None, "1.2.3.4", False) == client_of(None, None, True) == Client(ANONYMOUS, pooled=True)


def test_four_fresh_sessions_behind_one_address_cannot_fill_the_queue(tmp_path, monkeypatch):
    monkeypatch.setenv("SPACE_ID", "curlora/studio")
    jobs = JobManager(tmp_path / "runs", policy=Policy(hosted=True))
    jobs.gate.acquire("the test holds the device")  # nothing trains: the runs stay queued
    try:
        same = client_of(None, "10.0.0.7", True)
        sessions = [owner_key("session", f"fresh-{i}") for i in range(4)]
        started, refused = [], []
        for owner in sessions:
            for _ in range(2):
                try:
                    started.append(jobs.submit(ExperimentConfig.from_dict(tiny_hosted()), owner, client=same))
                except CurloraError as err:
                    refused.append(str(err))
        assert len(started) == 2 and len(refused) == 6  # runs_per_visitor, counted per address, not per session
        assert refused[0] == ("Runs per visitor: you have 2 run(s) training or queued, the limit here is 2; wait "
                              "for one to finish or stop one.")
        # many addresses without a login: the anonymous pool stops them at 6 of the 8 places
        for i in range(3):
            for _ in range(2):
                with pytest.raises(CurloraError, match="Runs of visitors who are not signed in") if i == 2 else \
                        _nothing():
                    started.append(jobs.submit(ExperimentConfig.from_dict(tiny_hosted()), owner_key("session", f"x{i}"),
                                               client=client_of(None, f"10.0.1.{i}", True)))
        assert len(jobs._active()) == 6
        # a signed-in visitor still gets a place
        jobs.submit(ExperimentConfig.from_dict(tiny_hosted()), owner_key("user", "bo"),
                    client=Client(owner_key("user", "bo")))
        assert len(jobs._active()) == 7
    finally:
        for rid in [*jobs.queued(), jobs.current()]:
            if rid:
                jobs.cancel(rid, read_owner_of(jobs, rid))
        jobs.gate.release()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def read_owner_of(jobs, rid):
    from curlora.serve.hosting import read_owner

    return read_owner(Run.open(rid, jobs.root).path)


def test_24_fresh_sessions_get_the_chat_allowance_of_one(monkeypatch):
    policy = Policy(hosted=True)
    same = client_of(None, "10.0.0.7", True)
    answers = []
    for i in range(24):
        try:
            policy.allow_chat(same, now=100.0 + i)  # each from a fresh session: the client is the address
            answers.append("ok")
        except CurloraError as err:
            answers.append(str(err))
    assert answers.count("ok") == 20
    assert answers[20].startswith("Chat replies per minute: the limit here is 20; try again in")
    # callers without an address (MCP without a login, no proxy) are one pool with its own cap
    pool = Policy(hosted=True)
    got = 0
    for i in range(80):
        try:
            pool.allow_chat(client_of(None, f"10.9.{i}.1", True), now=200.0 + i / 10)
            got += 1
        except CurloraError as err:
            assert "visitors who are not signed in" in str(err)
    assert got == 60


# -- a fair queue ------------------------------------------------------------------------------------------------
def test_a_second_visitors_run_starts_before_an_8_run_studys_last_run(tmp_path):
    d = make_experiment(tmp_path / "exp", steps=2, methods=("lora",))
    d["tasks"] = d["tasks"][:1]
    d["evaluation"].update(probe_every=0, self_probe_texts=2, self_probe_tokens=8)
    cfg = ExperimentConfig.from_dict(d)
    jobs = JobManager(tmp_path / "runs", policy=Policy(hosted=False))
    a, b = Client("visitor-a"), Client("visitor-b")
    sid = jobs.submit_study(cfg, studies.StudySettings(lrs={"lora": [0.001, 0.003, 0.01, 0.03]}, seeds=[0, 1]),
                            client=a)
    study = Run.open(sid, jobs.root)
    deadline = time.monotonic() + 120
    while not (studies.read(study).get("plan") or [{}])[0].get("run_id") and time.monotonic() < deadline:
        time.sleep(0.05)  # the study's first run exists: it is training
    queued_at = time.time()
    rid = jobs.submit(ExperimentConfig.from_dict(d), client=b)
    assert jobs.wait(rid, timeout=300) and jobs.wait(sid, timeout=600)
    assert Run.open(rid, jobs.root).status()["status"] == "completed"
    assert study.status()["status"] == "completed"
    plan = studies.read(study)["plan"]
    assert len(plan) == 8 and all(e["status"] == "completed" for e in plan)

    def started(run_id):
        return next(e["t"] for e in Run.open(run_id, jobs.root).events() if e["kind"] == "run_start")

    def ended(run_id):
        return [e["t"] for e in Run.open(run_id, jobs.root).events() if e["kind"] == "run_end"][-1]

    # The criterion: B's job ends before the study's last run starts.
    assert ended(rid) < max(started(e["run_id"]) for e in plan)
    # And B waited for one unit of the study at most: no more than one of the study's stages ended between B's
    # arrival and B's start (its stages are the study's units: every run trains one method on one task).
    stages = sorted(x["t"] for e in plan for x in Run.open(e["run_id"], jobs.root).events()
                    if x["kind"] == "stage" and x["stage"] == 1)
    assert len([t for t in stages if queued_at <= t <= started(rid)]) <= 1
    assert len([t for t in stages if t > ended(rid)]) >= 6  # most of the study came after B
    # the study gave way once and continued its interrupted run from where it was (nothing trained twice)
    for e in plan:
        stages = [x for x in Run.open(e["run_id"], jobs.root).events() if x["kind"] == "stage" and x["stage"] == 1]
        assert len(stages) == 1
    assert json.loads((study.path / "study.json").read_text())["points"]
    # the store estimate a hosted admission uses is an upper bound of what the runs really took
    from curlora.run.runner import load_everything
    from curlora.serve.jobs import folder_bytes
    from curlora.serve.store_estimate import study_bytes

    used = sum(folder_bytes(Run.open(e["run_id"], jobs.root).path) for e in plan)
    estimate = study_bytes(cfg, load_everything(cfg), {"lora": 8})
    assert used <= estimate < 20 * used, (used, estimate)
    print(f"study store: {used:,} bytes used, {estimate:,} estimated")
    gave_way = [x for e in plan for x in Run.open(e["run_id"], jobs.root).events()
                if x["kind"] == "run_end" and x["status"] == "cancelled"]
    assert gave_way and all(x["message"].startswith("gave the device to another visitor's waiting run") for x in gave_way)


# -- the same over HTTP, as on a Space: SPACE_ID set, each visitor's address in X-Forwarded-For ---------------------
@pytest.fixture(scope="module")
def space(tmp_path_factory):
    from app_server import serving

    mp = pytest.MonkeyPatch()
    mp.setenv("CURLORA_MULTI_USER", "1")
    mp.setenv("SPACE_ID", "curlora/studio")
    try:
        with serving(tmp_path_factory.mktemp("space") / "runs") as (url, jobs):
            yield url, jobs
    finally:
        mp.undo()


def test_on_a_space_four_fresh_sessions_from_one_address_get_two_places_and_an_alias_yaml_nothing(space):
    gradio_client = pytest.importorskip("gradio_client")
    import yaml

    url, jobs = space
    jobs.gate.acquire("the test holds the device")  # the runs stay queued
    try:
        sessions = [gradio_client.Client(url, verbose=False, headers={"X-Forwarded-For": "203.0.113.7"})
                    for _ in range(4)]
        started, refused = [], []
        for client in sessions:
            for _ in range(2):
                try:
                    started.append(client.predict(yaml.safe_dump(tiny_hosted()), api_name="/start_yaml")[0])
                except gradio_client.exceptions.AppError as err:
                    refused.append(str(err))
        assert len(started) == 2 and len(refused) == 6
        assert all(r.startswith("Runs per visitor: you have 2 run(s) training or queued") for r in refused)
        # another address is another visitor; its session may queue, and an alias YAML is refused at once
        other = gradio_client.Client(url, verbose=False, headers={"X-Forwarded-For": "198.51.100.9"})
        began = time.perf_counter()
        with pytest.raises(gradio_client.exceptions.AppError) as err:
            other.predict(alias_yaml(5), api_name="/start_yaml")
        assert time.perf_counter() - began < 5
        assert "uses a YAML anchor or alias" in str(err.value) and len(str(err.value)) < 200
        assert len(jobs.queued()) + bool(jobs.current()) == 2
    finally:
        for rid in started:
            from curlora.serve.hosting import read_owner

            jobs.cancel(rid, read_owner(Run.open(rid, jobs.root).path))
        jobs.gate.release()
