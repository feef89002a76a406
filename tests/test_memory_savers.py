"""Memory savers for big bases: gradient checkpointing on every method (same training, turned off afterwards)."""

import pytest
import torch

from curlora.data.task_config import TaskConfig
from curlora.data.tasks import load_task
from curlora.errors import CurloraError
from curlora.experiment import TrainingSettings
from curlora.methods import adapters
from curlora.run.train import train_task
from test_probes import attach, llama_dir, load  # noqa: F401,F811  (llama_dir is a fixture)
from test_runner import make_tasks


@pytest.fixture
def task(tmp_path):
    make_tasks(tmp_path)
    return load_task(TaskConfig.from_dict({"name": "sent", "train_file": str(tmp_path / "sent.csv"), "eval_size": 12,
                                           "verbalizers": {"0": "bad", "1": "good"}}))


@pytest.mark.parametrize("kind", ["curlora", "lora"])
def test_gradient_checkpointing_trains_the_same_and_is_off_afterwards(llama_dir, task, kind):
    model, tok = load(llama_dir)

    def train(checkpointing):
        torch.manual_seed(0)  # PEFT initialises lora_A from the global generator
        adapted = attach(model, kind)
        cfg = TrainingSettings(max_steps=4, batch_size=4, lr=0.05, max_length=48, scheduler="constant",
                               gradient_checkpointing=checkpointing)
        seen = []

        def on_step(e):
            seen.append((e["loss"], model.is_activation_checkpointing))

        train_task(adapted, tok, task, cfg, lr=cfg.lr, on_step=on_step)
        after = model.is_activation_checkpointing
        adapters.detach(adapted)
        return seen, after

    plain, _ = train(False)
    saved, after = train(True)
    assert all(on for _, on in saved) and not any(on for _, on in plain)
    assert after is False  # the shared base goes back without it
    assert [loss for loss, _ in saved] == pytest.approx([loss for loss, _ in plain], rel=1e-4)


def test_a_model_without_checkpointing_support_is_refused_in_one_sentence(llama_dir, task):
    model, tok = load(llama_dir)
    adapted = attach(model, "lora")
    base = adapted.get_base_model()
    type(base).supports_gradient_checkpointing = False
    try:
        cfg = TrainingSettings(max_steps=1, batch_size=4, lr=0.01, max_length=48, gradient_checkpointing=True)
        with pytest.raises(CurloraError, match="does not support gradient checkpointing; turn it off"):
            train_task(adapted, tok, task, cfg, lr=cfg.lr)
    finally:
        type(base).supports_gradient_checkpointing = True
        adapters.detach(adapted)


def _demo(**changes):
    from curlora.experiment import ExperimentConfig
    from curlora.paths import QUICK_DEMO

    cfg = ExperimentConfig.load(QUICK_DEMO)
    for path, value in changes.items():
        section, key = path.split(".")
        setattr(getattr(cfg, section), key, value)
    return cfg


def test_the_memory_estimate_counts_weights_optimiser_activations_and_logits():
    from curlora.run.estimate import training_memory

    plain = training_memory(_demo(), device="cpu")
    assert plain["weights"] == 5401856 * 4  # the bundled model's parameters in float32
    assert plain["total"] == plain["weights"] + max(plain["training"], plain["evaluation"])
    p = plain["parts"]
    assert plain["training"] == p["activations"] + p["loss_logits"] + p["optimiser"]
    assert p["optimiser"] > 0 and p["optimiser"] % 16 == 0  # float32 value, gradient and two moments per number
    saved = training_memory(_demo(**{"training.gradient_checkpointing": True}), device="cpu")
    assert saved["parts"]["activations"] < p["activations"] / 2
    quant = training_memory(_demo(**{"model.quantization": "4bit"}), device="cpu")
    assert quant["weights"] < plain["weights"] / 2
    bigger = training_memory(_demo(**{"training.batch_size": 32}), device="cpu")
    assert bigger["parts"]["activations"] == 2 * p["activations"]  # the demo's batch is 16


def test_a_run_that_will_not_fit_is_refused_before_it_loads_with_what_to_change(monkeypatch):
    from curlora.run import estimate

    monkeypatch.setattr("curlora.models.loading.available_memory", lambda device: 10_000_000)
    with pytest.raises(CurloraError, match=r"This run needs about .* GB at the peak.*of RAM is free; lower "
                                           r"training.batch_size \(now 16\).*turn on training.gradient_checkpointing"):
        estimate.check_fits(_demo(), device="cpu")
    monkeypatch.setattr("curlora.models.loading.available_memory", lambda device: 10**12)
    assert estimate.check_fits(_demo(), device="cpu")["total"] > 0
