"""What a run will cost on this machine, told before Start: training and evaluation seconds per stage, from a short
calibration measured now on the loaded model (a few training steps per method, a few scoring rows per task, a slice
of the perplexity probe and of the self-probe), scaled by the run's own counts of steps, rows and tokens.

    loaded = load_everything(cfg)
    est = estimate(cfg, loaded)          # CostEstimate: per method and stage, the base row, the share of evaluation
    print(est.text())                    # what `python -m curlora run --dry-run` prints and the Train tab shows
    estimate_study(cfg, settings)        # StudyCost: the same calibration priced over a study's plan
                                         # (`python -m curlora study … --dry-run`, the Compare tab)

The calibration is real work on the real model, so it carries this machine's load at the moment it ran: an
estimate on a busy machine is slower than the run on a quiet one, and the text says what was measured.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from curlora.experiment import ExperimentConfig, MethodSettings
from curlora.measure.perplexity import perplexity, windows
from curlora.measure.scoring import score
from curlora.measure.stats import wilson
from curlora.methods.registry import Context, method, stage_steps

if TYPE_CHECKING:  # annotations only
    from curlora.data.tasks import Task
    from curlora.run.measurer import Loaded

CALIBRATION_STEPS = 3  # the first step warms caches and allocators; the later ones are timed
CALIBRATION_ROWS = 16
EVAL_SHARE_WARN = 1 / 3


def machine_state() -> tuple[int, float, int]:
    """(torch's intra-op threads, the 1-minute load average, the CPU count) as the calibration ran."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return torch.get_num_threads(), round(load, 1), os.cpu_count() or 1


@dataclass
class StageCost:
    method: str = field(metadata={"help": "Method label."})
    train_s: float = field(metadata={"help": "Training one task: steps x seconds per step (+ in-task probes)."})
    eval_s: float = field(metadata={"help": "Scoring every task, the perplexity probe and the self-probe."})


@dataclass
class CostEstimate:
    """A run's time, estimated before it starts (seconds on this machine)."""

    calibration: str = field(metadata={"help": "What was measured to make the estimate."})
    step_s: dict[str, float] = field(metadata={"help": "Measured seconds per training step, per method."})
    load_s: float = field(metadata={"help": "Loading tasks, model and probe text (measured)."})
    base_s: float = field(metadata={"help": "The base row: scoring, probes, sampling the self-probe texts."})
    stages: list[StageCost] = field(metadata={"help": "One per method and task, in run order."})
    precision: list[str] = field(metadata={"help": "What each task's eval rows buy: ± Wilson half-width at 50 %."})
    advice: list[str] = field(default_factory=list, metadata={"help": "What to change when evaluation dominates."})
    threads: int = field(default=1, metadata={"help": "torch's intra-op threads while the calibration ran."})
    load: float = field(default=0.0, metadata={"help": "The machine's 1-minute load average as the calibration began."})
    cores: int = field(default=1, metadata={"help": "CPUs of this machine."})

    @property
    def train_s(self) -> float:
        return sum(s.train_s for s in self.stages)

    @property
    def eval_s(self) -> float:
        return self.base_s + sum(s.eval_s for s in self.stages)

    @property
    def total_s(self) -> float:
        return self.load_s + self.train_s + self.eval_s

    @property
    def eval_share(self) -> float:
        return self.eval_s / self.total_s if self.total_s else 0.0

    @property
    def warning(self) -> str | None:
        if self.eval_share <= EVAL_SHARE_WARN:
            return None
        return (f"Evaluation is {100 * self.eval_share:.0f} % of this run (more than a third): "
                + "; ".join(self.advice) + ".")

    @property
    def contention(self) -> str | None:
        """A sentence when torch's threads compete with other work for the cores: every parallel operation then
        waits for a thread that another process holds, so a step costs several times its work, and most for the
        methods that run many small operations (DoRA, OSF, full fine-tuning's optimiser); docs/method-step-cost.md."""
        if self.threads <= 1 or self.load < self.cores:
            return None
        return (f"this machine is busy (load average {self.load:.1f} on {self.cores} cores) and torch runs "
                f"{self.threads} threads, so each step waits for cores that other work holds and the times above "
                "can be several times the work; on a shared machine run with OMP_NUM_THREADS=1 (one thread per "
                "process)")

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "train_s": self.train_s, "eval_s": self.eval_s, "total_s": self.total_s,
                "eval_share": self.eval_share, "warning": self.warning, "contention": self.contention}

    def text(self) -> str:
        lines = [f"Estimated time on this machine: about {_dur(self.total_s)} — training {_dur(self.train_s)}, "
                 f"evaluation {_dur(self.eval_s)} ({100 * self.eval_share:.0f} %), loading {_dur(self.load_s)}.",
                 f"Base row (before any training): {_dur(self.base_s)}."]
        seen = []
        for s in self.stages:
            if s.method not in seen:
                seen.append(s.method)
                mine = [x for x in self.stages if x.method == s.method]
                lines.append(f"{s.method}: {self.step_s[s.method]:.2f} s per step; per task about "
                             f"{_dur(mine[0].train_s)} training + {_dur(mine[0].eval_s)} evaluation.")
        lines.append("Precision the eval rows buy: " + "; ".join(self.precision) + ".")
        if self.warning:
            lines.append("WARNING: " + self.warning)
        if self.contention:
            lines.append("NOTE: " + self.contention + ".")
        lines.append(f"(From a calibration measured just now: {self.calibration}. Other work on this machine "
                     "slows both the calibration and the run.)")
        return "\n".join(lines)


def _dur(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def half_width(n: int, p: float = 0.5) -> float:
    """± points (percent) of the 95 % Wilson interval of an accuracy p measured on n rows."""
    lo, hi = wilson(round(p * n), n) or (0.0, 1.0)
    return 100 * (hi - lo) / 2


def batch_tokens(cfg: ExperimentConfig, loaded: Loaded, task: Task) -> list[int]:
    """Padded tokens of each training batch of `task`, in the order train_task draws them (its seeded batches), so
    a step's time can be carried from one task to another whose rows are longer or shorter."""
    from curlora.run.train import LengthGroupedBatches, training_examples

    tr = cfg.training
    lengths = [len(e[0]) for e in training_examples(loaded.tokenizer, task, tr.max_length,
                                                     cfg.evaluation.scoring == "head")]
    if tr.group_by_length:
        batches = list(LengthGroupedBatches(lengths, tr.batch_size, tr.seed))
    else:
        order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(tr.seed)).tolist()
        batches = [order[i:i + tr.batch_size] for i in range(0, len(order), tr.batch_size)]
    return [max(lengths[i] for i in b) * len(b) for b in batches if b]


def step_seconds(cfg: ExperimentConfig, loaded: Loaded, m: MethodSettings, first: list[int]) -> float:
    """Seconds per padded token of a training step of method m, measured on the first task (`first`: its
    batch_tokens): CALIBRATION_STEPS steps (the first not counted, nor its tokens), then the base given back."""
    from dataclasses import replace

    from curlora.run.train import new_head, train_task

    kind = method(m.kind)
    if not kind.trains:
        return 0.0
    ids = loaded.probe_ids
    context = Context(0, len(loaded.tasks), cfg.evaluation.ppl_window, lambda n: (ids[:n], "the probe text"))
    attached = kind.attach(loaded.model, m, None, context)
    times = []
    try:
        head = new_head(attached.model, len(loaded.tasks[0].classes), 0) if cfg.evaluation.scoring == "head" else None
        schedule = replace(cfg.training, max_steps=CALIBRATION_STEPS, epochs=1.0)
        train_task(attached.model, loaded.tokenizer, loaded.tasks[0], schedule, lr=0.0, head=head,
                   on_step=lambda e: times.append(e["elapsed"]))
    finally:
        attached.cleanup()
    tokens = first * CALIBRATION_STEPS  # epochs repeat the batches' sizes
    if len(times) < 2:
        return times[0] / max(tokens[0], 1) if times else 0.0
    return (times[-1] - times[0]) / max(sum(tokens[1:len(times)]), 1)


def estimate(cfg: ExperimentConfig, loaded: Loaded, load_s: float = 0.0) -> CostEstimate:
    """The run's time from a calibration on `loaded` (curlora/run/runner.py load_everything); nothing is written."""
    ev, tr = cfg.evaluation, cfg.training
    model, tok = loaded.model, loaded.tokenizer
    threads, load, cores = machine_state()
    sizes = [batch_tokens(cfg, loaded, t) for t in loaded.tasks]  # every task's rows encoded once
    token_s = {m.label: step_seconds(cfg, loaded, m, sizes[0]) for m in cfg.methods}  # seconds per padded token
    per_batch = [sum(b) / len(b) if b else 0.0 for b in sizes]
    step_s = {label: rate * per_batch[0] for label, rate in token_s.items()}  # on the first task, as shown

    # scoring: seconds per row of each task, from its first CALIBRATION_ROWS rows
    scoring = "likelihood" if ev.scoring == "head" else ev.scoring  # a head scores like a forward; close enough
    rows, per_row = [], []
    for task in loaded.tasks:
        n = len(task.eval) if not ev.eval_rows else min(ev.eval_rows, len(task.eval))
        k = min(CALIBRATION_ROWS, n)
        sample = task.eval.select(range(k))
        per_row.append(_timed(lambda: score(model, tok, task, sample, scoring, tr.max_length, ev.batch_size)) / k)
        rows.append(n)
    score_s = sum(n * s for n, s in zip(rows, per_row))

    # perplexity: forwarded tokens at the rate of a two-window slice
    ids = loaded.probe_ids
    spans = windows(int(ids.numel()), ev.ppl_window, ev.ppl_stride)
    forwarded = sum(end - begin for begin, end, _ in spans)
    piece = ids[: min(int(ids.numel()), 2 * ev.ppl_window)]
    piece_tokens = sum(e - b for b, e, _ in windows(int(piece.numel()), ev.ppl_window, ev.ppl_stride)) or 1
    ppl_s = _timed(lambda: perplexity(model, piece, ev.ppl_window, ev.ppl_stride)) / piece_tokens * forwarded

    # self-probe: each stage forwards texts x tokens (at the perplexity rate); the base row also samples them
    probe_s, sample_s = 0.0, 0.0
    if ev.self_probe:
        probe_s = ppl_s / forwarded * ev.self_probe_texts * (ev.self_probe_tokens + 1) if forwarded else 0.0
        sample_s = _decode_seconds(model, ev.self_probe_texts) * ev.self_probe_tokens
    chat_s, chat_base_s = _chat_probe_seconds(cfg, model, tok, ppl_s / forwarded if forwarded else 0.0)
    # the new-task KL: the rows' prompts forwarded once per trained stage (a row's tokens as the first task's batches)
    task_s = (ppl_s / forwarded if forwarded else 0.0) * ev.task_kl_rows * per_batch[0] / max(tr.batch_size, 1)
    stage_eval = score_s + ppl_s + probe_s + chat_s + task_s

    stages = []
    n_tasks = len(loaded.tasks)
    train_rows = [len(t.train) for t in loaded.tasks]
    for m in cfg.methods:
        kind = method(m.kind)
        for i in range(n_tasks):
            steps = stage_steps(m, cfg.training, i, cfg.training.max_steps, train_rows) if kind.trains else 0
            if kind.trains and i + 1 < n_tasks:  # EWC's Fisher: a forward and backward per batch, like a step
                steps += math.ceil(min(kind.consolidation_rows, train_rows[i]) / cfg.training.batch_size)
            probes = 0.0
            if kind.trains and ev.probe_every:
                earlier = sum(min(ev.probe_rows, rows[j]) * per_row[j] for j in range(i))
                probes = (steps // ev.probe_every) * earlier
            step = token_s[m.label] * per_batch[i]  # this task's rows: longer or shorter than the first's
            evaluation = stage_eval if ev.score_untrained else \
                stage_eval - sum(n * s for n, s in zip(rows[i + 1:], per_row[i + 1:]))  # not the later tasks
            stages.append(StageCost(m.label, steps * step + probes, evaluation if kind.trains else 0.0))
    precision = [f"{t.name} ±{half_width(n):.0f} points (n={n})" for t, n in zip(loaded.tasks, rows)]
    advice = [f"score fewer eval rows (evaluation.eval_rows; now {max(rows)} per task, {score_s:.0f} s a stage)",
              f"fewer perplexity-probe tokens (evaluation.ppl_max_tokens, ppl_stride = ppl_window; now {forwarded:,} "
              f"tokens forwarded, {ppl_s:.0f} s a stage)"]
    if ev.self_probe:
        advice.append(f"fewer self-probe texts or tokens (now {ev.self_probe_texts} x {ev.self_probe_tokens})")
    if chat_s:
        advice.append(f"fewer chat-probe instructions or tokens (now {ev.chat_probe_instructions} x "
                      f"{ev.chat_probe_tokens}, {chat_s:.0f} s a stage)")
    advice.append("or train more steps per task (training.max_steps), which evaluation then weighs less against")
    how = (f"{CALIBRATION_STEPS} training steps per method on the first task ({CALIBRATION_STEPS - 1} timed, carried "
           f"to each task by its batches' padded tokens), {CALIBRATION_ROWS} "
           "scoring rows per task, a two-window slice of the perplexity probe" +
           (", one self-probe decoding step" if ev.self_probe else "") +
           (", one chat-probe decoding step" if chat_s else ""))
    base_s = stage_eval - task_s + sample_s + chat_base_s  # the base row trained no task: no new-task KL
    return CostEstimate(calibration=how, step_s=step_s, load_s=load_s, base_s=base_s, stages=stages,
                        precision=precision, advice=advice, threads=threads, load=load, cores=cores)


def _chat_probe_seconds(cfg: ExperimentConfig, model, tok, token_s: float) -> tuple[float, float]:
    """(seconds of the chat probe per stage, seconds more at the base row) for a model with a chat template (0, 0
    without one, or with the probe off): per stage the base replies teacher-forced (prompt + at most
    chat_probe_tokens, at the perplexity's rate per token `token_s`), the prompts of the instructions and facts
    prefilled, and chat_probe_tokens + FACT_TOKENS decoding steps of a batch; the base row also decodes and
    forwards the base replies once more (curlora/measure/chat_probe.py)."""
    from curlora.run.chat_format import chat_prompt, conversation, has_template

    ev = cfg.evaluation
    if not ev.chat_probe or not has_template(tok):
        return 0.0, 0.0
    from curlora.measure import chat_probe as cp

    asked = cp.instructions(ev.chat_probe_instructions)
    n, n_facts = len(asked), len(cp.facts(ev.chat_probe_facts))
    prompt = sum(len(tok(chat_prompt(tok, conversation(None, x["instruction"])), add_special_tokens=False).input_ids)
                 for x in asked) / max(n, 1)
    batches = math.ceil(n / ev.batch_size)
    step = _decode_seconds(model, min(n, ev.batch_size)) * batches
    forced = token_s * n * (prompt + ev.chat_probe_tokens)
    per_stage = forced + token_s * (n + n_facts) * prompt + step * (ev.chat_probe_tokens + cp.FACT_TOKENS)
    return per_stage, forced + step * ev.chat_probe_tokens


@torch.no_grad()
def _decode_seconds(model, batch: int) -> float:
    """Seconds of one sampling step of the self-probe's batch with a short KV cache (measured: 3 steps, first not
    counted)."""
    from curlora.measure.forward import next_token_logits

    device = next(model.parameters()).device
    ids = torch.ones((batch, 1), dtype=torch.long, device=device)
    past, times = None, []
    for _ in range(3):
        start = time.perf_counter()
        logits, past = next_token_logits(model, ids, past)
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
        times.append(time.perf_counter() - start)
    return sum(times[1:]) / 2


def estimate_config(cfg: ExperimentConfig, limits=None, should_stop=None) -> CostEstimate:
    """Load what the run would load (refused as a run would be, over `limits`), then calibrate; writes nothing."""
    from curlora.run.runner import load_everything

    began = time.perf_counter()
    loaded = load_everything(cfg, limits=limits, should_stop=should_stop)
    return estimate(cfg, loaded, load_s=time.perf_counter() - began)


# -- a study: every point is a run of one method ------------------------------------------------------------------
@dataclass
class StudyCost:
    """A study's time, estimated before it starts: one calibration of every method (a run's CostEstimate), priced
    over the study's plan. Each point is a run of one method that trains and evaluates every task; the base row is
    measured once (once per seed where each seed draws its own rows); the model loads once."""

    run: CostEstimate = field(metadata={"help": "The calibration: one run of every method of the study."})
    runs: dict[str, int] = field(metadata={"help": "Points per method: learning rates × seeds × task orders."})
    base_rows: int = field(default=1, metadata={"help": "Base rows measured: 1, or one per seed (rows_per_seed)."})

    def run_s(self, label: str) -> float:
        """One point of `label`: its stages' training and evaluation."""
        return sum(s.train_s + s.eval_s for s in self.run.stages if s.method == label)

    @property
    def total_s(self) -> float:
        return (self.run.load_s + self.base_rows * self.run.base_s
                + sum(n * self.run_s(label) for label, n in self.runs.items()))

    def to_json(self) -> dict:
        return {"run": self.run.to_json(), "runs": dict(self.runs), "base_rows": self.base_rows,
                "run_s": {label: self.run_s(label) for label in self.runs}, "total_s": self.total_s}

    def text(self) -> str:
        n = sum(self.runs.values())
        each = "; ".join(f"{k} {label} × {_dur(self.run_s(label))}" for label, k in self.runs.items())
        lines = [f"Estimated time of this study on this machine: about {_hours(self.total_s)} for {n} runs, one "
                 f"after another ({each}), {self.base_rows} base row{'s' * (self.base_rows != 1)} × "
                 f"{_dur(self.run.base_s)} and loading {_dur(self.run.load_s)}.",
                 "Its progress once it runs: `python -m curlora study --progress STUDY_ID` (priced from its own "
                 "finished runs)."]
        if self.run.warning:
            lines.append("WARNING: " + self.run.warning)
        if self.run.contention:
            lines.append("NOTE: " + self.run.contention + ".")
        lines.append(f"(From a calibration measured just now: {self.run.calibration}. Other work on this machine "
                     "slows both the calibration and the study.)")
        return "\n".join(lines)


def _hours(seconds: float) -> str:
    return _dur(seconds) if seconds < 3600 else f"{seconds / 3600:.1f} h"


def estimate_study(cfg: ExperimentConfig, settings, limits=None, should_stop=None) -> StudyCost:
    """A study's time (settings: a StudySettings), refused as the study would be; writes nothing."""
    from curlora.run.study_plan import plan_of, plan_settings, with_replays

    cfg, settings = with_replays(cfg, settings)
    settings = plan_settings(cfg, settings)
    runs: dict[str, int] = {}
    for e in plan_of(settings):
        runs[e.method] = runs.get(e.method, 0) + 1
    # calibrate only the methods the study trains (an experiment's `base` is no point of a study)
    cfg = dataclasses.replace(cfg, methods=[m for m in cfg.methods if m.label in runs])
    return StudyCost(run=estimate_config(cfg, limits=limits, should_stop=should_stop), runs=runs,
                     base_rows=len(settings.seeds) if settings.rows_per_seed else 1)
