"""Reading a user's CSV safely: bytes → decoded text → header and rows of strings, or one CurloraError sentence.

Every problem is caught here before any meaning is given to the columns: a path that isn't a file, a file over
the size limit, a binary file renamed `.csv`, bytes that aren't UTF-8 (with the offset of the first bad one),
an unterminated quote, rows with the wrong number of cells, a missing or duplicated header name. What is odd but
usable (a UTF-8 BOM, CRLF endings, a `;` or tab delimiter, blank lines) is accepted and reported.

The `csv` module streams, so a 67k-row file is read in a fraction of a second; nothing here is quadratic.
Cells are kept as plain strings: nothing is ever evaluated, so formula-looking cells (`=cmd|…`) are harmless
here, and `escape_formula` neutralises them when a table is exported back to a spreadsheet.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from curlora.errors import CurloraError, clip

MAX_FILE_MB = 300.0  # a 1.6M-row Sentiment140 file is 238 MB; much more than this doesn't belong in RAM as str
DELIMITERS = (",", ";", "\t", "|")
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}

# Unambiguous signatures of files people rename to .csv by mistake.
_MAGIC = (
    (b"PK\x03\x04", "a ZIP archive (an Excel .xlsx workbook is one; export it as CSV)"),
    (b"\xd0\xcf\x11\xe0", "an old Excel .xls / Office file (export it as CSV)"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive (decompress it first)"),
    (b"PAR1", "a Parquet file"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x7fELF", "an executable"),
)
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_FORMULA = re.compile(r"^\s*(=|[+\-@]\s*[A-Za-z_][\w.]*\s*[(|!])")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


@dataclass
class Table:
    """A CSV (or a hub split) in memory: header names and rows of strings, and where each row came from.

    `lines[i]` is where row i starts: the physical line in the file (the header is line 1), or the row number
    for tables that have no file (`unit` says which), so messages can point an editor at the right place.
    """

    source: str
    columns: list[str]
    rows: list[tuple[str, ...]]
    lines: list[int]
    unit: str = "line"
    delimiter: str = ","
    encoding: str = "utf-8"
    bom: bool = False
    line_endings: str = "LF"
    warnings: list[str] = field(default_factory=list)

    def where(self, i: int) -> str:
        return f"{self.unit} {self.lines[i]}"

    def column(self, name: str) -> list[str]:
        j = self.columns.index(name)
        return [row[j] for row in self.rows]

    def describe_format(self) -> str:
        """'comma-separated UTF-8 with BOM, CRLF line endings' and the like, for summaries."""
        if self.unit == "row":
            return "a Hugging Face dataset"
        text = f"{DELIMITER_NAMES.get(self.delimiter, repr(self.delimiter))}-separated {self.encoding}"
        if self.bom:
            text += " with BOM"
        return f"{text}, {self.line_endings} line endings"


def escape_formula(cell: str) -> str:
    """Make a cell safe to open in a spreadsheet: prefix formula-looking text with a single quote.

    Spreadsheets run cells that start with `=`, `+`, `-`, `@`, tab or CR (OWASP "CSV injection"), so exports
    pass every text cell through this. Plain numbers such as `-1.5` are left alone: they can't be formulas.
    """
    if cell and cell[0] in "=+-@\t\r" and not _NUMBER.match(cell):
        return "'" + cell
    return cell


def looks_like_formula(cell: str) -> bool:
    """True for cells a spreadsheet would run (`=SUM(…)`, `+cmd|…`, `@HYPERLINK(…)`); '@user hi' is not one."""
    return bool(_FORMULA.match(cell))


def show(value: object, width: int = 60) -> str:
    """A user's value as it may appear inside a one-line message: control characters escaped, long text clipped."""
    if isinstance(value, (os.PathLike, int, float)):
        value = str(value)
    elif not isinstance(value, str):  # str() of a nested value walks all of it; clip() stops after a few items
        return clip(value, width)
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in value[: width * 4])
    return text if len(text) <= width else text[: width - 1] + "…"


def count(n: int, noun: str, verb: str | None = None) -> str:
    """'1 row has', '3 rows have': counts in messages read as sentences."""
    text = f"{n:,} {noun}" + ("" if n == 1 else "s")
    if verb:
        plural = {"has": "have", "is": "are", "was": "were"}.get(verb, verb.removesuffix("s"))
        text += " " + (verb if n == 1 else plural)
    return text


def _size(n_bytes: float) -> str:
    mb = n_bytes / 1024 / 1024
    return f"{mb:,.1f} MB" if mb >= 0.1 else f"{n_bytes / 1024:,.1f} KB"


def is_number(text: str) -> bool:
    return bool(_NUMBER.match(text.strip()))


def read_table(
    path: str | os.PathLike,
    *,
    fallback_encoding: str | None = None,
    delimiter: str | None = None,
    max_file_mb: float = MAX_FILE_MB,
    max_rows: int | None = None,
) -> Table:
    """Read a CSV file into a `Table`, or raise CurloraError with one sentence naming the file and the place.

    The file must be UTF-8 (a BOM is fine); `fallback_encoding` (e.g. "latin-1") is tried only when given.
    `delimiter` None detects `,` `;` tab or `|` from the header and the first rows. `max_rows` (a host's limit)
    stops reading at the first data row beyond it, with a sentence, instead of holding every row first.
    """
    data, name = _read_bytes(Path(path), max_file_mb)
    text, encoding, bom, warnings = _decode(data, name, fallback_encoding)
    if not text.strip():
        raise CurloraError(f"{name} has no text in it (only a byte-order mark or whitespace); it needs a header "
                           "row and data rows.")
    _refuse_control_characters(text, name)
    if delimiter is None:
        delimiter = sniff_delimiter(text)
    elif len(delimiter) != 1 or delimiter in "\"\r\n":
        raise CurloraError(f"{name}: the delimiter must be one character other than a quote or a line break, "
                           f"got {clip(delimiter)}.")
    table = _parse(text, name, delimiter, max_rows)
    table.encoding, table.bom, table.line_endings = encoding, bom, _line_endings(text)
    table.warnings[:0] = warnings
    return table


def _read_bytes(path: Path, max_file_mb: float) -> tuple[bytes, str]:
    shown, name = show(path, 200), show(path.name, 100)
    try:
        if not path.exists() and not path.is_symlink():
            raise CurloraError(f"{shown}: no such file; check the path (relative paths start from "
                               f"{show(Path.cwd(), 200)}).")
        if path.is_dir():
            raise CurloraError(f"{shown} is a folder, not a CSV file; give the path of a .csv file inside it.")
        if not path.is_file():  # a FIFO or a device would block or never end
            raise CurloraError(f"{name} is not a regular file (or is a broken link); give the path of a .csv file.")
        size = path.stat().st_size
        if size > max_file_mb * 1024 * 1024:
            raise CurloraError(f"{name} is {_size(size)}, over the {max_file_mb:g} MB limit for a task file; "
                               "sub-sample it first or raise the limit (max_file_mb).")
        data = path.read_bytes()
    except (OSError, ValueError) as err:  # permissions, a name too long, a NUL in the path
        reason = getattr(err, "strerror", None) or str(err)
        raise CurloraError(f"{shown} can't be read ({show(reason)}); check the path and its permissions.") from None
    if not data:
        raise CurloraError(f"{name} is empty (0 bytes); it needs a header row such as 'text,label' and data rows.")
    return data, name


def _decode(data: bytes, name: str, fallback: str | None) -> tuple[str, str, bool, list[str]]:
    if fallback is not None:
        try:
            b"a".decode(fallback)  # LookupError for unknown and for non-text codecs such as 'hex'
        except UnicodeError:
            pass
        except LookupError:
            raise CurloraError(f"{name}: unknown fallback encoding {clip(fallback)}; use a Python codec name such as "
                               "'latin-1' or 'cp1252'.") from None
    if data.startswith(_UTF16_BOMS) and not codecs.lookup(fallback or "utf-8").name.startswith("utf-16"):
        raise CurloraError(f"{name} is saved as UTF-16 (it starts with a UTF-16 byte-order mark); save it as "
                           "UTF-8, or set the fallback encoding to 'utf-16'.")
    if not data.startswith(_UTF16_BOMS):
        for magic, what in _MAGIC:
            if data.startswith(magic):
                raise CurloraError(f"{name} is not a CSV file but {what}.")
        nul = data.find(b"\x00")
        if nul >= 0:
            raise CurloraError(f"{name} looks like a binary file, not CSV text (a NUL byte at offset {nul:,}); "
                               "was another kind of file renamed .csv?")
    bom = data.startswith(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8-sig"), "UTF-8", bom, []
    except UnicodeDecodeError as err:
        bad = err.start
        line = data.count(b"\n", 0, bad) + 1
        where = f"byte 0x{data[bad]:02X} at offset {bad:,} (line {line})"
        if fallback is None:
            raise CurloraError(f"{name} is not valid UTF-8: {where} can't be decoded; save the file as UTF-8, or "
                               "set a fallback encoding (such as latin-1) if you know the file uses one.") from None
    try:
        text = data.decode(fallback)
    except UnicodeError as err:
        at = getattr(err, "start", None)
        detail = f"byte 0x{data[at]:02X} at offset {at:,}" if isinstance(at, int) and at < len(data) else show(err)
        raise CurloraError(f"{name} is neither UTF-8 ({where}) nor {fallback} ({detail}); save it as UTF-8.") from None
    text = text.lstrip("\ufeff")
    return text, fallback, False, [f"{name} is not valid UTF-8 ({where}); it was read as {fallback}, as asked."]


def _refuse_control_characters(text: str, name: str) -> None:
    # Text files have almost no C0 control characters besides tab and line breaks; random bytes that survive a
    # latin-1 decode have plenty (about one in eight).
    sample = text[:65536]
    controls = sum(1 for ch in sample if ch < " " and ch not in "\t\n\r\f")
    if controls >= 8 and controls > len(sample) // 100:
        raise CurloraError(f"{name} looks like a binary file, not CSV text ({controls:,} control characters in "
                           f"its first {len(sample):,} characters); was another kind of file renamed .csv?")


def _line_endings(text: str) -> str:
    crlf = text.count("\r\n")
    lf = text.count("\n") - crlf
    cr = text.count("\r") - crlf
    kinds = [k for k, n in (("CRLF", crlf), ("LF", lf), ("CR", cr)) if n]
    return "mixed " + "/".join(kinds) if len(kinds) > 1 else (kinds[0] if kinds else "no")


def sniff_delimiter(text: str) -> str:
    """The delimiter among `,` `;` tab `|` that gives a header of 2+ columns and the most rows of that width.

    `csv.Sniffer` guesses from character frequencies and is easily fooled by punctuation inside texts; parsing a
    sample with each candidate and checking row widths against the header is slower but right.
    """
    sample = text[:262144]
    best, best_score = ",", (0.0, 0)
    for delim in DELIMITERS:
        records = []
        reader = csv.reader(io.StringIO(sample, newline=""), delimiter=delim)
        try:
            for row in reader:
                if row:
                    records.append(row)
                if len(records) > 50:
                    break
        except csv.Error:
            pass
        if len(sample) < len(text) and len(records) > 2:
            records.pop()  # may be cut in the middle by the sample's end
        if not records or len(records[0]) < 2:
            continue
        width = len(records[0])
        body = records[1:] or records[:1]
        score = (sum(len(r) == width for r in body) / len(body), width)
        if score[0] > best_score[0]:
            best, best_score = delim, score
    return best


def _parse(text: str, name: str, delimiter: str, max_rows: int | None = None) -> Table:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    header_line = 0
    rows: list[tuple[str, ...]] = []
    lines: list[int] = []
    ragged: list[tuple[int, int]] = []  # (line, number of cells)
    trimmed = blank = pending_blank = 0
    while True:
        start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise _quote_error(text, name, start, str(err)) from None
        if not any(cell.strip() for cell in record):
            pending_blank += 1 if header is not None else 0
            continue
        blank, pending_blank = blank + pending_blank, 0  # blank lines at the very end are not worth a warning
        if header is None:
            header, header_line = record, start
            continue
        if len(record) != len(header):
            if len(record) > len(header) and not any(c.strip() for c in record[len(header):]):
                record = record[: len(header)]
                trimmed += 1
            else:
                ragged.append((start, len(record)))
                continue
        if max_rows is not None and len(rows) >= max_rows:
            raise CurloraError(f"{name} has more than {max_rows:,} data rows, the most this server reads from one "
                               f"file (reading stopped at line {start:,}); upload a sample of at most {max_rows:,} "
                               "rows.")
        rows.append(tuple(record))
        lines.append(start)
    if header is None:  # only blank lines: caught as "no text" earlier unless cells were all empty
        raise CurloraError(f"{name} has no header and no data, only empty cells.")
    columns = _check_header(header, name, delimiter)
    if ragged:
        raise _ragged_error(name, columns, ragged, delimiter)
    if not rows:
        raise CurloraError(f"{name} has a header ({', '.join(columns)}) but no data rows; add rows below line "
                           f"{header_line}.")
    table = Table(source=name, columns=columns, rows=rows, lines=lines, delimiter=delimiter)
    if header_line > 1:
        table.warnings.append(f"{name}: the header is on line {header_line}; the blank lines above it were skipped.")
    if trimmed:
        table.warnings.append(f"{name}: {count(trimmed, 'row', 'ends')} with extra empty cells beyond the header's "
                              f"{len(columns)} columns; the empty cells were ignored.")
    if blank:
        table.warnings.append(f"{name}: {count(blank, 'blank line', 'was')} skipped.")
    return table


def _check_header(header: list[str], name: str, delimiter: str) -> list[str]:
    # Line breaks or other control characters inside a (quoted) header name become spaces: nobody can type them
    # in a mapping, and they would break the one-line messages that name columns.
    columns = [" ".join("".join(ch if ch.isprintable() else " " for ch in cell.lstrip("\ufeff")).split())
               for cell in header]
    seen: dict[str, int] = {}
    for j, col in enumerate(columns):
        if not col:
            continue
        if col in seen:
            raise CurloraError(f"{name}: column name '{col}' appears twice in the header (columns {seen[col] + 1} "
                               f"and {j + 1}); rename one of them.")
        seen[col] = j
    for j, col in enumerate(columns):
        if not col:
            # An unnamed column (a spreadsheet's index, a trailing delimiter) can't be mapped by name, but the
            # other columns are still usable, so give it a placeholder instead of refusing the file.
            placeholder = f"column_{j + 1}"
            while placeholder in seen:
                placeholder += "_"
            columns[j] = placeholder
            seen[placeholder] = j
    return columns


def _ragged_error(name: str, columns: list[str], ragged: list[tuple[int, int]], delimiter: str) -> CurloraError:
    line, cells = ragged[0]
    more = f" ({len(ragged):,} rows like this, the first on line {line})" if len(ragged) > 1 else ""
    width = len(columns)
    cols = ", ".join(columns)
    sep = DELIMITER_NAMES.get(delimiter, repr(delimiter))
    if cells > width:
        fix = f"a cell probably contains an unquoted {sep} — put that cell in double quotes"
    else:
        fix = "fill in the missing cells or remove the row"
    return CurloraError(f"{name}: line {line} has {count(cells, 'cell')} but the header has {width} ({cols}){more}; "
                        f"{fix}.")


def _quote_error(text: str, name: str, start: int, message: str) -> CurloraError:
    # The record that failed starts on line `start`; an odd number of quotes from there on means a quote opened
    # and never closed (the csv module reports that as "unexpected end of data", or as an over-long field when
    # the runaway cell swallows the rest of a big file).
    rest = io.StringIO(text, newline="").readlines()[start - 1:]
    first = rest[0].rstrip("\r\n") if rest else ""
    if "end of data" in message or sum(line.count('"') for line in rest) % 2:
        return CurloraError(f"{name}: a quote opened on line {start} never closes (the line starts "
                            f"'{show(first, 40)}'); add the closing \" or write quotes inside a cell as \"\".")
    if "field larger" in message:
        return CurloraError(f"{name}: the row starting on line {start} has a cell over {csv.field_size_limit():,} "
                            "characters; shorten or split that text.")
    return CurloraError(f"{name}: bad quoting on line {start} ({message}; the line starts '{show(first, 40)}'); "
                        "put cells with quotes in double quotes and write each quote inside as \"\".")
