"""The method registry: every way of going through the task sequence is one registered class, and the runner,
evaluation, export, limits, the estimate and the charts ask it, never a `kind ==` string.

    m = method("curlora")                       # the registered object for a kind (one sentence if unknown)
    m.attach(base, settings, stage_folder, context)  # -> Attached(model, cleanup, snapshot); None = start fresh
    m.save(model, folder)                       # what a finished stage keeps (adapter folder, weights, nothing)
    m.load(base, folder)                        # -> Attached: a saved stage on the base, to read (chat, evaluation,
                                                #    merged export); m.has_stage(folder) says whether one is there
    m.owns(config, note)                        # whether a stage's PEFT config and method.json marker are this kind's
    m.trainable(settings, shapes, parameters)   # trainable parameters from the config alone (None: unknown)
    m.drift(model, snapshot)                    # how far the weights moved after a stage
    kinds()                                     # the registered kinds, in registration order

Adding a method is adding one class with `@register` (tests/test_methods_registry.py adds one more in a test). The class
attributes say what the rest of the app may do with it: `trains` (base: no), `has_adapter` (a PEFT-layout stage folder:
LoRA and GGUF exports and the hub work on it), `loads_stage` (a stage folder holds the weights of that stage, which
`load` puts on the base: chat, evaluation on new data and merged exports work on it; `full` too), `refines` (the kind
whose stages read like this one's, which `owns` narrows: MiCA and DoRA refine LoRA), `ranked` (has a rank r: the rank
limit and the out-of-memory hint apply), `needs_head_scoring` (head-only), `needs_context` (attach's Context, the task
index and calibration text, is used: the runner builds it for every kind, and the others ignore it), `group`, `title`,
`column` and `trainable_note` for the Train tab and `lr_prior` (a learning-rate range for study grids), `replays`
(experience replay may be set on it; `no_replay` says why not) and `stage_tasks(i)` (whose training rows stage i trains
on as its own: its task; joint: every task so far).

The continual-learning baselines (joint training, EWC) live in curlora/methods/baselines.py; PEFT's peers are registered
below them: MiCA, CorDA and OSF (forgetting-aware), PiSSA and DoRA (LoRA family). PiSSA, CorDA and OSF change the
shared base weights while they train: each keeps the targeted weights aside and writes them back on cleanup, bit for
bit, and saves stages that apply to the original base (curlora/methods/adapters.py).

Heavy imports (torch, peft) happen inside the methods, so the config can validate kinds without loading torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from curlora.errors import CurloraError
from curlora.measure.describe import described, lr_text, setting_text  # noqa: F401  (how settings are written)
from curlora.methods.kinds import REGISTRY, kinds, method, register, unregister  # noqa: F401  (kinds.py: the table)

if TYPE_CHECKING:  # annotations only: the config imports this module
    from curlora.experiment import MethodSettings

FULL_WEIGHTS = "model.safetensors"  # a full fine-tuning stage: every weight of the model
GROUPS = ("forgetting-aware", "LoRA family", "baselines")  # every Method.group, in the order the Train tab lists them


@dataclass
class Context:
    """What the runner gives a method that asks for it (`needs_context`) at attach, beside its settings: the task
    it is about to train (0-based) of how many, and general text for a data-driven init: `calibration(n)` is up to
    n token ids (1-D) and where they come from, to be run `window` tokens at a time."""

    task: int
    tasks: int
    window: int
    calibration: Callable[[int], tuple[object, str]]


@dataclass
class Attached:
    """A method ready to train or score: the model to use, how to give the shared base back, and the base weights
    kept aside when the method changes them (for its weight drift and the restore)."""

    model: object
    cleanup: Callable[[], None]
    snapshot: dict | None = None


class Method:
    kind: ClassVar[str] = ""
    title: ClassVar[str] = ""
    group: ClassVar[str] = "baselines"  # one of GROUPS
    help: ClassVar[str] = ""
    trains: ClassVar[bool] = True
    has_adapter: ClassVar[bool] = False
    loads_stage: ClassVar[bool] = False  # a stage folder holds the model of that stage: load() gives it
    refines: ClassVar[str] = ""  # a kind whose stages this one's also read as (owns() narrows them)
    ranked: ClassVar[bool] = False
    needs_head_scoring: ClassVar[bool] = False
    needs_context: ClassVar[bool] = False
    column: ClassVar[str] = ""  # the Train tab column whose boxes set this method's fields (default: its own kind)
    trainable_note: ClassVar[str] = ""  # what the Train tab shows where trainable() is None
    lr_prior: ClassVar[tuple[float, ...]] = ()
    trains_all_weights: ClassVar[bool] = False  # every base weight trains: a quantised base cannot hold that
    replays: ClassVar[bool] = True  # methods[i].replay may mix earlier tasks' rows into its batches
    consolidation_rows: ClassVar[int] = 0  # training rows consolidate()'s fisher() reads (EWC), for the cost
    no_replay: ClassVar[str] = ""  # why not, where replays is False: '<kind> …; set replay: 0 …'

    def check(self, settings: MethodSettings, scoring: str, where: str) -> None:
        """Config-time refusals for this kind, one sentence naming `where` (e.g. 'methods[2]')."""
        if self.needs_head_scoring and scoring != "head":
            raise CurloraError(f"{where}: '{self.kind}' trains only a classification head, so it needs "
                               "evaluation.scoring: head.")
        if settings.replay and not (self.trains and self.replays):
            why = self.no_replay or "trains nothing, so it has no batch to replay earlier rows into"
            raise CurloraError(f"{where}.replay: '{self.kind}' {why}; set replay: 0 or drop it from this method.")
        if settings.replay and scoring == "head":
            raise CurloraError(f"{where}.replay: with head scoring every task trains its own head, and replay mixes "
                               "earlier tasks' rows into one label-word loss; use evaluation.scoring: likelihood or "
                               "set replay: 0.")

    def penalty(self, model, settings: MethodSettings) -> Callable[[], object] | None:
        """A term the training loss adds at every step (EWC's quadratic pull to earlier tasks' weights); None: none."""
        return None

    def consolidate(self, model, settings: MethodSettings, fisher: Callable[[], dict]) -> None:
        """After a stage that another follows trains, before it is saved: what the method keeps of it for the next
        stages (EWC: the weights and `fisher()`, the diagonal Fisher on the stage's task)."""

    def stage_tasks(self, i: int) -> range:
        """The tasks (0-based) whose training rows stage i trains on as its own: the task of that stage."""
        return range(i, i + 1)

    def attach(self, base, settings: MethodSettings, stage: Path | None, context: Context | None = None) -> Attached:
        """The model to train from `base`, resumed from a saved stage folder (None: fresh). `context` is what a kind
        that `needs_context` reads (the others ignore it)."""
        return Attached(base, lambda: None)

    def save(self, model, folder: Path) -> None:
        """Write what a finished stage keeps into `folder` (heads are saved beside by the runner)."""

    def has_stage(self, folder: Path) -> bool:
        """Whether `folder` holds a finished stage of this kind that `load` can put on the base."""
        return False

    def load(self, base, folder: Path) -> Attached:
        """The model of a saved stage on `base`, to read rather than train (chat, evaluation on new data, merged
        export), and how to give the base back. A kind whose stages keep no weights gives the base itself."""
        return Attached(base, lambda: None)

    def merge(self, model):
        """A loaded stage as a plain model with everything folded into its weights (a merged export)."""
        return model

    def owns(self, config: dict, note: dict) -> bool:
        """Whether a stage whose PEFT config (a dict) and method.json marker (`note`, {} where none) are these is this
        kind's: by default, a marker that names it (curlora/methods/kinds.py stage_kind asks every kind)."""
        return note.get("kind") == self.kind

    def trainable(self, settings: MethodSettings, shapes: list[tuple[int, int]], parameters: int) -> int | None:
        """Trainable parameters from the config: `shapes` are the (in, out) of the targeted matrices, `parameters`
        the base model's count. None: known only per task (heads, OSF's growing frozen share)."""
        return 0

    def stored(self, settings: MethodSettings, shapes: list[tuple[int, int]], parameters: int) -> int:
        """Numbers a saved stage keeps (what the store's size estimate counts): the trained ones, unless the method
        saves frozen tensors beside them."""
        return self.trainable(settings, shapes, parameters) or 0

    def drift(self, model, snapshot: dict | None) -> dict:
        """{"total", "per_matrix"} weight drift after a stage (curlora/measure/probes.py); `snapshot` is the
        Attached one."""
        from curlora.measure.probes import weight_drift

        return weight_drift(model, snapshot)

    def setting(self, settings: MethodSettings, default_lr: float) -> dict:
        """What was set for this method that tells it apart from another of its kind or a rival: the learning
        rate it trained at (when it trains) and its rank (when ranked). Stored in metrics.json beside its numbers."""
        out = {}
        if self.trains:
            out["lr"] = settings.lr or default_lr
        if self.ranked:
            out["r"] = settings.r
        if settings.replay:
            out["replay"] = settings.replay
        return out


class AdapterMethod(Method):
    """A PEFT-layout adapter on the frozen base (CURLoRA, LoRA and its family)."""

    has_adapter = True
    loads_stage = True
    ranked = True

    def peft_config(self, settings: MethodSettings, model):
        raise NotImplementedError

    def attach(self, base, settings, stage, context=None):
        import torch

        from curlora.methods import adapters

        if stage is not None:
            model = adapters.load_adapter(base, stage, is_trainable=True)
        else:
            torch.manual_seed(settings.seed)  # PEFT draws LoRA's A from torch's global generator: same run, same A
            model = adapters.attach(base, self.peft_config(settings, base), kind=self.kind)
        return Attached(model, lambda: adapters.detach(model))

    def save(self, model, folder):
        from curlora.methods import adapters

        adapters.save_adapter(model, folder)

    def has_stage(self, folder):
        from curlora.adapter.model import CONFIG_NAME

        return (Path(folder) / CONFIG_NAME).is_file()

    def load(self, base, folder):
        from curlora.methods import adapters

        model = adapters.load_adapter(base, folder)
        return Attached(model, lambda: adapters.detach(model))

    def merge(self, model):
        from curlora.methods import adapters

        return adapters.merge(model)


def targets(settings, model) -> list[str]:
    """The modules a method adapts: its own list, else the architecture's default (the attention projections)."""
    from curlora.models.loading import default_targets

    return settings.target_modules or default_targets(model)


def lora_config(settings, model, **variant):
    """PEFT's LoraConfig for `settings` on `model` (GPT-2's Conv1D layers are read transposed); `variant` picks one
    of LoRA's family (init_lora_weights="mica", use_dora=True, …)."""
    import peft
    from transformers.pytorch_utils import Conv1D

    names = targets(settings, model)
    conv1d = any(isinstance(mod, Conv1D) for n, mod in model.named_modules() if n.rsplit(".", 1)[-1] in names)
    return peft.LoraConfig(r=settings.r, lora_alpha=settings.r if settings.alpha is None else settings.alpha,
                           target_modules=names, lora_dropout=settings.dropout, fan_in_fan_out=conv1d,
                           task_type="CAUSAL_LM", **variant)


@register
class CURLoRA(AdapterMethod):
    kind, title, group = "curlora", "CURLoRA", "forgetting-aware"
    help = ("W + α·C·U·R: C and R are real columns and rows of W, sampled with inverted norm probabilities and "
            "frozen; only U (r × r, starting at zero) trains.")
    lr_prior = (3e-3, 1e-2, 3e-2, 1e-1)

    def owns(self, config, note):
        from curlora.adapter.config import PEFT_TYPE

        return config.get("peft_type") == PEFT_TYPE

    def peft_config(self, settings, model):
        from curlora.adapter.config import CURLoRAConfig

        return CURLoRAConfig(r=settings.r, alpha=1.0 if settings.alpha is None else settings.alpha,
                             target_modules=targets(settings, model), sampling=settings.sampling,
                             replace=settings.replace, seed=settings.seed)

    def trainable(self, settings, shapes, parameters):
        return len(shapes) * settings.r * settings.r

    def stored(self, settings, shapes, parameters):
        return sum(settings.r * (i + o) + settings.r * settings.r for i, o in shapes)  # C and R beside U


@register
class LoRA(AdapterMethod):
    kind, title, group = "lora", "LoRA", "LoRA family"
    help = "PEFT's LoRA: W + (α/r)·B·A with A (r × in) and B (out × r) trained."
    lr_prior = (2e-4, 5e-4, 1e-3, 2e-3)

    def owns(self, config, note):
        return is_lora(config) and not note  # a marker names a kind whose stage only reads as LoRA

    def peft_config(self, settings, model):
        return lora_config(settings, model)

    def trainable(self, settings, shapes, parameters):
        return sum(settings.r * (i + o) for i, o in shapes)


def is_lora(config: dict) -> bool:
    """Whether a PEFT config (a dict) is a LoRA one."""
    return config.get("peft_type") == "LORA"


@register
class Base(Method):
    kind, title = "base", "base (no training)"
    help = "The base model itself at every stage: the line every method's forgetting is measured against."
    trains = False


@register
class FullFineTune(Method):
    kind, title = "full", "full fine-tune"
    trains_all_weights = True
    loads_stage = True
    help = "Every weight of the model trains (the most forgetting to expect); the base is restored afterwards."
    lr_prior = (1e-5, 3e-5, 1e-4)

    def attach(self, base, settings, stage, context=None):
        loaded = self.load(base, stage)
        for p in base.parameters():
            p.requires_grad_(True)

        def restore():
            loaded.cleanup()
            for p in base.parameters():
                p.requires_grad_(False)

        return Attached(base, restore, loaded.snapshot)

    def load(self, base, folder):
        """The base with a stage's whole weights loaded into it (None: as it is); the cleanup writes the base's own
        weights back (and which of them train, as they were)."""
        from safetensors.torch import load_model

        snapshot = {k: v.detach().to("cpu", copy=True) for k, v in base.state_dict().items()}
        grads = [p.requires_grad for p in base.parameters()]

        def restore():
            base.load_state_dict(snapshot)
            for p, g in zip(base.parameters(), grads):
                p.requires_grad_(g)

        if folder is not None:
            try:
                load_model(base, str(Path(folder) / FULL_WEIGHTS), strict=False)
            except BaseException:
                restore()  # a stage of another model, copied in part
                raise
        return Attached(base, restore, snapshot)

    def save(self, model, folder):
        from safetensors.torch import save_model

        save_model(model, str(folder / FULL_WEIGHTS))  # handles tied embeddings (shared tensors)

    def has_stage(self, folder):
        return (Path(folder) / FULL_WEIGHTS).is_file()

    def trainable(self, settings, shapes, parameters):
        return parameters


@register
class HeadOnly(Method):
    kind, title = "head-only", "head-only (needs head scoring)"
    help = "Only a classification head per task trains on the frozen base: the paper's control for head scoring."
    needs_head_scoring = True
    replays = False
    no_replay = "trains one head per task on that task's rows alone, so earlier rows have no head to train here"
    trainable_note = "hidden × classes per task"
    lr_prior = (1e-3, 1e-2)

    def attach(self, base, settings, stage, context=None):
        for p in base.parameters():
            p.requires_grad_(False)
        return Attached(base, lambda: None)

    def trainable(self, settings, shapes, parameters):
        return None  # hidden × classes, per task


def replayed_rows(share: float, batch_size: int) -> int:
    """Rows of each training batch that replay earlier tasks at a replay `share` (the rest are the task's own)."""
    return int(share * batch_size + 0.5)


def stage_steps(settings: MethodSettings, training, i: int, budget: int | None,
                rows: list[int] | None) -> int | None:
    """Optimiser steps of one method at stage i (0-based), as train_task runs them: `budget` (the schedule's
    max_steps) per task the stage trains on, else epochs over those tasks' rows in batches of the own rows
    (batch_size less the replayed rows, from stage 2 on); None when that needs `rows` (train rows per task)."""
    own = method(settings.kind).stage_tasks(i)
    if budget:
        return budget * len(own)
    if rows is None:
        return None
    per_batch = training.batch_size - (replayed_rows(settings.replay, training.batch_size) if i else 0)
    per_epoch = math.ceil(math.ceil(sum(rows[j] for j in own) / per_batch) / training.grad_accum)
    return max(1, math.ceil(training.epochs * per_epoch))

