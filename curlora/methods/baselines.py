"""The baselines every continual-learning paper reports beside its method, each one registered kind
(curlora/methods/registry.py is the registry): joint multi-task training (the upper bound) and EWC (the classic
regulariser). Experience replay is not a kind but a setting of any trained one (methods[i].replay,
curlora/run/train.py).
"""

from __future__ import annotations

from curlora.errors import CurloraError
from curlora.methods.registry import AdapterMethod, LoRA, lora_config, register


@register
class Joint(AdapterMethod):
    """The multi-task upper bound as continual-learning papers report it: nothing to remember, since at stage k it
    trains on tasks 1..k at once. A fresh adapter per stage (not the last stage's, which would make it replay of
    everything instead of joint training), with the same LoRA init as `lora` so the two rows differ by the data."""

    kind, title, group = "joint", "joint (multi-task upper bound)", "baselines"
    help = ("The upper bound of continual-learning papers: at stage k a fresh PEFT LoRA (same init as lora) trains on "
            "the union of tasks 1..k, shuffled together, for max_steps per task in it (k × max_steps; with epochs, "
            "epochs over the union), so it never has to remember; each stage is a LoRA folder to chat with, "
            "evaluate and export. Likelihood or generate scoring (one loss over every task so far).")
    column = "lora"  # the Train tab's LoRA boxes (r, alpha, dropout) set it, so its adapter matches LoRA's
    replays = False
    no_replay = "already trains on every earlier task's rows, so replay adds nothing"
    lr_prior = LoRA.lr_prior

    def check(self, settings, scoring, where):
        super().check(settings, scoring, where)
        if scoring == "head":
            raise CurloraError(f"{where}: 'joint' trains one label-word loss over every task so far, and head scoring "
                               "gives each task its own head; use evaluation.scoring: likelihood or drop joint.")

    def stage_tasks(self, i):
        return range(0, i + 1)

    def attach(self, base, settings, stage, context=None):
        return super().attach(base, settings, None, context)  # every stage starts from the base: joint, not cumulative

    def peft_config(self, settings, model):
        return lora_config(settings, model)

    def trainable(self, settings, shapes, parameters):
        return sum(settings.r * (i + o) for i, o in shapes)


EWC_FILE = "ewc.safetensors"  # beside the adapter in every stage folder: the anchor weights and the summed Fisher
EWC_LAMBDA = 100.0
FISHER_ROWS = 512  # enough batches for a stable diagonal on the tasks here, a bounded cost on large ones


@register
class EWC(AdapterMethod):
    """Online EWC (Schwarz et al. 2018, without decay) on PEFT's LoRA: one penalty λ/2 · Σ F · (θ − θ*)² whose
    Fisher F is summed over the earlier tasks and whose anchor θ* is the adapter after the last one, instead of
    Kirkpatrick et al.'s one penalty per task (the same sum of quadratics at a single anchor, and one file per stage
    whatever the number of tasks). F is the empirical diagonal Fisher of the adapter's parameters: the mean over
    batches of the label loss's squared gradient (curlora/run/train.py fisher_diagonal)."""

    kind, title, group = "ewc", "EWC (on LoRA)", "baselines"
    help = ("Elastic weight consolidation on PEFT's LoRA: after each task the diagonal Fisher of the adapter's "
            "weights on that task's rows is added up, and later tasks train with λ/2 · Σ F · (θ − θ*)² added to "
            "the loss, θ* the adapter after the last task (online EWC); methods.ewc_lambda sets λ (default 100). A "
            "stage is a LoRA folder plus ewc.safetensors (but the last, which no stage follows). Likelihood or "
            "generate scoring.")
    column = "lora"  # the Train tab's LoRA boxes set it: the same adapter as lora, plus the penalty
    lr_prior = LoRA.lr_prior
    consolidation_rows = FISHER_ROWS

    def check(self, settings, scoring, where):
        super().check(settings, scoring, where)
        if scoring == "head":
            raise CurloraError(f"{where}: 'ewc' weighs the adapter by the label-word loss's Fisher, and head scoring "
                               "trains a head per task instead; use evaluation.scoring: likelihood or drop ewc.")

    def strength(self, settings) -> float:
        return EWC_LAMBDA if settings.ewc_lambda is None else settings.ewc_lambda

    def setting(self, settings, default_lr):
        return {**super().setting(settings, default_lr), "ewc_lambda": self.strength(settings)}

    def peft_config(self, settings, model):
        return lora_config(settings, model)

    def trainable(self, settings, shapes, parameters):
        return sum(settings.r * (i + o) for i, o in shapes)

    def attach(self, base, settings, stage, context=None):
        from safetensors.torch import load_file

        attached = super().attach(base, settings, stage, context)
        model = attached.model
        model.ewc_state = None  # (anchor, fisher) by parameter name: the penalty this stage trains under
        model.ewc_next = None  # the same for the next stage, once consolidated
        if stage is not None and (stage / EWC_FILE).is_file():
            saved = load_file(str(stage / EWC_FILE))
            device = next(model.parameters()).device
            part = {k: {n.split(".", 1)[1]: t.to(device) for n, t in saved.items() if n.startswith(k + ".")}
                    for k in ("anchor", "fisher")}
            model.ewc_state = (part["anchor"], part["fisher"])
        return attached

    def penalty(self, model, settings):
        state, strength = getattr(model, "ewc_state", None), self.strength(settings)
        if state is None or strength == 0:
            return None  # the first task: nothing to keep yet
        anchor, fisher = state
        params = {n: p for n, p in model.named_parameters() if n in anchor}

        def term():
            return strength / 2 * sum((fisher[n] * (p - anchor[n]).pow(2)).sum() for n, p in params.items())

        return term

    def consolidate(self, model, settings, fisher):
        new = fisher()
        old = getattr(model, "ewc_state", None)
        summed = {n: f + (old[1][n] if old else 0) for n, f in new.items()}
        anchor = {n: p.detach().clone() for n, p in model.named_parameters() if n in new}
        model.ewc_next = (anchor, summed)

    def save(self, model, folder):
        from safetensors.torch import save_file

        super().save(model, folder)
        if model.ewc_next is None:  # the last task: no stage follows, so no Fisher was computed for one
            return
        anchor, fisher = model.ewc_next
        state = {**{f"anchor.{n}": t for n, t in anchor.items()}, **{f"fisher.{n}": t for n, t in fisher.items()}}
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(folder / EWC_FILE))
