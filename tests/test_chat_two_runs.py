"""The Chat tab's right pane from another run: a study's points hold one method each, so the best LoRA point and
the best CURLoRA point chat side by side only this way. The right pane answers exactly as that run's own pane
does, the left panes are unchanged, and two runs on different base models are refused in one sentence."""

import pytest

from app_server import serving
from tiny_experiment import make_experiment

gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from curlora.experiment import ExperimentConfig
    from curlora.run.runner import run_experiment

    folder = tmp_path_factory.mktemp("two")
    root = folder / "runs"
    ids = {}
    for name, methods, where in (("lora-point", ("lora",), "exp"), ("curlora-point", ("curlora",), "exp"),
                                 ("elsewhere", ("curlora",), "other")):
        exp = make_experiment(folder / where, steps=2, lr=0.2, methods=methods)
        exp["evaluation"].update(probe_every=0, self_probe_texts=2, self_probe_tokens=8)
        exp["run"]["name"] = name
        run = run_experiment(ExperimentConfig.from_dict(exp), root=root)
        assert run.status()["status"] == "completed"
        ids[name] = run.id
    with serving(root) as (url, _):
        yield gradio_client.Client(url, verbose=False), ids


def test_the_right_pane_answers_as_the_other_runs_own_pane(runs):
    client, ids = runs
    ask = ("the king", 16, 0, 1, 0)
    base, lora, right = client.predict(ids["lora-point"], 2, *ask, ids["curlora-point"], api_name="/chat")
    own_base, own_lora, _ = client.predict(ids["lora-point"], 2, *ask, api_name="/chat")
    other_base, _, other_cur = client.predict(ids["curlora-point"], 2, *ask, api_name="/chat")
    assert (base, lora) == (own_base, own_lora) and base == other_base
    assert right == other_cur and right != lora and "no saved stage" not in right
    # a turn of the conversation API takes it too
    turn = client.predict(ids["lora-point"], 2, "the king", "", 16, 0, 1, 0, [], [], [], ids["curlora-point"],
                          api_name="/chat_turn")
    content = turn[2][-1]["content"]
    text = content[0]["text"] if isinstance(content, list) else content
    assert text.strip() == other_cur.strip()


def test_runs_on_different_base_models_are_refused_in_one_sentence(runs):
    client, ids = runs
    with pytest.raises(gradio_client.exceptions.AppError, match="pick runs on the same base model"):
        client.predict(ids["lora-point"], 2, "the king", 16, 0, 1, 0, ids["elsewhere"], api_name="/chat")
