"""CURLoRA as a real PEFT method: PEFT's own calls, the Trainer (and TRL), adapters saved by 0.1.0, and the reload
check that refuses near-copies of the base."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import peft
import pytest
import torch
from safetensors.torch import load_file

import curlora
from curlora import CURLoRAConfig, CurloraError, CURLoRAModel
from curlora.adapter.layer import CURLoRALayer, math_weight
from tiny_models import N_ADAPTED, TARGETS, tiny_model, tokens

REPO = Path(__file__).resolve().parents[1]
OLD_ADAPTER = REPO / "tests" / "data" / "curlora-0.1.0-adapter"  # written by curlora 0.1.0 (tiny llama, seed 0)
R = 4


def peft_model(arch="llama", r=R, seed=0, **kw):
    return peft.get_peft_model(tiny_model(arch, seed=seed), CURLoRAConfig(r=r, target_modules=TARGETS[arch], **kw))


def randomise(model, seed=3, scale=0.5):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * scale)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_get_peft_model_returns_a_peft_model_training_r_squared_per_matrix(arch, capsys):
    model = peft_model(arch)
    assert isinstance(model, peft.PeftModel)
    assert model.peft_config["default"].peft_type == "CURLORA"
    model.print_trainable_parameters()
    assert f"trainable params: {R * R * N_ADAPTED[arch]:,d} ||" in capsys.readouterr().out
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(".curlora_factors.default.U") for n in trainable)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_peft_save_and_from_pretrained_reproduce_the_logits_exactly(arch, tmp_path):
    model = peft_model(arch)
    randomise(model)
    x = tokens()
    with torch.no_grad():
        logits = model(x).logits
    model.save_pretrained(tmp_path)
    again = peft.PeftModel.from_pretrained(tiny_model(arch), tmp_path)
    assert again.peft_config["default"].peft_type == "CURLORA" and again.peft_config["default"].r == R
    with torch.no_grad():
        assert torch.equal(again(x).logits, logits)
    cfg = peft.PeftConfig.from_pretrained(tmp_path)
    assert isinstance(cfg, CURLoRAConfig) and list(cfg.target_modules) == TARGETS[arch]


def test_a_bare_import_curlora_registers_it_before_peft_is_imported(tmp_path):
    """`import curlora` imports no torch, yet a later `PeftModel.from_pretrained` reads a CURLoRA folder."""
    model = peft_model()
    randomise(model)
    model.save_pretrained(tmp_path / "a")
    torch.save(tokens(), tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(model(tokens()).logits, tmp_path / "logits.pt")
    code = (
        "import sys; sys.path.insert(0, 'tests')\n"
        "import curlora\n"
        "assert 'torch' not in sys.modules and 'peft' not in sys.modules\n"
        "import peft, torch\n"
        "from tiny_models import tiny_model\n"
        f"m = peft.PeftModel.from_pretrained(tiny_model('llama'), {str(tmp_path / 'a')!r})\n"
        f"x = torch.load({str(tmp_path / 'x.pt')!r})\n"
        f"print(torch.equal(m(x).logits, torch.load({str(tmp_path / 'logits.pt')!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "True"


def test_named_adapters_merge_unload_and_disable_through_peft(tmp_path):
    x = tokens()
    base = tiny_model("llama")
    with torch.no_grad():
        base_logits = base(x).logits
    state = {k: v.clone() for k, v in base.state_dict().items()}
    model = peft.get_peft_model(base, CURLoRAConfig(r=R, target_modules=TARGETS["llama"]))
    randomise(model, seed=1)
    model.add_adapter("other", CURLoRAConfig(r=2, target_modules=["v_proj"], seed=5))
    randomise(model, seed=2)  # only the active adapter ("default") trains, so only it changes
    with torch.no_grad():
        a = model(x).logits
        model.set_adapter("other")
        assert torch.equal(model(x).logits, base_logits)  # "other" never trained: U = 0
        model.set_adapter("default")
        assert torch.equal(model(x).logits, a)
        with model.disable_adapter():
            assert torch.equal(model(x).logits, base_logits)
        model.merge_adapter()
        assert torch.allclose(model(x).logits, a, atol=1e-5, rtol=1e-4)
        model.unmerge_adapter()
        assert torch.equal(model(x).logits, a)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "other" / "adapter_config.json").is_file()  # PEFT's layout: other adapters in subfolders
    merged = model.merge_and_unload()
    assert not any(isinstance(m, CURLoRALayer) for m in merged.modules())
    with torch.no_grad():
        assert torch.allclose(merged(x).logits, a, atol=1e-5, rtol=1e-4)
    plain = peft.get_peft_model(tiny_model("llama"), CURLoRAConfig(r=R, target_modules=TARGETS["llama"])).unload()
    assert all(torch.equal(state[k], v) for k, v in plain.state_dict().items())


def test_the_trainer_trains_only_u_and_the_example_script_round_trips(tmp_path):
    """docs/examples/trainer_curlora.py: transformers.Trainer, no code of this app's runner."""
    spec = importlib.util.spec_from_file_location("trainer_curlora", REPO / "docs/examples/trainer_curlora.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = example.main(["--model", str(REPO / "assets/models/kjv-llama-5m"), "--steps", "3", "--r", "4",
                        "--out", str(tmp_path)])
    assert out["reloaded_equal"] is True
    saved = load_file(Path(out["adapter"]) / "adapter_model.safetensors")
    us = [v for k, v in saved.items() if k.endswith(".U")]
    assert out["trainable"] == sum(u.numel() for u in us) == 16 * len(us)
    assert any(torch.count_nonzero(u) for u in us)  # the Trainer's steps moved U


def test_trl_sft_trainer_trains_the_same_adapter(tmp_path):
    trl = pytest.importorskip("trl", reason="TRL is an optional extra (requirements-extras.txt)")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = str(REPO / "assets/models/kjv-llama-5m")
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = peft.get_peft_model(AutoModelForCausalLM.from_pretrained(path),
                                CURLoRAConfig(r=4, target_modules=["q_proj", "v_proj"]))
    data = Dataset.from_dict({"text": ["In the beginning God created the heaven and the earth."] * 8})
    args = trl.SFTConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, learning_rate=5e-2,
                         report_to=[], save_strategy="no", use_cpu=True, max_length=32, logging_steps=1,
                         bf16=False)  # TRL's default on a bf16-capable CPU would fix accelerate's state for the process
    trl.SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok).train()
    us = [p for n, p in model.named_parameters() if n.endswith(".U")]
    assert us and any(torch.count_nonzero(u) for u in us)
    assert not any(p.requires_grad for n, p in model.named_parameters() if not n.endswith(".U"))


def test_an_adapter_saved_by_version_0_1_0_still_loads():
    """tests/data/curlora-0.1.0-adapter: keys `<module>.curlora_U` …, a norms-only fingerprint."""
    base = tiny_model("llama")
    old = load_file(OLD_ADAPTER / "adapter_model.safetensors")
    expected = tiny_model("llama")
    with torch.no_grad():  # W + C U R by hand, from the stored indices
        for key in [k for k in old if k.endswith(".curlora_U")]:
            name = key.removesuffix(".curlora_U")
            w = math_weight(expected.get_submodule(name))
            rows, cols = old[f"{name}.curlora_I"], old[f"{name}.curlora_J"]
            w += w[:, cols] @ old[key] @ w[rows, :]
    model = CURLoRAModel.from_pretrained(base, OLD_ADAPTER)
    assert len(model.curlora_layers()) == 6
    x = tokens()
    with torch.no_grad():
        assert torch.allclose(model(x).logits, expected(x).logits, atol=1e-5, rtol=1e-4)


def _noisy(model, scale, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.add_(p * scale * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("change", ["noise 5 %", "q_proj negated", "old adapter, noise 5 %"])
def test_near_copies_of_the_base_are_refused_with_one_sentence(change, tmp_path):
    model = peft_model()
    randomise(model)
    model.save_pretrained(tmp_path)
    folder = OLD_ADAPTER if change.startswith("old") else tmp_path
    other = tiny_model("llama")
    if "noise" in change:
        _noisy(other, 0.05)
    else:
        with torch.no_grad():
            for name, mod in other.named_modules():
                if name.endswith("q_proj"):
                    mod.weight.neg_()
    if change.startswith("old"):  # 0.1.0 saved norms only: a sign flip passes them, noise on the norms does not
        with pytest.raises(CurloraError, match="different base weights"):
            CURLoRAModel.from_pretrained(other, folder)
        return
    for load in (peft.PeftModel.from_pretrained, CURLoRAModel.from_pretrained):
        with pytest.raises(CurloraError, match="trained on different base weights.*Load it on the model"):
            load(other, folder)
        other = _strip(other)
    # this package's loader hands the base back untouched
    assert not any(isinstance(m, CURLoRALayer) for m in other.modules())


def _strip(model):
    for name, m in list(model.named_modules()):
        if isinstance(m, CURLoRALayer):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, m.get_base_layer())
    return model


def test_the_same_base_in_bfloat16_still_loads(tmp_path):
    model = peft_model()
    randomise(model)
    model.save_pretrained(tmp_path)
    again = peft.PeftModel.from_pretrained(tiny_model("llama", dtype=torch.bfloat16), tmp_path)
    assert again.peft_config["default"].peft_type == "CURLORA"


def test_curlora_is_in_peft_type_and_its_config_round_trips_through_peft():
    assert peft.PeftType("CURLORA") is peft.PeftType.CURLORA
    cfg = peft.PeftConfig.from_peft_type(**CURLoRAConfig(r=3, sampling="uniform").to_dict())
    assert isinstance(cfg, CURLoRAConfig) and cfg.r == 3 and cfg.sampling == "uniform"
    assert curlora.__version__ == cfg.curlora_version
