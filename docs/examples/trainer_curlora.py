"""CURLoRA under the plain `transformers.Trainer`, through PEFT's own calls — no code from this app's runner.

    python docs/examples/trainer_curlora.py --model assets/models/kjv-llama-5m --steps 20 --out /tmp/curlora-trainer

What it shows: `import curlora` makes CURLoRA a PEFT method; `peft.get_peft_model` wraps the model; the Trainer
trains only U (r x r per matrix); `save_model` writes PEFT's adapter folder; `peft.PeftModel.from_pretrained` on a
fresh copy of the base gives the same logits (C and R are cut again from the base by the saved indices, after the
sketch check).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import peft
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import curlora  # noqa: E402  (registers CURLoRA with PEFT)

TEXTS = [
    "The review was glowing: a delight from start to finish.",
    "The review was harsh: dull, long and badly acted.",
    "In the beginning was the word, and the word was with God.",
    "And the evening and the morning were the first day.",
] * 8


class Texts(torch.utils.data.Dataset):
    def __init__(self, tokenizer, texts, length=32):
        self.rows = [tokenizer(t, truncation=True, max_length=length, padding="max_length", return_tensors="pt")
                     for t in texts]
        self.pad = tokenizer.pad_token_id

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        ids, mask = self.rows[i]["input_ids"][0], self.rows[i]["attention_mask"][0]
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a local model folder")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-2)
    p.add_argument("--out", required=True, help="where the Trainer writes its output and the adapter")
    a = p.parse_args(argv)
    tok = AutoTokenizer.from_pretrained(a.model)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = peft.get_peft_model(AutoModelForCausalLM.from_pretrained(a.model),
                                curlora.CURLoRAConfig(r=a.r, target_modules="all-linear"))
    model.print_trainable_parameters()
    args = TrainingArguments(output_dir=a.out, max_steps=a.steps, per_device_train_batch_size=4,
                             learning_rate=a.lr, logging_steps=max(1, a.steps // 4), save_strategy="no",
                             report_to=[], use_cpu=True, seed=0, bf16=False)  # float32 on any CPU
    result = Trainer(model=model, args=args, train_dataset=Texts(tok, TEXTS)).train()
    adapter = Path(a.out) / "adapter"
    model.save_pretrained(adapter)
    probe = tok(TEXTS[0], return_tensors="pt")
    model.eval()
    with torch.no_grad():
        trained = model(**probe).logits
        again = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(a.model), adapter)(**probe).logits
    out = {"train_loss": result.training_loss, "trainable": model.get_nb_trainable_parameters()[0],
           "reloaded_equal": bool(torch.equal(trained, again)), "adapter": str(adapter)}
    print(out)
    return out


if __name__ == "__main__":
    main()
