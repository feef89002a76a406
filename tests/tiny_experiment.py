"""A two-task experiment on a tiny random Llama, for the app, job and chat tests (seconds on one CPU thread)."""

import random

from curlora.run.store import atomic_write_text
from tiny_models import save_tiny_llama_dir, write_task_csv


def write_tasks(folder) -> None:
    """sent.csv (single text, 0/1), pair.csv (text pair, yes/no) and probe.txt under `folder`."""
    rnd = random.Random(0)
    good, bad = ["good", "great", "fine"], ["bad", "awful", "dull"]
    sent = [(f"the film was {rnd.choice(good if y else bad)} and {rnd.choice(['long', 'short', 'new'])}", y)
            for y in [0, 1] * 30]
    write_task_csv(folder / "sent.csv", sent)
    pair = [(f"the {w} king", f"the {w if y else 'old'} king", "yes" if y else "no")
            for w, y in zip(["new", "good", "bad", "dull"] * 10, [0, 1] * 20)]
    write_task_csv(folder / "pair.csv", pair, header=("sentence1", "sentence2", "label"))
    atomic_write_text(folder / "probe.txt", " ".join(["the king went and the people came said yes"] * 30))


def make_experiment(folder, steps: int = 4, lr: float = 0.05, methods=("curlora", "lora")) -> dict:
    """Write the model and task files under `folder` and return the experiment as a dict."""
    folder.mkdir(parents=True, exist_ok=True)
    model_dir = folder / "model"
    if not (model_dir / "config.json").is_file():
        save_tiny_llama_dir(model_dir)
    write_tasks(folder)
    return {
        "model": {"name": str(model_dir)},
        "tasks": [
            {"name": "sent", "train_file": str(folder / "sent.csv"), "eval_size": 12,
             "verbalizers": {"0": "bad", "1": "good"}},
            {"name": "pair", "train_file": str(folder / "pair.csv"), "eval_size": 10},
        ],
        "methods": [{"kind": k, "r": 4, "target_modules": ["q_proj", "v_proj", "o_proj", "down_proj"]}
                    for k in methods],
        "training": {"max_steps": steps, "batch_size": 4, "lr": lr, "max_length": 48},
        "evaluation": {"probe_text": str(folder / "probe.txt"), "ppl_window": 32, "ppl_stride": 16,
                       "probe_every": 2, "probe_rows": 4},
        "run": {"name": "tiny"},
    }


def finished_run(folder, root):
    """The tiny experiment (2 steps, a 2 × 8-token self-probe, no in-task probes) run to the end in store `root`:
    (the experiment dict, the Run) — what the export, push and MCP tests read."""
    from curlora.experiment import ExperimentConfig
    from curlora.run.runner import run_experiment

    exp = make_experiment(folder, steps=2)
    exp["evaluation"].update(probe_every=0, self_probe_texts=2, self_probe_tokens=8)
    run = run_experiment(ExperimentConfig.from_dict(exp), root=root)
    assert run.status()["status"] == "completed"
    return exp, run


def tiny_hosted(**model) -> dict:
    """One bundled task on the bundled model, a few steps: what a visitor can run without any server path."""
    return {
        "model": {"name": "kjv-llama-5m", **model},
        "tasks": [{"name": "testament", "train_file": "bundled:tasks/testament/train.csv",
                   "eval_file": "bundled:tasks/testament/eval.csv", "max_train_rows": 16, "max_eval_rows": 8}],
        "methods": [{"kind": "curlora", "r": 2}, {"kind": "lora", "r": 2}],
        "training": {"max_steps": 2, "batch_size": 2, "max_length": 32, "lr": 0.01},
        "evaluation": {"eval_rows": 4, "self_probe": False, "ppl_max_tokens": 128, "ppl_window": 64,
                       "ppl_stride": 64},
        "run": {"name": "visitor"},
    }
