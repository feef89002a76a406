"""Generated blocks inside hand-written documents: a bench script writes the text between

    <!-- generated: NAME -->
    ...
    <!-- end generated: NAME -->

and nothing else, so the prose around a table stays the author's and the table stays the data's. A test renders
each block again from the committed JSON and compares it with the document (tests/test_docs_regenerate.py)."""

from __future__ import annotations

import re
from pathlib import Path


def _marks(name: str) -> tuple[str, str]:
    return f"<!-- generated: {name} -->", f"<!-- end generated: {name} -->"


def block(text: str, name: str) -> str | None:
    """The lines between the marks of `name` in a document (None when it has no such block)."""
    begin, end = _marks(name)
    m = re.search(re.escape(begin) + r"\n(.*?)" + re.escape(end), text, flags=re.S)
    return None if m is None else m.group(1).rstrip("\n")


def splice(path: Path, name: str, lines: list[str]) -> None:
    """Write `lines` between the marks of `name` in the document at `path` (the marks must be there)."""
    text = path.read_text(encoding="utf-8")
    begin, end = _marks(name)
    if block(text, name) is None:
        raise SystemExit(f"{path} has no block {begin} … {end}: add the two marks where it goes")
    body = "\n".join(lines).rstrip("\n")
    start = text.index(begin) + len(begin)
    stop = text.index(end, start)
    path.write_text(text[:start] + "\n" + body + "\n" + text[stop:], encoding="utf-8")
