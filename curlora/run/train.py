"""Training one method on one task, through accelerate (so `accelerate launch` / `torchrun` just work).

A fresh optimiser and schedule per task, as in the paper; the adapter (and the model) carry over between tasks.
Every method sees the same examples in the same order: the order comes from the training seed alone. A stage may
also train on earlier tasks' rows: pooled with its own (joint training) or as a fixed share of every batch
(experience replay, `Replay`); each row is encoded by its own task (its prompt and label words).
The loop checks `should_stop` after every optimiser step (cancel takes effect within one step) and stops on a
non-finite loss with a message saying what to change.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader
from transformers import get_scheduler

from curlora.errors import CurloraError, check_stop
from curlora.experiment import TrainingSettings
from curlora.measure.encode import Encoder, pad_batch
from curlora.measure.forward import label_loss
from curlora.measure.scoring import encode_prompts, head_features, pad_id
from curlora.methods.registry import replayed_rows


class Diverged(CurloraError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    seconds: float
    smoothed_loss: float = float("nan")  # the 0.9-EMA of the loss at the last step (what stop_at_loss compares)
    reached: bool | None = None  # with stop_at_loss: whether the smoothed loss got there within the step budget
    replayed_per_batch: int = 0  # rows of earlier tasks in every batch (experience replay)


def training_examples(tokenizer, task, max_length: int, head_mode: bool) -> list[tuple[list[int], object]]:
    texts, labels = task.train["text"], task.train["label_id"]
    pairs = task.train["text_pair"] if "text_pair" in task.train.column_names else [None] * len(texts)
    if head_mode:
        return list(zip(encode_prompts(tokenizer, task, texts, pairs, max_length), labels))
    enc = Encoder(tokenizer, max_length)
    words = task.words
    return [enc.training_example(task.prompt(t, p), words[y]) for t, p, y in zip(texts, pairs, labels)]


class LengthGroupedBatches:
    """Batches of rows of similar length, in a seeded random order: the same batches in the same order for every
    method of a run (HF Trainer's `group_by_length` idea). Each pass shuffles all rows, cuts the shuffle into
    groups of `group` batches, sorts each group by length and cuts it into batches, then shuffles the batches, so
    long and short batches stay spread over the schedule. Each pass draws from the same generator, so a second
    epoch is a new order, and a run is the same every time."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int, group: int = 50):
        self.lengths, self.batch_size, self.group = lengths, batch_size, group
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self):
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        span = self.batch_size * self.group
        batches = []
        for start in range(0, len(order), span):
            chunk = sorted(order[start:start + span], key=lambda i: self.lengths[i])
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        for k in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[k]


class ReplayBatches:
    """Every batch of `own` (indices of the stage's own rows) with `k` rows of the replay pool added, whose indices
    follow the own rows' (`offset`, offset + 1, …, offset + pool − 1). The pool is drawn without replacement in a
    shuffled order, shuffled again once used up, from a generator of its own: the replayed rows depend only on the
    seed, the pool and k, never on the method, and the own rows' batches stay exactly those without replay."""

    def __init__(self, own, offset: int, pool: int, k: int, seed: int):
        self.own, self.offset, self.pool, self.k = own, offset, pool, k
        self.generator = torch.Generator().manual_seed(seed)
        self.queue: list[int] = []

    def __len__(self) -> int:
        return len(self.own)

    def draw(self) -> list[int]:
        out = []
        while len(out) < self.k:
            if not self.queue:
                self.queue = (torch.randperm(self.pool, generator=self.generator) + self.offset).tolist()
            take = min(self.k - len(out), len(self.queue))
            out, self.queue = out + self.queue[:take], self.queue[take:]
        return out

    def __iter__(self):
        for batch in self.own:
            yield list(batch) + self.draw()


@dataclass
class Replay:
    """Experience replay at one stage: `share` of every batch from the training rows of `tasks` (the earlier ones),
    drawn with a generator seeded by the training seed and `stage` (0-based)."""

    tasks: Sequence
    share: float
    stage: int


def replay_seed(seed: int, stage: int) -> int:
    """The replay draw's seed: its own stream per (training seed, stage), apart from the own rows' order."""
    return (seed * 1_000_003 + stage) % (2 ** 63)


def stage_batches(lengths: list[int], cfg: TrainingSettings, pool: int = 0, share: float = 0.0, stage: int = 0):
    """The batch sampler of one stage over its examples: the first len(lengths) are its own rows (length-grouped or
    plainly shuffled, seeded by cfg.seed), the next `pool` the replay pool; with a replay share and a pool, every
    batch holds round(share × batch_size) replayed rows and batch_size less that of its own."""
    k = replayed_rows(share, cfg.batch_size) if pool else 0
    size = cfg.batch_size - k
    if cfg.group_by_length:
        own = LengthGroupedBatches(lengths, size, cfg.seed)
    else:  # what DataLoader(shuffle=True, generator=…) draws
        own = torch.utils.data.BatchSampler(
            torch.utils.data.RandomSampler(range(len(lengths)), generator=torch.Generator().manual_seed(cfg.seed)),
            size, drop_last=False)
    return ReplayBatches(own, len(lengths), pool, k, replay_seed(cfg.seed, stage)) if k else own


def padding_share(batches, lengths: list[int]) -> float:
    """Share of a padded batch's positions that are padding, over the given batches of row indices."""
    real = sum(lengths[i] for b in batches for i in b)
    total = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1 - real / total if total else 0.0


def fisher_diagonal(model: nn.Module, tokenizer, task, cfg: TrainingSettings, rows: int, max_length: int | None = None,
                    should_stop: Callable[[], bool] | None = None) -> dict[str, torch.Tensor]:
    """The empirical diagonal Fisher of `model`'s trainable parameters on `task`'s first `rows` training rows: the
    mean over batches (of cfg.batch_size) of the squared gradient of the label loss, in eval mode (no dropout).
    Batch gradients, not per-row ones: one backward a batch, at the price of a scale that depends on the batch."""
    examples = training_examples(tokenizer, task, max_length or cfg.max_length, False)[:rows]
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    device, pid = next(model.parameters()).device, pad_id(tokenizer)
    model.eval()
    batches = 0
    for start in range(0, len(examples), cfg.batch_size):
        chunk = examples[start:start + cfg.batch_size]
        ids, mask, labels = pad_batch([e[0] for e in chunk], pid, labels=[e[1] for e in chunk])
        model.zero_grad(set_to_none=True)
        label_loss(model, ids.to(device), mask.to(device), labels.to(device)).backward()
        for n, p in params.items():
            if p.grad is not None:
                fisher[n] += p.grad.detach().float().pow(2)
        batches += 1
        check_stop(should_stop)
    model.zero_grad(set_to_none=True)
    return {n: f / max(1, batches) for n, f in fisher.items()}


def new_head(model, n_classes: int, seed: int) -> nn.Linear:
    """A per-task classification head on the last hidden state (the paper's scoring mode), seeded."""
    hidden = model.config.get_text_config().hidden_size if hasattr(model.config, "get_text_config") else model.config.hidden_size
    g = torch.Generator().manual_seed(seed)
    head = nn.Linear(hidden, n_classes)
    with torch.no_grad():
        bound = 1 / math.sqrt(hidden)
        head.weight.uniform_(-bound, bound, generator=g)
        head.bias.zero_()
    return head.to(next(model.parameters()).device)


class Heads:
    """The classification heads of one method (evaluation.scoring: head), one per task trained so far, and their
    file: every stage folder keeps all of them in heads.safetensors ("{task index}.weight" and ".bias"), so a stage
    reads back from the stage that trained each task. `by_task` is {task index: head}, what scoring takes."""

    FILE = "heads.safetensors"

    def __init__(self, base: nn.Module, n_classes: list[int]):
        """`base`: the model the heads sit on (its hidden size and device); `n_classes`: each task's class count."""
        self.base, self.n_classes = base, n_classes
        self.by_task: dict[int, nn.Linear] = {}

    def __len__(self) -> int:
        return len(self.by_task)

    def new(self, task_index: int, seed: int) -> nn.Linear:
        """A fresh head for the task a stage trains (kept once trained: `keep`)."""
        return new_head(self.base, self.n_classes[task_index], seed)

    def keep(self, task_index: int, head: nn.Linear) -> None:
        """A trained head, frozen, among those the next stages score with and save."""
        head.requires_grad_(False)
        self.by_task[task_index] = head

    def load(self, folder: Path, task_index: int) -> nn.Linear:
        """Task `task_index`'s head as the stage folder `folder` stored it (not kept: `read` keeps what it loads)."""
        state = load_file(folder / self.FILE)
        head = new_head(self.base, self.n_classes[task_index], 0)
        head.load_state_dict({"weight": state[f"{task_index}.weight"], "bias": state[f"{task_index}.bias"]})
        return head

    def read(self, stage_dir: Callable[[int], Path], done: int) -> None:
        """The heads of the first `done` tasks, each from the stage that trained it (`stage_dir(j + 1)` for task j):
        a method resumed after `done` stages."""
        for j in range(done):
            self.by_task[j] = self.load(stage_dir(j + 1), j)

    def save(self, folder: Path) -> None:
        """Every head kept so far into `folder`'s heads.safetensors (nothing when there is none)."""
        if not self.by_task:
            return
        state = {}
        for j, h in self.by_task.items():
            state[f"{j}.weight"] = h.weight.detach().cpu().contiguous()
            state[f"{j}.bias"] = h.bias.detach().cpu().contiguous()
        save_file(state, str(folder / self.FILE))


def _checkpointing(model: nn.Module, wanted: bool):
    """Turn on transformers' gradient checkpointing for this task (the non-reentrant kind, which needs no input
    gradients through a frozen embedding, so it works for every method); the model it was turned on for, or None."""
    if not wanted:
        return None
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(target, "supports_gradient_checkpointing", False):
        raise CurloraError(f"training.gradient_checkpointing: {type(target).__name__} does not support gradient "
                           "checkpointing; turn it off or pick another model.")
    target.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return target


def train_task(model: nn.Module, tokenizer, task, cfg: TrainingSettings, *, lr: float, head: nn.Module | None = None,
               on_step: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None,
               max_length: int | None = None, stop_at_loss: float | None = None, pooled: Sequence = (),
               replay: Replay | None = None, penalty: Callable[[], torch.Tensor] | None = None) -> TrainResult:
    """Train the trainable parameters of `model` (and `head`, if given: head scoring mode) on `task`, with the rows
    of the `pooled` tasks shuffled in as its own (joint training) and `replay`'s share of every batch from earlier
    tasks. `penalty()` is added to every step's loss (EWC's); the loss logged and matched stays the task's own.

    With `stop_at_loss`, training ends at the first step whose smoothed loss is at or below it (the
    matched-loss comparison); the schedule still spans the full step budget, so the methods compared share it."""
    head_mode = head is not None
    length = max_length or cfg.max_length
    examples = [e for t in (*pooled, task) for e in training_examples(tokenizer, t, length, head_mode)]
    own = len(examples)
    if replay is not None and replay.share and replay.tasks:
        examples += [e for t in replay.tasks for e in training_examples(tokenizer, t, length, head_mode)]
    pid = pad_id(tokenizer)

    def collate(batch):
        if head_mode:
            ids, mask, _ = pad_batch([b[0] for b in batch], pid)
            return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([b[1] for b in batch])}
        ids, mask, labels = pad_batch([b[0] for b in batch], pid, labels=[b[1] for b in batch])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    sampler = stage_batches([len(e[0]) for e in examples[:own]], cfg, len(examples) - own,
                            replay.share if replay else 0.0, replay.stage if replay else 0)
    loader = DataLoader(examples, batch_sampler=sampler, collate_fn=collate)
    per_epoch = math.ceil(len(loader) / cfg.grad_accum)
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch))
    params = [p for p in model.parameters() if p.requires_grad] + (list(head.parameters()) if head_mode else [])
    if not params:
        raise CurloraError("Nothing to train: the method has no trainable parameters.")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay, eps=cfg.adam_eps)
    sched = get_scheduler(cfg.scheduler, opt, num_warmup_steps=cfg.warmup_steps, num_training_steps=total)

    acc = Accelerator(gradient_accumulation_steps=cfg.grad_accum, mixed_precision=cfg.precision,
                      cpu=next(model.parameters()).device.type == "cpu")
    modules = (model, head) if head_mode else (model,)
    prepared = acc.prepare(*modules, opt, loader, sched)
    pmodel, phead = prepared[0], (prepared[1] if head_mode else None)
    popt, ploader, psched = prepared[-3:]
    pmodel.train()
    checkpointed = _checkpointing(model, cfg.gradient_checkpointing)

    step, started, smoothed, last = 0, time.time(), None, float("nan")
    reached = False
    try:
        while step < total and not reached:
            for batch in ploader:
                with acc.accumulate(pmodel):
                    if head_mode:
                        feats = head_features(pmodel, batch["input_ids"], batch["attention_mask"])
                        loss = F.cross_entropy(phead(feats.float()), batch["labels"])
                    else:  # the vocabulary head only where a label token is predicted
                        loss = label_loss(pmodel, batch["input_ids"], batch["attention_mask"], batch["labels"])
                    if not torch.isfinite(loss):
                        raise Diverged(
                            f"Training on task '{task.name}' diverged at step {step + 1} (loss is {loss.item():g}); "
                            f"lower the learning rate (now {lr:g}) or use a smaller batch or full precision."
                        )
                    acc.backward(loss if penalty is None else loss + penalty())
                    if step == 0 and acc.sync_gradients and all(p.grad is None for p in params):
                        raise CurloraError(f"Training on task '{task.name}' reached none of the trainable "
                                           "parameters (no gradient flows to them); this model or layer type "
                                           "can't train this method, so pick another method or model.")
                    popt.step()
                    psched.step()
                    popt.zero_grad(set_to_none=True)
                if not acc.sync_gradients:
                    continue
                step += 1
                last = float(loss.detach())
                smoothed = last if smoothed is None else 0.9 * smoothed + 0.1 * last
                if on_step:
                    on_step({"step": step, "steps": total, "loss": last, "smoothed_loss": smoothed,
                             "lr": psched.get_last_lr()[0], "elapsed": time.time() - started})
                check_stop(should_stop)
                if stop_at_loss is not None and smoothed <= stop_at_loss:
                    reached = True
                    break
                if step >= total:
                    break
    finally:
        pmodel.eval()
        if checkpointed is not None:
            checkpointed.activation_checkpointing_disable()  # the shared base goes back as it came
        acc.free_memory()
    return TrainResult(steps=step, final_loss=last, seconds=time.time() - started,
                       smoothed_loss=float("nan") if smoothed is None else smoothed,
                       reached=reached if stop_at_loss is not None else None,
                       replayed_per_batch=sampler.k if isinstance(sampler, ReplayBatches) else 0)
