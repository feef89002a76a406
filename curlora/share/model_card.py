"""The model card (README.md) a pushed run carries: written from the run store only, so the hub shows the numbers
the app and `curlora show` show.

    text = model_card(run, metrics, config_yaml, repo, methods=["lora"], merged=True)

It says what was trained (base model, tasks in order, each method with its setting), what the repo holds and how to
load it, each method's accuracy matrix (every cell with its n and 95 % Wilson interval), perplexity, self-perplexity
and KL to the base after every stage, ACC/BWT/FWT/forgetting, the learnability verdicts, how to serve a stage
elsewhere (PEFT / vLLM LoRA, llama.cpp / Ollama / LM Studio GGUF), and the exact config.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from curlora.measure.record import RunMetrics
from curlora.methods.registry import described, method
from curlora.models.loading import HUB_ID
from curlora.share.export import FWT_LABEL, cell_text


def _num(v, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _front_matter(base: str, labels: list[str], kinds: list[str]) -> str:
    meta = {"library_name": "peft", "tags": sorted({"curlora-studio", "continual-learning", *kinds})}
    if HUB_ID.match(base or "") and "/" in base:  # a hub id: the hub links the base model
        meta["base_model"] = base
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _matrix(m: RunMetrics, label: str) -> list[str]:
    rec = m.methods[label]
    lines = [f"### {described(label, rec.setting)} — {rec.kind}, {rec.trainable:,} trainable parameters, "
             f"{rec.status}", "",
             "| after | " + " | ".join(m.tasks) + " | perplexity | self-perplexity | KL to base | weight drift |",
             "|---" * (len(m.tasks) + 5) + "|"]
    for i in range(len(rec.matrix)):
        row = rec.row(i)
        drift = rec.drift[i] if i < len(rec.drift) and isinstance(rec.drift[i], dict) else {}
        lines.append(f"| {'base' if i == 0 else m.tasks[i - 1]} | "
                     + " | ".join(cell_text(rec.cell(i, j)) for j in range(len(m.tasks)))
                     + f" | {_num(row.ppl)} | {_num(row.self_ppl)} | {_num(row.kl_to_base, 4)} | "
                       f"{_num(drift.get('total'), 4)} |")
    s = rec.summary or {}
    lines += ["", f"ACC {_pct(s.get('acc'))} · BWT {_pct(s.get('bwt'))} · {FWT_LABEL} {_pct(s.get('fwt'))} · "
                  f"forgetting {_pct(s.get('forgetting'))} · plasticity {_pct(s.get('plasticity'))} (points)", ""]
    return lines


def serving(run_id: str, base: str, label: str, k: int) -> list[str]:
    """How to serve a stage outside this app, as Markdown lines: the two exports and the tools that load each one.
    What was checked here is said as such (tests/test_export_formats.py); the rest names the tool's own command."""
    cmd = f"python -m curlora export {run_id} --method {label} --stage {k}"
    return [
        "## Serving a stage", "",
        "**As a plain LoRA adapter** (any adapter method; a CURLoRA stage is converted exactly, W + α·C·U·R = W + B·A "
        "with B = α·C·U and A = R, at lora_alpha = r):", "",
        "```bash", f"{cmd} --lora ./{label}-stage-{k}-lora", "```", "",
        "- PEFT, without CURLoRA installed: `PeftModel.from_pretrained(base, \"./" + label + f"-stage-{k}-lora\")` "
        "(the project's tests check, in a process without curlora, that the logits equal the stage's to 1e-5).",
        f"- vLLM: `vllm serve {base} --enable-lora --max-lora-rank R --lora-modules {label}=./{label}-stage-{k}-lora` "
        "(R at least the adapter's rank; vLLM serves plain LoRA, not DoRA).",
        "- llama.cpp's `--lora` takes a GGUF LoRA, which this app does not write: convert the folder with llama.cpp's "
        "`convert_lora_to_gguf.py --base BASE_FOLDER ./" + f"{label}-stage-{k}-lora` (not checked here), or serve the "
        "merged GGUF below.", "",
        "**Merged, as one GGUF file** for llama.cpp, Ollama and LM Studio (Llama-family bases; `--gguf-type q8_0` "
        "for a file about half the size):", "",
        "```bash", f"{cmd} --gguf ./{label}-stage-{k}.gguf --gguf-type f16",
        f"llama-cli -m ./{label}-stage-{k}.gguf          # or: llama-server -m ./{label}-stage-{k}.gguf",
        f"printf 'FROM ./{label}-stage-{k}.gguf\\n' > Modelfile && ollama create {label}-stage-{k} -f Modelfile",
        "```", "",
        "The file follows the layout of llama.cpp's own converter (architecture `llama`, q/k rows permuted, the "
        "tokenizer's merges and chat template); LM Studio takes the same file (`lms import`). What is checked here: "
        "it reads back through transformers' GGUF loader with the merged model's tokens and logits up to rounding "
        "(F16 and Q8_0 bounds in `docs/export.md`); llama.cpp itself is not run by the tests.", ""]


def model_card(run, m: RunMetrics, config_yaml: str, repo: str, methods: list[str] | None = None,
               merged: bool = False) -> str:
    """README.md for `repo` holding the adapters of `methods` (default: every method with an adapter) of `run`."""
    cfg = yaml.safe_load(config_yaml) or {}
    base = (cfg.get("model") or {}).get("name") or "?"
    labels = list(m.methods)
    pushed = [label for label in labels if (methods is None or label in methods)
              and method(m.methods[label].kind).has_adapter and m.methods[label].stages_done]
    first = pushed[0] if pushed else "lora"
    k = m.methods[first].stages_done if pushed else 1
    probe = m.probe or {}
    lines = [_front_matter(base, labels, sorted({m.methods[label].kind for label in labels})),
             f"# {repo}", "",
             f"Continual fine-tuning of `{base}` through {len(m.tasks)} tasks in order "
             f"({' → '.join(m.tasks)}) with " + ", ".join(described(label, m.methods[label].setting)
                                                             for label in labels)
             + f", made with CURLoRA Studio (run `{run.id}`). After every task every method was scored on every "
               "task and on the drift probes; the numbers below are the run's own.", "",
             "## What is here", "",
             "- `adapters/<method>/stage-<k>/`: the adapter after task k, in PEFT's folder layout "
             f"({', '.join(pushed) or 'none'})",
             *(["- `merged/<method>/`: the last stage folded into the base model (loads with "
                "`AutoModelForCausalLM.from_pretrained`)"] if merged else []),
             "- `metrics.json`, `results.md`: everything the run measured; `config.yaml`: the exact experiment", "",
             "```python", "import curlora  # registers CURLoRA with PEFT (CURLoRA adapters need it; LoRA ones do not)",
             "from peft import PeftModel", "from transformers import AutoModelForCausalLM", "",
             f'base = AutoModelForCausalLM.from_pretrained("{base}")',
             f'model = PeftModel.from_pretrained(base, "{repo}", subfolder="adapters/{first}/stage-{k}")', "```", "",
             "## Accuracy after each task", "",
             f"Scoring: {m.scoring}. Each cell: accuracy % [95 % Wilson interval] n = rows scored. Row `base` is the "
             "model before training. Majority-class share: "
             + ", ".join(f"{t} {_pct(a)} %" for t, a in zip(m.tasks, m.majority)) + ". Perplexity on "
             f"{Path(probe.get('source') or 'the probe text').name} ({probe.get('tokens') or 0:,} tokens, window "
             f"{probe.get('window', '–')}); self-perplexity and KL to base on text sampled from the base model "
             "itself; weight drift ‖ΔW‖/‖W‖. Forgetting: " + (m.forgetting_definition or "–") + ".", ""]
    for label in labels:
        lines += _matrix(m, label)
    verdicts = [v["verdict"] for v in m.learnability if v.get("verdict")]
    if verdicts:
        lines += ["## Was each task learned?", "", *[f"- {v}" for v in verdicts], ""]
    if pushed:
        lines += serving(run.id, base, first, k)
    lines += ["## The exact config", "", "```yaml", config_yaml.rstrip("\n"), "```", ""]
    return "\n".join(lines)
