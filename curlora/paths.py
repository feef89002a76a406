"""Where the project's own files are, in one place (the engine's modules live in wings at different depths, so none
of them counts parent folders itself); which files a config names, and what a 'bundled:' name is; whether the
Hugging Face Hub may be asked at all (`hub_offline`, for models and dataset presets alike)."""

from __future__ import annotations

import os
from pathlib import Path

from curlora.errors import CurloraError, clip

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "assets"  # the bundled model, demo tasks and probe text
PRESETS = REPO / "presets"  # models.yaml, datasets.yaml, experiments/
DEMO_TASKS = ASSETS / "tasks"
DEFAULT_PROBE = ASSETS / "probe" / "kjv_heldout.txt"
QUICK_DEMO = PRESETS / "experiments" / "quick-demo.yaml"
REAL_DEMO = PRESETS / "experiments" / "real-demo.yaml"
OWNERS_DIR = ".owners"  # <data dir>/.owners/<owner>/uploads/…: never a run id (run ids start with a letter or digit)
UPLOAD, BUNDLED = "upload:", "bundled:"  # a visitor's upload by name (the server resolves it); a file under assets/


def within(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def task_sources(task):
    """(task, attribute, name in sentences) of the files one task reads."""
    for key in ("train_file", "eval_file"):
        yield task, key, f"task '{task.name}': {key}"


def sources(cfg):
    """(object, attribute, name in sentences) of every file a config reads: each task's train and eval file and
    the perplexity probe."""
    for t in cfg.tasks:
        yield from task_sources(t)
    yield cfg.evaluation, "probe_text", "evaluation.probe_text"


def bundled_path(value: str) -> Path:
    return ASSETS / value[len(BUNDLED):]


def resolve_bundled(value: str | None) -> str | None:
    """'bundled:tasks/reviews/train.csv' → that file under assets/ (a path that leaves assets/ is refused)."""
    if not value or not value.startswith(BUNDLED):
        return value
    path = bundled_path(value).resolve()
    if not within(path, ASSETS.resolve()):
        raise CurloraError(f"{clip(value[:120])} is not a bundled file: bundled paths stay inside assets/.")
    return str(path)


def hub_offline() -> bool:
    """True when the hub must not be contacted: huggingface_hub's own flag, or any of the variables that set it
    (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE, HF_DATASETS_OFFLINE), read at call time (huggingface_hub reads them once,
    at import), so a user or a test can flip them."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or any(
        os.environ.get(v, "").strip().lower() in ("1", "on", "yes", "true")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"))
