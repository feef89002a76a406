"""The chat-retention probe: does a fine-tuned chat model still answer like the base model, still know its facts,
and still end its turns? Measured after every stage on committed probe data (assets/probes/chat/, README there).

- **base replies** (`load_or_make`, once, from the unadapted model): greedy replies to the first
  `chat_probe_instructions` instructions of instructions.jsonl, each sent alone through the model's chat template
  (no system message: the template's own default system prompt where it injects one), at most `chat_probe_tokens`
  new tokens, ending at a stop token (the tokenizer's eos, the generation config's eos ids, the template's
  end-of-turn marker such as SmolLM2's <|im_end|>) or at the marker's text where the tokenizer splits it. Stored in
  the run folder as `chat_probe.json` (settings, prompt ids, reply ids, the end-of-turn ids each reply ended with,
  decoded replies) with the base model's next-token log-probabilities on the reply positions beside it in
  `chat_probe_ref.safetensors` (probes.span_reference: the full distribution up to probes.FULL_VOCAB_MAX entries,
  else the top probes.TOP_K plus a remainder bucket, float64). A study writes them once in its own folder and its
  runs name it (probes.share_reference with this module's file names), so the base is measured once.
- **per stage** (`measures`; stored as Row fields: the schema is in curlora/measure/record.py):
    chat_kl              mean per-token KL(base ‖ model) over the base's reply tokens, end-of-turn included,
                         teacher-forced (prompt + base reply): exactly 0 for an unchanged model
    facts, facts_n       greedy answers (at most FACT_TOKENS new tokens) to the first `chat_probe_facts` questions of
                         facts.csv, through the template; k of n right (`Fact.correct`)
    facts_correct        which of them, as hex bits (curlora/measure/stats.py to_bits)
    replies_unterminated how many of the model's own greedy replies to the instructions reach the token cap without
                         ending their turn
    replies_repetitive   how many of those replies repeat themselves (`repetitive`)
- **normalise** (facts): the reply's first non-empty line, lower-cased; every character that is not a letter or a
  digit becomes a space; the articles a, an, the are dropped; words joined by one space. A reply is right when the
  normalised answer or one of its aliases (| separated in facts.csv) is the whole normalised reply or stands in it
  as whole words ("The capital of France is Paris." holds "paris"; "-18.00 degrees" does not hold "0"). Whole-word
  containment, not equality: SmolLM2-135M-Instruct answers every question in a sentence despite "Answer with one
  word." (0 of 36 by equality, its first line right in most). No answer occurs in its own question, so echoing
  the question scores nothing (tests/test_chat_probe.py checks the data).
- **repetitive**: a reply repeats itself when one token id runs RUN_LENGTH (8) or more times in a row, or one word
  NGRAM-gram (4 words, lower-cased, split on white space, overlapping) occurs NGRAM_TIMES (3) or more times.

Generation is batched with left padding (position ids from the attention mask) and the KV cache, so a stage costs
a few batched decoding passes. The chat template itself is applied by the caller (curlora/run/chat_format.py, in
the run layer this package never imports): `Chat` carries the rendered prompt ids of a text and the stops. A
tokenizer without a chat template runs no chat probe (the runner logs why; the fields stay null).
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from curlora.errors import check_stop
from curlora.measure import probes
from curlora.measure.encode import pad_batch
from curlora.measure.forward import tail_forward
from curlora.measure.stats import to_bits
from curlora.paths import ASSETS

CHAT_DIR = ASSETS / "probes" / "chat"
PROBE_FILE = "chat_probe.json"
REF_FILE = "chat_probe_ref.safetensors"
FACT_TOKENS = 16  # new tokens for a factual answer: a word or a number, with room for a short sentence
RUN_LENGTH = 8
NGRAM, NGRAM_TIMES = 4, 3
FIELDS = ("chat_kl", "facts", "facts_n", "facts_correct", "replies_unterminated", "replies_repetitive")


# -- the committed probe data ------------------------------------------------------------------------------------
def instructions(limit: int | None = None, folder: Path = CHAT_DIR) -> list[dict]:
    """The first `limit` instructions ({"id", "instruction", ...}; all of them when None)."""
    rows = [json.loads(line) for line in (folder / "instructions.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()]
    return rows if limit is None else rows[:limit]


@dataclass(frozen=True)
class Fact:
    id: str
    question: str
    answer: str
    aliases: tuple[str, ...] = ()
    source: str = ""

    def correct(self, reply: str) -> bool:
        """Whether the normalised answer or an alias is the normalised reply, or stands in it as whole words."""
        said = f" {normalise(reply)} "
        return any(f" {a} " in said for a in {normalise(a) for a in (self.answer, *self.aliases)} if a)


def facts(limit: int | None = None, folder: Path = CHAT_DIR) -> list[Fact]:
    """The first `limit` factual questions of facts.csv (all of them when None)."""
    with open(folder / "facts.csv", encoding="utf-8", newline="") as f:
        rows = [Fact(r["id"], r["question"], r["answer"], tuple(a for a in (r["aliases"] or "").split("|") if a),
                     r.get("source") or "") for r in csv.DictReader(f)]
    return rows if limit is None else rows[:limit]


# -- scoring rules -----------------------------------------------------------------------------------------------
_NOT_WORD = re.compile(r"[^\w]|_")
_ARTICLES = {"a", "an", "the"}


def normalise(text: str) -> str:
    """The comparable form of a short answer (module docstring): 'The Pacific Ocean.' -> 'pacific ocean'."""
    line = next((x for x in (text or "").splitlines() if x.strip()), "")
    words = _NOT_WORD.sub(" ", line.lower()).split()
    return " ".join(w for w in words if w not in _ARTICLES)


def longest_run(ids: list[int]) -> int:
    """The longest run of one token id in a row."""
    best = run = 0
    prev = None
    for t in ids:
        run = run + 1 if t == prev else 1
        prev = t
        best = max(best, run)
    return best


def most_repeated(text: str, n: int = NGRAM) -> int:
    """How often the most frequent word n-gram (lower-cased, split on white space, overlapping) occurs."""
    words = (text or "").lower().split()
    grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return max(grams.values(), default=0)


def repetitive(ids: list[int], text: str) -> bool:
    """Whether a reply repeats itself: a token run of RUN_LENGTH or more, or a word NGRAM-gram NGRAM_TIMES times."""
    return longest_run(ids) >= RUN_LENGTH or most_repeated(text) >= NGRAM_TIMES


# -- greedy replies, batched ---------------------------------------------------------------------------------------
@dataclass
class Chat:
    """What the caller's chat template gives the probe: `render(text)` -> prompt ids of a one-message conversation
    ready for the reply, the token ids and texts that end a reply, and the padding id."""
    render: Callable[[str], list[int]]
    stop_ids: set[int]
    stop_texts: tuple[str, ...] = ()
    pad: int = 0


@dataclass
class Reply:
    ids: list[int]  # the reply's tokens, before its end of turn
    end: list[int]  # the token(s) that ended it ([] when it hit the cap)
    text: str

    @property
    def terminated(self) -> bool:
        return bool(self.end)


def _cut_at_text(tok, ids: list[int], stops: tuple[str, ...]) -> tuple[list[int], list[int], str] | None:
    """(reply ids, end ids, reply text) when the decoded ids contain a stop text, else None."""
    text = tok.decode(ids, skip_special_tokens=False)
    cut = min((text.find(s) for s in stops if s in text), default=-1)
    if cut < 0:
        return None
    head = text[:cut]
    j = len(ids)
    while j > 0 and not head.startswith(tok.decode(ids[:j], skip_special_tokens=False)):
        j -= 1
    return ids[:j], ids[j:], tok.decode(ids[:j], skip_special_tokens=True)


@torch.no_grad()
def greedy(model, tok, prompts: list[list[int]], max_new: int, chat: Chat, batch_size: int = 32,
           should_stop=None) -> list[Reply]:
    """Greedy replies to `prompts` (ids), `batch_size` at a time, left-padded, through the KV cache; each ends at a
    stop id, at a stop text, or after `max_new` tokens (or at the model's position limit)."""
    limit = getattr(model.config, "max_position_embeddings", None)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[Reply] = []
    try:
        for start in range(0, len(prompts), batch_size):
            group = prompts[start:start + batch_size]
            ids, mask = pad_batch(group, chat.pad, left=True)[:2]
            steps = max_new if not limit else max(0, min(max_new, limit - ids.shape[1]))
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            made = [[] for _ in group]
            ended: list[list[int] | None] = [None] * len(group)
            cut: list[tuple | None] = [None] * len(group)
            past = None
            for _ in range(steps):
                check_stop(should_stop)
                # after the first step only the newest token goes through the model (a model that returns no cache
                # gets the whole sequence again)
                fresh = slice(None) if past is None else slice(-1, None)
                inputs = {"input_ids": ids[:, fresh].to(device), "attention_mask": mask.to(device),
                          "position_ids": positions[:, fresh].to(device), "use_cache": True}
                if past is not None:
                    inputs["cache"] = past
                res = tail_forward(model, 1, **inputs)
                nxt = res.logits[:, -1].float().argmax(-1).cpu().tolist()
                past = getattr(res, "cache", None) or getattr(res, "past_key_values", None)
                for i, t in enumerate(nxt):
                    if ended[i] is not None:
                        continue
                    if t in chat.stop_ids:
                        ended[i] = [t]
                        continue
                    made[i].append(t)
                    if chat.stop_texts:
                        found = _cut_at_text(tok, made[i], chat.stop_texts)
                        if found is not None:
                            cut[i], ended[i] = found, found[1]
                if all(e is not None for e in ended):
                    break
                feed = torch.tensor([[t if ended[i] is None else chat.pad] for i, t in enumerate(nxt)])
                ids = torch.cat([ids, feed], dim=1)
                mask = torch.cat([mask, torch.ones(len(group), 1, dtype=mask.dtype)], dim=1)
                positions = torch.cat([positions, positions[:, -1:] + 1], dim=1)
            for i in range(len(group)):
                if cut[i] is not None:
                    reply_ids, end, text = cut[i]
                else:
                    reply_ids, end = made[i], ended[i] or []
                    text = tok.decode(reply_ids, skip_special_tokens=True)
                out.append(Reply(reply_ids, end, text))
    finally:
        model.train(was_training)
    return out


# -- the probe: base replies once, measures per stage --------------------------------------------------------------
@dataclass
class ChatProbe:
    """The base's replies (prompt ids, reply + end ids), their reference, the fact questions, the settings."""
    prompts: list[list[int]]
    targets: list[list[int]]  # each base reply's tokens and the end-of-turn token(s) it ended with
    ref: dict[str, torch.Tensor]
    facts: list[Fact]
    fact_prompts: list[list[int]]
    info: dict = field(default_factory=dict)

    @property
    def seqs(self) -> list[list[int]]:
        return [p + t for p, t in zip(self.prompts, self.targets)]


def settings(instructions_n: int, tokens: int, facts_n: int | None) -> dict:
    return {"instructions": instructions_n, "tokens": tokens, "facts": facts_n, "fact_tokens": FACT_TOKENS}


def load_or_make(folder: Path | None, model, tok, chat: Chat, instructions_n: int, tokens: int,
                 facts_n: int | None = None, batch_size: int = 32, write: bool = True,
                 should_stop=None) -> ChatProbe:
    """The chat probe of a run: read back from the run folder when a stage already made it (resume; the reference
    maybe in the study folder its chat_probe.json names), else the base replies generated from the (unadapted)
    `model` and stored there. Stored replies made with other settings or another template are made again."""
    asked = instructions(instructions_n)
    fs = facts(facts_n)
    fact_prompts = [chat.render(f.question) for f in fs]
    prompts = [chat.render(x["instruction"]) for x in asked]
    want = settings(len(asked), tokens, facts_n)
    if folder is not None and (folder / PROBE_FILE).is_file():
        stored = json.loads((folder / PROBE_FILE).read_text(encoding="utf-8"))
        path = probes.reference_path(folder, stored, REF_FILE)
        same = stored.get("prompt_ids") == prompts and all(stored.get("info", {}).get(k) == v
                                                           for k, v in want.items())
        if path is not None and same:
            targets = [r + e for r, e in zip(stored["reply_ids"], stored["end_ids"])]
            return ChatProbe(prompts, targets, load_file(str(path)), fs, fact_prompts, stored["info"])
    replies = greedy(model, tok, prompts, tokens, chat, batch_size, should_stop)
    targets = [r.ids + r.end for r in replies]
    ref = probes.span_reference(model, [p + t for p, t in zip(prompts, targets)], [len(t) for t in targets],
                                chat.pad, should_stop=should_stop)
    info = {**want, "file": PROBE_FILE,
            "reference": "full" if "index" not in ref else f"top-{ref['index'].shape[-1]}",
            "ids": [x["id"] for x in asked]}
    if folder is not None and write:
        body = {"info": info, "prompt_ids": prompts, "reply_ids": [r.ids for r in replies],
                "end_ids": [r.end for r in replies], "replies": [r.text for r in replies],
                "terminated": [r.terminated for r in replies],
                "repetitive": [repetitive(r.ids, r.text) for r in replies]}
        (folder / PROBE_FILE).write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
        save_file({k: v.contiguous() for k, v in ref.items()}, str(folder / REF_FILE))
    return ChatProbe(prompts, targets, ref, fs, fact_prompts, info)


def measures(model, tok, probe: ChatProbe, chat: Chat, batch_size: int = 32, should_stop=None) -> dict:
    """One stage's chat-probe fields (FIELDS) of `model` (module docstring)."""
    targets = probe.targets
    kl = probes.span_kl(model, probe.seqs, [len(t) for t in targets], chat.pad, probe.ref, should_stop=should_stop) \
        if any(targets) else 0.0
    own = greedy(model, tok, probe.prompts, probe.info.get("tokens", 96), chat, batch_size, should_stop)
    answers = greedy(model, tok, probe.fact_prompts, FACT_TOKENS, chat, batch_size, should_stop)
    right = [f.correct(a.text) for f, a in zip(probe.facts, answers)]
    return {"chat_kl": kl, "facts": sum(right), "facts_n": len(right), "facts_correct": to_bits(right),
            "replies_unterminated": sum(not r.terminated for r in own),
            "replies_repetitive": sum(repetitive(r.ids, r.text) for r in own)}
