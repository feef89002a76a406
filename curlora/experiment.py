"""The experiment config: one dataclass tree that round-trips YAML. The UI fills one; the CLI reads one.

    model:      which base model, dtype, device
    tasks:      the ordered task sequence (TaskConfig each, see curlora/data/task_config.py)
    methods:    the registered kinds (curlora, lora, PEFT's peers, baselines), each with its own settings
    training:   schedule and optimiser, shared by every method; comparison: equal_lr (the paper) or matched_loss
    evaluation: scoring mode, eval budget, perplexity probe, self-sampled probe (curlora/measure/probes.py), in-task probes
    run:        name (the data directory comes from CURLORA_DATA_DIR, default ./runs)

Unknown keys and wrong types are errors that name the key (`training.lr: expected a number, got 'fast'`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from curlora.data.task_config import TaskConfig
from curlora.errors import CurloraError, clip
from curlora.methods.registry import kinds, method, replayed_rows  # the config reads the registry below it

RUN_GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # a study's id fits; '../x' and 'a/b' do not
METHOD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # a folder under adapters/: no dots, no separators
# -- absolute bounds (ExperimentConfig.check) -----------------------------------------------------------------
# Each is far beyond what the largest preset uses (paper-mistral-7b: max_length 512, ppl_window 4096, r 16); the
# lengths stop at the longest contexts models have today (131,072 positions).
UPPER_BOUNDS: dict[str, int | float] = {
    "tasks": 100,
    "training.max_steps": 1_000_000,
    "training.epochs": 1_000,
    "training.batch_size": 4_096,
    "training.grad_accum": 1_024,
    "training.max_length": 131_072,
    "training.warmup_steps": 1_000_000,
    "training.matched_loss_max_steps": 1_000_000,
    "methods.r": 4_096,
    "methods.alpha": 100_000,  # LoRA's convention alpha = 2r at the largest rank is 8,192
    "evaluation.batch_size": 4_096,
    "evaluation.eval_rows": 1_000_000,
    "evaluation.ppl_window": 131_072,
    "evaluation.ppl_max_tokens": 10_000_000,
    "evaluation.probe_rows": 1_024,
    "evaluation.self_probe_texts": 1_024,
    "evaluation.self_probe_tokens": 4_096,
    "evaluation.chat_probe_instructions": 1_024,
    "evaluation.chat_probe_tokens": 4_096,
    "evaluation.chat_probe_facts": 1_024,
    "evaluation.task_kl_rows": 4_096,
}

SCORING_MODES = ("likelihood", "head", "generate")
QUANTIZATIONS = ("none", "8bit", "4bit")
# curlora.adapter.sampling.SAMPLING_MODES spelled out, as the config loads no torch (tests/test_inspect.py keeps
# the two equal)
SAMPLING_RULES = ("inverted", "inverted_offset", "uniform", "norm", "leverage")
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")
PRECISIONS = ("no", "fp16", "bf16")
COMPARISONS = ("equal_lr", "matched_loss")
DEFAULT_METHODS = ("curlora", "lora")  # an experiment's methods when it names none (the Train form's too)


def _f(default, help_text: str):
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help_text})
    return field(default=default, metadata={"help": help_text})


@dataclass
class ModelSettings:
    name: str = _f("kjv-llama-5m", "Bundled model name, local folder or hub id.")
    dtype: str = _f("auto", "auto | float32 | bfloat16 | float16.")
    device: str = _f("auto", "auto | cpu | cuda | cuda:N | mps (ignored under accelerate launch / torchrun).")
    revision: str | None = _f(None, "Hub revision.")
    trust_remote_code: bool = _f(False, "Run code shipped with a hub model (only if you trust it).")
    quantization: str = _f("none", "none | 8bit | 4bit (NF4): load the base through bitsandbytes (an optional extra); "
                                   "the adapters train in the compute dtype on top (QLoRA; CURLoRA cuts C and R from "
                                   "the dequantised weight).")


@dataclass
class MethodSettings:
    kind: str = _f("curlora", "curlora | lora | mica | pissa | osf | corda | dora | base (no training) | head-only | "
                              "full (full fine-tune) | joint (multi-task upper bound) | ewc (EWC on LoRA): the "
                              "registered kinds (curlora/methods/registry.py).")
    name: str | None = _f(None, "Label in results (default: the kind); must be unique in a run.")
    r: int = _f(8, "Rank (CURLoRA: U is r x r; LoRA and its PEFT peers: A is r x in, B is out x r; OSF has none).")
    alpha: float | None = _f(None, "CURLoRA: scale of C U R (default 1, the paper). LoRA: lora_alpha, PEFT scales "
                                   "by alpha / r (default r: scale 1, the paper's LoRA).")
    target_modules: list[str] | None = _f(None, "Modules to adapt; default: the model's attention projections.")
    sampling: str = _f("inverted", "CURLoRA sampling: inverted | inverted_offset | uniform | norm | leverage.")
    replace: bool = _f(True, "CURLoRA: sample columns/rows with replacement (paper).")
    seed: int = _f(0, "CURLoRA: sampling seed.")
    dropout: float = _f(0.0, "LoRA dropout.")
    preserve: list[float] | None = _f(None, "OSF: the share of each adapted matrix's smaller side kept frozen at each "
                                            "task, one per task, never shrinking (a short list repeats its last "
                                            "value); default t/(n+1) at task t of n.")
    lr: float | None = _f(None, "Learning rate for this method only (default: training.lr).")
    ewc_lambda: float | None = _f(None, "EWC: strength λ of its penalty λ/2 · Σ F · (θ − θ*)² (default 100).")
    replay: float = _f(0.0, "Experience replay: this share of every training batch (round(replay × batch_size) "
                            "rows) is drawn from the earlier tasks' training rows, each encoded with its own task's "
                            "prompt and label words; seeded by training.seed and the stage, so every method with the "
                            "same replay sees the same replayed rows; 0 (off) up to below 1; the first task has "
                            "nothing to replay.")

    @property
    def label(self) -> str:
        return self.name or self.kind


@dataclass
class TrainingSettings:
    epochs: float = _f(1.0, "Passes over each task's training rows (ignored if max_steps is set).")
    max_steps: int | None = _f(None, "Optimiser steps per task; overrides epochs.")
    lr: float = _f(2.5e-4, "Peak learning rate (paper: 2.5e-4).")
    batch_size: int = _f(8, "Examples per device step.")
    grad_accum: int = _f(1, "Gradient accumulation steps.")
    max_length: int = _f(256, "Tokens per example (prompt is cut from the left beyond this).")
    scheduler: str = _f("cosine", "cosine | linear | constant | constant_with_warmup.")
    warmup_steps: int = _f(0, "Linear warm-up steps (the paper used 500 and never left warm-up).")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    adam_eps: float = _f(1e-6, "AdamW epsilon (paper: 1e-6).")
    seed: int = _f(0, "Seed of the example order (the same for every method) and of heads.")
    group_by_length: bool = _f(True, "Batch rows of similar length together (seeded; the same batches in the same "
                                     "order for every method), so batches carry little padding; false: plain "
                                     "shuffled batches.")
    precision: str = _f("no", "Mixed precision: no | fp16 | bf16.")
    gradient_checkpointing: bool = _f(False, "Recompute each layer's activations in the backward pass: activation "
                                             "memory of about one layer instead of all of them, for roughly a "
                                             "third more time per step (for 1-7B bases).")
    comparison: str = _f("equal_lr", "equal_lr (same schedule for every method, the paper) | matched_loss (each "
                                     "method trains on a task until its smoothed loss reaches a target).")
    target_loss: float | None = _f(None, "matched_loss: the smoothed training loss to reach on every task.")
    matched_loss_reference: str | None = _f(None, "matched_loss: take each task's target from this method's final "
                                                  "smoothed loss (a method label; it must run first).")
    matched_loss_max_steps: int | None = _f(None, "matched_loss: step budget per task for the methods chasing the "
                                                  "target (default: max_steps / epochs as usual).")


@dataclass
class EvaluationSettings:
    scoring: str = _f("likelihood", "likelihood (label-word log-likelihood) | head (paper) | generate.")
    eval_rows: int | None = _f(None, "Score at most this many eval rows per task (stratified, seeded).")
    batch_size: int = _f(32, "Sequences per scoring forward pass.")
    score_untrained: bool = _f(True, "After each task, score also the tasks not trained yet (forward transfer, FWT); "
                                     "off: only the tasks trained so far, which saves a third of a 3-task run's "
                                     "scoring and leaves FWT unmeasured (learning, forgetting and BWT need only "
                                     "the trained ones).")
    probe_text: str | None = _f(None, "Text file for the perplexity probe; default: the bundled model's held-out text.")
    ppl_window: int = _f(256, "Perplexity window in tokens.")
    ppl_stride: int = _f(128, "Perplexity stride (window = stride: non-overlapping).")
    ppl_max_tokens: int | None = _f(8192, "Use the first this-many tokens of the probe text (None: all).")
    probe_every: int = _f(0, "During a task, every N steps score earlier tasks on probe_rows rows (0: off).")
    probe_rows: int = _f(32, "Rows per task for the in-task probe.")
    self_probe: bool = _f(True, "Sample probe texts from the base model before training; after every task measure "
                                "each method's perplexity and KL to the base on them (no corpus needed).")
    self_probe_texts: int = _f(8, "Self-probe: how many texts to sample.")
    self_probe_tokens: int = _f(64, "Self-probe: tokens per text (after the start token).")
    self_probe_temperature: float = _f(1.0, "Self-probe: sampling temperature (0: greedy).")
    self_probe_seed: int = _f(0, "Self-probe: sampling seed.")
    chat_probe: bool = _f(False, "Chat probe (a model with a chat template): before training, the base model's greedy "
                                 "replies to held-out chat instructions; after every task each method's KL to the "
                                 "base on those replies, factual answers right (k of n) and its own replies that "
                                 "never end their turn or repeat themselves (curlora/measure/chat_probe.py).")
    chat_probe_instructions: int = _f(32, "Chat probe: how many of the bundled instructions to reply to.")
    chat_probe_tokens: int = _f(64, "Chat probe: the most new tokens of a reply (the bundled instructions ask for "
                                         "replies of a sentence or two).")
    chat_probe_facts: int | None = _f(None, "Chat probe: how many of the bundled factual questions to ask (empty: "
                                            "all of them).")
    task_kl_rows: int = _f(0, "New-task KL: after each task, KL to the base model on the prompts of this many eval "
                              "rows of the task just trained (0: off).")


TRACKERS = ("tensorboard", "trackio", "wandb", "mlflow")  # run.log_with, through curlora/run/trackers.py


@dataclass
class RunSettings:
    name: str = _f("run", "A name for the run (part of its id).")
    log_with: list[str] = _f([], "Experiment trackers: tensorboard | trackio | wandb | mlflow (none by default).")
    group: str | None = _f(None, "The trackers' group of this run (a study sets it to the study's id).")


@dataclass
class ExperimentConfig:
    model: ModelSettings = _f(None, "Base model.")
    tasks: list[TaskConfig] = _f([], "The task sequence, in training order.")
    methods: list[MethodSettings] = _f([], "Methods trained side by side.")
    training: TrainingSettings = _f(None, "Schedule and optimiser.")
    evaluation: EvaluationSettings = _f(None, "Scoring and probes.")
    run: RunSettings = _f(None, "Run naming.")

    def __post_init__(self):
        self.model = self.model or ModelSettings()
        self.training = self.training or TrainingSettings()
        self.evaluation = self.evaluation or EvaluationSettings()
        self.run = self.run or RunSettings()
        if not self.methods:
            self.methods = [MethodSettings(kind=kind) for kind in DEFAULT_METHODS]
        self.check()

    def check(self) -> None:
        def one_of(path, value, allowed):
            if value not in allowed:
                raise CurloraError(f"{path}: {clip(value)} is not one of {', '.join(allowed)}.")

        one_of("model.quantization", self.model.quantization, QUANTIZATIONS)
        if not self.tasks:
            raise CurloraError("tasks: an experiment needs at least one task.")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise CurloraError(f"tasks: task names must be unique; {names} repeats one.")
        labels = []
        for i, m in enumerate(self.methods):
            one_of(f"methods[{i}].kind", m.kind, kinds())
            method(m.kind).check(m, self.evaluation.scoring, f"methods[{i}]")
            if self.model.quantization != "none" and method(m.kind).trains_all_weights:
                raise CurloraError(f"methods[{i}]: '{m.kind}' trains every weight, which a {self.model.quantization} "
                                   "base cannot hold; set model.quantization: none or drop this method.")
            one_of(f"methods[{i}].sampling", m.sampling, SAMPLING_RULES)
            if m.r < 1:
                raise CurloraError(f"methods[{i}].r: must be at least 1, got {m.r}.")
            if not METHOD_NAME.match(m.label):
                raise CurloraError(f"methods[{i}].name: {clip(m.label)} names the method's adapter folder: use letters, "
                                   "digits, '_' and '-' only, starting with a letter or digit.")
            labels.append(m.label)
        if len(set(labels)) != len(labels):
            raise CurloraError(f"methods: labels must be unique; give repeated kinds a 'name' ({labels}).")
        one_of("evaluation.scoring", self.evaluation.scoring, SCORING_MODES)
        group = self.run.group
        if group is not None and (not RUN_GROUP.match(group) or ".." in group):
            raise CurloraError(f"run.group: {clip(group)} names the trackers' folder of this run: use letters, digits, "
                               "'.', '_' and '-' only (no path).")
        for i, name in enumerate(self.run.log_with):
            one_of(f"run.log_with[{i}]", name, TRACKERS)
        one_of("training.scheduler", self.training.scheduler, SCHEDULERS)
        one_of("training.precision", self.training.precision, PRECISIONS)
        for path, value, low in [("training.lr", self.training.lr, 0), ("training.batch_size", self.training.batch_size, 1),
                                 ("training.grad_accum", self.training.grad_accum, 1),
                                 ("training.max_length", self.training.max_length, 8),
                                 ("evaluation.ppl_window", self.evaluation.ppl_window, 2),
                                 ("evaluation.ppl_stride", self.evaluation.ppl_stride, 1)]:
            if value < low or (path == "training.lr" and value == 0):
                raise CurloraError(f"{path}: must be {'positive' if low == 0 else f'at least {low}'}, got {value}.")
        if self.training.max_steps is None and self.training.epochs <= 0:
            raise CurloraError("training.epochs: must be positive (or set training.max_steps).")
        if self.evaluation.ppl_stride > self.evaluation.ppl_window:
            raise CurloraError("evaluation.ppl_stride: must not exceed ppl_window (tokens would be skipped).")
        self.check_probes_and_comparison()
        self.check_bounds()

    def check_bounds(self) -> None:
        """The absolute bounds of curlora/serve/limits.py (whatever the host allows) and the lower ends the checks
        above leave open, so a typo or a hostile form is refused here, before anything loads or runs."""
        tr, ev = self.training, self.evaluation
        values = []  # (key in UPPER_BOUNDS, path shown, value)
        for key in UPPER_BOUNDS:
            section, _, name = key.partition(".")
            if key == "tasks":
                values.append((key, key, len(self.tasks)))
            elif section == "methods":
                values += [(key, f"methods[{i}].{name}", getattr(m, name)) for i, m in enumerate(self.methods)]
            else:
                values.append((key, key, getattr(getattr(self, section), name)))
        for key, path, value in values:
            bound = UPPER_BOUNDS[key]
            if value is not None and value > bound:
                shown = f"{value:,}" if isinstance(value, int) else f"{value:g}"
                raise CurloraError(f"{path}: {shown} is above the upper bound of {bound:,}; use {bound:,} or less.")
        for path, value, low in [("training.max_steps", tr.max_steps, 1), ("training.warmup_steps", tr.warmup_steps, 0),
                                 ("evaluation.batch_size", ev.batch_size, 1), ("evaluation.eval_rows", ev.eval_rows, 1),
                                 ("evaluation.ppl_max_tokens", ev.ppl_max_tokens, 2),
                                 ("evaluation.probe_every", ev.probe_every, 0),
                                 ("evaluation.probe_rows", ev.probe_rows, 1)]:
            if value is not None and value < low:
                raise CurloraError(f"{path}: must be at least {low}, got {value}.")
        for i, m in enumerate(self.methods):
            if not 0 <= m.dropout < 1:
                raise CurloraError(f"methods[{i}].dropout: {m.dropout:g} is not a probability below 1; use 0 (off) "
                                   "or more, below 1.")
            if m.alpha is not None and m.alpha <= 0:
                raise CurloraError(f"methods[{i}].alpha: must be positive, got {m.alpha:g} (leave it empty for the "
                                   "default).")
            if m.ewc_lambda is not None and m.ewc_lambda < 0:
                raise CurloraError(f"methods[{i}].ewc_lambda: must be 0 or more, got {m.ewc_lambda:g} (leave it empty "
                                   "for 100).")
            if m.lr is not None and m.lr <= 0:
                raise CurloraError(f"methods[{i}].lr: must be positive, got {m.lr:g} (leave it empty for training.lr).")
            self.check_replay(i, m)

    def check_replay(self, i: int, m: MethodSettings) -> None:
        """A replay share is a fraction of a batch that leaves at least one replayed and one own row in it."""
        if not m.replay:
            return
        where, batch = f"methods[{i}].replay", self.training.batch_size
        if not 0 <= m.replay < 1:
            raise CurloraError(f"{where}: {m.replay:g} is not a share of a batch; use 0 (off) or more, below 1 "
                               "(0.1 replays a tenth of every batch).")
        rows = replayed_rows(m.replay, batch)
        if rows == 0:
            raise CurloraError(f"{where}: {m.replay:g} of a batch of {batch} rows rounds to no replayed row; raise "
                               f"replay to at least {0.5 / batch:.3g} or training.batch_size to at least "
                               f"{math.ceil(0.5 / m.replay)}.")
        if rows >= batch:
            raise CurloraError(f"{where}: {m.replay:g} of a batch of {batch} rows leaves none of the task's own rows; "
                               f"lower replay below {(batch - 0.5) / batch:.3g} or raise training.batch_size.")

    def check_chat_probe(self) -> None:
        """The chat probe asks no more instructions and questions than assets/probes/chat/ holds."""
        ev = self.evaluation
        if not ev.chat_probe:
            return
        from curlora.paths import ASSETS

        folder = ASSETS / "probes" / "chat"
        have = {"instructions": sum(1 for line in (folder / "instructions.jsonl").open(encoding="utf-8")
                                    if line.strip()),
                "facts": sum(1 for line in (folder / "facts.csv").open(encoding="utf-8") if line.strip()) - 1}
        for name, value in (("instructions", ev.chat_probe_instructions), ("facts", ev.chat_probe_facts)):
            if value is not None and value > have[name]:
                raise CurloraError(f"evaluation.chat_probe_{name}: {value} is more than the {have[name]} bundled "
                                   f"{'instructions' if name == 'instructions' else 'factual questions'}; use "
                                   f"{have[name]} or fewer.")

    def check_probes_and_comparison(self) -> None:
        ev, tr = self.evaluation, self.training
        for path, value, low in [("evaluation.self_probe_texts", ev.self_probe_texts, 1),
                                 ("evaluation.self_probe_tokens", ev.self_probe_tokens, 2),
                                 ("evaluation.chat_probe_instructions", ev.chat_probe_instructions, 1),
                                 ("evaluation.chat_probe_tokens", ev.chat_probe_tokens, 1),
                                 ("evaluation.chat_probe_facts", 1 if ev.chat_probe_facts is None
                                  else ev.chat_probe_facts, 1),
                                 ("evaluation.task_kl_rows", ev.task_kl_rows, 0),
                                 ("evaluation.self_probe_temperature", ev.self_probe_temperature, 0),
                                 ("training.matched_loss_max_steps", tr.matched_loss_max_steps or 1, 1)]:
            if value < low:
                raise CurloraError(f"{path}: must be at least {low}, got {value}.")
        self.check_chat_probe()
        if tr.comparison not in COMPARISONS:
            raise CurloraError(f"training.comparison: {clip(tr.comparison)} is not one of {', '.join(COMPARISONS)}.")
        if tr.comparison != "matched_loss":
            return
        ref = tr.matched_loss_reference
        if (tr.target_loss is None) == (ref is None):
            raise CurloraError("training.comparison: matched_loss needs exactly one of training.target_loss (a loss "
                               "value) or training.matched_loss_reference (the label of the method to match).")
        if ref is None:
            return
        labels = [m.label for m in self.methods]
        if ref not in labels:
            raise CurloraError(f"training.matched_loss_reference: {clip(ref)} is not a method of this run "
                               f"({', '.join(labels)}).")
        at = labels.index(ref)
        if not method(self.methods[at].kind).trains:
            raise CurloraError(f"training.matched_loss_reference: {clip(ref)} is the untrained base; "
                               "pick a trained method.")
        before = [m.label for m in self.methods[:at] if method(m.kind).trains]
        if before:
            raise CurloraError(f"training.matched_loss_reference: {clip(ref)} must run first, since the others match its "
                               f"loss; move it above {', '.join(before)} in methods.")

    # -- YAML --------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    @classmethod
    def from_dict(cls, data: dict) -> "ExperimentConfig":
        return _build(cls, data, "")

    @classmethod
    def from_yaml(cls, text: str, source: str = "experiment", aliases: bool = True) -> "ExperimentConfig":
        """`aliases=False` (a hosted server) refuses YAML anchors and aliases before anything is built."""
        data = read_yaml(text, source, aliases)
        if not isinstance(data, dict):
            raise CurloraError(f"{source} must be a YAML mapping with model, tasks, methods, … at the top.")
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path, sections: dict | None = None) -> "ExperimentConfig":
        """Read a YAML file; relative task files are taken from the YAML file's folder. Top-level keys named in
        `sections` (e.g. {"study": None}) are not part of the experiment: they are taken out into that dict."""
        path = Path(path)
        if not path.is_file():
            raise CurloraError(f"Experiment file {path} does not exist.")
        text = path.read_text(encoding="utf-8")
        if not sections and "study:" in text and isinstance(data := yaml.safe_load(text), dict) and "study" in data:
            raise CurloraError(f"{path} describes a study (it has a study: section); run it with "
                               f"`python -m curlora study {path}`, or remove the section to run the experiment once.")
        if sections:
            data = yaml.safe_load(text)
            if isinstance(data, dict):
                for name in sections:
                    sections[name] = data.pop(name, None)
                text = yaml.safe_dump(data, sort_keys=False)
        cfg = cls.from_yaml(text, source=str(path))
        for t in cfg.tasks:
            for key in ("train_file", "eval_file"):
                value = getattr(t, key)
                if value and not Path(value).is_absolute() and not value.startswith(("bundled:", "upload:")):
                    setattr(t, key, str((path.parent / value).resolve()))
        probe = cfg.evaluation.probe_text
        if probe and not Path(probe).is_absolute() and not probe.startswith(("bundled:", "upload:")):
            cfg.evaluation.probe_text = str((path.parent / probe).resolve())
        local = path.parent / cfg.model.name
        if not Path(cfg.model.name).is_absolute() and cfg.model.name.startswith(".") and local.is_dir():
            cfg.model.name = str(local.resolve())
        return cfg


# Every experiment YAML is far smaller (the largest preset is under 2 KB); the bound keeps a pasted or posted text
# from costing the parser more than a few milliseconds.
YAML_MAX_CHARS = 100_000


def read_yaml(text: str, source: str = "experiment", aliases: bool = True):
    """The YAML text parsed (safe_load), refused first if it is longer than YAML_MAX_CHARS or, with aliases=False,
    if it has an anchor or an alias: a few hundred bytes of nested aliases stand for billions of nodes, and a server
    shared by strangers has no use for them. The scanner sees the tokens without building anything."""
    if not isinstance(text, str):
        raise CurloraError(f"{source} must be YAML text.")
    if len(text) > YAML_MAX_CHARS:
        raise CurloraError(f"{source} is {len(text):,} characters long, over the limit of {YAML_MAX_CHARS:,} for an "
                           "experiment YAML; remove what it does not need.")
    try:
        if not aliases:
            for token in yaml.scan(text):
                if isinstance(token, (yaml.AnchorToken, yaml.AliasToken)):
                    line = token.start_mark.line + 1
                    raise CurloraError(f"{source} uses a YAML anchor or alias (&name / *name) at line {line}, which "
                                       "this server does not accept; write the values out in full.")
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise CurloraError(f"{source} is not valid YAML{where}: {str(getattr(err, 'problem', None) or err)[:120]}.") from None


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _check_value(value, tp, path: str):
    """Coerce/validate one YAML value against a field type; raise naming the key."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(value, arg, path)
            except CurloraError as err:
                errors.append(err)
        raise errors[0]
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise CurloraError(f"{path}: expected a list, got {clip(value)}.")
        return [_check_value(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise CurloraError(f"{path}: expected a mapping, got {clip(value)}.")
        return value
    if tp is TaskConfig:
        try:
            return TaskConfig.from_dict(value)
        except CurloraError as err:
            raise CurloraError(f"{path}: {err}") from None
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise CurloraError(f"{path}: expected true or false, got {clip(value)}.")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise CurloraError(f"{path}: expected a whole number, got {clip(value)}.")
        if abs(value) > 10**12:
            raise CurloraError(f"{path}: {value} is out of range.")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CurloraError(f"{path}: expected a number, got {clip(value)}.")
        if value != value or abs(value) > 1e12:
            raise CurloraError(f"{path}: {value} is out of range.")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise CurloraError(f"{path}: expected text, got {clip(value)}.")
        if "\x00" in value:
            raise CurloraError(f"{path}: contains a NUL byte.")
        return value
    raise CurloraError(f"{path}: unsupported type {_type_name(tp)}.")


def _build(cls, data, path: str):
    if not isinstance(data, dict):
        raise CurloraError(f"{path or 'experiment'}: expected a mapping of keys to values, got {clip(data)}.")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in known:
            guess = difflib.get_close_matches(str(key), known, n=1)
            hint = f" Did you mean '{guess[0]}'?" if guess else ""
            raise CurloraError(f"{where}: unknown key.{hint} Known keys here: {', '.join(known)}.")
        kwargs[key] = _check_value(value, hints[key], where)
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise CurloraError(f"{path or 'experiment'}: {err}.") from None
