"""Trainable-parameter counts per method, from the model's config alone (meta device: no weights are read).

The Train tab shows these while the user edits ranks and target modules; the run itself records the counted
numbers (metrics.json `trainable`), which these match for CURLoRA and LoRA.
"""

from __future__ import annotations

from functools import lru_cache

from torch import nn

from curlora.experiment import MethodSettings
from curlora.run.methods import method, targets


@lru_cache(maxsize=4)
def _skeleton(choice: str, revision: str | None, trust_remote_code: bool):
    from curlora.models.loading import empty_model, locate, read_config

    _, folder = locate(choice, revision=revision)
    return empty_model(read_config(folder, choice, trust_remote_code), trust_remote_code)


def _shape(module: nn.Module) -> tuple[int, int]:
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
            shapes = [_shape(modules[n]) for n in find_target_modules(model, targets(m, model))]
        out[m.label] = kind.trainable(m, shapes, parameters)
    return out
