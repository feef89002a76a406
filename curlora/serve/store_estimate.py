"""How many bytes a study's runs will leave in the run store, estimated before it is admitted.

Each run of a study trains one method over every task and keeps, per task, that method's stage folder (its adapter
in float32 safetensors, as much as the method's registry entry says it stores: a CURLoRA stage keeps C and R beside
U), its own small files
(config, events, metrics: RUN_OVERHEAD) and the self-probe reference of the base model (texts × tokens × the
vocabulary, or its top-k plus a remainder when the vocabulary is large; float64). Counting the reference once per
run is an upper bound where the runs of a study share it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only
    from curlora.run.measurer import Loaded

RUN_OVERHEAD = 256 * 1024  # config.yaml, events.jsonl, metrics.json and status of a small run, generously
FLOAT32, FLOAT64 = 4, 8


def stage_bytes(cfg, model, settings) -> int:
    """Bytes of one saved stage of one method on `model` (0 for a method that saves no adapter)."""
    from curlora.adapter.model import find_target_modules
    from curlora.methods.registry import method, targets
    from curlora.run.estimate import linear_shape

    kind = method(settings.kind)
    if not kind.trains:
        return 0
    parameters = sum(p.numel() for p in model.parameters())
    shapes = []
    if kind.has_adapter:
        modules = dict(model.named_modules())
        shapes = [linear_shape(modules[n]) for n in find_target_modules(model, targets(settings, model))]
    return FLOAT32 * kind.stored(settings, shapes, parameters)


def reference_bytes(cfg, model) -> int:
    """The self-probe reference file (curlora/measure/probes.py) of this config on `model`."""
    from curlora.measure.perplexity import vocab_size
    from curlora.measure.probes import FULL_VOCAB_MAX, TOP_K

    ev = cfg.evaluation
    if not ev.self_probe:
        return 0
    vocab = vocab_size(model) or 0
    width = vocab if vocab <= FULL_VOCAB_MAX else 2 * TOP_K + 1  # top-k log-probs + remainder, and their indices
    return FLOAT64 * ev.self_probe_texts * ev.self_probe_tokens * width


def study_bytes(cfg, loaded: Loaded, points: dict[str, int]) -> int:
    """Estimated bytes of a study's runs: `points` is method label -> runs of it (curlora/serve/limits.study_points)."""
    per_run_extra = RUN_OVERHEAD + reference_bytes(cfg, loaded.model)
    total = 0
    for m in cfg.methods:
        n = points.get(m.label, 0)
        if n:
            total += n * (len(cfg.tasks) * stage_bytes(cfg, loaded.model, m) + per_run_extra)
    return total
