"""`TaskConfig`: what a user writes to describe one task, in a form an experiment YAML can embed.

Plain fields only (strings, numbers, a dict of label words, a list of labels), so `to_dict` / `from_dict` round
trip through YAML. `from_dict` refuses unknown keys by name with the closest known key, and every field is type-
and range-checked on construction, so a typo in a config fails before anything is read or written.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field

from curlora.data.csvfile import MAX_FILE_MB, show
from curlora.data.labels import canonical_label
from curlora.errors import CurloraError, clip

DEFAULT_EVAL_SIZE = 0.2
_DELIMITER_NAMES = {"comma": ",", "semicolon": ";", "tab": "\t", "\\t": "\t", "pipe": "|"}
_STRINGS = ("train_file", "eval_file", "preset", "text", "text_pair", "label", "template", "fallback_encoding",
            "delimiter")


def _help(text: str, **kwargs):
    return field(metadata={"help": text}, **kwargs)


@dataclass
class TaskConfig:
    """One task of a continual-learning sequence: where its rows come from and how they become prompts.

    Only `name` and a source (`train_file`, or a `preset` with a hub source) are required; the columns, the
    delimiter and the eval split are detected or defaulted and shown in the task summary. Label words are never
    guessed: without `verbalizers` (or a preset's), a label is scored as its own text.
    """

    name: str = _help("Task name shown in results, e.g. 'sst2'.")
    train_file: str | None = _help("Training CSV; a relative path starts at the experiment file's folder.",
                                   default=None)
    eval_file: str | None = _help("Evaluation CSV; without one, eval_size of the training rows is held out.",
                                  default=None)
    preset: str | None = _help("Dataset preset in presets/datasets.yaml: label words, prompt, hub source.",
                               default=None)
    text: str | None = _help("Text column; detected from common names (text, sentence, …) if unset.", default=None)
    text_pair: str | None = _help("Second text column of a pair task (e.g. sentence2); detected with text.",
                                  default=None)
    label: str | None = _help("Label column; detected from common names (label, target, …) if unset.", default=None)
    verbalizers: dict[str, str] | None = _help("Label value -> word the model is scored on; default: the label.",
                                               default=None)
    template: str | None = _help("Prompt with {text} (and {text_pair}); a plain default is used if unset.",
                                 default=None)
    eval_size: float | int | None = _help("Held-out fraction (0-1) or row count when there is no eval_file "
                                          f"(default {DEFAULT_EVAL_SIZE}).", default=None)
    max_train_rows: int | None = _help("Seeded stratified sub-sample of the training rows.", default=None)
    max_eval_rows: int | None = _help("Seeded stratified sub-sample of the eval rows.", default=None)
    seed: int = _help("Seed of the split, the sub-samples and the row order.", default=0)
    fallback_encoding: str | None = _help("Encoding to read a file with if it isn't UTF-8, e.g. latin-1.",
                                          default=None)
    delimiter: str | None = _help("Cell delimiter (or comma / semicolon / tab / pipe); detected if unset.",
                                  default=None)
    drop_empty: bool = _help("Drop rows with empty text or label, instead of keeping (text) or refusing (label).",
                             default=False)
    exclude_labels: list[str] = _help("Label values whose rows are left out, e.g. a neutral class.",
                                      default_factory=list)
    max_classes: int = _help("Refuse a label column with more distinct values than this.", default=20)
    max_file_mb: float = _help("Refuse CSV files larger than this many MB.", default=MAX_FILE_MB)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Check every field's type and range, naming the key; normalise labels to the strings files use."""
        if not isinstance(self.name, str) or not self.name.strip():
            raise CurloraError("task config: 'name' must be a non-empty string.")
        who = f"task '{show(self.name)}'"
        if not self.name.isprintable() or len(self.name) > 100:
            raise CurloraError(f"{who}: 'name' must be at most 100 printable characters.")
        for key in _STRINGS:
            value = getattr(self, key)
            if isinstance(value, os.PathLike):
                value = os.fspath(value)
                setattr(self, key, value)
            if value is not None and not isinstance(value, str):
                raise CurloraError(f"{who}: '{key}' must be a string, got {clip(value)}.")
        if self.delimiter is not None:
            self.delimiter = _DELIMITER_NAMES.get(self.delimiter.lower(), self.delimiter)
        if self.verbalizers is not None:
            if not isinstance(self.verbalizers, dict) or not all(
                    isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in self.verbalizers.values()):
                raise CurloraError(f"{who}: 'verbalizers' must map label values to words, e.g. "
                                   "{0: negative, 1: positive}.")
            self.verbalizers = {canonical_label(k): str(v) for k, v in self.verbalizers.items()}
        if not isinstance(self.exclude_labels, (list, tuple)):
            raise CurloraError(f"{who}: 'exclude_labels' must be a list of label values.")
        self.exclude_labels = [canonical_label(x) for x in self.exclude_labels]
        size = self.eval_size
        if size is not None and (not _is_number(size) or (isinstance(size, float) and not 0 < size < 1)
                                 or (isinstance(size, int) and size < 1)):
            raise CurloraError(f"{who}: 'eval_size' must be a fraction between 0 and 1 or a row count of at least "
                               f"1, got {clip(size)}.")
        for key, low, optional in (("max_train_rows", 2, True), ("max_eval_rows", 1, True), ("max_classes", 2, False),
                                   ("seed", 0, False)):
            value = getattr(self, key)
            if value is None and optional:
                continue
            if not _is_number(value) or not isinstance(value, int) or value < low:
                raise CurloraError(f"{who}: '{key}' must be a whole number of at least {low}, got "
                                   f"{clip(value)}.")
        if not isinstance(self.drop_empty, bool):
            raise CurloraError(f"{who}: 'drop_empty' must be true or false, got {clip(self.drop_empty)}.")
        if not _is_number(self.max_file_mb) or self.max_file_mb <= 0:
            raise CurloraError(f"{who}: 'max_file_mb' must be a positive number, got {clip(self.max_file_mb)}.")
        if self.eval_file and self.eval_size is not None:
            raise CurloraError(f"{who}: set either 'eval_file' or 'eval_size', not both.")
        if not self.train_file and not self.preset:
            raise CurloraError(f"{who}: give a 'train_file' (a CSV) or a dataset 'preset'.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TaskConfig:
        """Build from a YAML mapping; an unknown key is an error naming it and the closest known key."""
        if not isinstance(data, dict):
            raise CurloraError(f"task config: expected a mapping of keys to values, got {type(data).__name__}.")
        known = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in known:
                guess = difflib.get_close_matches(str(key), known, n=1)
                hint = f"did you mean '{guess[0]}'? " if guess else ""
                raise CurloraError(f"task config '{show(data.get('name', '?'))}': unknown key '{show(key)}'; "
                                   f"{hint}known keys are: {', '.join(known)}.")
        if "name" not in data:
            raise CurloraError("task config: 'name' is required.")
        return cls(**data)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
