"""TaskConfig round trips and refuses bad keys; templates, verbalizers and splits behave as documented."""

from collections import Counter

import pytest
import yaml

from curlora.data.prompts import check_template, render_prompt
from curlora.data.splits import allocate, stratified_sample, stratified_split
from curlora.data.tasks import TaskConfig, load_task
from curlora.errors import CurloraError


def write_csv(path, rows, header="text,label"):
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def sorted_csv(tmp_path):
    """200 rows sorted by label (150 negative first, then 50 positive), with 10 texts duplicated."""
    rows = [f"negative review {i},0" for i in range(150)] + [f"positive review {i},1" for i in range(50)]
    rows += [f"negative review {i},0" for i in range(10)]
    return write_csv(tmp_path / "sorted.csv", rows)


# --- config -----------------------------------------------------------------------------------------------

def test_round_trip_through_yaml():
    cfg = TaskConfig(name="sst2", train_file="data/train.csv", verbalizers={0: "negative", 1: "positive"},
                     template="Review: {text}\nSentiment:", max_train_rows=1000, exclude_labels=[2], seed=7)
    data = yaml.safe_load(yaml.safe_dump(cfg.to_dict()))
    back = TaskConfig.from_dict(data)
    assert back == cfg
    assert back.verbalizers == {"0": "negative", "1": "positive"} and back.exclude_labels == ["2"]


def test_unknown_key_is_named_with_suggestion():
    with pytest.raises(CurloraError, match=r"task config 'x': unknown key 'lable'; did you mean 'label'\?"):
        TaskConfig.from_dict({"name": "x", "train_file": "a.csv", "lable": "y"})


def test_missing_name():
    with pytest.raises(CurloraError, match="'name' is required"):
        TaskConfig.from_dict({"train_file": "a.csv"})


@pytest.mark.parametrize("key,value,message", [
    ("seed", "abc", "'seed' must be a whole number of at least 0"),
    ("eval_size", 1.5, "'eval_size' must be a fraction between 0 and 1 or a row count"),
    ("eval_size", 0, "'eval_size' must be"),
    ("eval_size", True, "'eval_size' must be"),
    ("max_train_rows", 1, "'max_train_rows' must be a whole number of at least 2"),
    ("max_classes", "20", "'max_classes' must be a whole number"),
    ("drop_empty", "yes", "'drop_empty' must be true or false"),
    ("verbalizers", ["negative", "positive"], "'verbalizers' must map label values to words"),
    ("exclude_labels", "2", "'exclude_labels' must be a list"),
    ("text", 3, "'text' must be a string"),
    ("max_file_mb", -1, "'max_file_mb' must be a positive number"),
])
def test_wrong_types_name_the_key(key, value, message):
    with pytest.raises(CurloraError, match=message):
        TaskConfig.from_dict({"name": "x", "train_file": "a.csv", key: value})


def test_needs_a_source():
    with pytest.raises(CurloraError, match="give a 'train_file'"):
        TaskConfig(name="x")


def test_relative_paths_resolve_against_base_dir(tmp_path, sorted_csv):
    task = load_task(TaskConfig(name="t", train_file="sorted.csv"), base_dir=tmp_path)
    assert len(task.train) + len(task.eval) == 210


# --- templates and verbalizers ----------------------------------------------------------------------------

@pytest.mark.parametrize("template,pair,message", [
    ("Review: {txt}", False, r"unknown placeholder \{txt\}"),
    ("Review: {text.upper}", False, r"unknown placeholder \{text.upper\}"),
    ("Review: {text!r}", False, r"unknown placeholder \{text!r\}"),
    ("Review: {text", False, "stray brace"),
    ("Review: text", False, r"no \{text\} placeholder"),
    ("A: {text}", True, r"no \{text_pair\} placeholder"),
    ("A: {text} B: {text_pair}", False, "has no text pair column"),
    ("   ", False, "template is empty"),
])
def test_bad_templates(template, pair, message):
    with pytest.raises(CurloraError, match=message):
        check_template(template, pair=pair, owner="task 't'")


def test_template_renders_texts_as_data():
    template = check_template("Q {{literal}}: {text} / {text_pair}", pair=True, owner="t")
    assert render_prompt(template, "{text_pair} {0}", "b") == "Q {literal}: {text_pair} {0} / b"


def test_default_prompts_and_verbalizers(sorted_csv):
    task = load_task(TaskConfig(name="t", train_file=str(sorted_csv)))
    assert task.template == "Text: {text}\nLabel:"
    assert task.verbalizers == {"0": "0", "1": "1"} and task.words == ["0", "1"]
    assert any("labels are numbers and no verbalizers are set" in w for w in task.warnings)
    assert task.prompt("nice") == "Text: nice\nLabel:"


def test_verbalizers_from_config(sorted_csv):
    task = load_task(TaskConfig(name="t", train_file=str(sorted_csv), verbalizers={1: "positive", 0: "negative"}))
    assert task.words == ["negative", "positive"]
    assert not any("no verbalizers" in w for w in task.warnings)


@pytest.mark.parametrize("verbalizers,message", [
    ({0: "negative"}, "verbalizers give no word for label '1'"),
    ({0: "negative", 1: "positive", 2: "neutral"}, "word for label '2', which is not a label"),
    ({0: "good", 1: "good"}, "labels '0' and '1' have the same verbalizer 'good'"),
    ({0: "", 1: "positive"}, "the verbalizer for label '0' is empty"),
])
def test_bad_verbalizers(sorted_csv, verbalizers, message):
    with pytest.raises(CurloraError, match=message):
        load_task(TaskConfig(name="t", train_file=str(sorted_csv), verbalizers=verbalizers))


def test_text_labels_and_classes_order(tmp_path):
    rows = [f"t{i},{lab}" for i, lab in enumerate(["positive", "negative", "neutral"] * 5)]
    task = load_task(TaskConfig(name="t", train_file=str(write_csv(tmp_path / "t.csv", rows)), eval_size=3))
    assert task.classes == ["negative", "neutral", "positive"]
    assert task.train.features["label_id"].names == task.classes
    for row in task.train:
        assert task.classes[row["label_id"]] == row["label"]


# --- splits and budgets -----------------------------------------------------------------------------------

def test_split_is_stratified_disjoint_and_seeded(sorted_csv):
    cfg = dict(name="t", train_file=str(sorted_csv), eval_size=0.2, seed=1)
    a, b = load_task(TaskConfig(**cfg)), load_task(TaskConfig(**cfg))
    assert a.train["text"][:] == b.train["text"][:] and a.eval["text"][:] == b.eval["text"][:]
    c = load_task(TaskConfig(**{**cfg, "seed": 2}))
    assert set(c.eval["text"][:]) != set(a.eval["text"][:])
    assert len(a.train) + len(a.eval) == 210 and abs(len(a.eval) - 42) <= 1
    assert not set(a.train["text"][:]) & set(a.eval["text"][:])  # duplicated texts never straddle the split
    counts = Counter(a.eval["label"][:])
    assert counts["1"] == 10 and counts["0"] in (31, 32, 33)
    assert a.summary["duplicates"]["repeated_rows"] == 10


def test_rows_come_out_shuffled_so_prefixes_are_fair(sorted_csv):
    task = load_task(TaskConfig(name="t", train_file=str(sorted_csv)))
    assert set(task.train["label"][:20]) == {"0", "1"}


def test_budget_on_a_sorted_file_keeps_both_classes(sorted_csv):
    task = load_task(TaskConfig(name="t", train_file=str(sorted_csv), max_train_rows=40, max_eval_rows=8))
    assert len(task.train) == 40 and len(task.eval) == 8
    assert Counter(task.train["label"][:]) == {"0": 30, "1": 10}
    assert Counter(task.eval["label"][:]) == {"0": 6, "1": 2}


def test_budget_smaller_than_classes(sorted_csv):
    with pytest.raises(CurloraError, match="max_train_rows 2 is fewer than the 3 classes"):
        rows = [f"t{i},{i % 3}" for i in range(30)]
        load_task(TaskConfig(name="t", train_file=str(write_csv(sorted_csv.parent / "three.csv", rows)),
                             max_train_rows=2))


def test_eval_file_is_used_whole_and_overlap_is_reported(tmp_path, sorted_csv):
    evals = write_csv(tmp_path / "eval.csv", ["negative review 1,0", "fresh text,1", "another,0"])
    task = load_task(TaskConfig(name="t", train_file=str(sorted_csv), eval_file=str(evals)))
    assert len(task.train) == 210 and len(task.eval) == 3
    assert any("1 eval row has the same text as a training row" in w for w in task.warnings)


def test_allocate_keeps_every_class():
    assert allocate({"a": 990, "b": 10}, 50) == {"a": 49, "b": 1}
    assert sum(allocate({"a": 5, "b": 7, "c": 11}, 10).values()) == 10
    assert allocate({"a": 3, "b": 3}, 100) == {"a": 3, "b": 3}


def test_split_never_empties_a_class():
    labels = ["a"] * 50 + ["b"] * 2
    train, held = stratified_split(labels, list(range(52)), 30, seed=0)
    assert {labels[i] for i in train} == {"a", "b"} and not set(train) & set(held)
    assert sorted(stratified_sample(labels, 100, 0)) == list(range(52))
