"""Exports handed to a browser (the Results tab's download buttons): each made in the owner's own exports folder,
where an export older than EXPORT_KEEP_S is removed when the next one is made, and hosted with the visitor's own
config (no server path in it). What an export holds is curlora/share/.

    export_file(jobs, run_id, what, owner)       # metrics.json | metrics.csv | results.md | adapters.zip | merged.zip
    export_stage_file(jobs, run_id, m, k, fmt)   # one stage as a PEFT LoRA zip or a GGUF file
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from curlora.errors import CurloraError
from curlora.serve.jobs import JobManager
from curlora.share.export import STAGE_FORMATS, copy_finished_adapters, export_merged, metrics_csv, table

EXPORT_KEEP_S = 600  # long enough for gradio to copy a merged model out of an export folder


def export_file(jobs: JobManager, run_id: str, what: str, owner: str | None = None) -> str:
    """A file for the browser to download: metrics.json | metrics.csv | results.md | adapters.zip | merged.zip
    (each adapter method's last finished stage folded into a copy of the base model: full model size).

    Made in the owner's own exports folder, where an export older than EXPORT_KEEP_S is removed when the next one
    is made (gradio serves its own copy), so exports never pile up in the system's temp folder. Hosted, the config
    inside names no server path."""
    run = jobs.open(run_id, owner)
    m = run.record()
    if not m:
        raise CurloraError(f"Run {run_id} has no finished stage to export yet.")
    out = _export_folder(jobs, owner)
    if what == "metrics.json":
        (out / what).write_text(json.dumps(run.metrics(), indent=1) + "\n", encoding="utf-8")  # as stored
    elif what == "metrics.csv":
        (out / what).write_text(metrics_csv(m), encoding="utf-8")
    elif what == "results.md":
        (out / what).write_text(table(run) + "\n", encoding="utf-8")
    elif what in ("adapters.zip", "merged.zip"):  # <run id>/{adapters|merged}/…, config.yaml beside them
        staging = out / run_id
        if what == "merged.zip":
            export_merged(run, m, staging / "merged")
        elif not copy_finished_adapters(run, m, staging / "adapters"):
            raise CurloraError(f"Run {run_id} has no saved adapters yet.")
        config = run.config_yaml
        if jobs.policy.hosted:  # the visitor's own config, without the server's paths in it
            config = jobs.policy.public_yaml(run.config(), jobs.root)
        (staging / "config.yaml").write_text(config, encoding="utf-8")
        return shutil.make_archive(str(out / f"{run_id}-{what.removesuffix('.zip')}"), "zip", out, run_id)
    else:
        raise CurloraError(f"Unknown export {what!r}.")
    return str(out / what)


def _export_folder(jobs: JobManager, owner: str | None) -> Path:
    """A new folder in the owner's exports folder, where exports older than EXPORT_KEEP_S are removed first."""
    folder = jobs.policy.owner_dir(jobs.root, owner) / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        if time.time() - old.lstat().st_mtime > EXPORT_KEEP_S:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() and not old.is_symlink() else old.unlink()
    return Path(tempfile.mkdtemp(prefix="export-", dir=folder))


def export_stage_file(jobs: JobManager, run_id: str, label: str, stage: int, fmt: str, owner: str | None = None) -> str:
    """One stage of one method for the browser to download, in a format people serve (the Results tab; the CLI's
    `export --lora / --gguf`): "lora" a zip of the PEFT LoRA folder (curlora/share/export_lora.py), "gguf-f16" or
    "gguf-q8_0" the stage merged into the base as one .gguf file (curlora/share/export_gguf.py)."""
    if fmt not in STAGE_FORMATS:
        raise CurloraError(f"Unknown stage export {fmt!r}; the formats are {', '.join(STAGE_FORMATS)}.")
    run = jobs.open(run_id, owner)
    out = _export_folder(jobs, owner)
    name = f"{run_id}-{label}-stage-{int(stage)}"
    if fmt == "lora":
        from curlora.share.export_lora import export_lora

        export_lora(run, label, int(stage), out / name / f"{label}-stage-{int(stage)}-lora")
        return shutil.make_archive(str(out / f"{name}-lora"), "zip", out / name)
    from curlora.share.export_gguf import export_gguf

    gguf_type = fmt.removeprefix("gguf-")
    return export_gguf(run, label, int(stage), out / f"{name}-{gguf_type}.gguf", gguf_type)["path"]
