"""What a run can be exported as, shared by `python -m curlora export` and the app's download buttons: the accuracy
tables as text, the metrics as CSV, the finished adapter folders, and merged models.

    table(run)                                   # plain-text / Markdown accuracy matrices and summaries
    metrics_csv(m)                               # one row per method and stage (n and 95 % interval per
                                                 # accuracy, the setting), spreadsheet-safe
    copy_finished_adapters(run, m, dest)         # only the stages metrics.json vouches for; links never followed
    export_merged(run, m, dest)                  # each adapter method's last stage folded into the base
    STAGE_FORMATS                                # one stage as a PEFT LoRA zip or a GGUF file: export_lora.py
                                                 # and export_gguf.py (the app hands files out through
                                                 # curlora/serve/downloads.py)
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from curlora.data.csvfile import escape_formula
from curlora.errors import CurloraError
from curlora.measure.record import RunMetrics
from curlora.methods.registry import described, method
from curlora.run.store import Run, copy_outgoing, outgoing_files

FWT_LABEL = "FWT (vs the base model before training)"


def _fmt(v, pct=False) -> str:
    if v is None:
        return "–"
    return f"{100 * v:.1f}" if pct else f"{v:.2f}"


def _at(values: list | None, i: int):
    """Entry i of a per-stage list, None where a record stored less."""
    return values[i] if values and i < len(values) else None


def cell_text(cell: dict) -> str:
    """An accuracy with what backs it, from the stored record: '71.9 % [60.0, 81.5] n=64'; the bare number for a
    record stored before the intervals ('71.9')."""
    acc, n, ci = cell.get("accuracy"), cell.get("n"), cell.get("ci95")
    if acc is None:
        return "–"
    if ci is None and not n:
        return _fmt(acc, True)
    out = f"{100 * acc:.1f} %"
    if ci is not None:
        out += f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    return out + (f" n={n}" if n else "")


def _train_line(rec) -> str | None:
    """'final loss: a 0.412, b 0.377' plus, for a matched-loss stage, its target, whether it was reached and the
    steps it took."""
    parts = []
    for t in rec.train:
        text = f"{t.task} {'–' if t.final_loss is None else f'{t.final_loss:.3f}'}"
        if t.target_loss is not None:
            reached = "?" if t.reached is None else ("reached" if t.reached else "MISSED")
            text += f" (target {t.target_loss:.3f} {reached}, {t.steps:,} steps)"
        parts.append(text)
    return "final training loss: " + ", ".join(parts) if parts else None


def table(run: Run) -> str:
    """Accuracy matrices and summary metrics as plain-text tables (also the Markdown export). Every accuracy carries
    its stored n and 95 % Wilson interval; every method heading its setting."""
    m = run.record()
    st = run.status()
    if not m:
        why = st["message"] if st["status"] == "damaged" else "no finished stage yet"
        return f"run {run.id}: {st['status']} — {why}"
    tasks = m.tasks
    lines = [f"run {run.id}: {st['status']} ({st.get('message', '')})",
             f"scoring: {m.scoring}; forgetting: {m.forgetting_definition}; comparison: {m.comparison}",
             "majority-class accuracy: " + ", ".join(f"{t} {_fmt(a, True)}" for t, a in zip(tasks, m.majority)),
             "accuracy cells: % [95 % Wilson interval] n = rows scored", ""]
    for name, rec in m.methods.items():
        aimed, missed = rec.targets()
        if m.comparison == "matched_loss" and missed:
            lines.append(f"WARNING: {described(name, rec.setting)} missed its target loss on {len(missed)} of "
                         f"{len(aimed)} tasks: this is not a matched comparison there.")
        lines.append(f"## {described(name, rec.setting)} ({rec.kind}, {rec.trainable:,} trainable) — {rec.status}")
        lines.append("| after | " + " | ".join(tasks) + " | ppl | ppl (1 window) |")
        lines.append("|---" * (len(tasks) + 3) + "|")
        for i, row in enumerate(rec.matrix):
            label = "base" if i == 0 else tasks[i - 1]
            lines.append(f"| {label} | " + " | ".join(cell_text(rec.cell(i, j)) for j in range(len(row))) +
                         f" | {_fmt(_at(rec.ppl, i))} | {_fmt(_at(rec.ppl_single_window, i))} |")
        s = rec.summary
        lines.append(f"ACC {_fmt(s.get('acc'), True)}  BWT {_fmt(s.get('bwt'), True)}  "
                     f"{FWT_LABEL} {_fmt(s.get('fwt'), True)}  "
                     f"forgetting {_fmt(s.get('forgetting'), True)}  plasticity {_fmt(s.get('plasticity'), True)}")
        train = _train_line(rec)
        if train:
            lines.append(train)
        if rec.message:
            lines.append(f"note: {rec.message}")
        lines.append("")
    return "\n".join(lines)


def escape_cell(value) -> str:
    """A spreadsheet-safe CSV cell for any value (formula-looking text gets a leading quote, see escape_formula)."""
    return escape_formula("" if value is None else str(value))


def metrics_csv(m: RunMetrics) -> str:
    """One row per method and stage. The first columns are what they always were (method, kind, stage, after_task,
    acc:<task>…, ppl, ppl_single_window); after them: n:<task>…, ci95_lo:<task>…, ci95_hi:<task>… (the stored
    Wilson 95 % interval of each accuracy, empty for a record stored before them), the setting (JSON) and the
    described label, and the stage's training (final_loss, target_loss, reached, steps; empty for stage 0)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "kind", "stage", "after_task", *[f"acc:{t}" for t in m.tasks], "ppl", "ppl_single_window",
                *[f"n:{t}" for t in m.tasks], *[f"ci95_lo:{t}" for t in m.tasks], *[f"ci95_hi:{t}" for t in m.tasks],
                "setting", "described", "final_loss", "target_loss", "reached", "steps"])
    for name, rec in m.methods.items():
        setting = json.dumps(rec.setting, sort_keys=True) if rec.setting else ""
        for i, row in enumerate(rec.matrix):
            after = "base" if i == 0 else m.tasks[i - 1]
            cells = [rec.cell(i, j) for j in range(len(m.tasks))]
            ci = [c["ci95"] for c in cells]
            t = rec.train[i - 1] if 1 <= i <= len(rec.train) else None
            w.writerow([escape_cell(x) for x in (
                name, rec.kind, i, after, *row, _at(rec.ppl, i), _at(rec.ppl_single_window, i),
                *[c["n"] for c in cells], *[c[0] if c else None for c in ci], *[c[1] if c else None for c in ci],
                setting, described(name, rec.setting),
                *((t.final_loss, t.target_loss, t.reached, t.steps) if t else (None,) * 4))])
    return buf.getvalue()


def export_merged(run: Run, m: RunMetrics, dest: Path) -> list[Path]:
    """merged/<method>/: the base with the method's last finished stage folded in (save_pretrained + tokenizer), for
every method whose stages keep weights (an adapter merged in, or full fine-tuning's whole weights)."""
    from curlora.models.loading import load_model

    cfg = run.config()
    written = []
    for label, rec in m.methods.items():
        stage = rec.stages_done
        kind = method(rec.kind)
        if not kind.loads_stage or stage < 1:
            continue
        base, tokenizer, _ = load_model(cfg.model.name, dtype=cfg.model.dtype, device="cpu")  # fresh: merging edits it
        merged = kind.merge(kind.load(base, run.adapter_dir(label, stage)).model)
        merged.save_pretrained(dest / label)
        tokenizer.save_pretrained(dest / label)
        written.append(dest / label)
    if not written:
        raise CurloraError(f"Run {run.id} has no finished stage that keeps weights (CURLoRA, LoRA, full, …) to "
                           "merge.")
    return written


def copy_finished_adapters(run: Run, m: RunMetrics, dest: Path) -> int:
    """Copy the stage folders metrics.json vouches for (stage k of a method with k finished rows) to dest/; a
    half-written stage-k.partial or a stage saved but not yet evaluated (the app killed in between) is left out.
    Copied through store.copy_outgoing: links skipped, never followed, so an export holds only files of the run.
    Returns how many stage folders were copied."""
    n = 0
    for label, rec in m.methods.items():
        for stage in range(1, len(rec.matrix)):
            src = run.adapter_dir(label, stage)
            if src.is_dir() and outgoing_files(src, within=run.path):
                copy_outgoing(src, dest / label / src.name, within=run.path)
                n += 1
    return n


STAGE_FORMATS = {"lora": "PEFT LoRA folder (zip)", "gguf-f16": "GGUF F16, merged", "gguf-q8_0": "GGUF Q8_0, merged"}
