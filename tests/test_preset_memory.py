"""The bigger model presets state settings that fit a 24 GB GPU: checked with the training-memory estimate
(curlora/run/estimate.py) on config-only folders of each preset's real shape (no weights: the estimate reads the
config on the meta device), with the preset's targets and rank for CURLoRA and LoRA."""

import json

import pytest
import yaml

from curlora.experiment import ExperimentConfig
from curlora.models.presets import gpu_24gb_text, load_model_presets
from curlora.paths import PRESETS
from curlora.run.estimate import training_memory

GB24 = 24e9
MARGIN = 1.25  # the estimate claims +-25 %: a stated setting must fit even at its upper end
# the published configs' shapes (what decides memory), one per preset that states 24 GB settings
SHAPES = {
    "gpt2-large": {"model_type": "gpt2", "n_embd": 1280, "n_layer": 36, "n_head": 20, "n_positions": 1024,
                   "vocab_size": 50257},
    "meta-llama/Llama-3.2-1B": {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192,
                                "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
                                "head_dim": 64, "vocab_size": 128256, "tie_word_embeddings": True,
                                "max_position_embeddings": 131072},
    "mistralai/Mistral-7B-v0.3": {"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336,
                                  "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                                  "vocab_size": 32768, "tie_word_embeddings": False,
                                  "max_position_embeddings": 32768},
}


def skeleton(tmp_path, name: str):
    from transformers import AutoConfig

    spec = dict(SHAPES[name])
    folder = tmp_path / name.replace("/", "--")
    folder.mkdir()
    AutoConfig.for_model(spec.pop("model_type"), **spec).save_pretrained(folder)
    return folder


def experiment(folder, preset, fit: dict, **training) -> ExperimentConfig:
    targets = list(preset.target_modules)
    return ExperimentConfig.from_dict({
        "model": {"name": str(folder), "dtype": fit["dtype"], "quantization": fit.get("quantization", "none")},
        "tasks": [{"name": "t", "train_file": "unused.csv"}],
        "methods": [{"kind": "curlora", "r": preset.rank, "target_modules": targets},
                    {"kind": "lora", "r": preset.rank, "target_modules": targets}],
        "training": {"batch_size": fit["batch_size"], "max_length": fit["max_length"],
                     "gradient_checkpointing": fit.get("gradient_checkpointing", False), **training}})


def test_every_shape_here_belongs_to_a_preset_that_states_24gb_settings():
    presets = load_model_presets()
    stating = {name for name, p in presets.items() if p.gpu_24gb}
    assert stating == set(SHAPES)
    big = {name for name, p in presets.items() if p.parameters >= 700_000_000}
    assert big <= stating  # every preset of 0.7B parameters or more says how it fits
    for name in stating:
        assert gpu_24gb_text(presets[name])


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_the_stated_settings_fit_24gb_by_the_estimate(tmp_path, name):
    preset = load_model_presets()[name]
    folder = skeleton(tmp_path, name)
    est = training_memory(experiment(folder, preset, preset.gpu_24gb), device="cuda", planning=True)
    assert est["device"] == "cuda" and est["dtype"] == preset.gpu_24gb["dtype"]
    assert est["total"] * MARGIN <= GB24, json.dumps(est)
    # and the stated setting is what makes it fit where it turns something on: without checkpointing it would not
    if preset.gpu_24gb.get("gradient_checkpointing"):
        off = training_memory(experiment(folder, preset, {**preset.gpu_24gb, "gradient_checkpointing": False}),
                              device="cuda", planning=True)
        assert off["total"] > GB24


def test_the_paper_mistral_experiment_preset_fits_24gb(tmp_path):
    raw = yaml.safe_load((PRESETS / "experiments" / "paper-mistral-7b.yaml").read_text())
    raw["model"]["name"] = str(skeleton(tmp_path, "mistralai/Mistral-7B-v0.3"))
    for t in raw["tasks"]:  # the dataset presets are not needed for an estimate
        t.pop("preset", None)
        t["train_file"] = "unused.csv"
    est = training_memory(ExperimentConfig.from_dict(raw), device="cuda", planning=True)
    assert est["total"] * MARGIN <= GB24, json.dumps(est)
    assert raw["training"]["gradient_checkpointing"] is True


@pytest.mark.parametrize("fit, why", [({"batch": 8}, "unknown key"), ({"batch_size": "8"}, "wrong type"),
                                      ({"gradient_checkpointing": 1}, "an int is not true or false")])
def test_a_bad_gpu_24gb_entry_is_refused_in_one_sentence(tmp_path, fit, why):
    from curlora.errors import CurloraError

    entry = {"source": "hub", "family": "llama", "architecture": "LlamaForCausalLM", "parameters": 10,
             "memory_gb": {"bfloat16": 1.0}, "target_modules": ["q_proj"], "rank": 8, "gated": False,
             "license": "mit", "gpu_24gb": fit}
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"some/model": entry}))
    with pytest.raises(CurloraError, match=r"^models.yaml, entry 'some/model': gpu_24gb must map some of .*\.$"):
        load_model_presets(path)
