"""Can the bundled model learn each demo task? Prints majority baseline vs. accuracy after LoRA / CURLoRA.

Each task is trained on its own, from the untouched base model (no continual sequence here): the question is
only whether a task is learnable at all, so that forgetting in the app is forgetting and not noise.

Scoring is by likelihood, as the app does it: the prompt is the engine's default template, every class is scored
by the model's summed log-probability of its label word after the prompt, the best class is the prediction.
Training minimises the LM loss of the gold label word after the prompt (prompt tokens are not in the loss).
It also prints the perplexity of the probe text before and after, to show how much each method moved the model.

    python bench/demo_tasks_check.py                     # bundled model, all three tasks, both methods
    python bench/demo_tasks_check.py --tasks answers --methods lora --steps 200
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import sys
import time
from collections import Counter
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from curlora.models.loading import load_model  # noqa: E402
from curlora.paths import DEFAULT_PROBE  # noqa: E402

TEMPLATE = "Text: {text}\nLabel:"
PAIR_TEMPLATE = "Text 1: {text}\nText 2: {text_pair}\nLabel:"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def read_task(folder: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[str]]:
    def rows(name):
        with (folder / name).open(encoding="utf-8", newline="") as f:
            out = []
            for r in csv.DictReader(f):
                prompt = (PAIR_TEMPLATE.format(text=r["sentence1"], text_pair=r["sentence2"]) if "sentence1" in r
                          else TEMPLATE.format(text=r["text"]))
                out.append((prompt, r["label"]))
            return out

    train, evals = rows("train.csv"), rows("eval.csv")
    return train, evals, sorted({label for _, label in train})


def encode(tokenizer, prompts: list[str], answers: list[str]):
    """Right-padded ids of prompt + " answer", and a mask of the answer positions (those scored / trained)."""
    seqs, masks = [], []
    for p, a in zip(prompts, answers):
        p_ids = tokenizer(p)["input_ids"]
        a_ids = tokenizer(" " + a)["input_ids"]
        seqs.append(p_ids + a_ids)
        masks.append([0] * len(p_ids) + [1] * len(a_ids))
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), tokenizer.pad_token_id)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    answer = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, (s, m) in enumerate(zip(seqs, masks)):
        ids[i, : len(s)] = torch.tensor(s)
        attn[i, : len(s)] = 1
        answer[i, : len(s)] = torch.tensor(m, dtype=torch.bool)
    return ids, attn, answer


def answer_logprob(model, ids, attn, answer) -> torch.Tensor:
    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()
    logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]
    return (logp * answer[:, 1:]).sum(-1)


@torch.no_grad()
def accuracy(model, tokenizer, rows, classes, batch=64) -> tuple[float, Counter]:
    model.eval()
    correct, predicted = 0, Counter()
    for i in range(0, len(rows), batch):
        chunk = rows[i: i + batch]
        prompts = [p for p, _ in chunk for _ in classes]
        answers = [c for _ in chunk for c in classes]
        scores = answer_logprob(model, *encode(tokenizer, prompts, answers)).view(len(chunk), len(classes))
        for (_, gold), best in zip(chunk, scores.argmax(-1).tolist()):
            predicted[classes[best]] += 1
            correct += classes[best] == gold
    return correct / len(rows), predicted


@torch.no_grad()
def probe_perplexity(model, tokenizer, max_tokens=4096, block=256) -> float:
    model.eval()
    ids = torch.tensor(tokenizer(DEFAULT_PROBE.read_text(encoding="utf-8"))["input_ids"][:max_tokens])
    n = len(ids) // block
    out = model(input_ids=ids[: n * block].view(n, block), labels=ids[: n * block].view(n, block))
    return math.exp(out.loss.item())


def train(model, tokenizer, rows, steps, lr, batch, seed) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    rng = random.Random(seed)
    model.train()
    for step in range(steps):
        chunk = rng.sample(rows, batch)
        ids, attn, answer = encode(tokenizer, [p for p, _ in chunk], [a for _, a in chunk])
        loss = -answer_logprob(model, ids, attn, answer).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    model.eval()
    return loss.item()


def adapt(method: str, base, rank: int, seed: int):
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        return get_peft_model(base, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=TARGETS))
    from curlora import CURLoRAConfig, get_curlora_model

    return get_curlora_model(base, CURLoRAConfig(r=rank, alpha=1.0, target_modules=TARGETS, sampling="inverted",
                                                 seed=seed))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bundled")
    ap.add_argument("--tasks", nargs="+", default=["reviews", "testament", "answers"])
    ap.add_argument("--methods", nargs="+", default=["lora", "curlora"], choices=["lora", "curlora"])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--lr", type=float, nargs="+", default=[1e-3],
                    help="one learning rate for every method, or one per method in --methods order")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lrs = dict(zip(args.methods, args.lr * len(args.methods) if len(args.lr) == 1 else args.lr))

    print(f"model {args.model}; {args.steps} steps x batch {args.batch}, rank {args.rank}, lr {lrs}")
    print("| task | classes | majority | base | " + " | ".join(args.methods) + " | probe ppl base → "
          + " / ".join(args.methods) + " |")
    for task in args.tasks:
        train_rows, eval_rows, classes = read_task(REPO / "assets" / "tasks" / task)
        majority = Counter(g for _, g in eval_rows).most_common(1)[0][1] / len(eval_rows)
        model, tokenizer, _ = load_model(args.model)
        base_acc, _ = accuracy(model, tokenizer, eval_rows, classes)
        base_ppl = probe_perplexity(model, tokenizer)
        accs, ppls = [], []
        for method in args.methods:
            model, tokenizer, _ = load_model(args.model)
            torch.manual_seed(args.seed)
            adapted = adapt(method, model, args.rank, args.seed)
            start = time.time()
            loss = train(adapted, tokenizer, train_rows, args.steps, lrs[method], args.batch, args.seed)
            acc, predicted = accuracy(adapted, tokenizer, eval_rows, classes)
            ppls.append(probe_perplexity(adapted, tokenizer))
            accs.append(acc)
            print(f"  {task}/{method}: acc {acc:.3f}, final loss {loss:.3f}, predicted {dict(predicted)}, "
                  f"{time.time() - start:.0f} s", flush=True)
        print(f"| {task} | {'/'.join(classes)} | {majority:.3f} | {base_acc:.3f} | "
              + " | ".join(f"{a:.3f}" for a in accs) + f" | {base_ppl:.1f} → " + " / ".join(f"{p:.1f}" for p in ppls)
              + " |", flush=True)


if __name__ == "__main__":
    main()
