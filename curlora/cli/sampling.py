"""`python -m curlora inspect MODEL`: which columns and rows CURLoRA would pick from each adapted matrix, and how.

A table (one line per matrix: total-variation distance from uniform per rule for columns/rows, distinct indices
drawn out of r, the share of W's energy in C and R) and one summary sentence, or with `--json` the whole report
of `curlora.measure.cur_sampling.inspect_model`. Loads the model on the CPU; trains and writes nothing.
"""

from __future__ import annotations

import argparse
import json

from curlora.errors import CurloraError


def register(subparsers) -> None:
    from curlora.experiment import SAMPLING_RULES

    p = subparsers.add_parser(
        "inspect", help="show CURLoRA's column/row sampling on a model: probabilities per rule, draws, energy",
        description="Show, per matrix CURLoRA would adapt, how far each sampling rule is from uniform, the "
                    "indices drawn and how much of W the chosen columns and rows carry.")
    p.add_argument("model", metavar="MODEL", help="preset or bundled name, local model folder or cached hub id")
    p.add_argument("--r", type=int, default=8, help="rank: columns and rows drawn per matrix (default 8)")
    p.add_argument("--sampling", choices=SAMPLING_RULES, default="inverted", help="rule the draws use (default "
                   "inverted)")
    p.add_argument("--targets", metavar="NAMES", help="comma-separated module names, a regex or all-linear "
                   "(default: the architecture's attention projections)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--no-replace", action="store_true", help="draw without replacement (default: with, as the paper)")
    p.add_argument("--dtype", default="float32", help="dtype to load the weights in, as a run would (default "
                   "float32)")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")
    p.set_defaults(func=run)


def parse_targets(text: str | None) -> list[str] | str | None:
    """"q_proj,v_proj" → a list of names; a single entry stays a string, so a regex or all-linear works."""
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise CurloraError("--targets is empty; give module names such as q_proj,v_proj, or leave it out.")
    return names if len(names) > 1 or names[0].isidentifier() else names[0]


def run(args: argparse.Namespace) -> int:
    from curlora.measure.cur_sampling import inspect_model, table
    from curlora.models.loading import load_model

    targets = parse_targets(args.targets)
    model, _, _ = load_model(args.model, dtype=args.dtype, device="cpu")
    report = inspect_model(model, r=args.r, sampling=args.sampling, targets=targets, seed=args.seed,
                           replace=not args.no_replace)
    if args.json:
        print(json.dumps(report))
        return 0
    headers, rows = table(report)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    for line in [headers, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())
    print(f"\n{args.model}, {report['sampling']} sampling, seed {report['seed']}: {report['summary']}")
    return 0
