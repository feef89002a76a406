"""Tasks from CSV: `TaskConfig` (what a user writes) → `load_task` → `Task` (validated `datasets` splits).

A task is a training set, an evaluation set (a second file, or a seeded stratified split of the first that never
shares a text with training), a column mapping (text, optional text pair, label), label words (verbalizers) and
a prompt template. Every user mistake stops `load_task` with one `CurloraError` sentence naming the file and the
line or column; usable oddities end up in `Task.warnings`. Nothing is written anywhere: validation happens in
memory, before a run folder exists.

The train and eval `datasets.Dataset`s have columns `text`, `text_pair` (pair tasks only), `label` (the value as
in the file) and `label_id` (a ClassLabel over `Task.classes`), in a seeded shuffled order.
"""

from __future__ import annotations

import os
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from curlora.data.columns import ColumnMapping, find_column, resolve_columns
from curlora.data.csvfile import Table, count, looks_like_formula, read_table
from curlora.data.labels import (
    canonical_label,
    check_classes,
    check_eval_labels,
    describe_labels,
    is_missing,
    resolve_verbalizers,
    sort_classes,
)
from curlora.data.presets import DatasetPreset, get_preset, load_hub_split
from curlora.data.prompts import check_template, default_template, render_prompt
from curlora.data.splits import eval_count, stratified_sample, stratified_split
from curlora.data.task_config import DEFAULT_EVAL_SIZE, TaskConfig
from curlora.errors import CurloraError

if TYPE_CHECKING:
    import datasets

__all__ = ["Task", "TaskConfig", "load_task", "measure_tokens", "length_stats"]

LONG_TEXT_CHARS = 5000  # ~1,000+ tokens for most tokenizers: beyond any small model's context


@dataclass
class Task:
    """A validated task: shuffled train/eval `datasets.Dataset`s and everything needed to prompt and score."""

    config: TaskConfig
    train: datasets.Dataset
    eval: datasets.Dataset
    classes: list[str]
    verbalizers: dict[str, str]
    template: str
    mapping: ColumnMapping
    warnings: list[str]
    summary: dict

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def is_pair(self) -> bool:
        return self.mapping.text_pair is not None

    @property
    def words(self) -> list[str]:
        """Verbalizers in class order: `words[label_id]` is what the model is scored on."""
        return [self.verbalizers[c] for c in self.classes]

    def prompt(self, text: str, text_pair: str | None = None) -> str:
        return render_prompt(self.template, text, text_pair)


@dataclass
class _Rows:
    """One file's usable rows after mapping, with where each came from."""

    source: str
    texts: list[str]
    pairs: list[str] | None
    labels: list[str]
    where: list[str]
    counts: dict = field(default_factory=dict)  # rows read, dropped, excluded, …

    def keys(self) -> list[tuple]:
        """(text, text pair) per row: rows with equal keys are the same example."""
        return list(zip(self.texts, self.pairs if self.pairs is not None else [None] * len(self.texts)))


def load_task(cfg: TaskConfig, *, base_dir: str | os.PathLike | None = None,
              presets_file: str | os.PathLike | None = None, max_rows: int | None = None) -> Task:
    """Read, validate and split a task; raise CurloraError with one sentence on the first unusable problem.
    `max_rows`: a host's limit on the data rows read from each file (reading stops there)."""
    cfg.validate()
    preset = get_preset(cfg.preset, presets_file) if cfg.preset else None
    from_hub = not cfg.train_file
    if from_hub and preset.hub is None:
        raise CurloraError(f"task '{cfg.name}': preset '{preset.name}' has no hub source, so it needs a train_file.")
    exclude = set(cfg.exclude_labels) | (set(preset.hub.exclude_labels) if from_hub else set())

    train_table = _open(cfg, cfg.train_file, preset, base_dir, preset.hub.train_split if from_hub else None, max_rows)
    mapping = resolve_columns(train_table, text=cfg.text or (preset.hub.text if from_hub else None),
                              text_pair=cfg.text_pair or (preset.hub.text_pair if from_hub else None),
                              label=cfg.label or (preset.hub.label if from_hub else None))
    warnings = train_table.warnings + mapping.warnings
    train = _extract(train_table, mapping, cfg, exclude, warnings)
    counts = Counter(train.labels)
    warnings += check_classes(counts, source=train.source, column=mapping.label, rows=len(train.labels),
                              max_classes=cfg.max_classes)
    classes = sort_classes(counts)

    eval_split = preset.hub.eval_split if from_hub and cfg.eval_size is None else None
    evals = None
    if cfg.eval_file or eval_split:
        eval_table = _open(cfg, cfg.eval_file, preset, base_dir, None if cfg.eval_file else eval_split,
                           max_rows)
        warnings += eval_table.warnings
        eval_mapping = ColumnMapping(
            text=find_column(eval_table, mapping.text, "text"), label=find_column(eval_table, mapping.label, "label"),
            text_pair=find_column(eval_table, mapping.text_pair, "text pair") if mapping.text_pair else None)
        evals = _extract(eval_table, eval_mapping, cfg, exclude, warnings)
        unseen = next((evals.where[i] for i, x in enumerate(evals.labels) if x not in counts), None)
        warnings += check_eval_labels(counts, Counter(evals.labels), train_source=train.source,
                                      eval_source=evals.source, first_unseen=unseen)
        train_keys = set(train.keys())
        overlap = sum(key in train_keys for key in evals.keys())
        if overlap:
            warnings.append(f"{evals.source}: {count(overlap, 'eval row', 'has')} the same text as a training row, so "
                            "their score measures memory rather than generalisation.")

    owner = f"task '{cfg.name}'" + (f" (preset '{preset.name}')" if preset else "")
    verbalizers = resolve_verbalizers(cfg.verbalizers or (preset.verbalizers if preset else None), classes,
                                      owner=owner)
    if not (cfg.verbalizers or (preset and preset.verbalizers)) and all(c.lstrip("-").isdigit() for c in classes):
        warnings.append(f"{owner}: labels are numbers and no verbalizers are set, so the model is scored on the "
                        f"words {describe_labels(classes)}; words such as 'negative' / 'positive' usually score "
                        "better.")
    template = check_template(cfg.template or (preset.template if preset and preset.template else None)
                              or default_template(mapping.text_pair is not None),
                              pair=mapping.text_pair is not None, owner=owner)

    if cfg.max_train_rows is not None and cfg.max_train_rows < len(classes):
        raise CurloraError(f"{owner}: max_train_rows {cfg.max_train_rows} is fewer than the {len(classes)} classes; "
                           "allow at least one row per class.")
    if evals is None:
        size = cfg.eval_size if cfg.eval_size is not None else DEFAULT_EVAL_SIZE
        n_eval = eval_count(size, len(train.labels), source=train.source)
        train_idx, eval_rows = stratified_split(train.labels, train.keys(), n_eval, cfg.seed)
        shown = f"{size * 100:g}%" if isinstance(size, float) else count(size, "row")
        split_desc = (f"{shown} of {train.source} held out (stratified, seed {cfg.seed}; identical texts kept on "
                      "one side)")
        evals, seen_gaps = train, False
    else:
        train_idx, eval_rows = list(range(len(train.labels))), list(range(len(evals.labels)))
        split_desc, seen_gaps = evals.source, True  # check_eval_labels already reported missing classes
    shuffled = evals is train  # the split already returns shuffled rows
    train_idx = _budget(train, train_idx, cfg.max_train_rows, cfg.seed, shuffled)
    eval_rows = _budget(evals, eval_rows, cfg.max_eval_rows, cfg.seed, shuffled)
    missing = [c for c in classes if c not in {evals.labels[i] for i in eval_rows}]
    if missing and (not seen_gaps or cfg.max_eval_rows):
        warnings.append(f"{evals.source}: the eval rows include no label {describe_labels(missing)}, so it is never "
                        "scored; add rows of it, raise max_eval_rows, or give a separate eval file.")

    import datasets

    train_ds = _dataset(train, train_idx, classes, datasets)
    eval_ds = _dataset(evals, eval_rows, classes, datasets)
    summary = _summary(cfg, train_table, mapping, train, evals, train_idx, eval_rows, classes, verbalizers,
                       template, split_desc, warnings)
    return Task(config=cfg, train=train_ds, eval=eval_ds, classes=classes, verbalizers=verbalizers,
                template=template, mapping=mapping, warnings=warnings, summary=summary)


def _open(cfg: TaskConfig, file: str | None, preset: DatasetPreset | None, base_dir, split: str | None,
          max_rows: int | None = None) -> Table:
    if file:
        path = Path(file).expanduser()
        if base_dir is not None and not path.is_absolute():
            path = Path(base_dir) / path
        return read_table(path, fallback_encoding=cfg.fallback_encoding, delimiter=cfg.delimiter,
                          max_file_mb=cfg.max_file_mb, max_rows=max_rows)
    hub = preset.hub
    return load_hub_split(preset, split, text=cfg.text or hub.text, text_pair=cfg.text_pair or hub.text_pair,
                          label=cfg.label or hub.label)


def _extract(table: Table, mapping: ColumnMapping, cfg: TaskConfig, exclude: set, warnings: list) -> _Rows:
    ti, li = table.columns.index(mapping.text), table.columns.index(mapping.label)
    pi = table.columns.index(mapping.text_pair) if mapping.text_pair else None
    rows = _Rows(table.source, [], [] if pi is not None else None, [], [])
    no_label, empty, excluded, renamed, formulas, long = [], [], 0, 0, [], []
    seen: dict[str, str | None] = {}  # raw label -> canonical (None: missing); few distinct values, many rows
    for i, row in enumerate(table.rows):
        raw = row[li]
        if raw not in seen:
            seen[raw] = None if is_missing(raw) else canonical_label(raw)
        label = seen[raw]
        if label is None:
            no_label.append(i)
            continue
        renamed += label != raw
        if label in exclude:
            excluded += 1
            continue
        text, pair = row[ti], (row[pi] if pi is not None else None)
        if is_missing(text) or (pair is not None and is_missing(pair)):
            empty.append(i)
            if cfg.drop_empty:
                continue
            text = "" if is_missing(text) else text
            pair = None if pair is None else "" if is_missing(pair) else pair
        if looks_like_formula(text) or (pair is not None and looks_like_formula(pair)):
            formulas.append(i)
        if len(text) + len(pair or "") > LONG_TEXT_CHARS:
            long.append(i)
        rows.texts.append(text)
        if pi is not None:
            rows.pairs.append(pair)
        rows.labels.append(label)
        rows.where.append(table.where(i))
    src, text_cols = table.source, "/".join(f"'{c}'" for c in (mapping.text, mapping.text_pair) if c)
    if no_label and not cfg.drop_empty:
        raise CurloraError(f"{src}: {count(len(no_label), 'row', 'has')} an empty or NaN label in column "
                           f"'{mapping.label}' (first at {table.where(no_label[0])}); fill them in, or set drop_empty "
                           "to skip them.")
    if no_label:
        warnings.append(f"{src}: dropped {count(len(no_label), 'row')} with an empty or NaN label (first at "
                        f"{table.where(no_label[0])}), as asked.")
    if empty and len(empty) == len(table.rows) - len(no_label) - excluded:
        raise CurloraError(f"{src}: every row's text is empty in column {text_cols}; is that the right column?")
    if empty:
        what = "dropped, as asked" if cfg.drop_empty else "kept as empty text; set drop_empty to skip them"
        warnings.append(f"{src}: {count(len(empty), 'row', 'has')} empty or NaN text in column {text_cols} (first at "
                        f"{table.where(empty[0])}); {what}.")
    if excluded:
        warnings.append(f"{src}: left out {count(excluded, 'row')} labelled {describe_labels(sorted(exclude))}, as "
                        "asked.")
    if renamed:
        warnings.append(f"{src}: {count(renamed, 'label', 'was')} written like '1.0' or with spaces; they are read "
                        "as whole values ('1').")
    if formulas:
        warnings.append(f"{src}: {count(len(formulas), 'text', 'looks')} like spreadsheet formulas (first at "
                        f"{table.where(formulas[0])}); they are kept as plain text, never evaluated, and escaped in "
                        "exports.")
    if long:
        warnings.append(f"{src}: {count(len(long), 'text', 'is')} over {LONG_TEXT_CHARS:,} characters (first at "
                        f"{table.where(long[0])}); they will be truncated to the model's maximum length.")
    if not rows.labels:
        raise CurloraError(f"{src}: no usable rows are left after leaving out empty and excluded labels.")
    rows.counts = {"read": len(table.rows), "used": len(rows.labels), "empty_label": len(no_label),
                   "empty_text": len(empty), "excluded": excluded}
    return rows


def _budget(rows: _Rows, idx: list[int], limit: int | None, seed: int, shuffled: bool) -> list[int]:
    """A seeded stratified sub-sample of `idx` to `limit` rows, in shuffled order (all rows if under budget)."""
    if shuffled and (limit is None or limit >= len(idx)):
        return idx
    pick = stratified_sample([rows.labels[i] for i in idx], len(idx) if limit is None else limit, seed)
    return [idx[j] for j in pick]


def _dataset(rows: _Rows, idx: list[int], classes: list[str], datasets):
    import pyarrow as pa
    from datasets.table import InMemoryTable

    data = {"text": [rows.texts[i] for i in idx]}
    features = {"text": datasets.Value("string")}
    if rows.pairs is not None:
        data["text_pair"] = [rows.pairs[i] for i in idx]
        features["text_pair"] = datasets.Value("string")
    position = {c: k for k, c in enumerate(classes)}
    data["label"] = [rows.labels[i] for i in idx]
    data["label_id"] = [position[rows.labels[i]] for i in idx]
    features["label"] = datasets.Value("string")
    features["label_id"] = datasets.ClassLabel(names=classes)
    # Straight to Arrow: `Dataset.from_dict(..., features=...)` encodes row by row in Python (~10x slower here).
    schema = datasets.Features(features).arrow_schema
    return datasets.Dataset(InMemoryTable(pa.Table.from_pydict(data, schema=schema)))


def length_stats(values: list[int]) -> dict:
    if not values:
        return {}
    ordered = sorted(values)
    return {"min": ordered[0], "median": statistics.median(ordered), "mean": round(sum(ordered) / len(ordered), 1),
            "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], "max": ordered[-1]}


def _summary(cfg, table, mapping, train, evals, train_idx, eval_idx, classes, verbalizers, template, split_desc,
             warnings) -> dict:
    first_label: dict[tuple, str] = {}
    conflicted: set[tuple] = set()
    for key, label in zip(train.keys(), train.labels):
        if first_label.setdefault(key, label) != label:
            conflicted.add(key)
    conflicting = len(conflicted)
    if conflicting:
        warnings.append(f"{train.source}: {count(conflicting, 'text', 'appears')} more than once with different "
                        "labels; a model can't get both right.")

    def chars(rows, idx):
        return length_stats([len(rows.texts[i]) + (len(rows.pairs[i]) if rows.pairs else 0) for i in idx])

    def ordered(counter):
        return {c: counter[c] for c in classes if counter[c]}

    return {
        "name": cfg.name,
        "train_source": train.source,
        "eval_source": split_desc,
        "format": table.describe_format(),
        "columns": table.columns,
        "mapping": {"text": mapping.text, "text_pair": mapping.text_pair, "label": mapping.label,
                    "detected": mapping.detected, "described": mapping.describe()},
        "rows": {"train_file": train.counts, "eval_file": evals.counts if evals is not train else None,
                 "train": len(train_idx), "eval": len(eval_idx)},
        "classes": classes,
        "label_counts": {"train_file": ordered(Counter(train.labels)),
                         "eval_file": ordered(Counter(evals.labels)) if evals is not train else None,
                         "train": ordered(Counter(train.labels[i] for i in train_idx)),
                         "eval": ordered(Counter(evals.labels[i] for i in eval_idx))},
        "duplicates": {"repeated_rows": len(train.texts) - len(first_label), "conflicting_labels": conflicting},
        "lengths_chars": {"train": chars(train, train_idx), "eval": chars(evals, eval_idx)},
        "verbalizers": verbalizers,
        "template": template,
        "warnings": warnings,
    }


def measure_tokens(task: Task, tokenizer, max_length: int | None = None) -> tuple[dict, list[str]]:
    """Token lengths of every rendered prompt (train and eval) and a warning for those over `max_length`."""
    stats, warnings = {}, []
    for split, ds in (("train", task.train), ("eval", task.eval)):
        columns = ds[:]  # plain lists: indexing a datasets Column row by row is ~100 µs a row
        pairs = columns.get("text_pair")
        prompts = [task.prompt(t, pairs[k] if pairs else None) for k, t in enumerate(columns["text"])]
        lengths = []
        for start in range(0, len(prompts), 1024):
            lengths += [len(ids) for ids in tokenizer(prompts[start:start + 1024])["input_ids"]]
        stats[split] = length_stats(lengths)
        if max_length and lengths:
            over = sum(n > max_length for n in lengths)
            if over:
                warnings.append(f"{task.name} {split}: {count(over, 'prompt', 'is')} longer than the model's "
                                f"{max_length:,} tokens (longest {max(lengths):,}); they will be truncated to "
                                f"{max_length:,} tokens.")
    return stats, warnings
