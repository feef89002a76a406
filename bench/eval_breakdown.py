"""Where one stage's evaluation spends its time, on the real shapes of bench/real_sizes.py: per part (likelihood
scoring per task, the perplexity probe, the self-probe measures, and the self-probe sampling that setup pays once),
seconds and the tokens the model forwarded (padding included, counted at the input embedding).

    python bench/eval_breakdown.py                     # writes docs/eval-breakdown.md (+ .json)
    python bench/eval_breakdown.py --shapes gpt2-124m --settings goal

The model is the base (an attached LoRA at zero adds one small matmul per adapted layer). One training step is read
from docs/real-sizes.json (the same shape and setting, measured by a run), so each part is also given in training
steps: the issue's goal is a whole stage's evaluation within 4 steps on the Qwen shape.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from cli_run import write_experiment  # noqa: E402
from real_sizes import SHAPES, build, config  # noqa: E402


class Counter:
    """Tokens through the model's input embedding since the last `take()`."""

    def __init__(self, model):
        self.n = 0
        model.get_input_embeddings().register_forward_hook(lambda mod, inp, out: self.add(inp[0]))

    def add(self, ids) -> None:
        self.n += int(ids.numel())

    def take(self) -> int:
        n, self.n = self.n, 0
        return n


def timed(counter: Counter, fn) -> dict:
    t = time.perf_counter()
    fn()
    return {"seconds": round(time.perf_counter() - t, 2), "tokens": counter.take()}


def breakdown(shape: str, setting: str, root: Path) -> dict:
    from curlora.experiment import ExperimentConfig
    from curlora.measure import probes
    from curlora.measure.perplexity import perplexity
    from curlora.measure.scoring import score
    from curlora.run import runner

    path = write_experiment(config(shape, setting, build(shape, root)), root / "breakdown" / f"{shape}-{setting}.yaml")
    cfg = ExperimentConfig.load(path)
    loaded = runner.load_everything(cfg)
    ev, tr, model = cfg.evaluation, cfg.training, loaded.model
    count = Counter(model)
    parts = {}
    probe = {}

    def sample():
        probe["ids"], probe["ref"], _ = probes.load_or_sample(None, model, loaded.tokenizer, ev.self_probe_texts,
                                                              ev.self_probe_tokens, ev.self_probe_temperature,
                                                              ev.self_probe_seed)
    setup = timed(count, sample)
    score(model, loaded.tokenizer, loaded.tasks[0], loaded.tasks[0].eval.select(range(2)), ev.scoring,
          tr.max_length, ev.batch_size)  # warm-up: the first forward of a process pays one-time costs
    count.take()
    for task in loaded.tasks:
        rows = task.eval  # max_eval_rows already applied when the task loaded
        parts[f"scoring {task.name} ({len(rows)} rows)"] = timed(
            count, lambda: score(model, loaded.tokenizer, task, rows, ev.scoring, tr.max_length, ev.batch_size))
    ppl_tokens = int(loaded.probe_ids.numel())
    parts[f"perplexity probe ({ppl_tokens} tokens, window {ev.ppl_window}, stride {ev.ppl_stride})"] = timed(
        count, lambda: perplexity(model, loaded.probe_ids, ev.ppl_window, ev.ppl_stride))
    parts[f"self-probe ppl and KL ({ev.self_probe_texts} x {ev.self_probe_tokens} tokens)"] = timed(
        count, lambda: probes.self_probe_measures(model, probe["ids"], probe["ref"]))
    total = {"seconds": round(sum(p["seconds"] for p in parts.values()), 2),
             "tokens": sum(p["tokens"] for p in parts.values())}
    return {"shape": shape, "setting": setting, "parts": parts, "stage_evaluation": total,
            "self_probe_sampling": setup}


def step_seconds(shape: str, setting: str) -> float | None:
    path = REPO / "docs" / "real-sizes.json"
    rows = json.loads(path.read_text()) if path.is_file() else []
    return next((r["step_s"] for r in rows if r["shape"] == shape and r["setting"] == setting), None)


def document(results: list[dict], machine: str) -> str:
    lines = ["# One stage's evaluation, part by part", "",
             "`python bench/eval_breakdown.py` — the base model of each real shape (random init, see "
             "docs/real-sizes.md), the settings of docs/real-sizes.md, each part timed once after a warm-up forward. "
             "Tokens: what the model forwarded, padding included. Steps: the part's seconds over one training step "
             "of the same shape and setting from docs/real-sizes.json (LoRA r 8, batch 4, max length 128). "
             + machine, "",
             "| shape | setting | part | seconds | tokens forwarded | tokens/s | in training steps |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        step = step_seconds(r["shape"], r["setting"])
        rows = list(r["parts"].items()) + [("**one stage's evaluation**", r["stage_evaluation"]),
                                           ("self-probe sampling + reference (setup, once per run)",
                                            r["self_probe_sampling"])]
        for name, p in rows:
            rate = round(p["tokens"] / p["seconds"]) if p["seconds"] else "—"
            steps = round(p["seconds"] / step, 2) if step else "—"
            lines.append(f"| {r['shape']} | {r['setting']} | {name} | {p['seconds']} | {p['tokens']} | {rate} | "
                         f"{steps} |")
    lines += ["", "One timing per part on a 2-core machine (no interval); a part's tokens/s against the others "
              "shows whether it is bound by the tokens it must forward (similar rates) or by work beyond them.", "",
              "What the settings themselves ask for: a training step forwards at most batch x max length = 512 "
              "tokens and back-propagates them, while a stage's evaluation forwards "
              + "; ".join(f"{r['stage_evaluation']['tokens']} tokens ({r['stage_evaluation']['tokens'] / 512:.1f} "
                          f"x 512) on {r['shape']} {r['setting']}" for r in results)
              + ", before any speed-up can help. The perplexity probe's strided windows forward each scored token "
              "about twice (window 256, stride 128); non-overlapping windows (ppl_stride = ppl_window) halve that "
              "part at the cost of less context at each window's start. Label words of several tokens share "
              "their prompt's forward (the classes continue on its KV cache), so a two-class task forwards each "
              "prompt once plus the words' tokens.", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default=",".join(SHAPES))
    p.add_argument("--settings", default="small,goal")
    p.add_argument("--root", default="/tmp/curlora-real-sizes")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--note", default="")
    p.add_argument("--out", default=str(REPO / "docs" / "eval-breakdown.md"))
    a = p.parse_args(argv)
    import platform

    import torch

    torch.set_num_threads(a.threads)
    results = []
    for shape in a.shapes.split(","):
        for setting in a.settings.split(","):
            if shape == "qwen2.5-0.5b" and setting == "goal":
                continue  # as in bench/real_sizes.py
            results.append(breakdown(shape, setting, Path(a.root)))
            print(json.dumps(results[-1]), flush=True)
    machine = (f"Machine: {platform.processor() or platform.machine()}, {a.threads} threads, torch {torch.__version__}. "
               + a.note)
    Path(a.out).write_text(document(results, machine), encoding="utf-8")
    Path(a.out).with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
