"""Every bad-input case of the tasks issue, each with a real small file: `check-data` exits 2 with one sentence
naming the problem (and the line / column), or exits 0 with a warning where the data is usable; nothing is
written anywhere."""

import codecs
import os
import zipfile

import pytest

from curlora.cli.main import main
from curlora.data.csvfile import escape_formula
from curlora.data.tasks import TaskConfig, load_task
from curlora.errors import CurloraError

ROWS = ["good movie,1", "bad movie,0", "great fun,1", "dull plot,0", "loved it,1", "hated it,0"]


def write(tmp_path, name, content, *, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
    return path


def csv_text(header="text,label", rows=ROWS, nl="\n"):
    return nl.join([header, *rows]) + nl


def all_texts(task):
    return task.train["text"][:] + task.eval["text"][:]


def check(tmp_path, capsys, *args):
    """Run `check-data` in-process; assert it wrote nothing; return (exit code, stdout, stderr)."""
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code = main(["check-data", *map(str, args)])
    out, err = capsys.readouterr()
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    if code == 2:
        assert out == ""
        assert err.startswith("error: ") and err.count("\n") == 1, err  # exactly one sentence on one line
    return code, out, err


def fails(tmp_path, capsys, *args):
    code, _, err = check(tmp_path, capsys, *args)
    assert code == 2, err
    return err


def passes(tmp_path, capsys, *args):
    code, out, err = check(tmp_path, capsys, *args)
    assert code == 0, err
    assert out.rstrip().endswith("OK: usable as a task.")
    return out


# --- the file itself ---------------------------------------------------------------------------------------

def test_missing_path(tmp_path, capsys):
    err = fails(tmp_path, capsys, tmp_path / "nope.csv")
    assert "nope.csv: no such file" in err


def test_fifo_is_refused_without_blocking(tmp_path, capsys):
    os.mkfifo(tmp_path / "pipe.csv")
    err = fails(tmp_path, capsys, tmp_path / "pipe.csv")
    assert "pipe.csv is not a regular file" in err


def test_directory_instead_of_file(tmp_path, capsys):
    (tmp_path / "data.csv").mkdir()
    err = fails(tmp_path, capsys, tmp_path / "data.csv")
    assert "is a folder, not a CSV file" in err


def test_empty_file(tmp_path, capsys):
    err = fails(tmp_path, capsys, write(tmp_path, "t.csv", b""))
    assert "t.csv is empty" in err


def test_only_whitespace_and_bom(tmp_path, capsys):
    err = fails(tmp_path, capsys, write(tmp_path, "t.csv", codecs.BOM_UTF8 + b"\n \r\n"))
    assert "t.csv has no text in it" in err


def test_over_size_limit(tmp_path, capsys):
    path = write(tmp_path, "big.csv", csv_text(rows=ROWS * 200))
    err = fails(tmp_path, capsys, path, "--max-file-mb", "0.01")
    assert "big.csv is 13.9 KB, over the 0.01 MB limit for a task file" in err and "max_file_mb" in err
    with pytest.raises(CurloraError, match="over the"):
        load_task(TaskConfig(name="t", train_file=str(path), max_file_mb=0.01))


def test_binary_file_renamed_csv(tmp_path, capsys):
    err = fails(tmp_path, capsys, write(tmp_path, "model.csv", b"\x01\x02text\x00\x00\x00label\xff\xfe" * 20))
    assert "model.csv looks like a binary file" in err and "NUL byte at offset 6" in err


def test_xlsx_renamed_csv(tmp_path, capsys):
    path = tmp_path / "sheet.csv"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("xl/workbook.xml", "<workbook/>")
    err = fails(tmp_path, capsys, path)
    assert "sheet.csv is not a CSV file but a ZIP archive" in err and "xlsx" in err


def test_control_characters_without_nul(tmp_path, capsys):
    noise = bytes(range(1, 9)) * 40  # valid UTF-8, but no text file looks like this
    err = fails(tmp_path, capsys, write(tmp_path, "t.csv", b"text,label\n" + noise + b",1\n"))
    assert "looks like a binary file" in err and "control characters" in err


# --- encodings, BOM, line endings, delimiters -------------------------------------------------------------

def test_non_utf8_names_the_byte_offset_and_line(tmp_path, capsys):
    content = csv_text(rows=["good movie,1", "caf\u00e9 noir,0", "ok,1"]).encode("latin-1")
    err = fails(tmp_path, capsys, write(tmp_path, "t.csv", content))
    offset = content.index(b"\xe9")
    assert f"byte 0xE9 at offset {offset} (line 3)" in err and "not valid UTF-8" in err
    assert "fallback encoding" in err


def test_non_utf8_with_declared_fallback(tmp_path, capsys):
    rows = ["good movie,1", "caf\u00e9 noir,0", "ok,1", "meh,0"]
    path = write(tmp_path, "t.csv", csv_text(rows=rows).encode("latin-1"))
    out = passes(tmp_path, capsys, path, "--encoding-fallback", "latin-1")
    assert "read as latin-1, as asked" in out
    task = load_task(TaskConfig(name="t", train_file=str(path), fallback_encoding="latin-1", eval_size=1))
    assert "caf\u00e9 noir" in all_texts(task)


def test_unknown_fallback_encoding(tmp_path, capsys):
    path = write(tmp_path, "t.csv", b"text,label\ncaf\xe9,1\n")
    err = fails(tmp_path, capsys, path, "--encoding-fallback", "klingon")
    assert "unknown fallback encoding 'klingon'" in err


def test_utf16_file(tmp_path, capsys):
    path = write(tmp_path, "t.csv", csv_text(), encoding="utf-16")
    err = fails(tmp_path, capsys, path)
    assert "saved as UTF-16" in err
    passes(tmp_path, capsys, path, "--encoding-fallback", "utf-16")


def test_utf8_bom_is_accepted(tmp_path, capsys):
    path = write(tmp_path, "t.csv", codecs.BOM_UTF8 + csv_text().encode())
    out = passes(tmp_path, capsys, path)
    assert "mapping: text = 'text', label = 'label' (detected)" in out
    assert "UTF-8 with BOM" in out


def test_crlf_line_endings_are_accepted(tmp_path, capsys):
    rows = ['"two\r\nlines",1', *ROWS]
    path = write(tmp_path, "t.csv", csv_text(rows=rows, nl="\r\n"))
    out = passes(tmp_path, capsys, path)
    assert "CRLF line endings" in out
    task = load_task(TaskConfig(name="t", train_file=str(path), eval_size=1, seed=3))
    texts = all_texts(task)
    assert "two\r\nlines" in texts and not any(t.endswith("\r") for t in texts)
    assert set(task.train["label"][:] + task.eval["label"][:]) == {"0", "1"}


@pytest.mark.parametrize("delim,word", [(";", "semicolon"), ("\t", "tab"), ("|", "pipe")])
def test_other_delimiters_are_detected(tmp_path, capsys, delim, word):
    rows = [r.replace(",", delim) for r in ROWS] + [f'"with, comma{delim} and delim"{delim}1']
    path = write(tmp_path, "t.csv", csv_text(header=f"text{delim}label", rows=rows))
    out = passes(tmp_path, capsys, path)
    assert f"({word}-separated UTF-8" in out
    task = load_task(TaskConfig(name="t", train_file=str(path), eval_size=1))
    assert f"with, comma{delim} and delim" in all_texts(task)


def test_wrong_explicit_delimiter_says_single_column(tmp_path, capsys):
    err = fails(tmp_path, capsys, write(tmp_path, "t.csv", csv_text()), "--delimiter", ";")
    assert "has a single column ('text,label')" in err


# --- header and shape -------------------------------------------------------------------------------------

def test_header_only(tmp_path, capsys):
    err = fails(tmp_path, capsys, write(tmp_path, "t.csv", "text,label\n"))
    assert "t.csv has a header (text, label) but no data rows" in err


def test_no_header(tmp_path, capsys):
    err = fails(tmp_path, capsys, write(tmp_path, "t.csv", "\n".join(ROWS) + "\n"))
    assert "seems to have no header row" in err and "'good movie,1'" in err


def test_no_header_with_explicit_columns(tmp_path, capsys):
    path = write(tmp_path, "t.csv", "\n".join(ROWS) + "\n")
    err = fails(tmp_path, capsys, path, "--text", "text", "--label", "label")
    assert "seems to have no header row" in err


def test_misspelled_mapped_column_suggests(tmp_path, capsys):
    err = fails(tmp_path, capsys, write(tmp_path, "train.csv", csv_text()), "--label", "lable")
    assert "train.csv: label column 'lable' not found; did you mean 'label'? Columns are: text, label." in err


def test_missing_mapped_column_lists_columns(tmp_path, capsys):
    err = fails(tmp_path, capsys, write(tmp_path, "t.csv", csv_text()), "--text", "body_of_review")
    assert "text column 'body_of_review' not found; columns are: text, label." in err


def test_undetectable_columns_need_explicit_mapping(tmp_path, capsys):
    path = write(tmp_path, "t.csv", csv_text(header="words,stars"))
    err = fails(tmp_path, capsys, path)
    assert "no column is named like a text column" in err and "choose the text column explicitly" in err
    err = fails(tmp_path, capsys, path, "--text", "words")
    assert "choose the label column explicitly (perhaps 'stars'?)" in err
    out = passes(tmp_path, capsys, path, "--text", "words", "--label", "stars")
    assert "text = 'words', label = 'stars' (as given)" in out


def test_case_insensitive_mapping(tmp_path, capsys):
    out = passes(tmp_path, capsys, write(tmp_path, "t.csv", csv_text(header="Text,Label")))
    assert "text = 'Text', label = 'Label'" in out


def test_duplicate_column_names(tmp_path, capsys):
    rows = [r + ",x" for r in ROWS]
    err = fails(tmp_path, capsys, write(tmp_path, "t.csv", csv_text(header="text,label,text", rows=rows)))
    assert "column name 'text' appears twice in the header (columns 1 and 3)" in err


def test_same_column_for_two_roles(tmp_path, capsys):
    err = fails(tmp_path, capsys, write(tmp_path, "t.csv", csv_text()), "--text", "label", "--label", "label")
    assert "column 'label' is mapped to two roles" in err


def test_ragged_rows_with_extra_cells(tmp_path, capsys):
    rows = ROWS[:2] + ["great, fun,1"] + ROWS[2:] + ["so, so,0"]
    err = fails(tmp_path, capsys, write(tmp_path, "t.csv", csv_text(rows=rows)))
    assert "t.csv: line 4 has 3 cells but the header has 2 (text, label)" in err
    assert "2 rows like this" in err and "unquoted comma" in err


def test_ragged_rows_with_missing_cells(tmp_path, capsys):
    rows = ROWS[:3] + ["no label here"] + ROWS[3:]
    err = fails(tmp_path, capsys, write(tmp_path, "t.csv", csv_text(rows=rows)))
    assert "line 5 has 1 cell but the header has 2" in err and "fill in the missing cells" in err


def test_trailing_empty_cells_are_tolerated(tmp_path, capsys):
    rows = [r + ",," for r in ROWS[:2]] + ROWS[2:]
    out = passes(tmp_path, capsys, write(tmp_path, "t.csv", csv_text(rows=rows)))
    assert "2 rows end with extra empty cells" in out


def test_unterminated_quote_names_the_line(tmp_path, capsys):
    rows = ROWS[:2] + ['"never closed,1'] + ROWS[2:]
    err = fails(tmp_path, capsys, write(tmp_path, "t.csv", csv_text(rows=rows)))
    assert "a quote opened on line 4 never closes" in err


def test_unterminated_quote_in_a_big_file(tmp_path, capsys):
    rows = ['"never closed,1'] + [f"row {i} text,{i % 2}" for i in range(20000)]
    err = fails(tmp_path, capsys, write(tmp_path, "t.csv", csv_text(rows=rows)))
    assert "a quote opened on line 2 never closes" in err


def test_text_after_closing_quote(tmp_path, capsys):
    rows = ROWS[:1] + ['"quoted" then more,1'] + ROWS[1:]
    err = fails(tmp_path, capsys, write(tmp_path, "t.csv", csv_text(rows=rows)))
    assert "bad quoting on line 3" in err


def test_blank_lines_are_skipped(tmp_path, capsys):
    rows = ROWS[:2] + ["", ""] + ROWS[2:]
    out = passes(tmp_path, capsys, write(tmp_path, "t.csv", csv_text(rows=rows) + "\n\n"))
    assert "2 blank lines were skipped" in out and "6 rows" in out


# --- cell contents ----------------------------------------------------------------------------------------

def test_empty_and_nan_texts_are_counted_and_kept(tmp_path, capsys):
    rows = ROWS + [",1", "NaN,0", "   ,1"]
    path = write(tmp_path, "t.csv", csv_text(rows=rows))
    out = passes(tmp_path, capsys, path)
    assert "3 rows have empty or NaN text in column 'text' (first at line 8); kept as empty text" in out
    task = load_task(TaskConfig(name="t", train_file=str(path), eval_size=2))
    assert len(task.train) + len(task.eval) == 9
    assert "NaN" not in all_texts(task)


def test_empty_texts_dropped_only_if_asked(tmp_path, capsys):
    path = write(tmp_path, "t.csv", csv_text(rows=ROWS + [",1", "nan,0"]))
    out = passes(tmp_path, capsys, path, "--drop-empty")
    assert "2 rows have empty or NaN text" in out and "dropped, as asked" in out
    task = load_task(TaskConfig(name="t", train_file=str(path), eval_size=2, drop_empty=True))
    assert len(task.train) + len(task.eval) == 6


def test_all_texts_empty(tmp_path, capsys):
    err = fails(tmp_path, capsys, write(tmp_path, "t.csv", csv_text(rows=[",1", ",0", "NaN,1"])))
    assert "every row's text is empty in column 'text'" in err


def test_empty_or_nan_labels(tmp_path, capsys):
    rows = ROWS[:3] + ["what is this,", "and this,NaN"] + ROWS[3:]
    path = write(tmp_path, "t.csv", csv_text(rows=rows))
    err = fails(tmp_path, capsys, path)
    assert "2 rows have an empty or NaN label in column 'label' (first at line 5)" in err
    assert "drop_empty" in err
    out = passes(tmp_path, capsys, path, "--drop-empty")
    assert "dropped 2 rows with an empty or NaN label" in out


def test_single_class(tmp_path, capsys):
    err = fails(tmp_path, capsys, write(tmp_path, "t.csv", csv_text(rows=["a,1", "b,1", "c,1"])))
    assert "every row has label '1' in column 'label'" in err and "at least two classes" in err


def test_too_many_classes(tmp_path, capsys):
    rows = [f"text number {i},class{i % 30}" for i in range(300)]
    path = write(tmp_path, "t.csv", csv_text(rows=rows))
    err = fails(tmp_path, capsys, path)
    assert "column 'label' has 30 distinct labels, more than the 20 classes allowed" in err
    passes(tmp_path, capsys, path, "--max-classes", "30")


def test_label_column_that_is_really_text(tmp_path, capsys):
    rows = [f"{i},some unique sentence {i}" for i in range(100)]
    err = fails(tmp_path, capsys, write(tmp_path, "t.csv", csv_text(header="text,label", rows=rows)))
    assert "different value in almost every row" in err


def test_numeric_labels_in_one_file_text_in_the_other(tmp_path, capsys):
    train = write(tmp_path, "train.csv", csv_text())
    evals = write(tmp_path, "eval.csv", csv_text(rows=["fine,positive", "awful,negative"]))
    err = fails(tmp_path, capsys, train, "--eval", evals)
    assert "eval.csv: labels are words (negative, positive) but train.csv's are numbers (0, 1)" in err


def test_eval_labels_unseen_in_training(tmp_path, capsys):
    train = write(tmp_path, "train.csv", csv_text())
    evals = write(tmp_path, "eval.csv", csv_text(rows=["fine,1", "so-so,2", "meh,2", "awful,0"]))
    err = fails(tmp_path, capsys, train, "--eval", evals)
    assert "eval.csv: label '2' (2 rows" in err and "first at line 3" in err and "does not occur in train.csv" in err
    out = passes(tmp_path, capsys, train, "--eval", evals, "--exclude-label", "2")
    assert "left out 2 rows labelled 2" in out


def test_eval_file_missing_the_mapped_column(tmp_path, capsys):
    train = write(tmp_path, "train.csv", csv_text())
    evals = write(tmp_path, "eval.csv", csv_text(header="text,lable", rows=["fine,1", "awful,0"]))
    err = fails(tmp_path, capsys, train, "--eval", evals)
    assert "eval.csv: label column 'label' not found; did you mean 'lable'?" in err


def test_labels_written_as_floats_match_integers(tmp_path, capsys):
    train = write(tmp_path, "train.csv", csv_text())
    evals = write(tmp_path, "eval.csv", csv_text(rows=["fine,1.0", "awful,0.0"]))
    out = passes(tmp_path, capsys, train, "--eval", evals)
    assert "labels in eval.csv: 0: 1 (50.0%), 1: 1 (50.0%)" in out
    assert "read as whole values" in out


def test_extremely_long_texts_warn_about_truncation(tmp_path, capsys):
    rows = ROWS + ["word " * 2000 + ",1"]
    out = passes(tmp_path, capsys, write(tmp_path, "t.csv", csv_text(rows=rows)))
    assert "1 text is over 5,000 characters (first at line 8)" in out and "truncated" in out


def test_formula_cells_stay_plain_text(tmp_path, capsys):
    formula = "=cmd|' /C calc'!A0"
    rows = ROWS + [f'"{formula}",1', '"@SUM(1+1)*cmd|\' /C calc\'!A0",0', "@user thanks a lot,1"]
    path = write(tmp_path, "t.csv", csv_text(rows=rows))
    out = passes(tmp_path, capsys, path)
    assert "2 texts look like spreadsheet formulas (first at line 8)" in out and "never evaluated" in out
    task = load_task(TaskConfig(name="t", train_file=str(path), eval_size=1))
    texts = all_texts(task)
    assert formula in texts and "@user thanks a lot" in texts


@pytest.mark.parametrize("cell,escaped", [
    ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
    ("+1+cmd|x", "'+1+cmd|x"),
    ("-2+3", "'-2+3"),
    ("@SUM(A1)", "'@SUM(A1)"),
    ("\t=1", "'\t=1"),
    ("-1.5", "-1.5"),
    ("+3", "+3"),
    ("plain text", "plain text"),
    ("", ""),
])
def test_escape_formula(cell, escaped):
    assert escape_formula(cell) == escaped


# --- task options -----------------------------------------------------------------------------------------

def test_eval_file_and_eval_size_together(tmp_path, capsys):
    path = write(tmp_path, "t.csv", csv_text())
    err = fails(tmp_path, capsys, path, "--eval", path, "--eval-size", "0.3")
    assert "set either 'eval_file' or 'eval_size', not both" in err


def test_eval_size_too_large(tmp_path, capsys):
    err = fails(tmp_path, capsys, write(tmp_path, "t.csv", csv_text()), "--eval-size", "5")
    assert "eval_size 5 holds out 5 of 6 rows" in err


def test_bad_model_folder(tmp_path, capsys):
    path = write(tmp_path, "t.csv", csv_text())
    err = fails(tmp_path, capsys, path, "--model", tmp_path / "no-model")
    assert "not a folder" in err
    (tmp_path / "empty-model").mkdir()
    err = fails(tmp_path, capsys, path, "--model", tmp_path / "empty-model")
    assert "no usable tokenizer in that folder" in err


def test_real_command_line(tmp_path):
    """`python -m curlora check-data` as a user runs it: exit 0 with a summary, exit 2 with one line on stderr."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    good = write(tmp_path, "good.csv", csv_text())
    bad = write(tmp_path, "bad.csv", csv_text(header="text,lable"))
    ok = subprocess.run([sys.executable, "-m", "curlora", "check-data", str(good)], cwd=repo, capture_output=True,
                        text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.rstrip().endswith("OK: usable as a task.")
    no = subprocess.run([sys.executable, "-m", "curlora", "check-data", str(bad), "--label", "label"], cwd=repo,
                        capture_output=True, text=True, timeout=120)
    assert no.returncode == 2 and no.stdout == ""
    # the last line: whatever a library may print while importing is not ours to police
    assert no.stderr.splitlines()[-1] == ("error: bad.csv: label column 'label' not found; did you mean 'lable'? "
                                          "Columns are: text, lable.")


@pytest.mark.parametrize("name", ["x" * 5000 + ".csv", "nul\x00byte.csv", "line\nbreak.csv"])
def test_hostile_paths(tmp_path, capsys, name):
    err = fails(tmp_path, capsys, tmp_path / name)
    assert "no such file" in err or "can't be read" in err


@pytest.mark.parametrize("codec", ["hex", "rot13"])
def test_non_text_fallback_codec(tmp_path, capsys, codec):
    err = fails(tmp_path, capsys, write(tmp_path, "t.csv", b"text,label\ncaf\xe9,1\n"), "--encoding-fallback", codec)
    assert f"unknown fallback encoding '{codec}'" in err


def test_truncated_utf16_with_fallback(tmp_path, capsys):
    data = csv_text().encode("utf-16")[:-1]
    err = fails(tmp_path, capsys, write(tmp_path, "t.csv", data), "--encoding-fallback", "utf-16")
    assert "is neither UTF-8" in err and "nor utf-16" in err
