"""The Train form maps widgets to config paths: each kind's column fills that method's fields, empty boxes keep
defaults or None, and no positional list has to line up."""

import pytest

pytest.importorskip("gradio")

from curlora.errors import CurloraError  # noqa: E402
from curlora.data.task_config import TaskConfig  # noqa: E402
from curlora.experiment import ExperimentConfig  # noqa: E402
from curlora.paths import QUICK_DEMO  # noqa: E402
from curlora.ui.train_tab import form_config, method_settings  # noqa: E402


def test_each_kind_takes_its_own_column_and_adapters_share_the_targets():
    values = {"methods": ["lora", "base", "curlora"], "methods.target_modules": "q_proj, v_proj",
              "curlora.r": 8.0, "curlora.alpha": 1.0, "curlora.sampling": "uniform", "curlora.seed": 3.0,
              "curlora.lr": 0.02, "lora.r": 16.0, "lora.alpha": None, "lora.dropout": 0.1}
    cur, lora, base = method_settings(values)  # the form's order: CURLoRA, LoRA, base, …
    assert (cur.kind, cur.r, cur.sampling, cur.seed, cur.lr, cur.target_modules) == (
        "curlora", 8, "uniform", 3, 0.02, ["q_proj", "v_proj"])
    assert (lora.kind, lora.r, lora.alpha, lora.dropout, lora.lr) == ("lora", 16, None, 0.1, None)
    assert (base.kind, base.target_modules) == ("base", None)  # no adapter: no targets
    with pytest.raises(CurloraError, match="Pick at least one method"):
        method_settings({"methods": []})


def test_the_replay_box_adds_a_replay_row_beside_each_method_that_can_replay():
    values = {"methods": ["curlora", "lora", "base", "joint", "ewc"], "lora.r": 4.0, "methods.replay": 0.25,
              "methods.replay_beside": True}
    got = method_settings(values)
    assert [(m.label, m.kind, m.replay) for m in got] == [
        ("curlora", "curlora", 0.0), ("curlora-replay", "curlora", 0.25), ("lora", "lora", 0.0),
        ("lora-replay", "lora", 0.25), ("base", "base", 0.0), ("joint", "joint", 0.0), ("ewc", "ewc", 0.0),
        ("ewc-replay", "ewc", 0.25)]
    assert got[3].r == got[5].r == got[6].r == 4  # joint and EWC take the LoRA boxes: the adapter matches LoRA's
    alone = method_settings({**values, "methods": ["lora"], "methods.replay_beside": False})
    assert [(m.label, m.replay) for m in alone] == [("lora", 0.25)]
    assert [m.replay for m in method_settings({**values, "methods.replay": 0})] == [0.0] * 5
    with pytest.raises(CurloraError, match=r"^Experience replay needs a ticked method that trains on the tasks"):
        method_settings({**values, "methods": ["base", "joint"]})


def test_boxes_keep_their_values_and_empty_ones_keep_the_preset_or_none():
    """What _assign did, now on the way to ExperimentConfig.from_dict: a box's value goes in as it is; an empty box
    keeps the preset's value, or None where the setting may be None (eval rows, a target loss), as does a 0 there."""
    quick = ExperimentConfig.load(QUICK_DEMO)
    tasks = [TaskConfig(name="t", train_file="t.csv")]
    values = {"methods": ["curlora"], "preset": "quick-demo", "model.name": "kjv-llama-5m", "training.max_steps": 60,
              "training.lr": 0.002, "training.batch_size": "", "evaluation.eval_rows": 0,
              "training.comparison": "matched_loss", "training.target_loss": 0.75}
    cfg = form_config(tasks, values)
    t, e = cfg.training, cfg.evaluation
    assert (t.max_steps, t.lr, t.batch_size, e.eval_rows, t.target_loss) == (
        60, 0.002, quick.training.batch_size, None, 0.75)
    with pytest.raises(CurloraError, match=r"^training\.nope: unknown key\. Known keys here: epochs, max_steps"):
        form_config(tasks, {**values, "training.nope": 1})


def test_an_emptied_model_box_is_not_silently_the_bundled_model(tmp_path):
    gradio_client = pytest.importorskip("gradio_client")
    from app_server import serving

    with serving(tmp_path / "runs") as (url, _jobs):
        client = gradio_client.Client(url, verbose=False)
        client.predict(api_name="/use_demo_tasks")
        args = [["curlora", "lora"], "", 4, 1.0, "inverted", 0, 4, 4, 0.0, 2, 2e-3, 2, 32, "likelihood", 0, 8,
                "form", "", "auto", "cpu", "equal_lr", None, None]
        with pytest.raises(gradio_client.exceptions.AppError, match="No model chosen"):
            client.predict(*args, api_name="/start")
