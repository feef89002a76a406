"""Evaluating a finished stage of a run on new data: a task CSV (accuracy) or a text (perplexity).

The stage's weights come from the run store (adapters/<method>/stage-<k>), attached to the base model named in
the run's config; stage 0 is the base model itself. Used by `python -m curlora eval` and the Results tab.
"""

from __future__ import annotations

from pathlib import Path

from curlora.data.task_config import TaskConfig
from curlora.data.tasks import load_task
from curlora.errors import CurloraError, clip
from curlora.experiment import ExperimentConfig
from curlora.measure.perplexity import perplexity, tokenize_text
from curlora.measure.scoring import score
from curlora.run import adapters as methods
from curlora.run.methods import method as registered
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
    if not kinds[method].has_adapter:
        raise CurloraError(f"Evaluating a {clip(kinds[method].kind)} stage on new data isn't supported; pick a method "
                           "that saves an adapter (e.g. curlora or lora).")
    model = methods.load_adapter(base, folder)
    return model, lambda: methods.detach(model)


def evaluate_stage(run_id: str, method: str, stage: int, *, task_file: str | None = None, text_file: str | None = None,
                   verbalizers: dict | None = None, root: Path | None = None, loaded_model=None) -> dict:
    from curlora.models.loading import load_model

    run = Run.open(run_id, root)
    cfg = run.config()
    if stage < 0 or stage > len(cfg.tasks):
        raise CurloraError(f"Stage must be between 0 (base) and {len(cfg.tasks)}; got {stage}.")
    task = None
    if task_file:  # validate the new data before loading any weights
        task = load_task(TaskConfig(name=Path(task_file).stem, train_file=task_file, eval_size=0.5,
                                    verbalizers=verbalizers))
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
            res = score(model, tokenizer, task, rows, cfg.evaluation.scoring if cfg.evaluation.scoring != "head"
                        else "likelihood", cfg.training.max_length, cfg.evaluation.batch_size)
            return {"run": run.id, "method": method, "stage": stage, "task": task.name, **res}
        text = Path(text_file).read_text(encoding="utf-8", errors="replace")
        ids = tokenize_text(tokenizer, text, cfg.evaluation.ppl_max_tokens)
        res = perplexity(model, ids, cfg.evaluation.ppl_window, cfg.evaluation.ppl_stride)
        return {"run": run.id, "method": method, "stage": stage, "text": str(text_file), **res}
    finally:
        release()
