"""Label values and the words they are scored as (verbalizers).

Labels are kept as the strings found in the file, with two normalisations that only remove accidents: outer
whitespace, and integral floats (`1.0` → `1`, what a spreadsheet or pandas round trip does to an integer column),
so a train file saying `1` and an eval file saying `1.0` agree. Classes are ordered numerically when every label
is a number, alphabetically otherwise; a class's position is its `label_id`.

A verbalizer maps a label to the word the model is scored on. None is assumed: without one, a label's word is
the label itself (`0`, `1`); a preset or the task config gives real words (`negative`, `positive`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping

from curlora.data.csvfile import count, is_number, show
from curlora.errors import CurloraError

# What spreadsheets and pandas write for "no value"; such a cell counts as empty.
MISSING = frozenset({"", "nan", "NaN", "NAN", "-nan", "-NaN", "NA", "N/A", "n/a", "#N/A", "<NA>", "NULL", "null",
                     "None"})
_INTEGRAL_FLOAT = re.compile(r"^([+-]?\d+)\.0*$")


def is_missing(cell: str | None) -> bool:
    return cell is None or cell.strip() in MISSING


def canonical_label(value: object) -> str:
    text = str(value).strip()
    m = _INTEGRAL_FLOAT.match(text)
    return str(int(m.group(1))) if m else text


def sort_classes(labels: Iterable[str]) -> list[str]:
    labels = set(labels)
    if labels and all(is_number(x) for x in labels):
        return sorted(labels, key=lambda x: (float(x), x))
    return sorted(labels)


def labels_kind(labels: Iterable[str]) -> str:
    """'numbers', 'words' or 'mixed', for comparing a train file with an eval file."""
    kinds = {is_number(x) for x in labels}
    return "mixed" if len(kinds) > 1 else ("numbers" if kinds == {True} else "words")


def describe_labels(labels: Iterable[str], limit: int = 6) -> str:
    labels = list(labels)
    shown = ", ".join(show(x, 30) for x in labels[:limit])
    return shown + (f" and {len(labels) - limit} more" if len(labels) > limit else "")


def describe_counts(counts: Mapping[str, int], order: Iterable[str] | None = None) -> str:
    """'1: 37,569 (55.8%), 0: 29,780 (44.2%)'."""
    total = sum(counts.values()) or 1
    keys = list(order) if order is not None else sorted(counts, key=lambda k: -counts[k])
    return ", ".join(f"{show(k, 30)}: {counts.get(k, 0):,} ({100 * counts.get(k, 0) / total:.1f}%)" for k in keys)


def check_classes(counts: Counter, *, source: str, column: str, rows: int, max_classes: int) -> list[str]:
    """Refuse label sets no classifier can use; return warnings about usable oddities."""
    if len(counts) < 2:
        only = show(next(iter(counts), ""))
        raise CurloraError(f"{source}: every row has label '{only}' in column '{column}', so there is nothing to "
                           "tell apart; a classification task needs at least two classes.")
    if len(counts) > max_classes:
        if rows >= 20 and len(counts) >= rows // 2:
            raise CurloraError(f"{source}: column '{column}' has a different value in almost every row "
                               f"({len(counts):,} distinct in {rows:,} rows), so it looks like text or an id, not a "
                               "label; choose the label column explicitly.")
        raise CurloraError(f"{source}: column '{column}' has {len(counts):,} distinct labels, more than the "
                           f"{max_classes} classes allowed; raise max_classes if that many is intended.")
    warnings = []
    if labels_kind(counts) == "mixed":
        words = [x for x in counts if not is_number(x)]
        warnings.append(f"{source}: column '{column}' mixes numbers and words as labels "
                        f"({describe_labels(sort_classes(counts))}); check rows labelled "
                        f"{describe_labels(words, 3)} (a repeated header line?).")
    rare = sorted(k for k, n in counts.items() if n == 1)
    if rare:
        warnings.append(f"{source}: label{'s' if len(rare) > 1 else ''} {describe_labels(rare)} occur"
                        f"{'' if len(rare) > 1 else 's'} in only one row; too few to learn or to evaluate.")
    return warnings


def check_eval_labels(train: Counter, evals: Counter, *, train_source: str, eval_source: str,
                      first_unseen: str | None) -> list[str]:
    """Compare an eval file's labels with the training file's: errors for mismatches, warnings for gaps."""
    tk, ek = labels_kind(train), labels_kind(evals)
    if {tk, ek} == {"numbers", "words"}:
        raise CurloraError(f"{eval_source}: labels are {ek} ({describe_labels(sort_classes(evals), 4)}) but "
                           f"{train_source}'s are {tk} ({describe_labels(sort_classes(train), 4)}); use the same "
                           "label values in both files.")
    unseen = sort_classes(set(evals) - set(train))
    if unseen:
        n = sum(evals[x] for x in unseen)
        raise CurloraError(f"{eval_source}: label '{show(unseen[0])}' ({count(n, 'row')} with labels never seen in "
                           f"training, first at {first_unseen}) does not occur in {train_source}, whose labels are "
                           f"{describe_labels(sort_classes(train))}; remove those rows or exclude the label.")
    warnings = []
    missing = sort_classes(set(train) - set(evals))
    if len(evals) == 1:
        warnings.append(f"{eval_source}: every eval row has label '{show(next(iter(evals)))}', so always answering it "
                        "scores 100%; accuracy on this set can't show what was learned.")
    elif missing:
        warnings.append(f"{eval_source}: no eval rows have label {describe_labels(missing)}, so that class is "
                        "never scored.")
    return warnings


def resolve_verbalizers(given: Mapping | None, classes: list[str], *, owner: str) -> dict[str, str]:
    """One distinct, non-empty word per class: `given` checked against the classes, or each label's own text."""
    if not given:
        return {c: c for c in classes}
    words = {canonical_label(k): str(v) for k, v in given.items()}
    extra = [k for k in words if k not in classes]
    if extra:
        raise CurloraError(f"{owner}: verbalizers give a word for label '{show(extra[0])}', which is not a label of "
                           f"this task (labels: {describe_labels(classes)}); fix the verbalizer keys.")
    missing = [c for c in classes if c not in words]
    if missing:
        raise CurloraError(f"{owner}: verbalizers give no word for label '{show(missing[0])}' (labels: "
                           f"{describe_labels(classes)}); add one.")
    out = {c: words[c] for c in classes}
    for c, word in out.items():
        if not word.strip():
            raise CurloraError(f"{owner}: the verbalizer for label '{show(c)}' is empty; give it a word to be scored "
                               "on.")
    seen: dict[str, str] = {}
    for c, word in out.items():
        key = word.strip()
        if key in seen:
            raise CurloraError(f"{owner}: labels '{show(seen[key])}' and '{show(c)}' have the same verbalizer "
                               f"'{show(key)}', so they can't be told apart; give each label its own word.")
        seen[key] = c
    return out
