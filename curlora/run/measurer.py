"""Measuring a stage: what a run has in memory (`Loaded`) and everything one stage's evaluation does (`Measurer`).

    m = Measurer(run.path, cfg, loaded, should_stop, log)
    m.prepare(metrics)            # the base references, from the base model: call before attaching
    row = m.evaluate(model, heads, trained=i)

Every task is scored (trained or not: forward transfer), then the perplexity probe, the self probe
(curlora/measure/probes.py), the chat probe (curlora/measure/chat_probe.py) and, for the task the stage just trained,
the new-task KL (curlora/measure/task_kl.py). The probes' base references are made once from the unadapted model and
kept in `folder` (read back on resume). The runner's Executor measures every stage with one Measurer, and a study
measures its shared base row with one of its own (curlora/run/study.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from curlora.experiment import ExperimentConfig
from curlora.measure import chat_probe, probes, task_kl
from curlora.measure.perplexity import perplexity
from curlora.measure.record import Row, RunMetrics
from curlora.measure.scoring import pad_id, score
from curlora.measure.stats import to_bits, wilson
from curlora.run import events

if TYPE_CHECKING:  # annotations only
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

    from curlora.data.tasks import Task
    from curlora.models.loading import ModelInfo


@dataclass
class Loaded:
    """What a run needs in memory (curlora/run/runner.py load_everything makes it): the model once, the validated
    tasks, the perplexity probe's token ids and where its text came from."""

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    tasks: list[Task]
    probe_ids: torch.Tensor
    probe_source: str
    info: ModelInfo


class Measurer:
    """One stage's measurements of a model on `loaded`'s tasks, with the probes of `cfg.evaluation`.

    `folder`: where the probes' base references are stored (a run's or a study's folder); `should_stop` is checked
    between batches (it raises Cancelled); `log(kind, **fields)` takes the one note a measurement gives (the chat
    probe off); `write`: store the references (False on torchrun's other ranks, which read rank 0's)."""

    def __init__(self, folder: Path, cfg: ExperimentConfig, loaded: Loaded,
                 should_stop: Callable[[], bool] | None = None, log: Callable[..., None] | None = None,
                 write: bool = True):
        self.folder, self.cfg, self.L = folder, cfg, loaded
        self.should_stop, self.log, self.write = should_stop, log, write
        self.self_probe: tuple[torch.Tensor, dict] | None = None  # (ids, base reference) once sampled or read back
        # (probe, chat) once made or read back; False: off (the tokenizer has no chat template)
        self.chat: tuple[chat_probe.ChatProbe, chat_probe.Chat] | bool | None = None
        self.task_refs: dict[str, tuple] | None = None  # {task name: (prompt ids, base reference)}: new-task KL

    def eval_rows(self, task: Task) -> Dataset:
        """The eval rows a stage scores: the task's eval split, its first evaluation.eval_rows when that is set."""
        limit = self.cfg.evaluation.eval_rows
        return task.eval if not limit or limit >= len(task.eval) else task.eval.select(range(limit))

    # -- the base references ------------------------------------------------------------------------------------
    def prepare(self, metrics: RunMetrics | None = None) -> None:
        """Make (or read back) the chat probe's base replies, the new-task KL's base references and the self-probe
        texts, from the unadapted model: call before attaching. `metrics`: the record that notes what each probe
        made (its chat_probe, task_kl and self_probe)."""
        self.prepare_chat_probe(metrics)
        self.prepare_task_kl(metrics)
        self.prepare_self_probe(metrics)

    def prepare_self_probe(self, metrics: RunMetrics | None = None) -> None:
        """Sample the self-probe texts from the base model, or read them back on resume (curlora/measure/probes.py)."""
        ev = self.cfg.evaluation
        if not ev.self_probe or self.self_probe:
            return
        ids, ref, info = probes.load_or_sample(self.folder, self.L.model, self.L.tokenizer, ev.self_probe_texts,
                                               ev.self_probe_tokens, ev.self_probe_temperature, ev.self_probe_seed,
                                               write=self.write, should_stop=self.should_stop)
        self.self_probe = (ids, ref)
        if metrics is not None:
            metrics.self_probe = info

    def prepare_chat_probe(self, metrics: RunMetrics | None = None) -> None:
        """The chat probe's base replies (curlora/measure/chat_probe.py); off, with one line in the log, for a
        tokenizer without a chat template."""
        from curlora.run.chat_format import chat_prompt, conversation, has_template, stop_tokens

        ev, tok = self.cfg.evaluation, self.L.tokenizer
        if not ev.chat_probe or self.chat is not None:
            return
        if not has_template(tok):
            self.chat = False
            if self.log:
                self.log(events.NOTE, message="The chat probe is off for this run: the model's tokenizer has no chat "
                                              "template, so it has no chat turn to measure.")
            return
        ids, texts = stop_tokens(tok, self.L.model)
        chat = chat_probe.Chat(
            render=lambda text: tok(chat_prompt(tok, conversation(None, text)), add_special_tokens=False).input_ids,
            stop_ids=ids, stop_texts=texts, pad=pad_id(tok))
        probe = chat_probe.load_or_make(self.folder, self.L.model, tok, chat, ev.chat_probe_instructions,
                                        ev.chat_probe_tokens, ev.chat_probe_facts, ev.batch_size, write=self.write,
                                        should_stop=self.should_stop)
        self.chat = (probe, chat)
        if metrics is not None:
            metrics.chat_probe = probe.info

    def prepare_task_kl(self, metrics: RunMetrics | None = None) -> None:
        """The base's distributions on each task's first task_kl_rows eval prompts (curlora/measure/task_kl.py)."""
        ev, tok = self.cfg.evaluation, self.L.tokenizer
        if not ev.task_kl_rows or self.task_refs is not None:
            return
        prompts = {t.name: task_kl.prompts(tok, t, self.eval_rows(t), self.cfg.training.max_length, ev.task_kl_rows)
                   for t in self.L.tasks}
        self.task_refs, info = task_kl.load_or_make(self.folder, self.L.model, prompts, pad_id(tok), ev.task_kl_rows,
                                                    write=self.write, should_stop=self.should_stop)
        if metrics is not None:
            metrics.task_kl = info

    # -- a stage ------------------------------------------------------------------------------------------------
    def evaluate(self, model: nn.Module, heads: Mapping[int, nn.Module], trained: int | None = None) -> Row:
        """Every task, the perplexity probe and the drift probes of one stage; `heads`: the classification head of
        each task trained so far (evaluation.scoring: head); `trained`: the index of the task the stage just trained
        (its new-task KL), None for the base row."""
        ev, tr = self.cfg.evaluation, self.cfg.training
        cells = []
        for j, task in enumerate(self.L.tasks):
            untrained = trained is not None and j > trained
            if (ev.scoring == "head" and j not in heads) or (untrained and not ev.score_untrained):
                cells.append(None)
                continue
            cells.append(score(model, self.L.tokenizer, task, self.eval_rows(task), ev.scoring, tr.max_length,
                               ev.batch_size, head=heads.get(j), should_stop=self.should_stop))
        # the strided pass; its first window is the paper's number (ppl_single_window)
        ppl = perplexity(model, self.L.probe_ids, ev.ppl_window, ev.ppl_stride, should_stop=self.should_stop)

        def each(fn):
            return [None if c is None else fn(c) for c in cells]

        row = Row(accuracy=each(lambda c: c["accuracy"]), ppl=ppl["ppl"],
                  ppl_single_window=ppl["single_window"]["ppl"], n=each(lambda c: c["n"]),
                  ci95=each(lambda c: list(wilson(sum(c["correct"]), c["n"]) or ())),
                  correct=each(lambda c: to_bits(c["correct"])), pred_share=each(lambda c: c["pred_share"]))
        if self.self_probe:
            for k, v in probes.self_probe_measures(model, *self.self_probe, should_stop=self.should_stop).items():
                setattr(row, k, v)
        if self.chat:
            probe, chat = self.chat
            for k, v in chat_probe.measures(model, self.L.tokenizer, probe, chat, ev.batch_size,
                                            should_stop=self.should_stop).items():
                setattr(row, k, v)
        if self.task_refs and trained is not None:
            row.task_kl = task_kl.measure(model, self.task_refs[self.L.tasks[trained].name],
                                          pad_id(self.L.tokenizer), should_stop=self.should_stop)
        return row

    def probe(self, model: nn.Module, heads: Mapping[int, nn.Module], upto: int) -> list[float | None]:
        """The in-task probe: accuracy on the first evaluation.probe_rows eval rows of each of the first `upto`
        tasks, while a later task trains (evaluation.probe_every)."""
        ev, tr = self.cfg.evaluation, self.cfg.training
        out = []
        for j in range(upto):
            task = self.L.tasks[j]
            out.append(score(model, self.L.tokenizer, task, self.eval_rows(task), ev.scoring, tr.max_length,
                             ev.batch_size, head=heads.get(j), limit=ev.probe_rows,
                             should_stop=self.should_stop)["accuracy"])
        return out
