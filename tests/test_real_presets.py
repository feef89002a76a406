"""The real model's place in the app without loading it: SmolLM2 is the default base model where its package is
installed (the bundled one otherwise), the Model tab states what this project measured of it with n and intervals,
and the Train tab's preset picker fills the form with exactly the preset's settings."""

import pytest

from curlora.errors import CurloraError
from curlora.experiment import ExperimentConfig
from curlora.models import gguf
from curlora.models.presets import default_model_name, quality
from curlora.paths import QUICK_DEMO, REAL_DEMO


def installed() -> bool:
    try:
        gguf.packaged(gguf.SMOLLM2)
        return True
    except CurloraError:
        return False


def test_the_default_model_follows_the_package(monkeypatch):
    assert default_model_name() == (gguf.SMOLLM2 if installed() else "kjv-llama-5m")
    monkeypatch.setitem(gguf.PACKAGED, gguf.SMOLLM2, gguf.Packaged("no-such-dist-xyz", "1.0", "x.gguf"))
    assert default_model_name() == "kjv-llama-5m"


def test_the_measured_quality_carries_n_intervals_and_its_protocol():
    pytest.importorskip("gradio")
    from curlora.ui.model_tab import quality_lines

    q = quality(gguf.SMOLLM2)
    assert q is not None and q.weights == "Q4_1, dequantised: not the bf16 original"
    assert {z.task for z in q.zero_shot} == {"sst2", "mrpc", "sentiment140"}
    for z in q.zero_shot:
        assert z.n == 300 and z.ci95[0] <= z.accuracy <= z.ci95[1]
    text = "\n".join(quality_lines(gguf.SMOLLM2))
    assert "512-token windows without overlap" in text and "n=300" in text and "one class for every row" in text
    assert quality("kjv-llama-5m") is None and quality_lines("kjv-llama-5m") == []


@pytest.mark.parametrize("preset", [QUICK_DEMO, REAL_DEMO])
def test_the_preset_picker_fills_the_form_with_the_presets_settings(preset):
    pytest.importorskip("gradio")
    from curlora.ui.train_tab import form_values

    cfg = ExperimentConfig.load(preset)
    paths = ["methods", "methods.target_modules", "curlora.r", "curlora.lr", "lora.r", "training.max_steps",
             "training.lr", "training.batch_size", "training.max_length", "evaluation.scoring", "model.name",
             "training.group_by_length", "preset"]
    values = dict(zip(paths, form_values(cfg, paths)))
    assert values["methods"] == [m.kind for m in cfg.methods]
    assert values["model.name"] == cfg.model.name
    assert values["curlora.lr"] == cfg.methods[0].lr and values["training.lr"] == cfg.training.lr
    assert (values["training.max_steps"], values["training.batch_size"], values["training.max_length"]) == (
        cfg.training.max_steps, cfg.training.batch_size, cfg.training.max_length)
    assert values["training.group_by_length"] is True
