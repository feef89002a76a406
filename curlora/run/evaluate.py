"""Evaluating a finished stage of a run on new data: a task CSV (accuracy) or a text (perplexity).

The stage's weights come from the run store (adapters/<method>/stage-<k>), put on the base model named in the
run's config by the method's own `load` (an adapter, or full fine-tuning's whole weights); stage 0 is the base
model itself. Used by `python -m curlora eval` and the Results tab.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from curlora.data.task_config import TaskConfig
from curlora.data.tasks import load_task
from curlora.errors import CurloraError, clip
from curlora.experiment import ExperimentConfig
from curlora.measure.perplexity import perplexity, tokenize_text
from curlora.measure.scoring import score
from curlora.methods.registry import method as registered
from curlora.run.store import Run


def stage_model(run: Run, cfg: ExperimentConfig, base, method: str, stage: int):
    """(model to score, detach function) for `method` after `stage` tasks."""
    if stage == 0:
        return base, lambda: None
    kinds = {m.label: registered(m.kind) for m in cfg.methods}
    if method not in kinds:
        raise CurloraError(f"Run {run.id} has no method {clip(method)}; it has {', '.join(kinds)}.")
    folder = run.adapter_dir(method, stage)
    if not kinds[method].trains:
        return base, lambda: None
    if not folder.is_dir():
        raise CurloraError(f"Run {run.id} has no stage {stage} for {clip(method)} yet (finished stages are in {folder.parent}).")
    if not kinds[method].loads_stage:
        raise CurloraError(f"Evaluating a {clip(kinds[method].kind)} stage on new data isn't supported; pick a method "
                           "whose stages keep weights (e.g. curlora, lora or full).")
    loaded = kinds[method].load(base, folder)
    return loaded.model, loaded.cleanup


def evaluate_stage(run_id: str, method: str, stage: int, *, task_file: str | None = None, text_file: str | None = None,
                   verbalizers: dict | None = None, root: Path | None = None, loaded_model=None,
                   limits=None, should_stop=None, on_progress=None) -> dict:
    """Score a stage on a new task CSV (accuracy) or text (perplexity). `limits` (a host's, curlora/serve/limits.py;
    None: no limit): the file is read only up to rows_per_file rows, and at most eval_rows_per_task rows are scored
    (a seeded sample, said in the result as `rows_limited_to`); the probe text only up to probe_tokens. `should_stop` raises Cancelled
    between batches; `on_progress(done, total)` hears of each batch."""
    from curlora.models.loading import load_model

    def stopping():  # progress rides on the per-batch stop check the scorers already make
        if on_progress is not None:
            progress["done"] += 1
            on_progress(progress["done"], progress["total"])
        return bool(should_stop and should_stop())

    progress = {"done": 0, "total": None}
    run = Run.open(run_id, root)
    cfg = run.config()
    if stage < 0 or stage > len(cfg.tasks):
        raise CurloraError(f"Stage must be between 0 (base) and {len(cfg.tasks)}; got {stage}.")
    task = None
    if task_file:  # validate the new data before loading any weights
        with limits.reading() if limits is not None else contextlib.nullcontext():
            task = load_task(TaskConfig(name=Path(task_file).stem, train_file=task_file, eval_size=0.5,
                                        verbalizers=verbalizers), max_rows=getattr(limits, "rows_per_file", None))
    elif text_file:
        if not Path(text_file).is_file():
            raise CurloraError(f"Text file {text_file} does not exist.")
    model_tok = loaded_model or load_model(cfg.model.name, dtype=cfg.model.dtype, device=cfg.model.device)[:2]
    base, tokenizer = model_tok
    model, release = stage_model(run, cfg, base, method, stage)
    try:
        if task is not None:
            from datasets import concatenate_datasets  # every row of the new file is scored

            rows = concatenate_datasets([task.train, task.eval])
            cap = getattr(limits, "eval_rows_per_task", None)
            extra = {}
            if cap is not None and len(rows) > cap:
                rows = rows.shuffle(seed=0).select(range(cap))  # seeded: the same rows on every try
                extra = {"rows_limited_to": cap}
            batch = cfg.evaluation.batch_size
            progress["total"] = -(-len(rows) // batch)
            res = score(model, tokenizer, task, rows, cfg.evaluation.scoring if cfg.evaluation.scoring != "head"
                        else "likelihood", cfg.training.max_length, batch, should_stop=stopping)
            return {"run": run.id, "method": method, "stage": stage, "task": task.name, **res, **extra}
        text = Path(text_file).read_text(encoding="utf-8", errors="replace")
        budget = cfg.evaluation.ppl_max_tokens
        cap = getattr(limits, "probe_tokens", None)
        if cap is not None:
            text = text[: cap * 64]  # no token is longer than 64 characters' worth of text here; the ids are cut next
            budget = min(budget or cap, cap)
        ids = tokenize_text(tokenizer, text, budget)
        res = perplexity(model, ids, cfg.evaluation.ppl_window, cfg.evaluation.ppl_stride, should_stop=stopping)
        return {"run": run.id, "method": method, "stage": stage, "text": str(text_file), **res}
    finally:
        release()
