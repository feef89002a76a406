"""Build the King James Bible corpus for the bundled model from Debian's `bible-kjv-text` package.

The KJV text (1611/1769) is in the public domain; the Debian package's copyright file says so and allows
unrestricted copying of the retrieval program's data. The package stores the text in a compressed,
randomly-accessible form that only its own `bible` program (package `bible-kjv`) reads, so both packages are
fetched with `apt-get download` (nothing is installed), unpacked with `dpkg-deb -x`, and `bible` prints every
verse from Genesis 1:1 to Revelation 22:21, one per line.

Output (in --out):
  kjv_train.txt     every book except HELD_OUT: the tokenizer and model training text
  kjv_heldout.txt   the HELD_OUT books: the bundled perplexity-probe text (never seen in training)
  SOURCES.txt       package versions and sha256 of the .deb files used

Format of both texts: one chapter per block ("Book N" on its own line, then one verse per line, no verse
numbers), blocks separated by a blank line. Verse numbers are dropped so the model learns prose, not references.

    python assets/recipes/build_corpus.py --out /tmp/kjv --probe assets/probe/kjv_heldout.txt
    # needs apt-get and dpkg-deb (Debian/Ubuntu); --probe also writes the held-out text where the app reads it
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import tempfile
from pathlib import Path

# The `bible` program's book abbreviations, in canonical order, with the names written into the text.
BOOKS = {
    "Ge": "Genesis", "Exo": "Exodus", "Lev": "Leviticus", "Num": "Numbers", "Deu": "Deuteronomy",
    "Josh": "Joshua", "Jdgs": "Judges", "Ruth": "Ruth", "1Sm": "1 Samuel", "2Sm": "2 Samuel",
    "1Ki": "1 Kings", "2Ki": "2 Kings", "1Chr": "1 Chronicles", "2Chr": "2 Chronicles", "Ezra": "Ezra",
    "Neh": "Nehemiah", "Est": "Esther", "Job": "Job", "Psa": "Psalms", "Prv": "Proverbs",
    "Eccl": "Ecclesiastes", "SSol": "Song of Solomon", "Isa": "Isaiah", "Jer": "Jeremiah",
    "Lam": "Lamentations", "Eze": "Ezekiel", "Dan": "Daniel", "Hos": "Hosea", "Joel": "Joel", "Amos": "Amos",
    "Obad": "Obadiah", "Jonah": "Jonah", "Mic": "Micah", "Nahum": "Nahum", "Hab": "Habakkuk",
    "Zep": "Zephaniah", "Hag": "Haggai", "Zec": "Zechariah", "Mal": "Malachi",
    "Mat": "Matthew", "Mark": "Mark", "Luke": "Luke", "John": "John", "Acts": "Acts", "Rom": "Romans",
    "1Cor": "1 Corinthians", "2Cor": "2 Corinthians", "Gal": "Galatians", "Eph": "Ephesians",
    "Phi": "Philippians", "Col": "Colossians", "1Th": "1 Thessalonians", "2Th": "2 Thessalonians",
    "1Tim": "1 Timothy", "2Tim": "2 Timothy", "Titus": "Titus", "Phmn": "Philemon", "Heb": "Hebrews",
    "Jas": "James", "1Pet": "1 Peter", "2Pet": "2 Peter", "1Jn": "1 John", "2Jn": "2 John", "3Jn": "3 John",
    "Jude": "Jude", "Rev": "Revelation",
}
NEW_TESTAMENT_FIRST = "Mat"

# Held out whole books, of different kinds: two narratives, a lament in verse, a prophet's story, two letters.
HELD_OUT = ("Ruth", "Est", "Lam", "Jonah", "Phi", "Jas")

VERSE = re.compile(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$")


def fetch_verses(workdir: Path) -> tuple[list[tuple[str, int, int, str]], list[str]]:
    """(book abbreviation, chapter, verse, text) for all 31,102 verses, and provenance lines."""
    subprocess.run(["apt-get", "download", "bible-kjv-text", "bible-kjv"], cwd=workdir, check=True,
                   capture_output=True)
    sources = []
    for deb in sorted(workdir.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(workdir / "root")], check=True)
        sources.append(f"{deb.name} sha256 {hashlib.sha256(deb.read_bytes()).hexdigest()}")
    root = workdir / "root"
    out = subprocess.run([str(root / "usr/bin/bible"), "-f", "-p", str(root / "usr/lib"), "gen1:1-rev22:21"],
                         check=True, capture_output=True, text=True).stdout
    verses = []
    for line in out.splitlines():
        m = VERSE.match(line)
        if not m:
            raise SystemExit(f"unexpected line from bible: {line!r}")
        verses.append((m[1], int(m[2]), int(m[3]), m[4].strip()))
    if len(verses) != 31102:
        raise SystemExit(f"expected 31,102 verses, got {len(verses)}")
    return verses, sources


def chapters_text(verses: list[tuple[str, int, int, str]]) -> str:
    blocks, current, key = [], [], None
    for book, chap, _, text in verses:
        if (book, chap) != key:
            if current:
                blocks.append("\n".join(current))
            key, current = (book, chap), [f"{BOOKS[book]} {chap}"]
        current.append(text)
    blocks.append("\n".join(current))
    return "\n\n".join(blocks) + "\n"


def write_verses_csv(verses, path: Path) -> None:
    """All verses with book and testament, for the demo-task recipe."""
    import csv

    order = list(BOOKS)
    nt_start = order.index(NEW_TESTAMENT_FIRST)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["book", "chapter", "verse", "testament", "held_out", "text"])
        for book, chap, verse, text in verses:
            testament = "new" if order.index(book) >= nt_start else "old"
            w.writerow([BOOKS[book], chap, verse, testament, int(book in HELD_OUT), text])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for kjv_train.txt, kjv_heldout.txt, ...")
    ap.add_argument("--probe", type=Path, help="also write the held-out text here (assets/probe/kjv_heldout.txt)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        verses, sources = fetch_verses(Path(tmp))
    unknown = {v[0] for v in verses} - set(BOOKS)
    if unknown:
        raise SystemExit(f"unknown book abbreviations: {sorted(unknown)}")
    train = [v for v in verses if v[0] not in HELD_OUT]
    held = [v for v in verses if v[0] in HELD_OUT]
    (args.out / "kjv_train.txt").write_text(chapters_text(train), encoding="utf-8")
    (args.out / "kjv_heldout.txt").write_text(chapters_text(held), encoding="utf-8")
    if args.probe:
        args.probe.parent.mkdir(parents=True, exist_ok=True)
        args.probe.write_text(chapters_text(held), encoding="utf-8")
    write_verses_csv(verses, args.out / "kjv_verses.csv")
    (args.out / "SOURCES.txt").write_text("\n".join(sources) + "\n", encoding="utf-8")
    print(f"train: {len(train)} verses, held out: {len(held)} verses ({', '.join(BOOKS[b] for b in HELD_OUT)})")


if __name__ == "__main__":
    main()
