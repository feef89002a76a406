"""Drift probes that need no reference corpus, and the learnability verdict: forgetting measured fairly.

A method can "forget nothing" by learning nothing, and perplexity on someone else's corpus can improve while the
model drifts from what it knew. These probes show both:

- **self-sampled probe text** (`sample_self_probe`): before training, N texts sampled from the base model itself
  (seeded, fixed length, sampled on the CPU generator so every device picks the same tokens). They are stored in
  the run folder as `self_probe.json` (settings, token ids, decoded texts) with the base model's next-token
  log-probabilities beside them in `self_probe_ref.safetensors` (float64): the full distribution when the
  vocabulary is at most `FULL_VOCAB_MAX`, else its top `TOP_K` entries plus one remainder bucket, so memory
  stays bounded.
- **self-ppl and KL to base** (`self_probe_measures`): perplexity of a model on those texts, and the mean per-token
  KL(base ‖ model) of next-token distributions. With top-k it is the KL of the (top-k + remainder) coarsening,
  a lower bound on the full KL that is exactly 0 for an unchanged model.
- **weight drift** (`weight_drift`): ‖ΔW‖_F / ‖W‖_F per adapted matrix and in total (√Σ‖ΔW‖² / √Σ‖W‖²). LoRA:
  ΔW = scaling · B A, ‖B A‖²_F = tr((BᵀB)(A Aᵀ)); CURLoRA: ΔW = α C U R, ‖C U R‖²_F = tr((CᵀC) U (R Rᵀ) Uᵀ) —
  r × r products only, never m × n. Full fine-tuning: current weights against the snapshot of the base, over
  every parameter with two or more dimensions. Matrix names are the base model's module names
  (`model.layers.0.self_attn.q_proj`), the same for LoRA and CURLoRA; for `full` they are parameter names
  (`model.layers.0.self_attn.q_proj.weight`).
- **learnability** (`learnability`, `task_test`): per task, the majority-class share, the base and head-only
  scores, each method's accuracy right after training the task with a one-sided test against each of those lines
  (exact binomial against the majority share; exact McNemar on the same rows against the base and the control),
  and the methods whose every test has p < 0.05. A margin is never a verdict.

The metrics.json fields these add (self_probe, self_ppl, kl_to_base, drift, learnability, the TrainRecord
fields of matched-loss runs) are written once, in curlora/measure/record.py's docstring.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import peft
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from curlora.adapter.layer import CURLoRALayer, math_weight
from curlora.errors import CurloraError, check_stop
from curlora.measure import stats
from curlora.measure.forward import next_token_logits, tail_logits
from curlora.measure.perplexity import LOGITS_BUDGET, vocab_size
from curlora.measure.record import RunMetrics

PROBE_FILE = "self_probe.json"
REF_FILE = "self_probe_ref.safetensors"
# A study's points share the study's reference (16.7 MB on GPT-2's vocabulary, once per study instead of per point):
# their self_probe.json names the sibling folder that holds it.
SHARED_REF = "reference_in"
_FOLDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
FULL_VOCAB_MAX = 4096  # below this the full base distribution is stored: N·L·V floats stay small
TOP_K = 64


# -- self-sampled probe text -------------------------------------------------------------------------------
def _start_token(tokenizer) -> int:
    for tid in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


@torch.no_grad()
def sample_self_probe(model, tokenizer, texts: int = 8, tokens: int = 64, temperature: float = 1.0,
                      seed: int = 0, should_stop=None) -> torch.Tensor:
    """`texts` × (1 + `tokens`) token ids sampled from `model`, each starting at the BOS (or EOS) token.

    Fixed length (an end-of-text token is just another token), so the probes batch without padding. Sampling
    draws from a seeded CPU generator in float64: the same seed gives the same texts on any device.
    Temperature 0 is greedy decoding. Raises curlora.errors.Cancelled between tokens once `should_stop()` is true.
    """
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    if limit and tokens + 1 > limit:
        raise CurloraError(f"evaluation.self_probe_tokens: {tokens} tokens do not fit this model's {limit} positions; "
                           f"use at most {limit - 1}.")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(int(seed))
    ids = torch.full((texts, 1), _start_token(tokenizer), dtype=torch.long)
    past = None
    try:
        for _ in range(tokens):
            check_stop(should_stop)
            # one new token per step through the KV cache, logits at the last position only
            logits, past = next_token_logits(model, ids.to(device), past)
            logits = logits.double().cpu()
            if temperature <= 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                nxt = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=g)
            ids = torch.cat([ids, nxt], dim=1)
    finally:
        model.train(was_training)
    return ids


@torch.no_grad()
def _log_probs(model, ids: torch.Tensor) -> torch.Tensor:
    """Next-token log-probabilities (texts × (L-1) × V, float32 on the CPU) at every position but the last.

    float32, not float64: the log-softmax of bf16/fp32 logits gains nothing from more digits, and at 152k entries
    per position float64 doubles the cost. The base and every later model go through this same path, so an
    unchanged model still gives q == p bit for bit."""
    was_training = model.training
    model.eval()
    try:
        logits = tail_logits(model, ids.shape[1], input_ids=ids.to(next(model.parameters()).device))[:, :-1]
    finally:
        model.train(was_training)
    return F.log_softmax(logits.float(), dim=-1).cpu()


def _coarsen(logp: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """Log-probabilities (float64) of the entries `index` plus a last remainder bucket (all of `logp` if index is
    None)."""
    if index is None:
        return logp.double()
    top = logp.gather(-1, index).double()
    rest = torch.clamp(1.0 - top.exp().sum(-1, keepdim=True), min=0.0)
    return torch.cat([top, torch.log(rest)], dim=-1)


def _groups(model, ids: torch.Tensor):
    """The probe texts a few at a time (index of the first, the texts' log-probabilities): as many together as keep
    their float32 logits and log-softmax within the perplexity's logits budget (GPT-2, 8 x 65 tokens: all 8; a
    152k vocabulary: 6), one at least. The base and every later model are grouped alike, so q == p stays exact."""
    vocab = vocab_size(model) or 0
    per_text = 2 * ids.shape[1] * vocab * 4
    size = max(1, LOGITS_BUDGET // per_text) if per_text else ids.shape[0]
    for start in range(0, ids.shape[0], size):
        yield start, _log_probs(model, ids[start:start + size])


def reference(model, ids: torch.Tensor, top_k: int = TOP_K, should_stop=None) -> dict[str, torch.Tensor]:
    """The base model's next-token distributions on the probe: {"logp"} in full, or {"logp", "index"} top-k.

    A few texts at a time (see _groups), so a 128k vocabulary costs a few texts' L × V floats, not N of them."""
    return _collect(_groups(model, ids), torch.stack, top_k, should_stop)


def _collect(groups, join, top_k: int, should_stop) -> dict[str, torch.Tensor]:
    """{"logp"[, "index"]} of every entry of `groups` ((start, [log-probabilities]) pairs) coarsened by
    coarse_reference and joined by `join` (torch.stack per text, torch.cat for flat spans), checking for a stop
    between groups."""
    logps, indices = [], []
    check_stop(should_stop)
    for _, group in groups:
        for logp in group:
            p, index = coarse_reference(logp, top_k)
            logps.append(p)
            if index is not None:
                indices.append(index)
        check_stop(should_stop)
    ref = {"logp": join(logps)}
    if indices:
        ref["index"] = join(indices)
    return ref


def coarse_reference(logp: torch.Tensor, top_k: int = TOP_K) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(the base's stored log-probabilities, the top-k index or None) of positions × V log-probabilities: all of
    them up to FULL_VOCAB_MAX entries, else the top `top_k` plus one remainder bucket (`_coarsen`)."""
    index = None
    if logp.shape[-1] > FULL_VOCAB_MAX:
        index = logp.topk(min(top_k, logp.shape[-1]), dim=-1).indices
    return _coarsen(logp, index), index


def kl_sum(p: torch.Tensor, logq: torch.Tensor, index: torch.Tensor | None) -> float:
    """Σ over positions of KL(base ‖ model): `p` the stored reference (coarse_reference), `logq` the model's
    log-probabilities at the same positions, coarsened the same way (float64 on both sides, computed alike: an
    unchanged model gives q == p bit for bit, and exactly 0)."""
    q = _coarsen(logq, index)
    # a bucket the base gives probability 0 contributes nothing, whatever q says
    terms = torch.where(p > -math.inf, p.exp() * (p - torch.clamp(q, min=-700.0)), torch.zeros_like(p))
    return float(terms.sum())


def _span_groups(model, seqs: list[list[int]], spans: list[int], pad: int):
    """Teacher-forced log-probabilities (float32, CPU) of sequences of any length, a few at a time: (index of the
    group's first sequence, [span_i × V per sequence]) where a sequence's entry predicts its last `span_i` tokens.
    Left padding (with position ids from the mask), so every span ends at the batch's last position and only the
    last max(span) + 1 positions' logits are computed; as many sequences together as keep those logits and their
    log-softmax within the perplexity's logits budget, one at least. The grouping depends on the sequences only, so
    the base and every later model see the same batches (an unchanged model: q == p exactly)."""
    from curlora.measure.encode import pad_batch

    vocab = vocab_size(model) or 0
    device = next(model.parameters()).device
    start = 0
    while start < len(seqs):
        end = start + 1
        while end < len(seqs) and (end + 1 - start) * (max(spans[start:end + 1]) + 1) * vocab * 8 <= LOGITS_BUDGET:
            end += 1
        keep = max(spans[start:end]) + 1
        ids, mask = pad_batch(seqs[start:end], pad, left=True)[:2]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                logits = tail_logits(model, keep, input_ids=ids.to(device), attention_mask=mask.to(device),
                                     position_ids=positions.to(device))[:, :-1]
        finally:
            model.train(was_training)
        logp = F.log_softmax(logits.float(), dim=-1).cpu()
        yield start, [logp[i, logp.shape[1] - spans[start + i]:] for i in range(end - start)]
        start = end


def span_reference(model, seqs: list[list[int]], spans: list[int], pad: int, top_k: int = TOP_K,
                   should_stop=None) -> dict[str, torch.Tensor]:
    """The base model's next-token distributions on the last `spans[i]` tokens of each sequence, flat (Σ spans
    rows, sequence after sequence): {"logp"} in full, or {"logp", "index"} top-k (coarse_reference)."""
    return _collect(_span_groups(model, seqs, spans, pad), torch.cat, top_k, should_stop)


def span_kl(model, seqs: list[list[int]], spans: list[int], pad: int, ref: dict[str, torch.Tensor],
            should_stop=None) -> float:
    """Mean per-token KL(base ‖ model) over the spans of `span_reference` (same sequences, same spans)."""
    total, at = 0.0, 0
    check_stop(should_stop)
    for _, group in _span_groups(model, seqs, spans, pad):
        for logq in group:
            n = logq.shape[0]
            index = ref["index"][at:at + n] if "index" in ref else None
            total += kl_sum(ref["logp"][at:at + n], logq, index)
            at += n
        check_stop(should_stop)
    return max(total / at, 0.0) if at else 0.0


def self_probe_measures(model, ids: torch.Tensor, ref: dict[str, torch.Tensor],
                        should_stop=None) -> dict[str, float]:
    """{"self_ppl", "kl_to_base"} of `model` on the probe ids against the base reference (Cancelled between
    groups of texts once `should_stop()` is true)."""
    nll, kl = 0.0, 0.0
    check_stop(should_stop)
    for start, group in _groups(model, ids):
        for j, logq in enumerate(group):
            i = start + j
            row = ids[i]
            nll -= float(logq.gather(-1, row[1:, None]).double().sum())
            kl += kl_sum(ref["logp"][i], logq, ref["index"][i] if "index" in ref else None)
        check_stop(should_stop)
    n = ids.shape[0] * (ids.shape[1] - 1)
    return {"self_ppl": math.exp(nll / n), "kl_to_base": max(kl / n, 0.0)}


def load_or_sample(folder: Path | None, model, tokenizer, texts: int, tokens: int, temperature: float,
                   seed: int, write: bool = True, should_stop=None) -> tuple[torch.Tensor, dict, dict]:
    """(ids, reference, info): read from the run folder when a stage already sampled them (resume) — the reference
    maybe from the study folder its self_probe.json names (`share_reference`) — else sample from the (unadapted)
    `model` and store them there (also when a shared reference is gone: the same seed samples the same texts)."""
    if folder is not None and (folder / PROBE_FILE).is_file():
        stored = json.loads((folder / PROBE_FILE).read_text(encoding="utf-8"))
        path = reference_path(folder, stored)
        if path is not None:
            return torch.tensor(stored["ids"], dtype=torch.long), load_file(str(path)), stored["info"]
    ids = sample_self_probe(model, tokenizer, texts, tokens, temperature, seed, should_stop=should_stop)
    ref = reference(model, ids, should_stop=should_stop)
    info = {"texts": texts, "tokens": tokens, "temperature": temperature, "seed": seed, "file": PROBE_FILE,
            "reference": "full" if "index" not in ref else f"top-{ref['index'].shape[-1]}"}
    if folder is not None and write:
        body = {"info": info, "ids": ids.tolist(), "texts": tokenizer.batch_decode(ids, skip_special_tokens=True)}
        (folder / PROBE_FILE).write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
        save_file({k: v.contiguous() for k, v in ref.items()}, str(folder / REF_FILE))
    return ids, ref, info


def reference_path(folder: Path, stored: dict, ref_file: str = REF_FILE) -> Path | None:
    """Where the reference of `folder`'s self-probe is (or of another probe stored the same way, `ref_file`): its
    own file, else the one in the sibling folder its probe file names (a plain folder name in the same store,
    never a path); None when neither exists."""
    if (folder / ref_file).is_file():
        return folder / ref_file
    name = stored.get(SHARED_REF)
    if isinstance(name, str) and _FOLDER_NAME.match(name) and ".." not in name:
        shared = folder.parent / name / ref_file
        if not (folder.parent / name).is_symlink() and shared.is_file():
            return shared
    return None


def share_reference(source: Path, dest: Path, probe_file: str = PROBE_FILE, ref_file: str = REF_FILE) -> bool:
    """Give run folder `dest` the self-probe of folder `source` (a study's), sharing its reference file rather
    than copying it: dest's self_probe.json names source. False when source has no self-probe. `probe_file` and
    `ref_file` share another probe stored the same way (the chat probe, the task KL: curlora/measure/chat_probe.py)."""
    if not ((source / probe_file).is_file() and (source / ref_file).is_file()):
        return False
    body = json.loads((source / probe_file).read_text(encoding="utf-8"))
    body[SHARED_REF] = source.name
    (dest / probe_file).write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
    return True


# -- weight drift ------------------------------------------------------------------------------------------
def _lora_sq_norm(a: torch.Tensor, b: torch.Tensor, scaling: float) -> torch.Tensor:
    a, b = a.detach().double(), b.detach().double()
    return scaling ** 2 * torch.trace((b.T @ b) @ (a @ a.T))


@torch.no_grad()
def weight_drift(model, snapshot: dict[str, torch.Tensor] | None = None) -> dict:
    """{"total": ‖ΔW‖/‖W‖ over all adapted matrices, "per_matrix": {name: ‖ΔW‖/‖W‖}} (see the module docstring).

    `snapshot` (parameter name → base tensor) is for a fully fine-tuned model; a model with neither adapters
    nor a snapshot has drifted 0."""
    pairs: dict[str, tuple[float, float]] = {}  # name -> (‖ΔW‖², ‖W‖²)
    for name, mod in model.named_modules():
        if isinstance(mod, CURLoRALayer):
            keys = [a for a in mod.active_adapters if a in mod.curlora_factors]
            d2 = sum(mod.curlora_factors[a].delta_sq_norm() for a in keys)
        elif isinstance(mod, peft.tuners.lora.LoraLayer):
            keys = [k for k in mod.active_adapters if k in mod.lora_A]
            d2 = sum(float(_lora_sq_norm(mod.lora_A[k].weight, mod.lora_B[k].weight, mod.scaling[k])) for k in keys)
        else:
            continue
        if keys:
            pairs[name.removeprefix("base_model.model.")] = (d2, float(math_weight(mod).double().pow(2).sum()))
    if not pairs and snapshot is not None:
        for name, p in model.named_parameters():
            if p.ndim >= 2 and name in snapshot:
                base = snapshot[name].to(p.device).double()
                pairs[name] = (float((p.double() - base).pow(2).sum()), float(base.pow(2).sum()))
    per = {n: math.sqrt(d2 / w2) if w2 > 0 else 0.0 for n, (d2, w2) in pairs.items()}
    w_all = sum(w2 for _, w2 in pairs.values())
    total = math.sqrt(sum(d2 for d2, _ in pairs.values()) / w_all) if w_all > 0 else 0.0
    return {"total": total, "per_matrix": per}


# -- learnability ------------------------------------------------------------------------------------------
def task_test(cell: dict, majority: float | None, base: dict | None = None, control: dict | None = None) -> dict:
    """Whether one accuracy cell (a method right after training a task) beats every line a learned task must clear,
    each by a one-sided test at p < 0.05 (curlora/measure/stats.py):

    - the majority-class share: exact binomial, k of n against that share;
    - the base model and the head-only control: exact McNemar on the same rows when both cells kept their per-row
      correctness, else (a run stored without it) binomial against their accuracy, marked `unpaired`.

    The task counts as learned when the largest of those p-values is below 0.05 (each line must be cleared).
    `cell`, `base`, `control` are MethodRecord.cell() dicts. Returns {score, n, k, p_value, p: {line: p},
    unpaired: [lines], learned}; without a row count nothing can be tested (learned False, p_value None)."""
    acc, n = cell.get("accuracy"), cell.get("n")
    out = {"score": acc, "n": n, "k": None, "p_value": None, "p": {}, "unpaired": [], "learned": False}
    if acc is None or not n:
        return out
    own = cell.get("correct")
    k = sum(own) if own is not None else round(acc * n)
    out["k"] = k
    if majority is not None:
        out["p"]["majority"] = stats.binom_greater(k, n, majority)
    for name, other in (("base", base), ("head_only", control)):
        if not other or other.get("accuracy") is None:
            continue
        theirs = other.get("correct")
        if own is not None and theirs is not None and len(theirs) == len(own):
            out["p"][name] = stats.mcnemar_greater(*stats.discordant(own, theirs))
        else:
            out["p"][name] = stats.binom_greater(k, n, other["accuracy"])
            out["unpaired"].append(name)
    out["p_value"] = max(out["p"].values()) if out["p"] else None
    out["learned"] = out["p_value"] is not None and out["p_value"] < stats.ALPHA
    return out


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def learnability(m: RunMetrics, untrained: set[str] = frozenset(), control: str | None = None) -> list[dict]:
    """Per task: the lines a learned task must clear, each method's test right after training it (`task_test`),
    which methods learned it, and the verdict in one sentence with n, the score and the p-value.

    `untrained` are the labels of methods that never train (the base), `control` the label of the head-only
    control if the run has one: the runner names them from the method registry, so no kind is spelled here."""
    tasks, majority = m.tasks, m.majority
    base_row = m.base
    recs = m.methods
    head_only = recs.get(control) if control else None
    out = []
    for j, name in enumerate(tasks):
        base_cell = base_row.cell(j) if base_row is not None else None
        base_cell = base_cell if base_cell and base_cell["accuracy"] is not None else None
        ho = head_only.cell(j + 1, j) if head_only and head_only.stages_done > j else None
        ho = ho if ho and ho["accuracy"] is not None else None
        tests = {}
        for label, rec in recs.items():
            if label in untrained or label == control or rec.stages_done <= j:
                continue
            cell = rec.cell(j + 1, j)
            if cell["accuracy"] is not None:
                tests[label] = task_test(cell, majority[j] if j < len(majority) else None, base_cell, ho)
        after = {label: t["score"] for label, t in tests.items()}
        learned = [label for label, t in tests.items() if t["learned"]]
        parts = [f"the majority-class share ({majority[j]:.3f})"]
        if base_cell is not None:
            parts.append(f"the base model ({base_cell['accuracy']:.3f})")
        if ho is not None:
            parts.append(f"the head-only control ({ho['accuracy']:.3f})")
        lines = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]

        def said(label):
            t = tests[label]
            if t["p_value"] is None:
                return f"{label} {t['score']:.3f} (no row count stored: not testable)"
            return f"{label} {t['k']}/{t['n']} ({_p(t['p_value'])})"

        if not tests:
            verdict = f"Task '{name}' has not been trained yet."
        elif learned:
            verdict = (f"Task '{name}' was learned by {', '.join(said(k) for k in learned)}: above {lines}, "
                       "one-sided at p < 0.05.")
        else:
            verdict = (f"No method learned task '{name}': right after training it, none scored above {lines} at "
                       f"p < 0.05 ({'; '.join(said(k) for k in tests)}), so forgetting on this task says "
                       "nothing about the methods.")
        out.append({"task": name, "majority": majority[j], "base": base_cell["accuracy"] if base_cell else None,
                    "head_only": ho["accuracy"] if ho else None, "after_training": after, "tests": tests,
                    "learned_by": learned, "verdict": verdict})
    return out
