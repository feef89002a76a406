"""Train the bundled default model: a byte-level BPE tokenizer and a small Llama, on the KJV corpus.

Input is the folder written by `build_corpus.py` (kjv_train.txt for training, kjv_heldout.txt only for
measuring). Output is a Hugging Face folder that `AutoModelForCausalLM` / `AutoTokenizer.from_pretrained` load
offline, plus `training_log.json` (loss and held-out perplexity over time, wall time, the exact arguments).

    python assets/recipes/build_corpus.py --out /tmp/kjv
    nice -n 10 python assets/recipes/train_bundled_model.py --corpus /tmp/kjv --out assets/models/kjv-llama-5m

Everything random is seeded (tokenizer training is deterministic); on CPU the run is repeatable for the same
torch version and thread count (--threads).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

EOS, PAD = "<|endoftext|>", "<pad>"


def train_tokenizer(text: str, vocab_size: int) -> PreTrainedTokenizerFast:
    # Byte-level BPE: any string (modern words in the demo tasks, user CSVs) encodes without an unknown token.
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(text.split("\n\n"), trainer=trainer)
    # GPT-2 convention: one token starts, ends and separates documents; nothing is added automatically.
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=PAD,
                                   model_max_length=512)


def encode_documents(tokenizer, text: str) -> torch.Tensor:
    """One chapter per document, each followed by the end-of-text token, concatenated into one stream."""
    ids = []
    for doc in text.split("\n\n"):
        ids.extend(tokenizer(doc)["input_ids"])
        ids.append(tokenizer.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)


@torch.no_grad()
def heldout_perplexity(model, ids: torch.Tensor, block: int) -> float:
    """Token-level perplexity over non-overlapping windows of `block` tokens."""
    model.eval()
    n = (len(ids) - 1) // block
    windows = ids[: n * block].view(n, block)
    nll, count = 0.0, 0
    for chunk in windows.split(16):
        out = model(input_ids=chunk, labels=chunk)
        tokens = chunk.numel() - chunk.shape[0]  # the first token of each window has no prediction
        nll += out.loss.item() * tokens
        count += tokens
    model.train()
    return math.exp(nll / count)


def lr_at(step: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, required=True, help="folder from build_corpus.py")
    ap.add_argument("--out", type=Path, required=True, help="model folder to write")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=4, help="fewer than --heads: k/v projections are narrower")
    ap.add_argument("--ffn", type=int, default=688)
    ap.add_argument("--block", type=int, default=256, help="training context length")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=750)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=40)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--eval-every", type=int, default=75)
    ap.add_argument("--seed", type=int, default=1611)
    ap.add_argument("--threads", type=int, default=1,
                    help="1 is steadier than 2 on a shared 2-core machine")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    start = time.time()

    train_text = (args.corpus / "kjv_train.txt").read_text(encoding="utf-8")
    heldout_text = (args.corpus / "kjv_heldout.txt").read_text(encoding="utf-8")
    tokenizer = train_tokenizer(train_text, args.vocab)
    train_ids = encode_documents(tokenizer, train_text)
    heldout_ids = encode_documents(tokenizer, heldout_text)
    print(f"tokens: train {len(train_ids):,}, held out {len(heldout_ids):,}", flush=True)

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=args.dim, intermediate_size=args.ffn,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        max_position_embeddings=512, rope_theta=10000.0, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params:,}", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(args.seed)
    log = []
    model.train()
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        starts = torch.randint(0, len(train_ids) - args.block, (args.batch,), generator=gen)
        batch = torch.stack([train_ids[s: s + args.block] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            ppl = heldout_perplexity(model, heldout_ids, args.block)
            log.append({"step": step + 1, "train_loss": round(loss.item(), 4), "heldout_ppl": round(ppl, 3),
                        "elapsed_s": round(time.time() - start, 1)})
            print(json.dumps(log[-1]), flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    summary = {
        "parameters": n_params, "train_tokens": len(train_ids), "heldout_tokens": len(heldout_ids),
        "heldout_ppl": log[-1]["heldout_ppl"], "wall_time_s": round(time.time() - start, 1),
        "torch": torch.__version__, "args": {k: str(v) for k, v in vars(args).items()}, "log": log,
    }
    (args.out / "training_log.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")

    model.eval()
    for prompt in ["And God said", "The LORD is my shepherd", "Jesus answered and said unto them"]:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        out = model.generate(ids, max_new_tokens=40, do_sample=False)
        print(repr(tokenizer.decode(out[0])), flush=True)


if __name__ == "__main__":
    main()
