"""Trainable-parameter counts per method, from the model's config alone (meta device: no weights are read).

The Train tab shows these while the user edits ranks and target modules; the run itself records the counted
numbers (metrics.json `trainable`), which these match for CURLoRA and LoRA. Also what a loaded model can take before a
run starts: its memory (`check_fits`) and its positions (`check_positions`).
"""

from __future__ import annotations

from functools import lru_cache

from torch import nn

from curlora.errors import CurloraError
from curlora.experiment import MethodSettings
from curlora.measure.perplexity import LOGITS_BUDGET
from curlora.methods.registry import method, targets


@lru_cache(maxsize=4)
def _skeleton(choice: str, revision: str | None, trust_remote_code: bool):
    from curlora.models.loading import empty_model, locate, read_config

    _, folder = locate(choice, revision=revision)
    return empty_model(read_config(folder, choice, trust_remote_code), trust_remote_code)


def linear_shape(module: nn.Module) -> tuple[int, int]:
    """(in, out) of a Linear or of GPT-2's transposed Conv1D."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    w = module.weight  # Conv1D keeps its weight as (in, out)
    return int(w.shape[0]), int(w.shape[1])


def trainable_parameters(choice: str, settings: list[MethodSettings], *, revision: str | None = None,
                         trust_remote_code: bool = False) -> dict[str, int | None]:
    """label -> parameters the method trains (None where it depends on the tasks, e.g. head-only)."""
    from curlora.adapter.model import find_target_modules

    model = _skeleton(choice, revision, trust_remote_code)
    modules = dict(model.named_modules())
    out: dict[str, int | None] = {}
    parameters = sum(p.numel() for p in model.parameters())
    for m in settings:
        kind = method(m.kind)
        shapes = []
        if kind.has_adapter:
            shapes = [linear_shape(modules[n]) for n in find_target_modules(model, targets(m, model))]
        out[m.label] = kind.trainable(m, shapes, parameters)
    return out


# -- memory before a run ---------------------------------------------------------------------------------------
GB = 1e9
QUANT_BYTES = {"8bit": 1.0, "4bit": 0.5 + 0.0625}  # NF4 with double quantisation: ~0.5625 bytes per weight


def _bytes(dtype) -> int:
    import torch

    return torch.empty((), dtype=dtype).element_size()


def training_memory(cfg, *, device: str | None = None, planning: bool = False) -> dict:
    """What a run of experiment `cfg` needs at its peak, in bytes, from the model's config alone:

    weights (quantised linear layers at their packed size) + the largest of (one method training: its trainable
    parameters with their gradient and two AdamW moments, the activations kept for the backward pass and the
    loss's float32 logits) and (the evaluation: the perplexity probe's and the likelihood scorer's float32 logits).
    Methods train one after another on one shared base, so the peak is one method's, not their sum. Activations per
    layer and token: about 12·hidden + 3·intermediate numbers (the inputs every linear, norm and activation keeps
    for its backward); with gradient checkpointing only each layer's input is kept, plus one layer's set.

    {"weights", "training", "evaluation", "total", "parts": {...}} — a first-order estimate (±25 % against the
    peaks measured in docs/real-sizes.md), not an allocator trace. `planning`: take `device` as given (e.g. "cuda"
    on a machine without one) instead of checking it is here."""
    from curlora.models.loading import resolve_device, resolve_dtype

    # planning: the estimate for a device that need not be on this machine (a preset's 24 GB GPU)
    device = (device or cfg.model.device) if planning else resolve_device(device or cfg.model.device)
    dtype = resolve_dtype(cfg.model.dtype, device)
    b = _bytes(dtype)
    model = _skeleton(cfg.model.name, cfg.model.revision, cfg.model.trust_remote_code)
    c = model.config
    hidden = getattr(c, "hidden_size", None) or getattr(c, "n_embd", None) or 0  # 0: an unknown layout, counted
    layers = getattr(c, "num_hidden_layers", None) or getattr(c, "n_layer", None) or 0  # as weights only
    inter = getattr(c, "intermediate_size", None) or getattr(c, "n_inner", None) or 4 * hidden
    vocab = getattr(c, "vocab_size", None) or 0
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    total_params = sum(p.numel() for p in model.parameters())
    linear = sum(m.weight.numel() for m in model.modules()
                 if m is not head and hasattr(m, "weight") and m.weight is not None and m.weight.ndim == 2
                 and type(m).__name__ in ("Linear", "Conv1D"))
    q = cfg.model.quantization
    weights = (linear * QUANT_BYTES[q] + (total_params - linear) * b) if q in QUANT_BYTES else total_params * b

    t = cfg.training
    tokens = t.batch_size * t.max_length
    per_layer = (12 * hidden + 3 * inter) * b
    kept = tokens * hidden * b * layers + tokens * per_layer if t.gradient_checkpointing else tokens * per_layer * layers
    # float32 logits and their gradient, only at the columns that predict a label word (measure/forward.label_loss):
    # at most a few per row, and a length-grouped batch shares most of them
    loss_logits = t.batch_size * min(t.max_length, 4 * t.batch_size) * vocab * 4 * 2
    counts = trainable_parameters(cfg.model.name, cfg.methods, revision=cfg.model.revision,
                                  trust_remote_code=cfg.model.trust_remote_code)
    optimiser = 0
    for m in cfg.methods:
        n = counts.get(m.label) or 0
        if n >= total_params:  # every weight trains: its gradient and two moments in the weights' dtype
            optimiser = max(optimiser, n * 3 * b)
        elif n:
            optimiser = max(optimiser, n * 16)  # float32 value, gradient and two moments
    trains = any(method(m.kind).trains for m in cfg.methods)
    training = (kept + loss_logits + optimiser) if trains else 0
    ev = cfg.evaluation
    one = ev.ppl_window * vocab * 4  # one window's float32 logits
    # a batch of windows (8, or fewer to stay within the budget), plus one window's float copy and log-softmax
    ppl_logits = min(8 * one, max(LOGITS_BUDGET, one)) + 2 * one
    score_logits = ev.batch_size * 8 * vocab * 4  # the label positions of a scoring batch
    evaluation = max(ppl_logits, score_logits, (ev.self_probe_tokens + 1) * vocab * 4 * 2)
    total = weights + max(training, evaluation)
    return {"weights": int(weights), "training": int(training), "evaluation": int(evaluation), "total": int(total),
            "device": device, "dtype": str(dtype).removeprefix("torch."),
            "parts": {"activations": int(kept), "loss_logits": int(loss_logits), "optimiser": int(optimiser)}}


def memory_text(est: dict, free: int | None = None) -> str:
    """The estimate as the Train and Model tabs show it, against the free memory where known."""
    gb = lambda x: f"{x / GB:.2f} GB"  # noqa: E731
    p = est["parts"]
    text = (f"about {gb(est['total'])} at the peak: weights {gb(est['weights'])} ({est['dtype']}) + the larger of "
            f"training {gb(est['training'])} (activations {gb(p['activations'])}, loss logits {gb(p['loss_logits'])}, "
            f"optimiser {gb(p['optimiser'])}) and evaluation {gb(est['evaluation'])}")
    if free is not None:
        where = "GPU memory" if est["device"].startswith("cuda") else "RAM"
        text += f"; {gb(free)} of {where} is free"
    return text


def check_fits(cfg, *, device: str | None = None) -> dict:
    """Refuse, before anything loads, a run whose estimate exceeds the free memory — with what to change."""
    from curlora.models.loading import available_memory

    est = training_memory(cfg, device=device)
    free = available_memory(est["device"])
    if est["total"] > free:
        t = cfg.training
        advice = []
        if est["training"] >= est["evaluation"]:
            advice.append(f"lower training.batch_size (now {t.batch_size}) or max_length (now {t.max_length})")
            if not t.gradient_checkpointing:
                advice.append("turn on training.gradient_checkpointing")
        else:
            advice.append(f"lower evaluation.batch_size (now {cfg.evaluation.batch_size}) or ppl_window")
        if cfg.model.quantization == "none":
            advice.append("load the base in 4bit (model.quantization)")
        raise CurloraError(f"This run needs {memory_text(est, free)}; " + ", or ".join(advice) + ".")
    return est


def model_positions(model) -> int | None:
    """The most tokens `model` can attend over (its position embeddings or context), if its config says."""
    config = model.config
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_positions(cfg, model) -> None:
    """Refuse a perplexity window or an example length beyond the model's positions: rotary models silently
    score nonsense past them (a 10^9-token window put the bundled model's probe perplexity at 193.9 instead of
    51.3), learned-position models (GPT-2) fail with an index error."""
    limit = model_positions(model)
    if limit is None:
        return
    for path, value in (("evaluation.ppl_window", cfg.evaluation.ppl_window),
                        ("training.max_length", cfg.training.max_length)):
        if value > limit:
            raise CurloraError(f"{path}: {value} tokens is longer than this model's {limit} positions; "
                               f"use at most {limit}.")
