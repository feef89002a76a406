"""The new-task KL: drift measured in the domain of the task just trained.

After stage i (the model has just trained task i), `task_kl` = the mean per-token KL(base ‖ model) of next-token
distributions over the prompts of task i, the way scoring encodes them (curlora/measure/scoring.py
encode_prompts: the row's prompt, cut from the left to max_length), input tokens only: every position of a prompt
predicting its next prompt token. The rows are the first `task_kl_rows` eval rows of the task (the run's own eval
rows, in their stored order); prompts of fewer than two tokens predict nothing and are left out.

The base model's distributions on those prompts are measured once per task, before training (`load_or_make`), and
stored in the run folder as `task_kl.json` (settings, per task its name and prompt ids) with
`task_kl_ref.safetensors` (probes.span_reference: full distribution up to probes.FULL_VOCAB_MAX entries, else top
probes.TOP_K plus a remainder bucket, float64; keys "<i>.logp", "<i>.index" for the i-th stored task). A study
shares them with its runs like the self probe (probes.share_reference with this module's file names); a run whose
tasks encode to other prompts (another max_length, another seed's rows) measures its own, and a reference file is
read only when its metadata says it was measured on the prompts its task_kl.json names (`digest`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from curlora.measure import probes
from curlora.measure.scoring import encode_prompts, row_columns

FILE = "task_kl.json"
REF_FILE = "task_kl_ref.safetensors"


def prompts(tokenizer, task, data, max_length: int, rows: int) -> list[list[int]]:
    """The first `rows` eval rows of `task` (`data`) as scoring encodes them, those of at least two tokens."""
    texts, pairs, _ = row_columns(data, rows)
    return [p for p in encode_prompts(tokenizer, task, texts, pairs, max_length) if len(p) >= 2]


def digest(tasks: dict[str, list[list[int]]]) -> str:
    """What the reference was measured on (the task names and their prompt ids), as a short hash: written into the
    reference file's metadata, so a reference measured on other rows (a study's other seed under rows_per_seed,
    which replaces the study's file) is never read against these prompts."""
    return hashlib.sha256(json.dumps(tasks, sort_keys=True).encode()).hexdigest()[:32]


def _measured_on(path: Path) -> str | None:
    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get("digest")


def load_or_make(folder: Path | None, model, tasks: dict[str, list[list[int]]], pad: int, rows: int,
                 write: bool = True, should_stop=None) -> tuple[dict, dict]:
    """({task name: (prompt ids, reference)}, settings): read back from the run folder (or the study folder it names)
    when the stored prompts are these, else measured on the (unadapted) `model` and stored there."""
    if folder is not None and (folder / FILE).is_file():
        stored = json.loads((folder / FILE).read_text(encoding="utf-8"))
        path = probes.reference_path(folder, stored, REF_FILE)
        kept = {t["name"]: t["ids"] for t in stored.get("tasks", [])}
        if path is not None and all(kept.get(name) == ids for name, ids in tasks.items()) and \
                _measured_on(path) == digest(kept):
            flat = load_file(str(path))
            at = {t["name"]: i for i, t in enumerate(stored["tasks"])}
            out = {name: (ids, {k: flat[f"{at[name]}.{k}"] for k in ("logp", "index") if f"{at[name]}.{k}" in flat})
                   for name, ids in tasks.items()}
            return out, stored["info"]
    out, flat = {}, {}
    for i, (name, ids) in enumerate(tasks.items()):
        ref = probes.span_reference(model, ids, [len(p) - 1 for p in ids], pad, should_stop=should_stop) if ids \
            else {"logp": torch.zeros(0, 1, dtype=torch.float64)}
        out[name] = (ids, ref)
        flat.update({f"{i}.{k}": v.contiguous() for k, v in ref.items()})
    some = next((ref for _, ref in out.values() if "index" in ref), None)
    info = {"rows": rows, "file": FILE,
            "reference": "full" if some is None else f"top-{some['index'].shape[-1]}",
            "prompts": {name: len(ids) for name, ids in tasks.items()}}
    if folder is not None and write:
        body = {"info": info, "tasks": [{"name": name, "ids": ids} for name, ids in tasks.items()]}
        (folder / FILE).write_text(json.dumps(body) + "\n", encoding="utf-8")
        save_file(flat, str(folder / REF_FILE), metadata={"digest": digest(tasks)})
    return out, info


def measure(model, entry: tuple[list[list[int]], dict], pad: int, should_stop=None) -> float | None:
    """task_kl of `model` on one task's stored prompts and reference (None when the task has no prompt)."""
    ids, ref = entry
    if not ids:
        return None
    return probes.span_kl(model, ids, [len(p) - 1 for p in ids], pad, ref, should_stop=should_stop)
