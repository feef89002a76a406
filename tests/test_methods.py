"""The method interface: CURLoRA and PEFT LoRA attached, saved, loaded, merged and detached the same way."""

import json

import peft
import pytest
import torch

from curlora import CURLoRAConfig, CurloraError
from curlora.methods import adapters
from tiny_models import N_ADAPTED, TARGETS, tiny_model, tokens

ARCHS = ["llama", "qwen2", "gpt2"]
R = 4


def config(kind, arch):
    if kind == "curlora":
        return CURLoRAConfig(r=R, target_modules=TARGETS[arch])
    return peft.LoraConfig(r=R, lora_alpha=R, target_modules=TARGETS[arch], lora_dropout=0.0,
                           fan_in_fan_out=arch == "gpt2", task_type="CAUSAL_LM")


def expected_trainable(kind, base, arch):
    """r² per adapted matrix for CURLoRA; r·(in + out) for LoRA."""
    from curlora.adapter.layer import dispatch, math_weight
    from curlora.adapter.model import find_target_modules

    names = find_target_modules(base, TARGETS[arch])
    assert len(names) == N_ADAPTED[arch] and all(dispatch(base.get_submodule(n)) for n in names)
    if kind == "curlora":
        return R * R * len(names)
    return sum(R * sum(math_weight(base.get_submodule(n)).shape) for n in names)


def train_a_little(model, steps=3):
    x = tokens()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    for _ in range(steps):
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", adapters.METHODS)
def test_attach_train_save_load_merge_detach(kind, arch, tmp_path):
    base = tiny_model(arch)
    x = tokens()
    base_logits = base(x).logits
    base_state = {k: v.clone() for k, v in base.state_dict().items()}

    model = adapters.attach(base, config(kind, arch))
    assert adapters.method_of(model) == kind
    assert torch.allclose(model(x).logits, base_logits)  # both start as the base model
    assert adapters.count_trainable(model) == expected_trainable(kind, tiny_model(arch), arch)
    train_a_little(model)
    tuned = model(x).logits.detach()
    assert not torch.allclose(tuned, base_logits)

    folder = adapters.save_adapter(model, tmp_path / "stage1")
    assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
    assert adapters.adapter_kind(folder) == kind

    plain = adapters.detach(model)
    assert all(torch.equal(base_state[k], v) for k, v in plain.state_dict().items())
    assert torch.equal(plain(x).logits, base_logits)

    loaded = adapters.load_adapter(plain, folder)
    assert torch.allclose(loaded(x).logits, tuned, atol=1e-6)
    merged = adapters.merge(loaded)
    assert torch.allclose(merged(x).logits, tuned, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_curlora_trains_far_fewer_parameters_than_lora(arch):
    cur = adapters.count_trainable(adapters.attach(tiny_model(arch), config("curlora", arch)))
    lora = adapters.count_trainable(adapters.attach(tiny_model(arch), config("lora", arch)))
    assert cur == expected_trainable("curlora", tiny_model(arch), arch)
    assert lora == expected_trainable("lora", tiny_model(arch), arch)
    assert lora > 4 * cur


def test_methods_take_turns_on_one_base_model():
    """A side-by-side run attaches each method to the same base in turn; the base comes back bit for bit."""
    base = tiny_model("llama")
    x = tokens()
    ref = base(x).logits
    for kind in ["curlora", "lora", "curlora"]:
        model = adapters.attach(base, config(kind, "llama"))
        train_a_little(model, steps=1)
        base = adapters.detach(model)
        assert torch.equal(base(x).logits, ref)
        assert not any(p.requires_grad for p in base.parameters())


def test_lora_adapter_on_a_different_shape_fails_clearly(tmp_path):
    folder = adapters.save_adapter(adapters.attach(tiny_model("llama"), config("lora", "llama")), tmp_path)
    from transformers import AutoModelForCausalLM, LlamaConfig

    wider = AutoModelForCausalLM.from_config(
        LlamaConfig(hidden_size=64, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=97)
    )
    with pytest.raises(CurloraError, match="does not fit this base model"):
        adapters.load_adapter(wider, folder)


def test_adapter_kind_errors(tmp_path):
    with pytest.raises(CurloraError, match="no adapter_config.json"):
        adapters.adapter_kind(tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    with pytest.raises(CurloraError, match="IA3"):
        adapters.adapter_kind(tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (tmp_path / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(CurloraError, match="safetensors only"):
        adapters.adapter_kind(tmp_path)
    (tmp_path / "adapter_config.json").write_text("[1, 2")
    with pytest.raises(CurloraError, match="not a valid adapter config"):
        adapters.adapter_kind(tmp_path)
