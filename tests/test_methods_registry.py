"""The method registry: every kind is a registered object, and one more is one class — it trains through the task
sequence, is measured, saved, resumed, estimated and exported with no other file touched."""

import pytest

from curlora.errors import CurloraError
from curlora.experiment import ExperimentConfig
from curlora.methods.registry import Attached, Method, kinds, method, register, unregister
from curlora.run.runner import run_experiment
from tiny_experiment import make_experiment


def test_the_kinds_and_what_they_declare():
    assert kinds() == ("curlora", "lora", "base", "full", "head-only", "joint", "ewc", "mica", "pissa", "corda",
                       "osf", "dora")
    assert [k for k in kinds() if method(k).has_adapter] == ["curlora", "lora", "joint", "ewc", "mica", "pissa",
                                                             "corda", "osf", "dora"]
    assert [k for k in kinds() if not method(k).trains] == ["base"]
    assert method("curlora").group == "forgetting-aware" and method("lora").group == "LoRA family"
    with pytest.raises(CurloraError, match="'qlora' is not a method kind; the kinds are curlora, lora, base"):
        method("qlora")


@pytest.fixture
def norms_only():
    """A sixth method written the way a contributor would: train only the normalisation weights."""
    import torch
    from safetensors.torch import load_file, save_file

    @register
    class NormsOnly(Method):
        kind, title = "norms-only", "norm weights only"
        help = "Only the RMSNorm / LayerNorm weights train."
        lr_prior = (1e-3, 1e-2)

        @staticmethod
        def norms(model):
            return {n: p for n, p in model.named_parameters() if "norm" in n}

        def attach(self, base, settings, stage, context=None):  # one signature for every kind
            kept = {n: p.detach().clone() for n, p in self.norms(base).items()}
            if stage is not None:
                with torch.no_grad():
                    for n, t in load_file(str(stage / "norms.safetensors")).items():
                        dict(base.named_parameters())[n].copy_(t)
            for n, p in base.named_parameters():
                p.requires_grad_(n in kept)

            def restore():
                with torch.no_grad():
                    for n, p in self.norms(base).items():
                        p.copy_(kept[n])
                for p in base.parameters():
                    p.requires_grad_(False)

            return Attached(base, restore)

        def save(self, model, folder):
            save_file({n: p.detach().contiguous() for n, p in self.norms(model).items()},
                      str(folder / "norms.safetensors"))

        def trainable(self, settings, shapes, parameters):
            return None

    yield NormsOnly
    unregister("norms-only")


def test_a_sixth_method_is_one_class(norms_only, tmp_path):
    from curlora.run.estimate import trainable_parameters
    from curlora.run.runner import resume

    exp = make_experiment(tmp_path / "exp", steps=3, lr=0.05, methods=("norms-only", "lora"))
    exp["methods"][0] = {"kind": "norms-only"}
    cfg = ExperimentConfig.from_dict(exp)
    run = run_experiment(cfg, tmp_path / "runs")
    m = run.metrics()
    rec = m["methods"]["norms-only"]
    assert rec["status"] == "completed" and len(rec["matrix"]) == 3 and rec["kind"] == "norms-only"
    assert rec["trainable"] > 0 and rec["train"][0]["steps"] == 3
    assert (run.adapter_dir("norms-only", 2) / "norms.safetensors").is_file()
    assert m["methods"]["lora"]["status"] == "completed"  # the base it shared was given back
    assert trainable_parameters(exp["model"]["name"], cfg.methods)["norms-only"] is None
    # Resume from its saved stage 1 gives the same stage-2 row (its own save and attach round-trip).
    from curlora.run.store import Run

    again = Run.create(run.config_yaml, root=tmp_path / "runs2")
    metrics = dict(m, run_id=again.id)
    metrics["methods"] = {"norms-only": dict(rec, matrix=rec["matrix"][:2], ppl=rec["ppl"][:2], status="running",
                                             ppl_single_window=rec["ppl_single_window"][:2], train=rec["train"][:1],
                                             self_ppl=rec["self_ppl"][:2], kl_to_base=rec["kl_to_base"][:2],
                                             drift=rec["drift"][:2])}
    again.write_metrics(metrics)
    import shutil

    shutil.copytree(run.adapter_dir("norms-only", 1), again.adapter_dir("norms-only", 1))
    for name in ("self_probe.json", "self_probe_ref.safetensors"):
        if (run.path / name).exists():
            shutil.copy(run.path / name, again.path / name)
    again.set_status("interrupted", "test")
    resume(again.id, tmp_path / "runs2")
    assert again.metrics()["methods"]["norms-only"]["matrix"][2] == rec["matrix"][2]


def test_an_unknown_kind_is_refused_with_the_registered_ones(norms_only):
    with pytest.raises(CurloraError, match=r"methods\[0\].kind: 'nope' is not one of curlora, lora, base, full, "
                                           r"head-only, joint, ewc, mica, pissa, corda, osf, dora, norms-only\."):
        ExperimentConfig.from_dict({"tasks": [{"name": "t", "train_file": "t.csv"}], "methods": [{"kind": "nope"}]})


def test_head_only_declares_that_it_needs_head_scoring():
    with pytest.raises(CurloraError, match=r"methods\[0\]: 'head-only' trains only a classification head, so it "
                                           r"needs evaluation.scoring: head\."):
        ExperimentConfig.from_dict({"tasks": [{"name": "t", "train_file": "t.csv"}],
                                    "methods": [{"kind": "head-only"}]})
