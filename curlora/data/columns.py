"""Which CSV columns are the text, the text pair and the label: detected from common headers, or given by name.

Detection is deliberately narrow: `text,label`, `sentence,label`, `sentence1,sentence2,label` and a handful of
well-known names map themselves (case-insensitively); anything else needs an explicit mapping, and the error
says which columns exist and which one was probably meant.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from curlora.data.csvfile import Table, is_number, show
from curlora.errors import CurloraError

# Order is priority: the first name present wins.
PAIR_NAMES = (
    ("sentence1", "sentence2"),
    ("text1", "text2"),
    ("text_a", "text_b"),
    ("question1", "question2"),
    ("premise", "hypothesis"),
    ("question", "sentence"),
)
TEXT_NAMES = ("text", "sentence", "review", "tweet", "content", "document", "comment", "body", "utterance",
              "sentence1", "text_a")
# `polarity` is Sentiment140's own name (0 / 2 / 4); `target` its Kaggle copy's.
LABEL_NAMES = ("label", "labels", "target", "class", "polarity", "sentiment", "category", "gold_label")
ROLES = ("text", "text_pair", "label")


@dataclass
class ColumnMapping:
    """The columns a task reads; `detected` names the roles that were found by header rather than given."""

    text: str
    label: str
    text_pair: str | None = None
    detected: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def describe(self) -> str:
        parts = [f"text = '{self.text}'"]
        if self.text_pair:
            parts.append(f"text_pair = '{self.text_pair}'")
        parts.append(f"label = '{self.label}'")
        how = "detected" if len(self.detected) == len(parts) else (
            f"{', '.join(self.detected)} detected" if self.detected else "as given")
        return f"{', '.join(parts)} ({how})"


def suggest_column(name: str, columns: list[str]) -> str | None:
    """The existing column a misspelled `name` most likely meant, or None."""
    lowered = {c.lower(): c for c in columns}
    hit = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[hit[0]] if hit else None


def find_column(table: Table, name: str, role: str) -> str:
    """`name` as it appears in the header (exact, else case-insensitive), or an error suggesting the closest."""
    if name in table.columns:
        return name
    folded = [c for c in table.columns if c.lower() == name.strip().lower()]
    if len(folded) == 1:
        return folded[0]
    cols = ", ".join(table.columns)
    guess = suggest_column(name, table.columns)
    if not guess and header_looks_like_data(table):
        raise _no_header(table)
    if guess:
        raise CurloraError(f"{table.source}: {role} column '{show(name)}' not found; did you mean '{guess}'? "
                           f"Columns are: {cols}.")
    raise CurloraError(f"{table.source}: {role} column '{show(name)}' not found; columns are: {cols}.")


def detect_columns(columns: list[str]) -> dict[str, str | None]:
    """Best guess for each role from header names alone (None where nothing matches); for prefilling a UI."""
    lowered = {c.lower(): c for c in reversed(columns)}  # first occurrence wins
    found: dict[str, str | None] = {role: None for role in ROLES}
    for first, second in PAIR_NAMES:
        if first in lowered and second in lowered:
            found["text"], found["text_pair"] = lowered[first], lowered[second]
            break
    else:
        found["text"] = next((lowered[n] for n in TEXT_NAMES if n in lowered), None)
    found["label"] = next((lowered[n] for n in LABEL_NAMES if n in lowered), None)
    return found


def resolve_columns(table: Table, *, text: str | None = None, text_pair: str | None = None,
                    label: str | None = None) -> ColumnMapping:
    """Map the table's columns to roles: given names are checked, missing ones detected, or a clear error."""
    given = {"text": text, "text_pair": text_pair, "label": label}
    chosen: dict[str, str | None] = {}
    for role, name in given.items():
        if name is not None and str(name).strip():
            chosen[role] = find_column(table, str(name), role.replace("_", " "))
    guess = detect_columns(table.columns)
    detected: list[str] = []
    used = set(chosen.values())
    for role in ("text", "label"):
        if role in chosen:
            continue
        if guess[role] and guess[role] not in used:
            chosen[role] = guess[role]
            used.add(guess[role])
            detected.append(role)
        else:
            raise _undetected(table, role, used)
    if "text_pair" not in chosen and "text" in detected and guess["text_pair"] and guess["text_pair"] not in used:
        chosen["text_pair"] = guess["text_pair"]
        detected.insert(1, "text_pair")
    mapping = ColumnMapping(text=chosen["text"], label=chosen["label"], text_pair=chosen.get("text_pair"),
                            detected=detected)
    names = [n for n in (mapping.text, mapping.text_pair, mapping.label) if n]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise CurloraError(f"{table.source}: column '{dup}' is mapped to two roles (text, text pair, label); "
                           "each role needs its own column.")
    if "text" in detected and not mapping.text_pair:
        others = [c for c in table.columns if c.lower() in TEXT_NAMES and c not in names]
        if others:
            mapping.warnings.append(f"{table.source}: both '{mapping.text}' and '{others[0]}' look like text "
                                    f"columns; '{mapping.text}' was used (choose the text column to change it).")
    return mapping


def _undetected(table: Table, role: str, used: set) -> CurloraError:
    cols = table.columns
    if len(cols) == 1:
        return CurloraError(f"{table.source} has a single column ('{cols[0]}'); a task needs a text column and a "
                            "label column, separated by commas (or ';' or tabs).")
    if header_looks_like_data(table):
        return _no_header(table)
    free = [c for c in cols if c not in used]
    hint = f" (perhaps '{free[0]}'?)" if len(free) == 1 else ""
    known = "label, target, class" if role == "label" else "text, sentence, sentence1 + sentence2"
    return CurloraError(f"{table.source}: no column is named like a {role} column ({known}, …) among "
                        f"{', '.join(cols)}; choose the {role} column explicitly{hint}.")


def _no_header(table: Table) -> CurloraError:
    first = table.delimiter.join(table.columns)
    return CurloraError(f"{table.source} seems to have no header row (its first line '{show(first, 50)}' looks like "
                        "data); add a header line such as 'text,label' at the top.")


def header_looks_like_data(table: Table) -> bool:
    """True when the first line reads like a data row: a numeric 'name', or a name that recurs as a value below.

    Used only to word the error when no mapping fits, so a false alarm costs nothing worse than a message.
    """
    for j, name in enumerate(table.columns):
        if is_number(name):
            return True
        values = {row[j].strip() for row in table.rows[:500]}
        if name in values or len(name) > 60:
            return True
    return False
