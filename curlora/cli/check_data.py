"""`python -m curlora check-data FILE.csv`: validate a task file and print what was understood.

The same `load_task` the runner and the UI use, so the sentence printed on failure is the one the UI shows.
Exit 0 with a summary (rows, mapping, label distribution, duplicates, lengths; tokens with `--model`), or exit 2
with one sentence on stderr (printed by `curlora.cli.main`). Reads only; writes nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from curlora.data.csvfile import MAX_FILE_MB, show
from curlora.data.report import format_summary
from curlora.data.tasks import TaskConfig, load_task, measure_tokens
from curlora.errors import CurloraError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "check-data", help="validate a task CSV and show its mapping, labels and lengths",
        description="Validate a task CSV the way a run would, and print what was understood.")
    p.add_argument("file", metavar="FILE.csv", help="training CSV (header row, then one example per row)")
    p.add_argument("--eval", metavar="FILE.csv", help="evaluation CSV; without it, --eval-size of FILE is held out")
    p.add_argument("--text", metavar="COL", help="text column (detected from common names if omitted)")
    p.add_argument("--text-pair", metavar="COL", help="second text column of a pair task")
    p.add_argument("--label", metavar="COL", help="label column (detected from common names if omitted)")
    p.add_argument("--preset", metavar="NAME", help="dataset preset for label words and prompt (presets/datasets.yaml)")
    p.add_argument("--eval-size", metavar="X", type=_size, help="held-out fraction (0-1) or row count (default 0.2)")
    p.add_argument("--max-train-rows", metavar="N", type=int, help="stratified sub-sample of the training rows")
    p.add_argument("--max-eval-rows", metavar="N", type=int, help="stratified sub-sample of the eval rows")
    p.add_argument("--seed", type=int, default=0, help="seed for the split and sub-samples (default 0)")
    p.add_argument("--encoding-fallback", metavar="ENC", help="encoding to try if the file isn't UTF-8, e.g. latin-1")
    p.add_argument("--delimiter", metavar="CHAR", help="cell delimiter: one character, or comma / semicolon / tab / "
                   "pipe (detected if omitted)")
    p.add_argument("--drop-empty", action="store_true", help="drop rows with empty text or label")
    p.add_argument("--exclude-label", metavar="VALUE", action="append", default=[],
                   help="leave out rows with this label (repeatable)")
    p.add_argument("--max-classes", metavar="N", type=int, default=20, help="most distinct labels allowed (default 20)")
    p.add_argument("--max-file-mb", metavar="MB", type=float, default=MAX_FILE_MB,
                   help=f"largest CSV accepted, in MB (default {MAX_FILE_MB:g})")
    p.add_argument("--model", metavar="PATH", help="local model or tokenizer folder: adds prompt lengths in tokens")
    p.add_argument("--max-length", metavar="N", type=int, help="token limit to check against (default: the model's)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def _size(text: str) -> float | int:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a fraction or a row count, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    cfg = TaskConfig(
        name=show(Path(args.file).stem, 60) or "task", train_file=args.file, eval_file=args.eval,
        preset=args.preset, text=args.text, text_pair=args.text_pair, label=args.label, eval_size=args.eval_size,
        max_train_rows=args.max_train_rows, max_eval_rows=args.max_eval_rows, seed=args.seed,
        fallback_encoding=args.encoding_fallback, delimiter=args.delimiter, drop_empty=args.drop_empty,
        exclude_labels=args.exclude_label, max_classes=args.max_classes, max_file_mb=args.max_file_mb)
    if args.max_length is not None and args.max_length < 1:
        raise CurloraError(f"--max-length must be a positive number of tokens, got {args.max_length}.")
    tokenizer = _tokenizer(args.model) if args.model else None  # fail on a bad --model before reading data
    task = load_task(cfg)
    summary = dict(task.summary)
    if tokenizer is not None:
        limit = args.max_length or model_max_length(tokenizer, args.model)
        stats, warnings = measure_tokens(task, tokenizer, limit)
        summary["lengths_tokens"] = {**stats, "model": args.model, "max_length": limit}
        summary["warnings"] = summary["warnings"] + warnings
    print(json.dumps(summary, indent=2, ensure_ascii=False) if args.json else format_summary(summary))
    return 0


def _tokenizer(path: str):
    folder = Path(path)
    if not folder.is_dir():
        raise CurloraError(f"--model {path}: not a folder; give a local model or tokenizer folder (token counts "
                           "never download anything).")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError, ImportError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CurloraError(f"--model {path}: no usable tokenizer in that folder ({first}).") from None


def model_max_length(tokenizer, path: str) -> int | None:
    """The tokenizer's limit, or the model config's positions when the tokenizer says 'unlimited' (1e30)."""
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 1_000_000:
        return limit
    try:
        config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        if isinstance(config.get(key), int):
            return config[key]
    return None
