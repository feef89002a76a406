"""A quantised base (bitsandbytes 8-bit and 4-bit NF4, on the CPU here): CURLoRA cuts C and R from the dequantised
weight, LoRA is PEFT's QLoRA; both start as the base, train, save and reload exactly; merging is refused in one
sentence; a missing bitsandbytes is one sentence too."""

import builtins

import peft
import pytest
import torch

from curlora import CURLoRAConfig, CurloraError
from curlora.adapter.layer import CURLoRALayer, dense_weight, math_weight
from curlora.models.loading import load_model, quantization_config
from tiny_models import save_tiny_llama_dir

bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes is an optional extra (requirements-extras.txt)")
TARGETS = ["q_proj", "v_proj"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_llama_dir(tmp_path_factory.mktemp("model"), hidden=64)  # 4-bit blocks need 64 columns


def quantized(folder, bits):
    model, tok, _ = load_model(str(folder), dtype="float32", device="cpu", quantization=bits, memory_check=False)
    return model


@pytest.mark.parametrize("bits", ["8bit", "4bit"])
def test_curlora_on_a_quantised_base_cuts_c_and_r_from_the_dequantised_weight(folder, bits, tmp_path):
    base = quantized(folder, bits)
    q = base.model.layers[0].self_attn.q_proj
    assert type(q.weight).__name__ in ("Params4bit", "Int8Params")
    x = torch.tensor([[1, 5, 9, 12, 3]])
    with torch.no_grad():
        ref = base(x).logits  # an evaluation before training, as every run does (the base row)
    model = peft.get_peft_model(base, CURLoRAConfig(r=4, target_modules=TARGETS))
    layer = next(m for m in model.modules() if isinstance(m, CURLoRALayer))
    f = layer.curlora_factors["default"]
    assert torch.equal(f.C, dense_weight(layer.get_base_layer())[:, f.J])  # real columns of what the layer computes
    with torch.no_grad():
        assert torch.equal(model(x).logits, ref)  # U = 0: the quantised base itself
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    model.train()
    loss = model(input_ids=x, labels=x).loss
    loss.backward()
    opt.step()
    model.eval()
    assert torch.count_nonzero(f.U) > 0 and all(p.grad is None for n, p in model.named_parameters()
                                                  if not n.endswith(".U"))
    with torch.no_grad():
        trained = model(x).logits
    model.save_pretrained(tmp_path)
    again = peft.PeftModel.from_pretrained(quantized(folder, bits), tmp_path)
    with torch.no_grad():
        assert torch.equal(again(x).logits, trained)
    with pytest.raises(CurloraError, match="cannot merge into a quantised"):
        model.merge_adapter()


@pytest.mark.parametrize("bits", ["8bit", "4bit"])
def test_lora_on_a_quantised_base_is_qlora(folder, bits):
    base = quantized(folder, bits)
    model = peft.get_peft_model(base, peft.LoraConfig(r=4, target_modules=TARGETS))
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert "bnb" in type(layer).__module__  # PEFT's bitsandbytes LoRA layer
    assert math_weight(layer).shape == (64, 64) and math_weight(layer).dtype.is_floating_point


@pytest.mark.parametrize("bits", ["8bit", "4bit"])
@pytest.mark.parametrize("kind", ["curlora", "lora"])
def test_the_label_only_head_gives_the_full_heads_loss_on_a_quantised_base(folder, bits, kind):
    from curlora.experiment import MethodSettings
    from curlora.measure.forward import label_loss
    from curlora.methods.registry import method

    base = quantized(folder, bits)
    att = method(kind).attach(base, MethodSettings(kind=kind, r=4, target_modules=TARGETS), None)
    model = att.model
    for p in model.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.02)  # not the zero start: the adapter must change the loss
    model.train()
    ids = torch.tensor([[1, 5, 9, 12, 3, 7], [2, 4, 8, 6, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    labels = torch.full_like(ids, -100)
    labels[0, 4:6], labels[1, 3] = ids[0, 4:6], ids[1, 3]
    a = label_loss(model, ids, mask, labels)
    a.backward()
    b = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert abs(float(a) - float(b)) < 1e-5
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters() if p.requires_grad)
    att.cleanup()


def test_a_missing_bitsandbytes_is_one_sentence(monkeypatch):
    real = builtins.__import__

    def no_bnb(name, *a, **k):
        if name == "bitsandbytes":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_bnb)
    with pytest.raises(CurloraError, match="needs bitsandbytes, an optional extra; install it"):
        quantization_config("4bit", torch.float32)
    assert quantization_config("none", torch.float32) is None


def test_a_run_on_a_4bit_base_trains_both_adapters_and_refuses_full_fine_tuning(tmp_path):
    from curlora.experiment import ExperimentConfig
    from curlora.run.runner import Executor, start
    from tiny_experiment import make_experiment

    body = make_experiment(tmp_path, steps=3)
    save_tiny_llama_dir(tmp_path / "model64", hidden=64)
    body["model"] = {"name": str(tmp_path / "model64"), "quantization": "4bit", "dtype": "float32"}
    cfg = ExperimentConfig.from_dict(body)
    run, loaded = start(cfg, root=tmp_path / "runs")
    assert Executor(run, cfg, loaded).execute() == "completed"
    m = run.metrics()
    for kind in ("curlora", "lora"):
        assert m["methods"][kind]["status"] == "completed" and len(m["methods"][kind]["matrix"]) == 3
        assert m["methods"][kind]["drift"][-1]["total"] > 0  # it trained on the 4-bit base
    body["methods"] = [{"kind": "full"}]
    with pytest.raises(CurloraError, match=r"'full' trains every weight, which a 4bit base cannot hold"):
        ExperimentConfig.from_dict(body)
