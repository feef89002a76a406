"""PEFT's peers of LoRA, each one registered method kind (curlora/methods/registry.py is the registry): MiCA, PiSSA,
CorDA (knowledge-preserved), OSF and DoRA — what PEFT ships for keeping what the base knows, on the same frozen base
and measured by the same probes. The helpers keep a method that rewrites the base weights honest: the weights it
touches are kept aside and written back bit for bit, and its drift is measured on what the layers compute.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from curlora.errors import CurloraError
from curlora.methods.registry import AdapterMethod, Attached, Context, is_lora, lora_config, register, targets

# -- PEFT's peers: LoRA's family and the forgetting-aware methods -------------------------------------------------
def adapted_layers(settings, model) -> dict:
    """name -> module for every layer a method adapts in `model` (PEFT's matching rules, as CURLoRA's adapter uses
    them: names, a regular expression or all-linear)."""
    from curlora.adapter.model import find_target_modules

    return {n: model.get_submodule(n) for n in find_target_modules(model, targets(settings, model))}


def tuner_layers(model) -> dict:
    """The base model's layer name (model.layers.0.self_attn.q_proj) -> PEFT layer, in an adapted model."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {n.removeprefix("base_model.model."): m for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)}


def _weight(model, name: str):
    """The weight of layer `name`, whether an adapter wraps the layer or not."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    module = model.get_submodule(name)
    return (module.get_base_layer() if isinstance(module, BaseTunerLayer) else module).weight


def keep(model, names) -> dict:
    """The weights of layers `names`, copied aside on the CPU: what a method that rewrites them writes back."""
    return {n: _weight(model, n).detach().to("cpu", copy=True) for n in names}


def restore(model, kept: dict) -> None:
    """Write kept weights back into `model`'s layers bit for bit, wrapped or not (an attach that failed half way)."""
    import torch

    with torch.no_grad():
        for n, w in kept.items():
            _weight(model, n).copy_(w)


def kept_aside(base, names, build: Callable[[], object]) -> Attached:
    """An attach that rewrites the shared base's weights of layers `names`: they are kept aside first, `build()`
    makes the adapted model, and if it fails half way the weights are written back before the error goes on. The
    cleanup detaches the adapter and writes them back; the snapshot is what was kept (for the drift)."""
    from curlora.methods import adapters

    kept = keep(base, names)
    try:
        model = build()
    except BaseException:
        restore(base, kept)
        raise

    def cleanup():
        adapters.detach(model)
        restore(base, kept)

    return Attached(model, cleanup, kept)


def effective_drift(model, kept: dict | None, delta) -> dict:
    """The drift measure of curlora/measure/probes.py (‖W' − W‖/‖W‖ per matrix and over all) for layers that carry
    more than LoRA's s·B·A: W is the weight kept at attach (None: the layer's own, left alone), W' the layer's base
    weight plus `delta(layer)`, in the base weight's layout."""
    import math

    import torch

    pairs = {}
    with torch.no_grad():
        for name, layer in tuner_layers(model).items():
            w = layer.get_base_layer().weight.double()
            orig = w if kept is None else kept[name].to(w.device).double()
            d = w - orig + delta(layer).double()
            pairs[name] = (float(d.pow(2).sum()), float(orig.pow(2).sum()))
    w_all = sum(w2 for _, w2 in pairs.values())
    return {"total": math.sqrt(sum(d2 for d2, _ in pairs.values()) / w_all) if w_all > 0 else 0.0,
            "per_matrix": {n: math.sqrt(d2 / w2) if w2 > 0 else 0.0 for n, (d2, w2) in pairs.items()}}


def _lora_delta(layer):
    return layer.get_delta_weight("default")


def _dora_delta(layer):
    """DoRA's W' − W: m · (W + s·B·A) / ‖W + s·B·A‖ per output, as PEFT merges it."""
    from peft.utils.other import transpose

    w = layer.get_base_layer().weight.float()
    moved = w + layer.get_delta_weight("default").float()
    norm = transpose(moved, layer.fan_in_fan_out).norm(dim=1)
    scale = transpose((layer.lora_magnitude_vector["default"].weight.float() / norm).view(-1, 1), layer.fan_in_fan_out)
    return scale * moved - w


FLOAT_DTYPES = ("torch.float32", "torch.float16", "torch.bfloat16")  # as str(dtype): no torch import here


class PeftPeer(AdapterMethod):
    """One of PEFT's methods beside LoRA on the same frozen base. The layers it would adapt are checked against the
    model before any is touched: one sentence, not an error from inside PEFT half way through an attach."""

    column = "lora"  # the Train tab's LoRA boxes (r, alpha, dropout) set it too
    refines = "lora"  # an attached config or a stage of it is a LoRA one to PEFT (OSF's stages too)
    rank_within_layer: ClassVar[bool] = False  # r may not exceed the smaller side of an adapted matrix
    float_weights: ClassVar[bool] = False  # its init decomposes W: float32, float16 or bfloat16 only, not quantized

    def layer_types(self) -> tuple:
        """The module types PEFT's method adapts."""
        from torch import nn
        from transformers.pytorch_utils import Conv1D

        return nn.Linear, Conv1D, nn.Embedding

    def check_model(self, settings, model) -> dict:
        layers = adapted_layers(settings, model)
        allowed = self.layer_types()
        for name, module in layers.items():
            if not isinstance(module, allowed):
                raise CurloraError(f"'{self.kind}' adapts {', '.join(t.__name__ for t in allowed)} layers only, and "
                                   f"{name} of this model is a {type(module).__name__}: target other layers or pick "
                                   "another method.")
            if self.float_weights and str(module.weight.dtype) not in FLOAT_DTYPES:
                raise CurloraError(f"'{self.kind}' decomposes the weights it adapts, so they must be float32, float16 "
                                   f"or bfloat16, and {name} holds {module.weight.dtype} (a quantized base): load the "
                                   "model unquantized or pick lora or dora.")
            side = min(module.weight.shape)
            if self.rank_within_layer and settings.r > side:
                raise CurloraError(f"'{self.kind}' takes r at most the smaller side of every matrix it adapts; {name} "
                                   f"is {tuple(module.weight.shape)}, so lower r (now {settings.r}) to {side} or less.")
        return layers

    def attach(self, base, settings, stage, context=None):
        self.check_model(settings, base)
        return super().attach(base, settings, stage, context)


@register
class MiCA(PeftPeer):
    kind, title, group = "mica", "MiCA", "forgetting-aware"
    help = ("PEFT's MiCA (init_lora_weights='mica'): B is the r left singular vectors of W with the smallest singular "
            "values, frozen; only A (r × in, starting at zero) trains, so the change stays in W's minor directions. "
            "The base is untouched. Linear, Conv1D, Embedding layers in float32/16/bf16, r at most each matrix's "
            "smaller side; a stage is a plain PEFT LoRA folder (init 'mica').")
    rank_within_layer = True
    float_weights = True
    lr_prior = (2e-4, 5e-4, 1e-3, 2e-3)

    def owns(self, config, note):
        return is_lora(config) and not note and config.get("init_lora_weights") == "mica"

    def peft_config(self, settings, model):
        return lora_config(settings, model, init_lora_weights="mica")

    def trainable(self, settings, shapes, parameters):
        return sum(settings.r * i for i, _ in shapes)


class ResidualLoRA(PeftPeer):
    """A LoRA whose init moves part of W into A and B and leaves the base the residual W − s·B0·A0 (PiSSA, CorDA).
    The targeted weights of the shared base are kept aside and written back on cleanup; a stage is the plain LoRA of
    rank 2r that applies to the original base (curlora/methods/adapters.py save_residual), and the next task rebuilds the
    residual from that folder, so training goes on where it stopped."""

    rank_within_layer = True
    float_weights = True
    init: ClassVar[str] = ""  # PEFT's init_lora_weights that names this kind in an attached config

    def owns(self, config, note):
        """Its stages carry a marker; a freshly attached config says it by its init."""
        return super().owns(config, note) or bool(
            self.init and not note and is_lora(config) and str(config.get("init_lora_weights")).startswith(self.init))

    def initialise(self, base, settings, context):
        """The freshly initialised PEFT model (its init rewrites the base) and the marker its stages carry."""
        raise NotImplementedError

    def attach(self, base, settings, stage, context=None):
        from peft import get_peft_model_state_dict

        from curlora.methods import adapters

        def build():
            if stage is None:
                model, marker = self.initialise(base, settings, context)
                initial = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
            else:
                model, initial = adapters.load_residual(base, lora_config(settings, base), stage, self.kind)
                marker = adapters.marker(stage)
            model.initial_factors, model.stage_marker = initial, marker
            return model

        return kept_aside(base, self.check_model(settings, base), build)

    def save(self, model, folder):
        from curlora.methods import adapters

        adapters.save_residual(model, folder, model.initial_factors, model.stage_marker)

    def trainable(self, settings, shapes, parameters):
        return sum(settings.r * (i + o) for i, o in shapes)

    def drift(self, model, snapshot):
        return effective_drift(model, snapshot, _lora_delta)


@register
class PiSSA(ResidualLoRA):
    """Exact SVD ('pissa'), not 'pissa_niter_N': it runs once per run (later tasks rebuild the residual from the
    saved stage), as CorDA's does and less often than OSF's (one per task), needs no random draws, and gives W's true
    principal directions, where PEFT's randomised SVD (q = r, no oversampling) only approximates them on the flat
    spectra of small models."""

    kind, title, group = "pissa", "PiSSA", "LoRA family"
    init = "pissa"  # 'pissa' or 'pissa_niter_N'
    help = ("PEFT's PiSSA (init_lora_weights='pissa', exact SVD): A and B start as W's top r singular directions and "
            "the base becomes the residual W − s·B·A; all of A and B train, so the change is in W's principal "
            "directions. The shared base is written back bit for bit on cleanup; a stage is a plain LoRA of rank 2r "
            "that applies to the original base. Linear and Conv1D layers in float32/16/bf16, r at most each matrix's "
            "smaller side.")
    lr_prior = (1e-5, 2e-5, 5e-5, 1e-4)

    def initialise(self, base, settings, context):
        from curlora.methods import adapters

        model = adapters.attach(base, lora_config(settings, base, init_lora_weights="pissa"), kind=self.kind)
        return model, {"kind": self.kind}


# CorDA's guidance for its covariance: HIDDEN_DIM / TOKEN_PER_SAMPLE * 128 samples, i.e. hidden × 128 tokens.
CALIBRATION_TOKENS_PER_HIDDEN = 128


@register
class CorDA(ResidualLoRA):
    kind, title, group = "corda", "CorDA (KPM)", "forgetting-aware"
    help = ("PEFT's CorDA in knowledge-preserved mode (init 'corda', corda_method 'kpm'): W is decomposed through the "
            "covariance C of its inputs on general text (the probe text past the part perplexity scores, else the "
            "scored part; the stage's method.json names it) and A, B start as the r directions of W·C that text uses "
            "least; the base becomes the residual. Needs forward passes over that text and an in × in covariance per "
            "layer before the first task; written back bit for bit on cleanup; a stage is a LoRA of rank 2r on the "
            "original base. Linear and Conv1D layers in float32/16/bf16, r at most each matrix's smaller side.")
    needs_context = True
    init = "corda"
    lr_prior = (2e-5, 5e-5, 1e-4, 2e-4)

    def layer_types(self):
        from torch import nn
        from transformers.pytorch_utils import Conv1D

        return nn.Linear, Conv1D

    def initialise(self, base, settings, context):
        from peft.tuners.lora.config import CordaConfig
        from peft.tuners.lora.corda import preprocess_corda

        from curlora.methods import adapters

        config = lora_config(settings, base, init_lora_weights="corda",
                             corda_config=CordaConfig(corda_method="kpm"))
        hidden = base.config.get_text_config().hidden_size
        ids, source = context.calibration(CALIBRATION_TOKENS_PER_HIDDEN * hidden)
        device = next(base.parameters()).device

        def run_model():  # PEFT's hook takes one sequence per forward (it squeezes the batch dimension)
            for chunk in ids.split(context.window):
                base(input_ids=chunk[None].to(device), use_cache=False)

        try:
            preprocess_corda(base, config, run_model=run_model)
            model = adapters.attach(base, config, kind=self.kind)
        finally:
            for module in base.modules():  # what an init that stopped half way left on the layers
                if hasattr(module, "eigens"):
                    del module.eigens
        return model, {"kind": self.kind, "calibration": source, "calibration_tokens": int(ids.numel())}


@register
class OSF(PeftPeer):
    """Between tasks the earlier tasks' change is folded into the base and W decomposed again with a larger frozen
    part, as PEFT's OSF guide says for sequential tasks; the shares follow its budget allocation for a known sequence
    of n tasks with pretraining counted as the first (k = d·t/(n+1) at task t, PEFT's default d/2 when n = 1)."""

    kind, title, group = "osf", "OSF", "forgetting-aware"
    help = ("PEFT's orthogonal subspace fine-tuning (OSFConfig): each adapted W = U·S·Vᵀ keeps its top k singular "
            "directions frozen and trains the rest (U_low, S_low, V_low: (d − k)(in + out + 1) per matrix, d its "
            "smaller side), gradients projected away from the frozen part. At task t of n, k = d·t/(n+1) "
            "(methods.preserve sets the shares), after the earlier tasks' change is folded in and W decomposed again. "
            "nn.Linear layers only (not GPT-2's Conv1D); the shared base is written back bit for bit; a stage holds "
            "the whole change ΔW of every matrix as a full-rank LoRA on the original base.")
    ranked = False
    column = ""
    needs_context = True
    float_weights = True
    trainable_note = "(d − k)·(in + out + 1) per matrix, fewer every task"
    lr_prior = (1e-5, 3e-5, 1e-4, 3e-4)

    def layer_types(self):
        from torch import nn

        return (nn.Linear,)

    def check(self, settings, scoring, where):
        super().check(settings, scoring, where)
        shares = settings.preserve
        if shares is not None and not (shares and all(0 < x < 1 for x in shares) and shares == sorted(shares)):
            raise CurloraError(f"{where}.preserve: OSF's preserved shares are fractions between 0 and 1, one per task, "
                               f"that never shrink from one task to the next (got {shares}).")

    def share(self, settings, context: Context) -> float:
        """The share of each matrix's smaller side kept frozen at this task (a short list repeats its last value)."""
        if settings.preserve:
            return settings.preserve[min(context.task, len(settings.preserve) - 1)]
        return (context.task + 1) / (context.tasks + 1)

    def owns(self, config, note):
        return super().owns(config, note) or (not note and config.get("peft_type") == "OSF")  # marker, or attached

    def attach(self, base, settings, stage, context=None):
        import peft

        from curlora.methods import adapters

        layers = self.check_model(settings, base)
        share = self.share(settings, context)
        for name, module in layers.items():
            side = min(module.weight.shape)
            frozen = int(side * share)  # how PEFT reads a fractional effective_rank
            if not 0 < frozen < side:
                left = "nothing frozen" if frozen == 0 else "nothing to train"
                raise CurloraError(f"'osf' preserving {share:.0%} of {name} (smaller side {side}) leaves {left}; "
                                   "change methods.preserve or target larger layers.")

        def build():
            if stage is not None:
                adapters.merge(adapters.load_adapter(base, stage))  # the earlier tasks' change, folded in
            return adapters.attach(base, peft.OSFConfig(target_modules=targets(settings, base), effective_rank=share),
                                   kind=self.kind)

        attached = kept_aside(base, layers, build)
        attached.model.base_weights = attached.snapshot
        return attached

    def save(self, model, folder):
        import torch

        from curlora.methods import adapters

        deltas = {}
        with torch.no_grad():
            for name, layer in tuner_layers(model).items():
                w = layer.get_base_layer().weight.float()
                deltas[name] = w - model.base_weights[name].to(w.device).float() + _lora_delta(layer).float()
        adapters.save_delta(folder, deltas, {"kind": self.kind})

    def trainable(self, settings, shapes, parameters):
        return None  # the frozen share grows task by task

    def drift(self, model, snapshot):
        return effective_drift(model, snapshot, _lora_delta)


@register
class DoRA(PeftPeer):
    kind, title, group = "dora", "DoRA", "LoRA family"
    help = ("PEFT's DoRA (use_dora=True): W' = m · (W + s·B·A) / ‖W + s·B·A‖ per output; A, B and the magnitude m (one "
            "per output, starting at ‖W‖) train. The base is untouched, but every forward rebuilds W + s·B·A for its "
            "norms: slower and hungrier than LoRA. Linear, Conv1D, Embedding layers; a stage is a PEFT LoRA folder "
            "with use_dora.")
    lr_prior = (1e-4, 2e-4, 5e-4, 1e-3)

    def owns(self, config, note):
        return is_lora(config) and not note and bool(config.get("use_dora"))

    def peft_config(self, settings, model):
        return lora_config(settings, model, use_dora=True)

    def trainable(self, settings, shapes, parameters):
        return sum(settings.r * (i + o) + o for i, o in shapes)

    def drift(self, model, snapshot):
        return effective_drift(model, None, _dora_delta)
