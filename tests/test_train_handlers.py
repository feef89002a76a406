"""The Train tab's handlers, called as the page's events call them, without a browser: the form's
{component: value} becomes the experiment through ExperimentConfig.from_dict (a wrong value gets the config's own
sentence, on screen as in the error), the preset picker fills the form with a preset that the form gives back
unchanged, and common.handler binds a handler keeping what gradio reads of it."""

import inspect

import pytest

gr = pytest.importorskip("gradio")

from curlora.data.task_config import TaskConfig  # noqa: E402
from curlora.errors import CurloraError  # noqa: E402
from curlora.experiment import EvaluationSettings, ExperimentConfig, MethodSettings, TrainingSettings  # noqa: E402
from curlora.paths import QUICK_DEMO, REAL_DEMO  # noqa: E402
from curlora.serve.jobs import JobManager  # noqa: E402
from curlora.ui import train_tab  # noqa: E402
from curlora.ui.common import Engine, Sessions, handler  # noqa: E402

# What the form shows for the quick demo on the bundled model, config path by config path.
FORM = {"methods": ["curlora", "lora"], "methods.target_modules": "q_proj, v_proj", "curlora.r": 4,
        "curlora.alpha": 1.0, "curlora.sampling": "inverted", "curlora.seed": 0, "lora.r": 4, "lora.alpha": None,
        "lora.dropout": 0.0, "training.max_steps": 2, "training.lr": 2e-3, "training.batch_size": 2,
        "training.max_length": 32, "evaluation.scoring": "likelihood", "evaluation.probe_every": 0,
        "evaluation.eval_rows": 8, "run.name": "form", "model.name": "kjv-llama-5m", "model.dtype": "auto",
        "model.device": "cpu", "training.comparison": "equal_lr", "training.target_loss": None, "curlora.lr": None,
        "training.gradient_checkpointing": False, "model.quantization": "none", "training.group_by_length": True,
        "methods.replay": 0, "methods.replay_beside": True, "preset": "quick-demo"}


@pytest.fixture(scope="module")
def tab(tmp_path_factory):
    """The Train tab as the app builds it (one local engine, no page): the engine and the tab's Form."""
    engine = Engine(jobs=JobManager(tmp_path_factory.mktemp("runs")), chat=None, sessions=Sessions())
    with gr.Blocks():
        model = {"name": gr.Textbox("kjv-llama-5m"), "dtype": gr.Dropdown(["auto"], value="auto"),
                 "device": gr.Dropdown(["auto", "cpu"], value="cpu")}
        built = train_tab.build(engine, model)
    form = train_tab.Form(dict(zip(built["paths"], built["form"])))
    assert list(FORM) == form.paths  # the /start API's order
    return engine, form


def widgets(form, values: dict) -> dict:
    """{config path: value} as gradio hands it to a handler: {component: value}."""
    return {form.fields[path]: value for path, value in values.items()}


def test_the_form_becomes_the_config_through_from_dict(tab, shared_data):
    engine, form = tab
    task = TaskConfig(name="sst2", train_file=str(shared_data / "sst2" / "train.csv"),
                      eval_file=str(shared_data / "sst2" / "validation.csv"))
    engine.sessions.get(None).tasks = [task]
    values = {**FORM, "methods": ["dora", "lora", "curlora"], "curlora.alpha": 0, "curlora.lr": 0.05, "lora.r": 16,
              "lora.dropout": 0.1, "training.max_steps": 30, "training.batch_size": None, "training.max_length": 64,
              "evaluation.eval_rows": 0, "run.name": " mine ", "model.name": " kjv-llama-5m ",
              "training.comparison": "matched_loss", "training.target_loss": 0}
    cfg = train_tab.make_config(engine, None, form.read(widgets(form, values)))
    targets = ["q_proj", "v_proj"]
    # The form's order (CURLoRA, LoRA, DoRA), then LoRA first: with no target loss it sets each task's target.
    assert [(m.label, m.r, m.alpha, m.lr, m.dropout, m.target_modules) for m in cfg.methods] == [
        ("lora", 16, None, None, 0.1, targets), ("curlora", 4, None, 0.05, 0.0, targets),
        ("dora", 16, None, None, 0.1, targets)]
    t, quick = cfg.training, ExperimentConfig.load(QUICK_DEMO)
    assert (t.max_steps, t.lr, t.batch_size, t.max_length, t.comparison, t.target_loss, t.matched_loss_reference) == (
        30, 0.002, quick.training.batch_size, 64, "matched_loss", None, "lora")
    assert (cfg.evaluation.eval_rows, cfg.run.name, cfg.model.name, cfg.model.device) == (
        None, "mine", "kjv-llama-5m", "cpu")
    assert cfg.tasks == [task]
    # The YAML box shows the same experiment.
    note, text, path = train_tab.show_config(engine, form, widgets(form, values), None)
    assert note.startswith("Save it as `experiment.yaml`") and open(path, encoding="utf-8").read() == text
    assert ExperimentConfig.from_yaml(text).to_dict() == cfg.to_dict()


@pytest.mark.parametrize("path, value, sentence", [
    ("training.lr", "fast", "training.lr: expected a number, got 'fast'."),
    ("training.batch_size", 2.5, "training.batch_size: expected a whole number, got 2.5."),
    ("curlora.r", 0, "methods[0].r: must be at least 1, got 0."),
    ("evaluation.scoring", "vibes", "evaluation.scoring: 'vibes' is not one of likelihood, head, generate."),
    ("model.quantization", "2bit", "model.quantization: '2bit' is not one of none, 8bit, 4bit."),
])
def test_a_wrong_value_gets_the_configs_own_sentence(tab, path, value, sentence):
    engine, form = tab
    engine.sessions.get(None).tasks = [TaskConfig(name="t", train_file="t.csv")]
    given = widgets(form, {**FORM, path: value})
    with pytest.raises(CurloraError) as err:
        train_tab.make_config(engine, None, form.read(given))
    assert str(err.value) == sentence
    assert train_tab.show_config(engine, form, given, None) == (f"_{sentence}_", "", None)
    assert train_tab.estimate_memory(engine, form, given, None) == f"_Memory: {sentence}_"
    with pytest.raises(gr.Error) as shown:
        train_tab.submit(engine, form, given, None)
    assert shown.value.message == sentence


def test_no_task_or_no_method_is_the_forms_own_sentence():
    with pytest.raises(CurloraError, match=r"^Add at least one task on the Tasks tab first"):
        train_tab.form_config([], FORM)
    with pytest.raises(CurloraError, match=r"^Pick at least one method"):
        train_tab.form_config([TaskConfig(name="t", train_file="t.csv")], {**FORM, "methods": []})


@pytest.mark.parametrize("key, preset", [("quick-demo", QUICK_DEMO), ("real-demo", REAL_DEMO)])
def test_the_preset_picker_fills_the_form_and_the_form_gives_the_preset_back(tab, key, preset):
    _, form = tab
    values = dict(zip(form.paths, train_tab.load_demo(form, key)))
    kept = {path for path, value in values.items() if isinstance(value, type(gr.skip()))}
    assert kept == {"methods.replay", "methods.replay_beside", "preset"}  # not in a preset: the boxes keep theirs
    assert values["run.name"] == key
    cfg = ExperimentConfig.load(preset)
    given = {path: value for path, value in values.items() if path not in kept} | {"preset": key}
    assert train_tab.form_config(cfg.tasks, given).to_dict() == cfg.to_dict()


def test_the_boxes_whose_empty_value_means_none_are_settings_that_may_be_none():
    sections = {"curlora": MethodSettings, "lora": MethodSettings, "training": TrainingSettings,
                "evaluation": EvaluationSettings}
    for path in train_tab.NONE_WHEN_EMPTY:
        section, _, key = path.partition(".")
        assert getattr(sections[section](), key) is None, path


def test_the_count_reads_its_widgets(tab):
    _, form = tab
    given = widgets(form, {path: FORM[path] for path in form.count_paths})
    # The bundled model: 6 layers, q_proj 256 -> 256 and v_proj 256 -> 128 (4 of 8 heads), r = 4. CURLoRA: one
    # 4 x 4 U per matrix, 6 * 2 * 16 = 192; LoRA: r * (in + out) per matrix, 6 * 4 * (512 + 384) = 21,504.
    assert train_tab.count(form, given) == "Trainable parameters: **curlora** 192 · **lora** 21,504"


def test_a_bound_handler_keeps_what_gradio_reads():
    from gradio.utils import get_type_hints

    def f(engine, form, values: dict, request: gr.Request) -> tuple:
        return engine, form, values, request

    a, b = object(), object()
    positional = handler(f, "engine", "form", inputs=[a, b])  # an API endpoint: the values one by one, in order
    assert list(inspect.signature(positional).parameters) == ["value_0", "value_1", "request"]
    assert get_type_hints(positional) == {"request": gr.Request}
    assert positional(1, 2, "req") == ("engine", "form", {a: 1, b: 2}, "req")
    as_dict = handler(f, "engine", "form")  # a set of inputs: gradio passes the dict
    assert list(inspect.signature(as_dict).parameters) == ["values", "request"]
    assert get_type_hints(as_dict) == {"values": dict, "request": gr.Request}
    assert as_dict({a: 1}, "req") == ("engine", "form", {a: 1}, "req") and as_dict.__name__ == "f"


def test_the_dropdowns_offer_the_engines_constants(tab):
    from curlora.experiment import COMPARISONS, QUANTIZATIONS, SAMPLING_RULES, SCORING_MODES
    from curlora.methods.registry import GROUPS, kinds, method

    _, form = tab
    offered = {path: [value for _, value in form.fields[path].choices] for path in
               ("evaluation.scoring", "training.comparison", "model.quantization", "curlora.sampling", "methods")}
    assert offered["evaluation.scoring"] == list(SCORING_MODES)
    assert offered["training.comparison"] == list(COMPARISONS)
    assert offered["model.quantization"] == list(QUANTIZATIONS)
    assert offered["curlora.sampling"] == list(SAMPLING_RULES)
    assert sorted(offered["methods"]) == sorted(kinds())  # every registered kind, grouped in GROUPS' order
    assert [GROUPS.index(method(k).group) for k in offered["methods"]] == sorted(
        GROUPS.index(method(k).group) for k in kinds())
