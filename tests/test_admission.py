"""One admission path (curlora/serve/hosting.py Policy.admit): the CLI's (Policy.local()) and the app's resolve a
config's sources and refuse what they refuse before anything is read; the loader then only loads. Also the served
app's policy (Policy.serve) and the one hub_offline (curlora/paths.py)."""

import dataclasses

import pytest

from curlora.errors import CurloraError
from curlora.experiment import ExperimentConfig
from curlora.models.remote_code import allow_remote_code
from curlora.paths import ASSETS, hub_offline, sources
from curlora.serve.hosting import Policy
from curlora.serve.limits import Limits
from tiny_experiment import tiny_hosted


def test_the_cli_policy_is_local_and_has_no_limits():
    policy = Policy.local()
    assert policy.hosted is False
    assert all(getattr(policy.limits, f.name) is None for f in dataclasses.fields(Limits))


def test_local_admission_resolves_bundled_sources_in_place(tmp_path):
    cfg = ExperimentConfig.from_dict(tiny_hosted())
    Policy.local().admit(cfg, tmp_path, None)
    assert [getattr(obj, key) for obj, key, _ in sources(cfg)] == [
        str((ASSETS / "tasks" / "testament" / "train.csv").resolve()),
        str((ASSETS / "tasks" / "testament" / "eval.csv").resolve()), None]
    assert not any(tmp_path.iterdir())  # nothing written


def test_local_admission_keeps_bundled_paths_inside_assets(tmp_path):
    data = tiny_hosted()
    data["tasks"][0]["train_file"] = "bundled:../README.md"
    with pytest.raises(CurloraError) as err:
        Policy.local().admit(ExperimentConfig.from_dict(data), tmp_path, None)
    assert str(err.value) == "'bundled:../README.md' is not a bundled file: bundled paths stay inside assets/."


def test_local_admission_refuses_remote_code_without_the_flag(tmp_path):
    cfg = ExperimentConfig.from_dict(tiny_hosted(trust_remote_code=True))
    with pytest.raises(CurloraError) as err:
        Policy.local().admit(cfg, tmp_path, None)
    assert str(err.value) == ("model.trust_remote_code would run the model's own Python code, and this process was "
                              "not started with --trust-remote-code; start it with that flag if you trust the code.")
    allow_remote_code(True)
    try:
        Policy.local().admit(cfg, tmp_path, None)  # the process's flag allows it
    finally:
        allow_remote_code(False)


def test_hosted_admission_checks_the_limits_the_config_shows(tmp_path):
    cfg = ExperimentConfig.from_dict(tiny_hosted())
    with pytest.raises(CurloraError) as err:
        Policy(hosted=True, limits=Limits(max_rank=1)).admit(cfg, tmp_path, "0" * 32)
    assert str(err.value) == "Rank (methods[0].r of curlora): this run asks for 2, the limit here is 1; lower it."


def test_the_served_policy_decides_what_a_sentence_may_say():
    from curlora.serve import hosting

    before = Policy.serving()
    try:
        local, hosted = Policy(hosted=False, limits=Limits()), Policy(hosted=True, limits=Limits())
        text = "/srv/data/runs/.owners/abc/uploads/x.csv does not exist."
        assert local.public(text) == text and hosted.public(text) == "x.csv does not exist."
        assert hosted.serve() is hosted and Policy.serving() is hosted
        local.serve()
        assert Policy.serving() is local
    finally:
        hosting.Policy._serving = before


@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"])
@pytest.mark.parametrize("value, offline", [("1", True), (" yes ", True), ("ON", True), ("0", False), ("", False)])
def test_one_hub_offline_reads_every_variable_at_call_time(monkeypatch, var, value, offline):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv(var, value)
    assert hub_offline() is offline
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # huggingface_hub's own flag, read at its import
    assert hub_offline() is True
