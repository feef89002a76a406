"""Speed of the CURLoRA layer against PEFT LoRA on the same base, rank and targets — printed as ratios.

    python bench/adapter_speed.py --quick                 # < 1 min; last line is one JSON object
    python bench/adapter_speed.py --out docs/adapter-speed.md
    python bench/adapter_speed.py --models kjv-llama-5m --out docs/adapter-speed.md   # replaces just those rows

Per model shape and rank, in one process with both adapters on identical copies of one base model:
  train step      fwd + bwd + AdamW step, CURLoRA / LoRA                     (goal <= 1.00)
  eval forward    no-grad forward, unmerged, CURLoRA / LoRA                  (goal <= 1.05)
  merged eval     CURLoRA merged / bare base                                 (goal 1.00)
  overhead        CURLoRA train step / bare base fwd+bwd to the inputs - 1   (goal <= 5 %)
and the trainable parameters and adapter file sizes of each. Timings are medians over interleaved repeats
after warm-up (the two methods alternate, so drift in machine load hits both alike).

Models: a GPT-2-small-shaped and a Llama-style model built from configs (random weights, full widths, few layers),
and the bundled pretrained `kjv-llama-5m` (assets/models/, adapted on all seven Llama projections as in the quick
demo). `--models` picks some; with `--out` pointing at an existing report, rows of the models not rerun are kept.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import peft  # noqa: E402
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig  # noqa: E402

from curlora import CURLoRAConfig  # noqa: E402
from curlora.methods import adapters  # noqa: E402

import timing  # noqa: E402  (bench/timing.py: this folder is on sys.path when a bench script runs)

LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
GPT2_TARGETS = ["c_attn", "c_proj", "c_fc"]


BUNDLED = "kjv-llama-5m"


def load_bundled():
    """The bundled pretrained model (5.4M parameters, float32), loaded the way a run loads it."""
    from curlora.models.loading import load_model

    model, _, _ = load_model(BUNDLED, dtype="float32", device="cpu")
    return model


def models(quick: bool) -> dict:
    """name -> (config or a function returning a model, targets)."""
    out = dict(shapes(quick))
    out[BUNDLED] = (load_bundled, LLAMA_TARGETS)
    return out


def shapes(quick: bool) -> dict:
    """Model shapes built from configs. Full widths (GPT-2 small: 768; a 0.5B-class Llama: 896), few layers on CPU."""
    layers = 2 if quick else 4
    gpt2_vocab, llama_vocab = (8192, 8192) if quick else (50257, 32000)  # quick: a smaller head, same widths
    return {
        "gpt2-small-shape": (
            GPT2Config(n_embd=768, n_layer=layers, n_head=12, vocab_size=gpt2_vocab, n_positions=1024,
                       resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
            GPT2_TARGETS,
        ),
        "llama-style": (
            LlamaConfig(hidden_size=896, intermediate_size=2432, num_hidden_layers=layers, num_attention_heads=14,
                        num_key_value_heads=2, vocab_size=llama_vocab, max_position_embeddings=1024),
            LLAMA_TARGETS,
        ),
    }


def lora_config(r: int, targets: list[str], gpt2: bool) -> peft.LoraConfig:
    return peft.LoraConfig(r=r, lora_alpha=r, lora_dropout=0.0, target_modules=targets, fan_in_fan_out=gpt2,
                           task_type="CAUSAL_LM")


def train_step(model, opt, ids):
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def bare_fwd_bwd(model, ids):
    """The base model's forward and backward to its input embeddings: the work any adapter's backward needs."""
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    model(inputs_embeds=embeds, labels=ids).loss.backward()


@torch.no_grad()
def eval_forward(model, ids):
    model(input_ids=ids)


CLOCK = time.perf_counter  # --clock cpu: process CPU time


def race(fns: dict, warmup: int, repeats: int) -> dict[str, float]:
    return timing.race(fns, warmup, repeats, CLOCK)


def file_size(model) -> int:
    with tempfile.TemporaryDirectory() as d:
        adapters.save_adapter(model, d)
        return (Path(d) / "adapter_model.safetensors").stat().st_size


def bench_one(name, config, targets, r, batch, seq, warmup, repeats) -> dict:
    torch.manual_seed(0)
    base = (config() if callable(config) else AutoModelForCausalLM.from_config(config)).eval()
    config = base.config
    for p in base.parameters():
        p.requires_grad_(False)
    ids = torch.randint(0, config.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(0))
    cur = adapters.attach(copy.deepcopy(base), CURLoRAConfig(r=r, target_modules=targets))
    lora = adapters.attach(copy.deepcopy(base), lora_config(r, targets, config.model_type == "gpt2"))
    # Non-zero U and B, so neither method gets a free ride from zeros.
    with torch.no_grad():
        for p in list(cur.parameters()) + list(lora.parameters()):
            if p.requires_grad:
                p.normal_(0, 1e-3)
    opt_c = torch.optim.AdamW([p for p in cur.parameters() if p.requires_grad], lr=1e-4)
    opt_l = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-4)
    for m in (cur, lora):
        m.train()

    train = race({"curlora": lambda: train_step(cur, opt_c, ids), "lora": lambda: train_step(lora, opt_l, ids),
                  "base": lambda: bare_fwd_bwd(base, ids)}, warmup, repeats)
    for m in (cur, lora):
        m.eval()
    evals = race({"curlora": lambda: eval_forward(cur, ids), "lora": lambda: eval_forward(lora, ids),
                  "base": lambda: eval_forward(base, ids)}, warmup, repeats)
    cur.merge_adapter()
    merged = race({"curlora_merged": lambda: eval_forward(cur, ids), "base": lambda: eval_forward(base, ids)},
                  warmup, repeats)
    cur.unmerge_adapter()
    return {
        "model": name, "r": r, "tokens": batch * seq, "base_params": sum(p.numel() for p in base.parameters()),
        "train_ms": {k: round(v * 1e3, 2) for k, v in train.items()},
        "eval_ms": {k: round(v * 1e3, 2) for k, v in evals.items()},
        "train_ratio": round(train["curlora"] / train["lora"], 3),
        "eval_ratio": round(evals["curlora"] / evals["lora"], 3),
        "merged_eval_ratio": round(merged["curlora_merged"] / merged["base"], 3),
        "overhead_vs_base": round(train["curlora"] / train["base"] - 1, 3),
        "lora_overhead_vs_base": round(train["lora"] / train["base"] - 1, 3),
        "trainable": {"curlora": adapters.count_trainable(cur), "lora": adapters.count_trainable(lora)},
        "file_bytes": {"curlora": file_size(cur), "lora": file_size(lora)},
    }


def machine() -> str:
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else timing.cpu_name()
    return (f"{dev}; torch {torch.__version__}, peft {peft.__version__}, {torch.get_num_threads()} threads, "
            f"{timing.clock_name(CLOCK)}")


def previous(path: Path) -> tuple[list[dict], list[dict]]:
    """(rows, runs) of an existing report, to keep the rows of models not rerun; runs say which command made which."""
    if not path.is_file():
        return [], []
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text.split("```json", 1)[1].split("```", 1)[0])
    except (IndexError, ValueError):
        return [], []
    if isinstance(data, dict):
        return data.get("results", []), data.get("runs", [])
    # the first format: a bare list of rows under one Command / Machine / Date header
    head = dict(ln.split(": ", 1) for ln in text.splitlines() if ln.startswith(("Command: ", "Machine: ", "Date: ")))
    run = {"command": head.get("Command", "").strip(" `"), "machine": head.get("Machine", "").strip(),
           "date": head.get("Date", "").strip(), "models": sorted({row["model"] for row in data})}
    return data, [run]


def markdown(results: list[dict], runs: list[dict]) -> str:
    if len(runs) == 1:
        head = [f"Command: `{runs[0]['command']}`  ", f"Machine: {runs[0]['machine']}  ", f"Date: {runs[0]['date']}"]
    else:
        head = ["Commands (each made the rows of the models it names):", ""]
        head += [f"- `{run['command']}` — {', '.join(run['models'])}; {run['machine']}; {run['date']}" for run in runs]
    lines = [
        "# Adapter speed: CURLoRA vs PEFT LoRA",
        "",
        *head,
        "",
        "Ratios < 1 mean CURLoRA is faster. Goals: train ≤ 1.00, eval ≤ 1.05, merged eval = 1.00, overhead ≤ 5 %.",
        "",
        "| model | base params | r | tokens | train CUR/LoRA | eval CUR/LoRA | merged CUR/base "
        "| CUR overhead vs base fwd+bwd | LoRA overhead | trainable CUR / LoRA | file bytes CUR / LoRA |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        params = f"{r['base_params'] / 1e6:.1f}M" if "base_params" in r else ""
        lines.append(
            f"| {r['model']} | {params} | {r['r']} | {r['tokens']} | {r['train_ratio']:.3f} | {r['eval_ratio']:.3f} | "
            f"{r['merged_eval_ratio']:.3f} | {100 * r['overhead_vs_base']:+.1f} % | "
            f"{100 * r['lora_overhead_vs_base']:+.1f} % | {r['trainable']['curlora']:,} / {r['trainable']['lora']:,} "
            f"| {r['file_bytes']['curlora']:,} / {r['file_bytes']['lora']:,} |"
        )
    lines += ["", "Medians in milliseconds:", "", "```json", json.dumps({"runs": runs, "results": results}, indent=1),
              "```", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 layers, r=8 and 16, fewer repeats: under a minute")
    ap.add_argument("--models", default=None,
                    help=f"comma-separated subset of gpt2-small-shape,llama-style,{BUNDLED} (default: all)")
    ap.add_argument("--ranks", default=None, help="comma-separated ranks (default 8,16,32; quick: 8,16)")
    ap.add_argument("--batch", type=int, default=None, help="default 4 (quick: 2)")
    ap.add_argument("--seq", type=int, default=None, help="default 128 (quick: 64)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--out", default=None, help="write a Markdown report here (e.g. docs/adapter-speed.md)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--clock", choices=list(timing.CLOCKS), default="wall",
                    help="wall time, or process CPU time (with --threads 1: robust to other load on the machine)")
    args = ap.parse_args(argv)
    global CLOCK
    CLOCK = timing.CLOCKS[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    ranks = [int(x) for x in (args.ranks or ("8,16" if args.quick else "8,16,32")).split(",")]
    repeats = args.repeats or (5 if args.quick else 15)
    warmup = 1 if args.quick else 3
    batch = args.batch or (2 if args.quick else 4)
    seq = args.seq or (64 if args.quick else 128)
    results = []
    chosen = models(args.quick)
    if args.models:
        wanted = [m.strip() for m in args.models.split(",") if m.strip()]
        unknown = [m for m in wanted if m not in chosen]
        if unknown:
            ap.error(f"unknown model(s) {unknown}; pick from {list(chosen)}")
        chosen = {k: chosen[k] for k in wanted}
    for name, (config, targets) in chosen.items():
        for r in ranks:
            res = bench_one(name, config, targets, r, batch, seq, warmup, repeats)
            results.append(res)
            print(f"{name:18s} r={r:<3d} train {res['train_ratio']:.3f}  eval {res['eval_ratio']:.3f}  "
                  f"merged/base {res['merged_eval_ratio']:.3f}  overhead {100 * res['overhead_vs_base']:+.1f}% "
                  f"(LoRA {100 * res['lora_overhead_vs_base']:+.1f}%)  trainable {res['trainable']['curlora']:,} vs "
                  f"{res['trainable']['lora']:,}  file {res['file_bytes']['curlora']:,} vs {res['file_bytes']['lora']:,} B",
                  flush=True)
    if args.out:
        command = "python " + " ".join([sys.argv[0], *sys.argv[1:]])
        kept, runs = previous(Path(args.out)) if args.models else ([], [])
        kept = [row for row in kept if row["model"] not in chosen]
        runs = [{**run, "models": [m for m in run["models"] if m not in chosen]} for run in runs]
        runs = [run for run in runs if run["models"]]
        runs.append({"command": command, "machine": machine(), "date": time.strftime("%Y-%m-%d"),
                     "models": list(chosen)})
        order = list(models(args.quick))
        table = sorted(kept + results, key=lambda row: (order.index(row["model"]) if row["model"] in order
                                                         else len(order), row["r"]))
        Path(args.out).write_text(markdown(table, runs))
    summary = {
        "train_ratio_max": max(r["train_ratio"] for r in results),
        "eval_ratio_max": max(r["eval_ratio"] for r in results),
        "merged_eval_ratio_max": max(r["merged_eval_ratio"] for r in results),
        "overhead_vs_base_max": max(r["overhead_vs_base"] for r in results),
        "file_ratio_min": min(r["file_bytes"]["lora"] / r["file_bytes"]["curlora"] for r in results),
        "machine": machine(),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
