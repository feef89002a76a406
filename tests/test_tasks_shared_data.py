"""`check-data` on every labelled CSV in ../shared/data: the right detected mapping and the exact label counts of
the data README; the tokenizer of the shared stories260K model gives token lengths."""

import json

import pytest

from curlora.cli.main import main
from curlora.data.tasks import TaskConfig, load_task

# file: (mapping, label counts) as listed in ../shared/data/README.md
EXPECTED = {
    "sst2/train.csv": ({"text": "text", "text_pair": None, "label": "label"}, {"1": 37569, "0": 29780}),
    "sst2/validation.csv": ({"text": "text", "text_pair": None, "label": "label"}, {"1": 444, "0": 428}),
    "mrpc/train.csv": ({"text": "sentence1", "text_pair": "sentence2", "label": "label"}, {"1": 2474, "0": 1194}),
    "mrpc/validation.csv": ({"text": "sentence1", "text_pair": "sentence2", "label": "label"}, {"1": 279, "0": 129}),
    "mrpc/test.csv": ({"text": "sentence1", "text_pair": "sentence2", "label": "label"}, {"1": 1147, "0": 578}),
    "sentiment140/train_sample.csv": ({"text": "text", "text_pair": None, "label": "label"}, {"1": 10058, "0": 9942}),
    "sentiment140/test.csv": ({"text": "text", "text_pair": None, "label": "label"}, {"1": 182, "0": 177}),
    # `polarity` is in the known label names on purpose: it is Sentiment140's own column name.
    "sentiment140/test_with_neutral.csv": ({"text": "text", "text_pair": None, "label": "polarity"},
                                           {"4": 182, "0": 177, "2": 139}),
}


def check_json(capsys, *args):
    code = main(["check-data", *map(str, args), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_check_data_on_shared_csv(shared_data, capsys, name):
    mapping, counts = EXPECTED[name]
    summary = check_json(capsys, shared_data / name)
    assert {k: summary["mapping"][k] for k in mapping} == mapping
    assert summary["mapping"]["detected"] == [k for k, v in mapping.items() if v]
    assert summary["label_counts"]["train_file"] == counts
    assert summary["rows"]["train_file"]["read"] == sum(counts.values())
    assert summary["rows"]["train"] + summary["rows"]["eval"] == sum(counts.values())
    assert summary["format"] == "comma-separated UTF-8, LF line endings"


def test_human_readable_summary(shared_data, capsys):
    assert main(["check-data", str(shared_data / "sst2/train.csv")]) == 0
    out = capsys.readouterr().out
    assert "train.csv: 67,349 rows, columns text, label" in out
    assert "mapping: text = 'text', label = 'label' (detected)" in out
    assert "labels in train.csv: 0: 29,780 (44.2%), 1: 37,569 (55.8%)" in out


def test_train_and_eval_files_with_preset(shared_data, capsys):
    summary = check_json(capsys, shared_data / "mrpc/train.csv", "--eval", shared_data / "mrpc/validation.csv",
                         "--preset", "mrpc")
    assert summary["rows"]["train"] == 3668 and summary["rows"]["eval"] == 408
    assert summary["label_counts"]["eval"] == {"0": 129, "1": 279}
    assert summary["verbalizers"] == {"0": "no", "1": "yes"}
    assert "{text_pair}" in summary["template"]
    assert summary["warnings"] == []


def test_sentiment140_sample_has_its_18_repeated_texts(shared_data, capsys):
    summary = check_json(capsys, shared_data / "sentiment140/train_sample.csv")
    assert summary["duplicates"]["repeated_rows"] == 18


def test_sentiment140_neutral_file_against_binary_training(shared_data, capsys):
    code = main(["check-data", str(shared_data / "sentiment140/train_sample.csv"),
                 "--eval", str(shared_data / "sentiment140/test_with_neutral.csv")])
    err = capsys.readouterr().err
    assert code == 2
    assert "test_with_neutral.csv: label column 'label' not found; columns are: text, polarity." in err


def test_paper_style_budget_on_sst2_is_stratified(shared_data):
    task = load_task(TaskConfig(name="sst2", train_file=str(shared_data / "sst2/train.csv"),
                                eval_file=str(shared_data / "sst2/validation.csv"), preset="sst2",
                                max_train_rows=1000, max_eval_rows=200, seed=0))
    assert len(task.train) == 1000 and len(task.eval) == 200
    assert task.train["label"][:].count("1") == 558  # 55.8% positive, as in the whole file
    assert task.words == ["negative", "positive"]
    assert task.prompt(task.train["text"][0]).startswith("Review: ")


def test_token_lengths_with_local_tokenizer(shared_data, capsys):
    model = shared_data / "models/stories260K/hf"
    summary = check_json(capsys, shared_data / "mrpc/validation.csv", "--model", model, "--preset", "mrpc")
    tokens = summary["lengths_tokens"]
    assert tokens["max_length"] == 512
    assert 50 < tokens["train"]["median"] < tokens["train"]["max"] <= 512
    assert tokens["eval"]["max"] >= tokens["eval"]["min"] > 0


def test_long_prompts_warn_about_model_truncation(shared_data, capsys, tmp_path):
    path = tmp_path / "long.csv"
    rows = [f"{'once upon a time ' * (20 if i % 5 else 60)},{i % 2}" for i in range(40)]
    path.write_text("text,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    summary = check_json(capsys, path, "--model", shared_data / "models/stories260K/hf", "--max-length", "128")
    assert any("prompts are longer than the model's 128 tokens" in w and "truncated to 128 tokens" in w
               for w in summary["warnings"])
