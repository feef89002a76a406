"""Hostile experiment configs: whatever the YAML holds, the loader answers with CurloraError or a valid config."""

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curlora.errors import CurloraError
from curlora.experiment import ExperimentConfig

KEYS = ["model", "tasks", "methods", "training", "evaluation", "run", "name", "kind", "r", "lr", "max_steps",
        "train_file", "scoring", "target_modules", "epochs", "batch_size", "alpha", "sampling", "seed", "x"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["curlora", "lora", "head", "../../etc/passwd", "\x00"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
                      max_leaves=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), values, max_size=6))
def test_random_config_dicts_only_raise_curlora_error(data):
    try:
        ExperimentConfig.from_dict(data)
    except CurloraError as err:
        assert str(err) and "\n" not in str(err)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_random_yaml_text_only_raises_curlora_error(text):
    try:
        ExperimentConfig.from_yaml(text)
    except CurloraError:
        pass


@pytest.mark.parametrize("bad, match", [
    ({"training": {"max_steps": 10**15}}, "out of range"),
    ({"training": {"lr": float("nan")}}, "out of range"),
    ({"training": {"batch_size": True}}, "whole number"),
    ({"run": {"name": "a\x00b"}}, "NUL"),
    ({"methods": [{"kind": "curlora", "name": "x"}, {"kind": "lora", "name": "x"}]}, "unique"),
    ({"tasks": [{"name": "a", "train_file": "x.csv"}, {"name": "a", "train_file": "y.csv"}]}, "unique"),
    ({"evaluation": {"ppl_window": 16, "ppl_stride": 32}}, "must not exceed"),
    ({"methods": [{"kind": "curlora", "name": "lr0.02"}]}, r"methods\[0\]\.name: 'lr0\.02' names the method's adapter"),
    ({"methods": [{"kind": "lora", "name": "../../x"}]}, r"methods\[0\]\.name"),
    ({"methods": [{"kind": "lora", "name": "a/b"}]}, r"methods\[0\]\.name"),
])
def test_named_bad_values(bad, match):
    data = {"tasks": [{"name": "t", "train_file": "x.csv"}], **bad}
    with pytest.raises(CurloraError, match=match):
        ExperimentConfig.from_dict(data)


def test_yaml_with_python_tags_is_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    text = f"model: !!python/object/apply:os.system ['touch {marker}']\ntasks: []\n"
    with pytest.raises(CurloraError, match="not valid YAML"):
        ExperimentConfig.from_yaml(text)
    assert not marker.exists()
