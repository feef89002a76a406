"""PEFT's peers as registered kinds (MiCA, PiSSA, CorDA, OSF, DoRA): each attaches, trains, saves a stage that applies
to the original base, resumes from it, and gives the shared base back bit for bit; a run with all of them beside
CURLoRA and LoRA completes; studies take their priors; what a method cannot adapt is refused in one sentence."""

import json

import pytest
import torch

from curlora.errors import CurloraError
from curlora.experiment import ExperimentConfig, MethodSettings
from curlora.methods import adapters
from curlora.methods.peers import adapted_layers
from curlora.methods.registry import Context, method
from tiny_experiment import make_experiment
from tiny_models import TARGETS, tiny_model, tokens

PEERS = ("mica", "pissa", "corda", "osf", "dora")
R = 4


def context(task: int, tasks: int = 2) -> Context:
    """What the runner passes: here the calibration text is seeded random tokens."""
    ids = torch.randint(0, 97, (256,), generator=torch.Generator().manual_seed(0))
    return Context(task, tasks, 16, lambda n: (ids[:n], "random tokens"))


def attach(kind, base, stage=None, task=0, settings=None):
    settings = settings or MethodSettings(kind=kind, r=R, target_modules=TARGETS["llama"])
    m = method(kind)
    extra = {"context": context(task)} if m.needs_context else {}
    return m.attach(base, settings, stage, **extra)


def one_step(model, lr=1e-2):
    x = tokens()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    model.train()
    model(input_ids=x, labels=x).loss.backward()
    opt.step()
    model.eval()


def state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(before: dict, model) -> bool:
    after = model.state_dict()
    return set(before) == set(after) and all(torch.equal(before[k], v) for k, v in after.items())


def expected_trainable(kind, base, share=None) -> int:
    """The count from the config alone (the registry's trainable), OSF's from its frozen share at this task."""
    layers = adapted_layers(MethodSettings(kind=kind, target_modules=TARGETS["llama"]), base)
    shapes = [(m.in_features, m.out_features) for m in layers.values()]
    if share is None:
        return method(kind).trainable(MethodSettings(kind=kind, r=R), shapes, 0)
    return sum((min(s) - int(min(s) * share)) * (sum(s) + 1) for s in shapes)


@pytest.mark.parametrize("kind", PEERS)
def test_each_peer_trains_saves_reloads_resumes_and_gives_the_base_back(kind, tmp_path):
    base = tiny_model("llama")
    x = tokens()
    ref, before = base(x).logits, state(base)

    att = attach(kind, base)
    model = att.model
    assert adapters.method_of(model) == kind
    assert torch.allclose(model(x).logits, ref, atol=1e-5)  # every init starts as the base model
    assert method(kind).drift(model, att.snapshot)["total"] < 1e-6
    share = 1 / 3 if kind == "osf" else None  # task 1 of 2: the documented budget, pretraining counted
    assert adapters.count_trainable(model) == expected_trainable(kind, tiny_model("llama"), share)
    one_step(model)
    tuned = model(x).logits.detach()
    assert not torch.allclose(tuned, ref, atol=1e-4)
    assert method(kind).drift(model, att.snapshot)["total"] > 0
    stage1 = tmp_path / "stage-1"
    stage1.mkdir()
    method(kind).save(model, stage1)
    assert adapters.adapter_kind(stage1) == kind
    att.cleanup()
    assert same(before, base) and not any(p.requires_grad for p in base.parameters())

    fresh = tiny_model("llama")  # the same seed: a second copy of the original base
    loaded = adapters.load_adapter(fresh, stage1)
    assert adapters.method_of(loaded) == kind
    assert torch.allclose(loaded(x).logits, tuned, atol=1e-5)
    if kind in ("mica", "dora"):  # saved as they trained; the others as an equivalent LoRA on the original base
        assert torch.equal(loaded(x).logits, tuned)
    assert torch.allclose(adapters.merge(loaded)(x).logits, tuned, atol=1e-5)

    att = attach(kind, base, stage1, task=1)  # the next task goes on from the saved stage
    assert torch.allclose(att.model(x).logits, tuned, atol=1e-5)
    if share is not None:
        assert adapters.count_trainable(att.model) == expected_trainable(kind, tiny_model("llama"), 2 / 3)
    one_step(att.model)
    stage2 = tmp_path / "stage-2"
    stage2.mkdir()
    method(kind).save(att.model, stage2)
    again = att.model(x).logits.detach()
    att.cleanup()
    assert same(before, base)
    assert torch.allclose(adapters.load_adapter(tiny_model("llama"), stage2)(x).logits, again, atol=1e-5)


def test_the_residual_methods_save_a_lora_of_rank_2r_and_resume_exactly(tmp_path):
    """PiSSA's stage is PEFT's conversion (s·[B | −B0]·[A ; A0] on the original base); the resumed model is the
    trained one to the bit, since the residual is rebuilt from the saved initial factors."""
    base = tiny_model("llama")
    x = tokens()
    att = attach("pissa", base)
    one_step(att.model)
    tuned = att.model(x).logits.detach()
    method("pissa").save(att.model, tmp_path)
    att.cleanup()
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["init_lora_weights"]) == (2 * R, 2 * R, True)
    assert json.loads((tmp_path / adapters.MARKER).read_text()) == {"kind": "pissa"}
    att = attach("pissa", base, tmp_path, task=1)
    assert torch.equal(att.model(x).logits, tuned)
    att.cleanup()


def test_osf_preserves_more_every_task_as_documented():
    osf = method("osf")
    plain = MethodSettings(kind="osf")
    assert [osf.share(plain, Context(t, 3, 16, None)) for t in range(3)] == [0.25, 0.5, 0.75]
    assert osf.share(plain, Context(0, 1, 16, None)) == 0.5  # PEFT's default for a single task
    given = MethodSettings(kind="osf", preserve=[0.5, 0.8])
    assert [osf.share(given, Context(t, 3, 16, None)) for t in range(3)] == [0.5, 0.8, 0.8]


def test_a_run_with_every_peer_fills_metrics_and_gives_the_base_back(tmp_path):
    from curlora.run.estimate import trainable_parameters
    from curlora.run.runner import Executor, start

    kinds = ("curlora", "lora", "mica", "pissa", "osf", "corda", "dora")
    exp = make_experiment(tmp_path / "exp", steps=2, lr=0.01, methods=kinds)
    exp["evaluation"]["ppl_max_tokens"] = 64  # the rest of the probe text is CorDA's calibration text
    cfg = ExperimentConfig.from_dict(exp)
    run, loaded = start(cfg, tmp_path / "runs")
    before = state(loaded.model)
    assert Executor(run, cfg, loaded).execute() == "completed"
    assert same(before, loaded.model)
    m = run.metrics()
    estimate = trainable_parameters(exp["model"]["name"], cfg.methods)
    for kind in kinds:
        rec = m["methods"][kind]
        assert rec["status"] == "completed" and rec["kind"] == kind
        assert len(rec["matrix"]) == 3 and all(len(row) == 2 for row in rec["matrix"])
        assert len(rec["ppl"]) == 3 and all(p > 1 for p in rec["ppl"])
        assert len(rec["self_ppl"]) == 3 and len(rec["kl_to_base"]) == 3 and rec["kl_to_base"][2] > 0
        assert [d["total"] > 0 for d in rec["drift"]] == [False, True, True]
        assert set(rec["drift"][2]["per_matrix"]) == set(rec["drift"][1]["per_matrix"]) and rec["drift"][2]["per_matrix"]
        assert estimate[kind] in (rec["trainable"], None)
        for stage in (1, 2):
            assert adapters.adapter_kind(run.adapter_dir(kind, stage)) == kind
    assert estimate["osf"] is None and m["methods"]["osf"]["setting"] == {"lr": 0.01}
    note = adapters.marker(run.adapter_dir("corda", 2))
    assert note["calibration"].endswith("past the scored probe") and note["calibration_tokens"] > 0


def test_a_study_grids_the_peers_by_their_priors(tmp_path):
    from curlora.run.study import StudySettings, plan_settings

    exp = make_experiment(tmp_path, methods=PEERS)
    plan = plan_settings(ExperimentConfig.from_dict(exp), StudySettings())
    assert plan.lrs == {k: list(method(k).lr_prior) for k in PEERS}
    assert all(len(method(k).lr_prior) == 4 for k in PEERS)


def test_what_a_method_cannot_adapt_is_refused_in_one_sentence_before_training():
    gpt2 = tiny_model("gpt2")
    before = state(gpt2)
    settings = MethodSettings(kind="osf", target_modules=TARGETS["gpt2"])
    with pytest.raises(CurloraError, match=r"^'osf' adapts Linear layers only, and transformer\.h\.0\.attn\.c_attn of "
                                           r"this model is a Conv1D: target other layers or pick another method\.$"):
        attach("osf", gpt2, settings=settings)
    assert same(before, gpt2)  # PEFT's OSF would wrap nothing and train nothing, silently
    with pytest.raises(CurloraError, match=r"'mica' takes r at most the smaller side of every matrix it adapts; "
                                           r"model\.layers\.0\.self_attn\.k_proj is \(16, 32\), so lower r \(now 20\)"):
        attach("mica", tiny_model("llama"), settings=MethodSettings(kind="mica", r=20, target_modules=TARGETS["llama"]))
    quantized = tiny_model("llama")
    layer = quantized.model.layers[0].self_attn.q_proj
    layer.weight = torch.nn.Parameter(layer.weight.to(torch.int8), requires_grad=False)  # as bitsandbytes stores it
    with pytest.raises(CurloraError, match=r"'pissa' decomposes the weights it adapts, so they must be float32, "
                                           r"float16 or bfloat16, and model\.layers\.0\.self_attn\.q_proj holds "
                                           r"torch\.int8 \(a quantized base\)"):
        attach("pissa", quantized)
    with pytest.raises(CurloraError, match=r"methods\[0\]\.preserve: OSF's preserved shares are fractions between 0 "
                                           r"and 1, one per task, that never shrink"):
        ExperimentConfig.from_dict({"tasks": [{"name": "t", "train_file": "t.csv"}],
                                    "methods": [{"kind": "osf", "preserve": [0.6, 0.4]}]})


def test_the_train_form_lists_the_groups_and_lora_boxes_set_its_family():
    pytest.importorskip("gradio")
    from curlora.ui.train_tab import GROUPED, METHODS, method_settings

    assert [k for _, k in METHODS] == ["curlora", "mica", "corda", "osf", "lora", "pissa", "dora", "base", "full",
                                       "head-only", "joint", "ewc"]
    assert GROUPED.startswith("forgetting-aware: CURLoRA, MiCA, CorDA (KPM), OSF · LoRA family: LoRA, PiSSA, DoRA")
    mica, osf, dora = method_settings({"methods": ["dora", "osf", "mica"], "lora.r": 16.0, "lora.dropout": 0.1,
                                       "methods.target_modules": "q_proj"})
    assert (mica.r, mica.dropout, dora.r, dora.target_modules) == (16, 0.1, 16, ["q_proj"])
    assert (osf.kind, osf.r, osf.target_modules) == ("osf", 8, ["q_proj"])
