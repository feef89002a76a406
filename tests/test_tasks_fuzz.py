"""Property: whatever bytes a user uploads as a CSV, the loader returns a task or raises CurloraError, nothing else."""

import csv
import io
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curlora.data.tasks import TaskConfig, load_task
from curlora.errors import CurloraError

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Cells built from the characters that matter to CSV parsing, plus some text and some non-ASCII.
CELL = st.one_of(st.text(alphabet=',;\t|"\'\n\r =@+-.0123456789 abcxyzé€\x0b', max_size=12),
                 st.sampled_from(["nan", "NaN", "", "good film", "=cmd|' /C calc'!A0"]))
LABEL = st.sampled_from(["0", "1", "2", "pos", "neg", "", "nan", " 1.0", "1,0", '"'])
HEADERS = st.sampled_from([("text", "label"), ("sentence1", "sentence2", "label"), ("a", "b"), ("text", "text"),
                           ("label",), ("text", "label", "")])
OPTIONS = st.fixed_dictionaries({
    "drop_empty": st.booleans(),
    "eval_size": st.sampled_from([None, 0.5, 1, 3]),
    "max_train_rows": st.sampled_from([None, 2, 5]),
    "fallback_encoding": st.sampled_from([None, "latin-1"]),
})


def load(path, options) -> None:
    try:
        task = load_task(TaskConfig(name="fuzz", train_file=str(path), **options))
    except CurloraError as err:
        assert str(err).strip() and "\n" not in str(err).strip(" .")
        return
    # A task that loads is usable: two classes, disjoint rows, ids consistent with labels.
    assert len(task.classes) >= 2 and len(task.train) >= 1
    assert all(task.classes[i] == label for i, label in zip(task.train["label_id"][:], task.train["label"][:]))


@SETTINGS
@given(data=st.binary(max_size=600), options=OPTIONS)
def test_random_bytes_only_raise_curlora_error(tmp_path, data, options):
    path = tmp_path / "upload.csv"
    path.write_bytes(data)
    load(path, options)


@SETTINGS
@given(data=st.data(), header=HEADERS, delimiter=st.sampled_from([",", ";", "\t"]),
       newline=st.sampled_from(["\n", "\r\n", "\r"]),
       encoding=st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "latin-1", "utf-16"]),
       damage=st.one_of(st.none(), st.tuples(st.integers(0, 3000), st.sampled_from(['"', ",", "\n", "", "\x00"]))),
       options=OPTIONS)
def test_random_csv_text_only_raises_curlora_error(tmp_path, data, header, delimiter, newline, encoding, damage,
                                                   options):
    # Mostly well-formed CSV (written by the csv module, so quoting is right), sometimes damaged at one spot.
    rows = data.draw(st.lists(st.tuples(*[CELL] * (len(header) - 1), LABEL), max_size=30))
    odd = data.draw(st.none() | st.lists(CELL, max_size=4))
    if odd is not None:
        rows.insert(data.draw(st.integers(0, len(rows))), odd)
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=newline)
    writer.writerow(header)
    writer.writerows(rows)
    text = buffer.getvalue()
    if damage:
        at, insert = damage[0] % (len(text) + 1), damage[1]
        text = text[:at] + insert + text[at + 1:]
    path = tmp_path / "upload.csv"
    path.write_bytes(text.encode(encoding, errors="replace"))
    load(path, options)


@SETTINGS
@given(rows=st.lists(st.tuples(st.text(string.printable, max_size=20), st.sampled_from(["0", "1", "2", " 1.0", ""])),
                     min_size=3, max_size=40))
def test_wellformed_csv_either_loads_or_explains(tmp_path, rows):
    path = tmp_path / "upload.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    load(path, {})
