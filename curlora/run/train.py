"""Training one method on one task, through accelerate (so `accelerate launch` / `torchrun` just work).

A fresh optimiser and schedule per task, as in the paper; the adapter (and the model) carry over between tasks.
Every method sees the same examples in the same order: the order comes from the training seed alone.
The loop checks `should_stop` after every optimiser step (cancel takes effect within one step) and stops on a
non-finite loss with a message saying what to change.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader
from transformers import get_scheduler

from curlora.errors import CurloraError, check_stop
from curlora.experiment import TrainingSettings
from curlora.measure.encode import Encoder, pad_batch
from curlora.measure.scoring import encode_prompts, head_features, pad_id


class Diverged(CurloraError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    seconds: float
    smoothed_loss: float = float("nan")  # the 0.9-EMA of the loss at the last step (what stop_at_loss compares)
    reached: bool | None = None  # with stop_at_loss: whether the smoothed loss got there within the step budget


def training_examples(tokenizer, task, max_length: int, head_mode: bool) -> list[tuple[list[int], object]]:
    texts, labels = task.train["text"], task.train["label_id"]
    pairs = task.train["text_pair"] if "text_pair" in task.train.column_names else [None] * len(texts)
    if head_mode:
        return list(zip(encode_prompts(tokenizer, task, texts, pairs, max_length), labels))
    enc = Encoder(tokenizer, max_length)
    words = task.words
    return [enc.training_example(task.prompt(t, p), words[y]) for t, p, y in zip(texts, pairs, labels)]


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
               max_length: int | None = None, stop_at_loss: float | None = None) -> TrainResult:
    """Train the trainable parameters of `model` (and `head`, if given: head scoring mode) on `task`.

    With `stop_at_loss`, training ends at the first step whose smoothed loss is at or below it (the
    matched-loss comparison); the schedule still spans the full step budget, so the methods compared share it."""
    head_mode = head is not None
    examples = training_examples(tokenizer, task, max_length or cfg.max_length, head_mode)
    pid = pad_id(tokenizer)

    def collate(batch):
        if head_mode:
            ids, mask, _ = pad_batch([b[0] for b in batch], pid)
            return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([b[1] for b in batch])}
        ids, mask, labels = pad_batch([b[0] for b in batch], pid, labels=[b[1] for b in batch])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    loader = DataLoader(examples, batch_size=cfg.batch_size, shuffle=True, collate_fn=collate,
                        generator=torch.Generator().manual_seed(cfg.seed))
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
                    else:
                        loss = pmodel(**batch).loss
                    if not torch.isfinite(loss):
                        raise Diverged(
                            f"Training on task '{task.name}' diverged at step {step + 1} (loss is {loss.item():g}); "
                            f"lower the learning rate (now {lr:g}) or use a smaller batch or full precision."
                        )
                    acc.backward(loss)
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
                       reached=reached if stop_at_loss is not None else None)
