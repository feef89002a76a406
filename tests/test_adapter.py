"""The CURLoRA layer: exact properties on tiny Llama / Qwen2 / GPT-2 models, for every sampling mode."""

import json

import pytest
import torch

from curlora import CURLoRAConfig, CurloraError, CURLoRAModel, get_curlora_model
from curlora.adapter.layer import Conv1DCURLoRA, math_weight
from curlora.adapter.sampling import SAMPLING_MODES, sample_cur_indices, sampling_probabilities
from tiny_models import N_ADAPTED, TARGETS, tiny_model, tokens

ARCHS = ["llama", "qwen2", "gpt2"]
R = 4

matrix = pytest.mark.parametrize("arch", ARCHS)
modes = pytest.mark.parametrize("sampling", SAMPLING_MODES)
replace = pytest.mark.parametrize("replace", [True, False])


def adapted(arch, sampling="inverted", replace=True, seed=0, r=R, model_seed=0, **kw):
    cfg = CURLoRAConfig(r=r, target_modules=TARGETS[arch], sampling=sampling, replace=replace, seed=seed, **kw)
    return get_curlora_model(tiny_model(arch, seed=model_seed), cfg)


def randomise_u(model, scale=0.5, seed=3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.curlora_layers().values():
            for f in layer.curlora_factors.values():
                f.U.copy_(torch.randn(f.U.shape, generator=g) * scale)


@matrix
@modes
@replace
def test_output_identical_to_base_at_init(arch, sampling, replace):
    x = tokens()
    base_logits = tiny_model(arch)(x).logits
    model = adapted(arch, sampling, replace)
    assert torch.equal(model(x).logits, base_logits)
    for layer in model.curlora_layers().values():
        assert torch.count_nonzero(layer.curlora_factors["default"].U) == 0


@matrix
@modes
@replace
def test_only_u_trains_and_count_is_r_squared_per_matrix(arch, sampling, replace):
    model = adapted(arch, sampling, replace)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(".curlora_factors.default.U") for n in trainable)
    assert len(model.curlora_layers()) == N_ADAPTED[arch]
    assert model.get_nb_trainable_parameters()[0] == R * R * N_ADAPTED[arch]


@matrix
@modes
@replace
def test_c_and_r_are_literal_columns_and_rows_of_w(arch, sampling, replace):
    model = adapted(arch, sampling, replace)
    for layer in model.curlora_layers().values():
        f = layer.curlora_factors["default"]
        stored = layer.base_layer.weight
        for k in range(R):
            if isinstance(layer, Conv1DCURLoRA):  # Conv1D stores W transposed: W's column j is stored row j
                assert torch.equal(f.C[:, k], stored[f.J[k], :])
                assert torch.equal(f.R[k, :], stored[:, f.I[k]])
            else:
                assert torch.equal(f.C[:, k], stored[:, f.J[k]])
                assert torch.equal(f.R[k, :], stored[f.I[k], :])
        if not replace:
            assert len(set(f.I.tolist())) == R and len(set(f.J.tolist())) == R


@matrix
def test_sampling_is_reproducible_and_seed_dependent(arch):
    def picks(seed):
        m = adapted(arch, seed=seed)
        return {n: (l.curlora_factors["default"].I.tolist(), l.curlora_factors["default"].J.tolist()) for n, l in m.curlora_layers().items()}

    assert picks(0) == picks(0)
    assert picks(0) != picks(1)


@matrix
def test_each_module_gets_its_own_draw(arch):
    m = adapted(arch, sampling="uniform")
    draws = [tuple(l.curlora_factors["default"].J.tolist()) for l in m.curlora_layers().values()]
    assert len(set(draws)) > 1


def test_inverted_sampling_favours_low_norm_columns():
    # 10 columns of norm 0.01 among 90 of norm 1: p~ puts 10·1e4 / (10·1e4 + 90) ≈ 99.9% on the small ones.
    w = torch.ones(50, 100)
    w[:, :10] *= 0.01
    rows, cols = sample_cur_indices(w, 2000, "inverted", True, seed=0, module_name="m")
    share = (cols < 10).float().mean().item()
    expected = sampling_probabilities((w * w).sum(0), "inverted")[:10].sum().item()
    assert expected > 0.99
    assert abs(share - expected) < 0.01
    # The classic CUR rule does the opposite, and the reference offset is in between.
    _, cols_norm = sample_cur_indices(w, 2000, "norm", True, seed=0, module_name="m")
    assert (cols_norm < 10).float().mean().item() < 0.01
    p_off = sampling_probabilities((w * w).sum(0), "inverted_offset")[:10].sum().item()
    assert 0.1 < p_off < expected


def test_reference_offset_is_nearly_uniform_for_wide_layers():
    # p ≈ 1/4096 < 0.001 for a 4096-wide layer, so the offset dominates 1/(p + 0.001): a 16x spread of squared
    # column norms becomes a 1.5x spread of probabilities (the paper's 1/p keeps all 16x).
    w = torch.ones(64, 4096) * torch.linspace(0.5, 2.0, 4096)
    p = sampling_probabilities((w * w).sum(0), "inverted_offset")
    assert p.max() / p.min() < 1.6
    p_paper = sampling_probabilities((w * w).sum(0), "inverted")
    assert p_paper.max() / p_paper.min() > 10


def test_zero_columns_are_never_drawn_by_inverted_sampling():
    w = torch.randn(8, 6)
    w[:, 2] = 0
    p = sampling_probabilities((w * w).sum(0), "inverted")
    assert p[2] == 0 and torch.isclose(p.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert torch.allclose(sampling_probabilities(torch.zeros(5), "inverted"), torch.full((5,), 0.2, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_do_not_overflow_in_sampling(dtype):
    # Entries of 1e-4 square to 1e-8, below fp16's smallest subnormal: computed in fp16, 1/p would be inf.
    w = torch.full((16, 32), 1e-4).to(dtype)
    w[:, :4] = 1.0
    assert torch.isinf(1 / (w[:, 4:] * w[:, 4:]).sum(0)).all() or dtype == torch.bfloat16
    probs = sampling_probabilities((w.double() ** 2).sum(0), "inverted")
    assert torch.isfinite(probs).all()
    half = sample_cur_indices(w, 6, "inverted", True, 0, "m")
    full = sample_cur_indices(w.float(), 6, "inverted", True, 0, "m")
    assert all(torch.equal(a, b) for a, b in zip(half, full))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_model_keeps_u_in_float32_and_runs(dtype):
    cfg = CURLoRAConfig(r=R, target_modules=TARGETS["llama"])
    base = tiny_model("llama", dtype=dtype)
    x = tokens()
    ref = base(x).logits
    model = get_curlora_model(base, cfg)
    assert all(l.curlora_factors["default"].U.dtype == torch.float32 for l in model.curlora_layers().values())
    assert torch.equal(model(x).logits, ref)
    # Same base weights in fp32 pick the same columns and rows.
    fp32 = get_curlora_model(tiny_model("llama"), cfg)
    assert [l.curlora_factors["default"].J.tolist() for l in model.curlora_layers().values()] == [
        l.curlora_factors["default"].J.tolist() for l in fp32.curlora_layers().values()
    ]


@matrix
def test_one_optimiser_step_changes_output_and_only_u_gets_gradients(arch):
    model = adapted(arch)
    x = tokens()
    before = model(x).logits.detach()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = model(input_ids=x, labels=x).loss
    loss.backward()
    for name, p in model.named_parameters():
        if name.endswith(".U"):
            assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name
        else:
            assert p.grad is None, name
    opt.step()
    assert not torch.allclose(model(x).logits, before)
    for layer in model.curlora_layers().values():  # C and R stay frozen slices of W
        f = layer.curlora_factors["default"]
        assert torch.equal(f.C, math_weight(layer)[:, f.J])


@matrix
@modes
def test_save_then_load_gives_identical_logits(arch, sampling, tmp_path):
    model = adapted(arch, sampling)
    randomise_u(model)
    x = tokens()
    with torch.no_grad():
        logits = model(x).logits
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "adapter_config.json",
                                                          "adapter_model.safetensors"]  # PEFT's layout and card
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["peft_type"] == "CURLORA" and saved["r"] == R and saved["sampling"] == sampling
    again = CURLoRAModel.from_pretrained(tiny_model(arch), tmp_path)
    assert torch.equal(again(x).logits, logits)
    assert again.get_nb_trainable_parameters()[0] == 0  # inference unless is_trainable
    trainable = CURLoRAModel.from_pretrained(tiny_model(arch), tmp_path, is_trainable=True)
    assert trainable.get_nb_trainable_parameters()[0] == R * R * N_ADAPTED[arch]


def test_saved_adapter_holds_u_and_indices_not_c_and_r(tmp_path):
    from safetensors.torch import load_file

    model = adapted("llama", r=8)
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "adapter_model.safetensors")
    assert all(k.startswith("base_model.model.") and ".curlora_factors." in k for k in state)  # PEFT's key layout
    kinds = {k.rsplit(".", 1)[1] for k in state}
    assert kinds == {"U", "I", "J", "shape", "sketch"}  # no C, no R: they are cut from the base on load
    assert all(state[k].shape == (8, 8) for k in state if k.endswith(".U"))
    assert all(state[k].shape == (4 * 8,) for k in state if k.endswith(".sketch"))  # norms + projections


@matrix
def test_merge_equals_unmerged_forward_and_unmerge_restores_w_exactly(arch):
    model = adapted(arch)
    randomise_u(model)
    x = tokens()
    weights = {n: l.base_layer.weight.detach().clone() for n, l in model.curlora_layers().items()}
    unmerged = model(x).logits
    model.merge_adapter()
    assert torch.allclose(model(x).logits, unmerged, atol=1e-5, rtol=1e-4)
    model.unmerge_adapter()
    for n, l in model.curlora_layers().items():
        assert torch.equal(l.base_layer.weight, weights[n])
    assert torch.equal(model(x).logits, unmerged)


@matrix
def test_merge_and_unload_gives_a_plain_model_with_the_update_folded_in(arch):
    model = adapted(arch)
    randomise_u(model)
    x = tokens()
    unmerged = model(x).logits
    expected = {n: (math_weight(l) + l.curlora_factors["default"].delta()).detach() for n, l in model.curlora_layers().items()}
    plain = model.merge_and_unload()
    assert not any("curlora" in n for n, _ in plain.named_modules())
    assert torch.allclose(plain(x).logits, unmerged, atol=1e-5, rtol=1e-4)
    for n, w in expected.items():
        assert torch.allclose(math_weight(plain.get_submodule(n)), w, atol=1e-6)


@matrix
def test_unload_restores_the_original_modules_exactly(arch):
    base = tiny_model(arch)
    originals = {n: m for n, m in base.named_modules()}
    state = {k: v.clone() for k, v in base.state_dict().items()}
    model = get_curlora_model(base, CURLoRAConfig(r=R, target_modules=TARGETS[arch]))
    randomise_u(model)
    plain = model.unload()
    assert plain is base
    assert all(originals[n] is m for n, m in plain.named_modules())
    assert all(torch.equal(state[k], v) for k, v in plain.state_dict().items())


def test_named_adapters_switch_disable_and_delete():
    x = tokens()
    base_logits = tiny_model("llama")(x).logits
    model = adapted("llama")
    randomise_u(model, seed=1)
    a = model(x).logits
    model.add_adapter("other", CURLoRAConfig(r=2, target_modules=["v_proj"], seed=5))
    assert model.active_adapter == "default"  # PEFT's rule: adding does not switch
    model.set_adapter("other")
    assert torch.equal(model(x).logits, base_logits)  # fresh adapter: U = 0
    assert model.get_nb_trainable_parameters()[0] == 2 * 2 * 2
    model.set_adapter("default")
    assert torch.equal(model(x).logits, a)
    with model.disable_adapter():
        assert torch.equal(model(x).logits, base_logits)
    assert torch.equal(model(x).logits, a)
    model.delete_adapter("default")
    assert list(model.peft_config) == ["other"]
    model.set_adapter("other")
    assert torch.equal(model(x).logits, base_logits)
    with pytest.raises(ValueError, match="already exists"):  # PEFT's own refusal
        model.add_adapter("other", CURLoRAConfig(r=2, target_modules=["v_proj"]))


def test_all_linear_skips_the_output_head():
    model = get_curlora_model(tiny_model("llama"), CURLoRAConfig(r=2, target_modules="all-linear"))
    assert len(model.curlora_layers()) == 14 and "lm_head" not in model.curlora_layers()
    regex = get_curlora_model(tiny_model("llama"), CURLoRAConfig(r=2, target_modules=r".*\.0\.self_attn\.(q|v)_proj"))
    assert sorted(regex.curlora_layers()) == ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"]


def test_unknown_target_names_the_layers_that_exist():
    with pytest.raises(CurloraError, match=r"No module matches.*q_proj.*v_proj"):
        get_curlora_model(tiny_model("llama"), CURLoRAConfig(r=2, target_modules=["c_attn"]))
    with pytest.raises(CurloraError, match="Embedding"):
        get_curlora_model(tiny_model("llama"), CURLoRAConfig(r=2, target_modules=["embed_tokens"]))


def test_rank_too_large_without_replacement_is_a_clear_error():
    with pytest.raises(CurloraError, match="without replacement"):
        adapted("llama", replace=False, r=40)


@pytest.mark.parametrize(
    "bad, match",
    [(dict(r=0), "positive whole number"), (dict(sampling="random"), "sampling must be one of"), (dict(target_modules=[]), "at least one")],
)
def test_bad_config_values(bad, match):
    with pytest.raises(CurloraError, match=match):
        CURLoRAConfig(**bad)


def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(CurloraError, match="'rank'"):
        CURLoRAConfig.from_dict({"rank": 8})
    assert CURLoRAConfig.from_dict(CURLoRAConfig(r=3).to_dict()) == CURLoRAConfig(r=3)


def test_loading_on_different_weights_of_the_same_shape_fails_clearly(tmp_path):
    adapted("llama").save_pretrained(tmp_path)
    with pytest.raises(CurloraError, match="different base weights"):
        CURLoRAModel.from_pretrained(tiny_model("llama", seed=123), tmp_path)


def test_loading_on_a_different_shape_or_architecture_fails_clearly(tmp_path):
    adapted("llama").save_pretrained(tmp_path)
    from transformers import AutoModelForCausalLM, LlamaConfig

    wider = AutoModelForCausalLM.from_config(
        LlamaConfig(hidden_size=64, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=97)
    )
    with pytest.raises(CurloraError, match=r"different base model: .model.layers.0.mlp.down_proj. is 64 x 48 here but 32 x 48"):
        CURLoRAModel.from_pretrained(wider, tmp_path)
    with pytest.raises(CurloraError, match="does not have"):
        CURLoRAModel.from_pretrained(tiny_model("gpt2"), tmp_path)


def test_failed_load_leaves_the_model_untouched(tmp_path):
    adapted("llama").save_pretrained(tmp_path)
    other = tiny_model("llama", seed=9)
    x = tokens()
    ref = other(x).logits
    with pytest.raises(CurloraError):
        CURLoRAModel.from_pretrained(other, tmp_path)
    assert not any("curlora" in n for n, _ in other.named_modules())
    assert torch.equal(other(x).logits, ref)


def test_not_an_adapter_folder_and_pickles_are_refused(tmp_path):
    with pytest.raises(CurloraError, match="does not exist"):
        CURLoRAModel.from_pretrained(tiny_model("llama"), tmp_path / "missing")
    (tmp_path / "adapter_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(CurloraError, match="safetensors only"):
        CURLoRAModel.from_pretrained(tiny_model("llama"), tmp_path)


def test_adapter_loaded_on_the_real_stories260k_model(shared_data, tmp_path):
    from transformers import AutoModelForCausalLM

    path = shared_data / "models" / "stories260K" / "hf"
    base = AutoModelForCausalLM.from_pretrained(path).eval()
    x = torch.tensor([[1, 403, 407, 261, 378, 425, 275]])
    ref = base(x).logits
    model = get_curlora_model(base, CURLoRAConfig(r=8, target_modules=TARGETS["llama"]))
    assert torch.equal(model(x).logits, ref)
    # 5 layers x 7 projections x r² — the whole adapter is 2,240 numbers against the model's 260K.
    assert model.get_nb_trainable_parameters()[0] == 5 * 7 * 64
    randomise_u(model, scale=0.05)
    with torch.no_grad():
        tuned = model(x).logits
    model.save_pretrained(tmp_path)
    again = CURLoRAModel.from_pretrained(AutoModelForCausalLM.from_pretrained(path).eval(), tmp_path)
    assert torch.equal(again(x).logits, tuned)


@matrix
def test_inference_path_matches_training_path_and_follows_updates(arch):
    """With U frozen or under no_grad the layer uses alpha·C U folded into one m x r matrix; it must agree with
    the three-matmul training path and be recomputed whenever U changes."""
    model = adapted(arch)
    randomise_u(model)
    x = tokens()
    training_path = model(x).logits
    with torch.no_grad():
        assert torch.allclose(model(x).logits, training_path, atol=1e-5, rtol=1e-4)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)  # updates U in place
    model(input_ids=x, labels=x).loss.backward()
    opt.step()
    after = model(x).logits
    with torch.no_grad():
        cached = model(x).logits
    assert not torch.allclose(cached, training_path, atol=1e-4)
    assert torch.allclose(cached, after, atol=1e-5, rtol=1e-4)
