"""Dataset presets: the YAML parses, presets apply to local CSVs, and hub loading fails fast and clearly when the
hub is off or unreachable (no retry loop), or maps a hub dataset's columns and labels when it loads."""

import time

import datasets
import pytest
from huggingface_hub import constants

from curlora.cli.main import main
from curlora.data import presets as dataset_presets
from curlora.data.presets import get_preset, load_presets
from curlora.data.tasks import TaskConfig, load_task
from curlora.errors import CurloraError


def test_bundled_presets():
    presets = load_presets()
    assert set(presets) >= {"sst2", "mrpc", "sentiment140"}
    assert presets["sst2"].hub.path == "nyu-mll/glue" and presets["sst2"].hub.config == "sst2"
    assert presets["mrpc"].hub.text_pair == "sentence2"
    assert presets["sentiment140"].hub.relabel == {"4": "1"}
    assert presets["sentiment140"].hub.exclude_labels == ("2",)
    for preset in presets.values():
        assert set(preset.verbalizers) == {"0", "1"} and "{text}" in preset.template


def test_unknown_preset_suggests():
    with pytest.raises(CurloraError, match=r"no dataset preset named 'sst-2'; did you mean 'sst2'\?"):
        get_preset("sst-2")


def test_preset_file_with_unknown_key(tmp_path):
    path = tmp_path / "datasets.yaml"
    path.write_text("x:\n  verbalizer: {0: a}\n", encoding="utf-8")
    with pytest.raises(CurloraError, match="preset 'x' has unknown key 'verbalizer'"):
        load_presets(path)


def test_preset_words_and_template_on_a_local_csv(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("sentence,label\n" + "\n".join(f"review {i},{i % 2}" for i in range(20)) + "\n")
    task = load_task(TaskConfig(name="sst2", train_file=str(path), preset="sst2"))
    assert task.verbalizers == {"0": "negative", "1": "positive"}
    assert task.prompt("fine") == "Review: fine\nSentiment:"


def test_pair_preset_on_single_text_csv(tmp_path, capsys):
    path = tmp_path / "reviews.csv"
    path.write_text("text,label\n" + "\n".join(f"review {i},{i % 2}" for i in range(20)) + "\n")
    assert main(["check-data", str(path), "--preset", "mrpc"]) == 2
    err = capsys.readouterr().err
    assert ("task 'reviews' (preset 'mrpc'): the prompt template uses {text_pair} but the task has no text pair "
            "column") in err


def test_preset_labels_must_match_the_file(tmp_path):
    path = tmp_path / "words.csv"
    path.write_text("text,label\n" + "\n".join(f"t{i},{('neg', 'pos')[i % 2]}" for i in range(20)) + "\n")
    with pytest.raises(CurloraError, match=r"preset 'sst2'\): verbalizers give a word for label '0'"):
        load_task(TaskConfig(name="t", train_file=str(path), preset="sst2"))


def test_hub_preset_offline_fails_fast_with_one_sentence():
    assert constants.HF_HUB_OFFLINE  # tests run offline (conftest)
    start = time.monotonic()
    with pytest.raises(CurloraError) as err:
        load_task(TaskConfig(name="sst2", preset="sst2"))
    assert time.monotonic() - start < 20  # not the hub client's retry loop
    message = str(err.value)
    assert "nyu-mll/glue" in message and "HF_HUB_OFFLINE" in message and "local CSV" in message
    assert "\n" not in message


def test_hub_preset_offline_by_variable_only_never_calls_datasets(monkeypatch):
    # HF_HUB_OFFLINE set after huggingface_hub was imported: datasets wouldn't see it and would go online.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("must not try the hub"))
    with pytest.raises(CurloraError, match="the hub is switched off"):
        load_task(TaskConfig(name="mrpc", preset="mrpc"))


def test_hub_unreachable_fails_within_seconds(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("must not try the hub"))
    start = time.monotonic()
    with pytest.raises(CurloraError, match="127.0.0.1 can't be reached"):
        load_task(TaskConfig(name="sst2", preset="sst2"))
    assert time.monotonic() - start < 10


def fake_hub(monkeypatch, splits):
    calls = []

    def load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return splits[split]

    monkeypatch.setattr(dataset_presets, "hub_offline", lambda: False)
    monkeypatch.setattr(dataset_presets, "_hub_reachable", lambda: (True, "huggingface.co"))
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_hub_preset_maps_columns_relabels_and_excludes(monkeypatch):
    features = datasets.Features({"text": datasets.Value("string"), "sentiment": datasets.Value("int32"),
                                  "user": datasets.Value("string")})

    def split(labels):
        return datasets.Dataset.from_dict({"text": [f"tweet {i} {x}" for i, x in enumerate(labels)],
                                           "sentiment": labels, "user": ["u"] * len(labels)}, features=features)

    calls = fake_hub(monkeypatch, {"train": split([0, 4] * 50), "test": split([0, 2, 4] * 5)})
    task = load_task(TaskConfig(name="s140", preset="sentiment140", max_train_rows=20))
    assert calls == [("stanfordnlp/sentiment140", None, "train"), ("stanfordnlp/sentiment140", None, "test")]
    assert task.classes == ["0", "1"] and task.words == ["negative", "positive"]
    assert len(task.train) == 20 and set(task.train["label"][:]) == {"0", "1"}
    assert len(task.eval) == 10 and "2" not in task.eval["label"][:]
    assert any("left out 5 rows labelled 2" in w for w in task.warnings)
    assert task.summary["train_source"] == "stanfordnlp/sentiment140[train]"


def test_hub_preset_with_class_label_pairs(monkeypatch):
    features = datasets.Features({"sentence1": datasets.Value("string"), "sentence2": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["not_equivalent", "equivalent"]),
                                  "idx": datasets.Value("int32")})
    n = 30
    ds = datasets.Dataset.from_dict({"sentence1": [f"a{i}" for i in range(n)], "sentence2": [f"b{i}" for i in range(n)],
                                     "label": [i % 2 for i in range(n)], "idx": list(range(n))}, features=features)
    fake_hub(monkeypatch, {"train": ds, "validation": ds.select(range(10))})
    task = load_task(TaskConfig(name="mrpc", preset="mrpc"))
    assert task.is_pair and task.words == ["no", "yes"]
    assert task.train.column_names == ["text", "text_pair", "label", "label_id"]
    assert len(task.train) == 30 and len(task.eval) == 10


def test_hub_error_becomes_one_sentence(monkeypatch):
    fake_hub(monkeypatch, {})

    def broken(*a, **k):
        raise RuntimeError("Dataset scripts are no longer supported, but found sentiment140.py")

    monkeypatch.setattr(datasets, "load_dataset", broken)
    with pytest.raises(CurloraError, match=r"loading stanfordnlp/sentiment140 split 'train' from the hub failed "
                                           r"\(Dataset scripts are no longer supported"):
        load_task(TaskConfig(name="s", preset="sentiment140"))
