"""The GPU benchmark in one command: per method, training tokens/s, peak memory and evaluation throughput on the
GPT-2-124M and Qwen2.5-0.5B shapes (random init, bf16), and the demo study's wall time.

    python bench/gpu.py                      # on a CUDA machine: the real shapes; writes docs/gpu.md (≤ 8 minutes)
    python bench/gpu.py --tiny               # anywhere (the default without CUDA): tiny shapes, says so
    python bench/gpu.py --methods lora,curlora --steps 10

Each method trains the same rows of a bundled demo task through the product's own `train_task` (its registry
attach, the same batches), then scores the task's eval rows with the likelihood scorer. Tokens/s counts the
non-pad tokens of the training batches; peak memory is `torch.cuda.max_memory_allocated` for that method alone
(reset before it; on the CPU it is not measured). The base model is shared and handed back after every method, as
in a run.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from real_sizes import SHAPES as REAL  # noqa: E402  (the GPT-2-124M and Qwen2.5-0.5B shapes, one definition)

SHAPES = {name: spec["config"] for name, spec in REAL.items()}

TINY = {
    "gpt2-tiny": {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 256,
                  "vocab_size": 4096},
    "qwen2-tiny": {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 4096,
                   "max_position_embeddings": 256},
}
TARGETS = {"gpt2": ["c_attn", "c_proj", "c_fc"],
           "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
           "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
BUNDLED = REPO / "assets" / "models" / "kjv-llama-5m"
TASK = REPO / "assets" / "tasks" / "reviews"
BUDGET_S = 8 * 60


def build(spec: dict | str, dtype, device):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if isinstance(spec, str):  # a local model folder (--model)
        return AutoModelForCausalLM.from_pretrained(spec, dtype=dtype).to(device).eval()
    cfg = dict(spec)
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).to(device=device, dtype=dtype).eval()


def one_method(kind: str, base, tok, task, family: str, steps: int, batch: int, lr: float, device: str) -> dict:
    import torch

    from curlora.experiment import MethodSettings, TrainingSettings
    from curlora.measure.scoring import score
    from curlora.methods.registry import method
    from curlora.run.train import train_task

    m = method(kind)
    settings = MethodSettings(kind=kind, r=8, target_modules=TARGETS[family] if m.has_adapter else None, lr=lr)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    context = None
    if m.needs_context:  # CorDA's covariance, OSF's per-task schedule: one task, the bundled probe text
        from curlora.measure.perplexity import tokenize_text
        from curlora.methods.registry import Context

        text = (REPO / "assets" / "probe" / "kjv_heldout.txt").read_text(encoding="utf-8")
        context = Context(0, 1, 128, lambda n: (tokenize_text(tok, text, n), "the bundled probe text"))
    attached = m.attach(base, settings, None, context)
    try:
        cfg = TrainingSettings(max_steps=steps, batch_size=batch, lr=lr, max_length=128, scheduler="constant")
        tokens = []
        t0 = time.perf_counter()
        result = train_task(attached.model, tok, task, cfg, lr=lr, on_step=lambda e: tokens.append(e["step"]))
        if cuda:
            torch.cuda.synchronize()
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        scored = score(attached.model, tok, task, task.eval, "likelihood", 128, batch_size=32)
        if cuda:
            torch.cuda.synchronize()
        eval_s = time.perf_counter() - t0
    finally:
        attached.cleanup()
    n_tokens = result.steps * batch * task_tokens(tok, task)
    return {"method": kind, "steps": result.steps, "train_s": round(train_s, 2),
            "train_tokens_per_s": round(n_tokens / train_s, 1), "s_per_step": round(train_s / max(result.steps, 1), 3),
            "eval_rows": scored["n"], "eval_rows_per_s": round(scored["n"] / eval_s, 1),
            "peak_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None,
            "final_loss": round(result.final_loss, 3)}


_TOKENS: dict = {}


def task_tokens(tok, task) -> float:
    """Mean non-pad tokens per training example of the task (what a step's batch holds, on average)."""
    key = id(task)
    if key not in _TOKENS:
        from curlora.run.train import training_examples

        ex = training_examples(tok, task, 128, False)
        _TOKENS[key] = sum(len(e[0]) for e in ex) / max(len(ex), 1)
    return _TOKENS[key]


def demo_study_s(device: str) -> float | None:
    """Wall seconds of `python -m curlora study presets/experiments/demo-study.yaml` on this machine."""
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, CURLORA_DATA_DIR=d, HF_HUB_OFFLINE="1")
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "curlora", "study", "presets/experiments/demo-study.yaml"],
                             cwd=REPO, env=env, capture_output=True, text=True)
        if out.returncode != 0:
            return None
        return round(time.perf_counter() - t0, 1)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny shapes (the default when no CUDA GPU is visible)")
    p.add_argument("--methods", default="lora,curlora,full")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--no-study", action="store_true", help="skip the demo study's wall time")
    p.add_argument("--model", help="bench this local model folder instead of the shapes (e.g. the bundled model)")
    p.add_argument("--out", default=str(REPO / "docs" / "gpu.md"))
    a = p.parse_args(argv)
    import torch

    from curlora.data.task_config import TaskConfig
    from curlora.data.tasks import load_task
    from curlora.methods.registry import method
    from curlora.models.loading import load_tokenizer

    cuda = torch.cuda.is_available() and not a.tiny
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    shapes = SHAPES if cuda else TINY
    if a.model:
        shapes = {Path(a.model).name: str(Path(a.model).resolve())}
    kinds = [k.strip() for k in a.methods.split(",") if k.strip()]
    for k in kinds:
        method(k)  # an unknown kind is one sentence before anything is built
    tok = load_tokenizer(BUNDLED, "kjv-llama-5m", False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    task = load_task(TaskConfig.from_dict({"name": "reviews", "train_file": str(TASK / "train.csv"),
                                           "eval_file": str(TASK / "eval.csv"), "max_train_rows": 400,
                                           "max_eval_rows": 64}))
    started = time.perf_counter()
    rows = []
    for shape, spec in shapes.items():
        base = build(spec, dtype, device)
        family = base.config.model_type
        for kind in kinds:
            if time.perf_counter() - started > BUDGET_S:
                break
            lr = method(kind).lr_prior[-1] if method(kind).lr_prior else 2e-3  # the top of its prior
            lr = 2e-2 if kind == "curlora" else lr  # the quick demo's CURLoRA rate
            row = {"shape": shape, **one_method(kind, base, tok, task, family, a.steps, a.batch, lr, device)}
            print(json.dumps(row), flush=True)
            rows.append(row)
        del base
        if cuda:
            torch.cuda.empty_cache()
    lora = {r["shape"]: r["s_per_step"] for r in rows if r["method"] == "lora"}
    for r in rows:
        r["step_vs_lora"] = round(r["s_per_step"] / lora[r["shape"]], 2) if r["shape"] in lora else None
    study = None if (a.no_study or not cuda) else demo_study_s(device)
    name = torch.cuda.get_device_name() if cuda else f"CPU ({platform.processor() or platform.machine()})" + (
        "" if a.model else ", tiny shapes")
    body = {"device": name, "tiny": not cuda and not a.model, "what": f"the model in {a.model}" if a.model else None,
            "dtype": str(dtype).removeprefix("torch."), "rows": rows,
            "demo_study_s": study, "wall_s": round(time.perf_counter() - started, 1)}
    Path(a.out).write_text(document(body), encoding="utf-8")
    Path(a.out).with_suffix(".json").write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {a.out}")
    return body


def document(body: dict) -> str:
    shapes = body.get("what") or ("tiny random-init shapes" if body["tiny"] else "random-init real shapes")
    head = (f"# Per-method benchmark: {body['device']}\n\n`python bench/gpu.py` — {body['dtype']}, {shapes}, "
            "each method trained through the product's `train_task` on the same rows of the bundled `reviews` task "
            "(batch and steps below), then its 64 eval rows scored by likelihood.")
    if body["tiny"]:
        head += ("\n\n**No CUDA GPU was visible: this is the tiny CPU mode** (tiny shapes, float32); its numbers "
                 "check that the benchmark runs, not what a GPU does.")
    lines = [head, "", "| shape | method | s / step | step vs LoRA | train tokens/s | eval rows/s | peak memory |",
             "|---|---|---|---|---|---|---|"]
    for r in body["rows"]:
        peak = f"{r['peak_memory_mib']} MiB" if r["peak_memory_mib"] is not None else "not measured (CPU)"
        lines.append(f"| {r['shape']} | {r['method']} | {r['s_per_step']} | {r['step_vs_lora']} | "
                     f"{r['train_tokens_per_s']} | {r['eval_rows_per_s']} | {peak} |")
    study = body["demo_study_s"]
    lines += ["", "Demo study (`presets/experiments/demo-study.yaml`, 16 runs): "
              + (f"{study} s." if study is not None else "not run (CPU tiny mode or --no-study)."),
              f"Benchmark wall time: {body['wall_s']} s (budget {BUDGET_S // 60} min). One run per row, no interval: "
              "read the ratios, not the third digit.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
