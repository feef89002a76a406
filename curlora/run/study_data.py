"""A study's data without its weights, to commit as it grows and to resume from on another machine.

    python -m curlora study --pack STUDY_ID DIR      # DIR/study/ and DIR/runs/<id>/ for every finished point
    python -m curlora study --unpack DIR             # into the run store; then: python -m curlora study --resume ID

A study of real models takes hours: its data must outlive the machine it ran on. `pack` copies the study folder's
small files (study.json, study.yaml, config.yaml, status, events, the self-probe texts and the base's reference
distribution) and, for each point whose run completed, that run's config, metrics, status and events — never a
stage's adapter or head, so the pack is small enough for git. A point that had not finished goes into the pack as
pending (its run id dropped), so the resumed study runs it again from the start; finished points are never rerun.
`unpack` writes the same folders into a run store, refusing to overwrite anything there, and leaves the study
stopped, ready for `--resume`. Packing twice into the same DIR replaces the older pack (it is written beside and
renamed into place), so a committed pack is always whole. pack.json names the machine each finished run was
packed from (`runs`: run id → machine), kept across unpack, resume elsewhere and pack again, so a document can say
which machine each number came from.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from pathlib import Path

from curlora.errors import CurloraError
from curlora.measure.study_record import StudyRecord
from curlora.measure.task_kl import REF_FILE as TASK_KL_REF
from curlora.run.store import STUDY_FILE, Run, Study, atomic_write_text, data_dir, outgoing_files

STUDY_DIR, RUNS_DIR, PACK_FILE = "study", "runs", "pack.json"
MAX_FILE = 8 * 1024 * 1024  # a file bigger than this is not data of a study (a stage's weights, a cache)
# folders that hold weights (live state never leaves: store.LIVE_FILES), and the new-task KL's base reference: it is
# measured again per seed (rows_per_seed) on fixed prompts, deterministically, so a pack would commit megabytes that
# change at every seed; a resumed study measures it again from task_kl.json's prompts
SKIP = {"adapters", "heads", "stages", TASK_KL_REF}


def _small_files(folder: Path) -> list[Path]:
    """The folder's own files that go into a pack: what leaves the machine (store.outgoing_files), small ones."""
    return outgoing_files(folder, skip=SKIP, max_bytes=MAX_FILE, recursive=False)


def machine() -> str:
    """This machine in words: architecture, CPUs, torch, and the GPU where one is visible."""
    import torch

    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}{gpu}"


def _previous(study: Study, dest: Path) -> dict:
    """run id → machine from an earlier pack of this study (in DIR, or the one it was unpacked from)."""
    for f in (dest / PACK_FILE, study.path / PACK_FILE):
        if f.is_file():
            meta = json.loads(f.read_text(encoding="utf-8"))
            if meta.get("study") == study.id:
                return dict(meta.get("runs") or {})
    return {}


def pack(study_id: str, dest: Path, root: Path | None = None) -> dict:
    """Copy the study's data (no weights) into `dest`; returns {"points": finished, "pending": not finished}."""
    study = Run.open(study_id, root)
    if not isinstance(study, Study):
        raise CurloraError(f"{study_id} is a run, not a study; `python -m curlora list` shows the studies.")
    rec = study.study_record()
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        (work / STUDY_DIR).mkdir()
        before, here, runs = _previous(study, dest), machine(), {}
        for f in _small_files(study.path):
            if f.name not in (STUDY_FILE, PACK_FILE):
                shutil.copy2(f, work / STUDY_DIR / f.name)
        done = 0
        for e in rec.plan:
            run = Run.open(e.run_id, study.root) if e.run_id else None
            if run is not None and run.status()["status"] == "completed":
                target = work / RUNS_DIR / run.id
                target.mkdir(parents=True)
                for f in _small_files(run.path):
                    shutil.copy2(f, target / f.name)
                e.status, done = "completed", done + 1
                runs[run.id] = before.get(run.id, here)
            else:  # rerun from the start where the pack is resumed: its stages' weights are not in the pack
                e.run_id, e.status = None, "pending"
        rec.points = [p for p in rec.points if any(e.run_id == p.run_id for e in rec.plan)]
        atomic_write_text(work / STUDY_DIR / STUDY_FILE, json.dumps(rec.to_json(), indent=1, default=float) + "\n")
        meta = {"study": study.id, "points": done, "pending": len(rec.plan) - done, "runs": runs}
        atomic_write_text(work / PACK_FILE, json.dumps(meta, indent=1) + "\n")
        old = dest.with_name(f".{dest.name}.old")
        if dest.exists():
            dest.rename(old)
        work.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
        return meta
    finally:
        shutil.rmtree(work, ignore_errors=True)


def unpack(src: Path, root: Path | None = None) -> Study:
    """Write a pack into the run store (`root`, else the default store) and return the stopped study."""
    src = Path(src)
    meta_file = src / PACK_FILE
    if not meta_file.is_file():
        raise CurloraError(f"{src} is not a study pack (no pack.json); make one with "
                           "`python -m curlora study --pack STUDY_ID DIR`.")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    root = (root or data_dir()).resolve()
    folders = [(src / STUDY_DIR, root / meta["study"])]
    if (src / RUNS_DIR).is_dir():
        folders += [(p, root / p.name) for p in sorted((src / RUNS_DIR).iterdir()) if p.is_dir()]
    taken = [d.name for _, d in folders if d.exists()]
    if taken:
        raise CurloraError(f"The run store {root} already holds {taken[0]}" + (f" and {len(taken) - 1} more" if
                           len(taken) > 1 else "") + "; unpack into another store (CURLORA_DATA_DIR) or resume there.")
    root.mkdir(parents=True, exist_ok=True)
    for s, d in folders:
        Run(root, d.name)  # the id check: a pack cannot write outside the store
        shutil.copytree(s, d)
    shutil.copyfile(meta_file, root / meta["study"] / PACK_FILE)  # which machine ran the runs packed so far
    study = Run.open(meta["study"], root)
    rec = StudyRecord.of(study.study_json())
    study.set_status("cancelled", f"unpacked from {src.name}: {rec.done} of {len(rec.plan)} runs completed — "
                                  f"resume the study to go on")
    return study
