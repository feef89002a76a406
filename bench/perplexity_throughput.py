"""Throughput of the perplexity probe against a bare no-grad forward over the same windows — goal >= 0.9x.

    python bench/perplexity_throughput.py --threads 1 --clock cpu --quick     # ~20 s; last line JSON
    python bench/perplexity_throughput.py --threads 1 --clock cpu
    git show REV:curlora/measure/perplexity.py > /tmp/old.py && python bench/perplexity_throughput.py --impl /tmp/old.py

On the bundled model and its held-out probe text (assets/probe/kjv_heldout.txt), with the quick demo's probe
settings (first 8,192 tokens, window 256, stride 128, batches of 8 windows), timed interleaved, medians after
warm-up:
  perplexity     curlora.measure.perplexity.perplexity: the strided sliding window, loss included
  bare_loop      for each of the same windows: model(input_ids=window) under torch.no_grad, one at a time
  bare_batched   the same windows in the same batches of 8 (right-padded), model(input_ids=batch), no mask, no loss
  runner_probe   what the runner's evaluate computes: the strided number and the paper's single-window number
Ratios are throughputs (bare time / perplexity time): >= 1 means the probe is as fast as a bare forward.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from curlora.models.loading import load_model  # noqa: E402
from curlora.paths import DEFAULT_PROBE  # noqa: E402
from curlora.measure.perplexity import tokenize_text, windows  # noqa: E402
from curlora.measure import perplexity as impl  # noqa: E402  (--impl swaps in another version, to compare)

import timing  # noqa: E402  (bench/timing.py)

GOAL = 0.9
CLOCKS = timing.CLOCKS


@torch.no_grad()
def bare_loop(model, ids, spans):
    for begin, end, _ in spans:
        model(input_ids=ids[begin:end][None])


@torch.no_grad()
def bare_batched(model, ids, spans, batch_size):
    for i in range(0, len(spans), batch_size):
        batch = spans[i:i + batch_size]
        width = max(end - begin for begin, end, _ in batch)
        inp = torch.zeros(len(batch), width, dtype=torch.long)
        for b, (begin, end, _) in enumerate(batch):
            inp[b, : end - begin] = ids[begin:end]
        model(input_ids=inp)


def perplexity(*args):
    return impl.perplexity(*args)


def runner_probe(model, ids, window, stride, batch_size):
    strided = perplexity(model, ids, window, stride, batch_size)
    single = strided.get("single_window") or impl.single_window_perplexity(model, ids, window)
    return strided, single


def machine(clock_name: str) -> str:
    return (f"{timing.cpu_name()}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"{timing.clock_name(CLOCKS[clock_name])}")


def measure(max_tokens: int, window: int, stride: int, batch_size: int, warmup: int, repeats: int, clock) -> dict:
    model, tokenizer, _ = load_model("kjv-llama-5m", dtype="float32", device="cpu")
    ids = tokenize_text(tokenizer, DEFAULT_PROBE.read_text(encoding="utf-8"), max_tokens)
    spans = windows(int(ids.numel()), window, stride)
    times = timing.race({
        "perplexity": lambda: perplexity(model, ids, window, stride, batch_size),
        "bare_loop": lambda: bare_loop(model, ids, spans),
        "bare_batched": lambda: bare_batched(model, ids, spans, batch_size),
        "runner_probe": lambda: runner_probe(model, ids, window, stride, batch_size),
    }, warmup, repeats, CLOCKS[clock])
    tokens_in = sum(end - begin for begin, end, _ in spans)
    return {
        "tokens": int(ids.numel()), "windows": len(spans), "tokens_through_model": tokens_in,
        "window": window, "stride": stride, "batch_size": batch_size,
        "ms": {k: round(v * 1e3, 1) for k, v in times.items()},
        "throughput_vs_bare_loop": round(times["bare_loop"] / times["perplexity"], 3),
        "throughput_vs_bare_batched": round(times["bare_batched"] / times["perplexity"], 3),
        "runner_probe_vs_bare_loop": round(times["bare_loop"] / times["runner_probe"], 3),
        "ppl": round(perplexity(model, ids, window, stride, batch_size)["ppl"], 3),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2,048 tokens, 3 repeats")
    ap.add_argument("--tokens", type=int, default=None, help="probe tokens (default 8192, the quick demo's)")
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--stride", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=None, help="default 7 (quick: 3)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--clock", choices=list(CLOCKS), default="wall")
    ap.add_argument("--out", default=None, help="write the result as JSON here")
    ap.add_argument("--impl", default=None, help="time the perplexity functions of this file instead (a version of "
                                                 "curlora/measure/perplexity.py)")
    args = ap.parse_args(argv)
    if args.impl:
        global impl
        spec = importlib.util.spec_from_file_location("perplexity_impl", args.impl)
        impl = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(impl)
    if args.threads:
        torch.set_num_threads(args.threads)
    res = measure(args.tokens or (2048 if args.quick else 8192), args.window, args.stride, args.batch_size,
                  1, args.repeats or (3 if args.quick else 7), args.clock)
    res["goal"] = GOAL
    res["met"] = res["throughput_vs_bare_loop"] >= GOAL
    res["command"] = "python " + " ".join([sys.argv[0], *sys.argv[1:]])
    res["machine"] = machine(args.clock)
    print(f"{res['windows']} windows of {args.window} (stride {args.stride}) over {res['tokens']} tokens: "
          f"perplexity {res['ms']['perplexity']:.0f} ms, bare loop {res['ms']['bare_loop']:.0f} ms, "
          f"bare batched {res['ms']['bare_batched']:.0f} ms, runner probe {res['ms']['runner_probe']:.0f} ms", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
