"""A merged stage as one GGUF file, for llama.cpp, Ollama and LM Studio, written with the `gguf` package's writer.

    write_gguf(model, tokenizer, path, "q8_0")        # any loaded Llama-family model (a merged stage, a base)
    export_gguf(run, "curlora", 2, path, "f16")       # `curlora export RUN --method M --stage K --gguf FILE`

The file is what llama.cpp's own convert_hf_to_gguf.py writes for a Llama: architecture "llama" with its hyper-
parameters, the tokenizer (byte-level BPE, or sentencepiece-style BPE with byte fallback: tokens, merges, token
types, scores for the latter, special ids, the chat template), and the tensors under llama.cpp's names, with q and k
rows permuted into llama.cpp's rotary layout (transformers' GGUF loader undoes exactly that permutation). 1-D tensors (norms, biases) stay float32; matrices are F16, or Q8_0 (blocks of 32
with one f16 scale) where a row's length is a multiple of 32, and F16 where it isn't, as llama.cpp falls back.

Read back through transformers' GGUF loader, every weight is the merged model's weight rounded as the type rounds it
(bit for bit), so the logits differ by that rounding only. Measured max |Δ logit| against the merged model
(tests/test_export_formats.py asserts TOLERANCE on the tiny model; bench/export_formats.py measures the rest,
docs/export.md has the table):
    tiny random Llama (hidden 32, 2 layers):   F16 1.4e-4 (bound 5e-4)    Q8_0 4.5e-3 (bound 1e-2)
    bundled kjv-llama-5m (logit std 2.9):       F16 4.4e-3                 Q8_0 1.3e-1, top-1 token 99.6 % same
    SmolLM2-135M-Instruct (logit std 7.7):      F16 2.5 (mean 0.02)        Q8_0 8.8 (mean 0.22), top-1 97.3 % same;
                                                perplexity 13.259 -> 13.243 (F16) / 13.232 (Q8_0)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from curlora.errors import CurloraError
from curlora.run.store import Run
from curlora.share.export_lora import check_destination, finished_stage, method_kind, publish

GGUF_TYPES = ("f16", "q8_0")
ARCHITECTURES = ("llama",)  # model_type values written as llama.cpp's "llama" architecture
# Bounds the tests assert on the tiny random Llama (measured max |Δ logit| well inside them, see the docstring).
TOLERANCE = {"f16": 5e-4, "q8_0": 1e-2}
QK8_0 = 32  # Q8_0's block: a row must be a whole number of blocks

# The pre-tokenizer's regex split, as llama.cpp names it (tokenizer.ggml.pre), recognised from tokenizer.json's
# pre_tokenizer. An unknown one is written "default": llama.cpp then splits as GPT-2 and warns.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
                r"\s+(?!\S)|\s+")


def check_architecture(model) -> None:
    config = model.config.get_text_config()
    kind = getattr(config, "model_type", None) or type(model).__name__
    if kind not in ARCHITECTURES:
        raise CurloraError(f"GGUF export writes Llama-family models only, and this base is a {kind} model "
                           f"({type(model).__name__}); export it as LoRA or merged safetensors instead.")
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        raise CurloraError(f"GGUF export writes Llama models with plain RoPE, and this base uses "
                           f"{rope.get('rope_type') or rope.get('type')!r} rope scaling; export it as LoRA or merged "
                           "safetensors instead.")


def permute(w, n_head: int, n_head_kv: int | None = None):
    """llama.cpp's q/k row order: within each head the two rotary halves interleave (convert_hf_to_gguf.py,
    LlamaModel.permute); transformers' GGUF loader applies the inverse (_reverse_permute_weights)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _pre_type(pre: dict | None) -> str:
    """llama.cpp's name for a byte-level BPE's pre-tokenizer."""
    if not pre:
        return "default"
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"  # SmolLM's digits one by one, then GPT-2's split
    if kinds == ["Split", "ByteLevel"] and (steps[0].get("pattern") or {}).get("Regex") == LLAMA3_SPLIT:
        return "llama-bpe"
    return "default"


BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def tokenizer_metadata(tokenizer, vocab_size: int) -> dict:
    """What llama.cpp reads of the tokenizer (tokenizer.ggml.*), from a transformers fast tokenizer: {"model",
    "pre", "tokens", "types", "scores", "merges", "bos", "eos", "unk", "pad", "add_bos", "add_eos", "space_prefix",
    "template"}. Byte-level BPE (GPT-2, Llama 3, SmolLM) is llama.cpp's "gpt2" model; a sentencepiece-style BPE with
    byte fallback (Llama 2, Mistral, TinyLlama) its "llama" model, with scores -id: llama.cpp's SPM tokenizer merges
    the best-scored pair first, and such a vocabulary is numbered in merge order."""
    from gguf import TokenType

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise CurloraError("GGUF export needs the model's fast tokenizer (tokenizer.json); this one has none.")
    data = json.loads(backend.to_str())
    model, pre = data.get("model") or {}, data.get("pre_tokenizer")
    byte_level = "ByteLevel" in json.dumps(pre)
    spm = bool(model.get("byte_fallback")) and not byte_level
    if model.get("type") != "BPE" or not (byte_level or spm):
        raise CurloraError(f"GGUF export writes BPE tokenizers (byte-level as in GPT-2, Llama 3 and SmolLM, or "
                           f"sentencepiece-style with byte fallback as in Llama 2), and this model's is a "
                           f"{model.get('type')} tokenizer without either.")
    vocab = tokenizer.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise CurloraError(f"The tokenizer has ids up to {max(vocab.values())} but the model only {vocab_size} "
                           "embeddings; this model and tokenizer don't belong together.")
    added = {t.content: t for t in getattr(tokenizer, "added_tokens_decoder", {}).values()}
    by_id = {i: t for t, i in vocab.items()}
    tokens, types, scores = [], [], []
    for i in range(vocab_size):
        token = by_id.get(i)
        if token is None:  # embedding rows the tokenizer never produces, named as llama.cpp names them
            token, kind, score = f"[PAD{i}]", TokenType.UNUSED, -1000.0
        elif spm and token == tokenizer.unk_token:  # byte-level vocabularies mark it as the control token it is
            kind, score = TokenType.UNKNOWN, 0.0
        elif token in added:
            kind = TokenType.CONTROL if added[token].special else TokenType.USER_DEFINED
            score = 0.0 if added[token].special else -1000.0
        elif spm and BYTE_TOKEN.fullmatch(token):
            kind, score = TokenType.BYTE, 0.0
        else:
            kind, score = TokenType.NORMAL, -float(i)
        tokens.append(token)
        types.append(int(kind))
        scores.append(score)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    probe = "hello"
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe)["input_ids"]
    first = tokenizer.convert_ids_to_tokens(plain[:1])
    return {
        "model": "llama" if spm else "gpt2", "pre": "default" if spm else _pre_type(pre), "tokens": tokens,
        "types": types, "scores": scores if spm else None, "merges": merges,
        "bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "unk": tokenizer.unk_token_id,
        "pad": tokenizer.pad_token_id,
        # what the tokenizer itself adds around a text, so llama.cpp's prompts start as transformers' do
        "add_bos": bool(tokenizer.bos_token_id is not None and full[:1] == [tokenizer.bos_token_id]
                        and plain[:1] != [tokenizer.bos_token_id]),
        "add_eos": bool(tokenizer.eos_token_id is not None and full[-1:] == [tokenizer.eos_token_id]
                        and plain[-1:] != [tokenizer.eos_token_id]),
        "space_prefix": bool(spm and first and first[0].startswith("\u2581")),  # sentencepiece's leading "▁"
        "template": tokenizer.chat_template if isinstance(getattr(tokenizer, "chat_template", None), str) else None,
    }


def _tensors(model, gguf_type: str):
    """(llama.cpp name, numpy data, raw GGML type or None) for every weight of a Llama model, in llama.cpp's
    layout and the requested type."""
    import gguf
    import numpy as np

    config = model.config.get_text_config()
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    heads, kv = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp reads a missing output.weight as tied to token_embd (transformers too)
        stem, suffix = hf_name.rsplit(".", 1)
        gguf_name = names.get_name(stem)
        if gguf_name is None:
            raise CurloraError(f"GGUF export has no llama.cpp name for the tensor {hf_name!r}; this is not a plain "
                               "Llama model.")
        data = tensor.detach().float().cpu().numpy()
        if stem.endswith(".q_proj"):
            data = permute(data, heads, heads)
        elif stem.endswith(".k_proj"):
            data = permute(data, heads, kv)
        name = f"{gguf_name}.{suffix}"
        if data.ndim == 1:
            yield name, np.ascontiguousarray(data, dtype=np.float32), None
        elif gguf_type == "q8_0" and data.shape[-1] % QK8_0 == 0:
            yield name, gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0
        else:
            yield name, np.ascontiguousarray(data, dtype=np.float16), None


def write_gguf(model, tokenizer, path: Path, gguf_type: str = "f16", name: str | None = None) -> Path:
    """`model` (a plain transformers Llama, adapters merged) and its tokenizer as one GGUF file at `path` (new),
    written beside it first and renamed when complete."""
    import gguf

    if gguf_type not in GGUF_TYPES:
        raise CurloraError(f"GGUF type must be one of {', '.join(GGUF_TYPES)}; got {gguf_type!r}.")
    check_architecture(model)
    path = Path(path)
    check_destination(path)
    config = model.config.get_text_config()
    tok = tokenizer_metadata(tokenizer, config.vocab_size)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rope = getattr(config, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))

    def write(tmp: Path) -> None:
        w = gguf.GGUFWriter(str(tmp), "llama")
        w.add_name(name or Path(path).stem)
        w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if gguf_type == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        w.add_vocab_size(config.vocab_size)
        w.add_context_length(config.max_position_embeddings)
        w.add_embedding_length(config.hidden_size)
        w.add_block_count(config.num_hidden_layers)
        w.add_feed_forward_length(config.intermediate_size)
        w.add_head_count(config.num_attention_heads)
        w.add_head_count_kv(config.num_key_value_heads or config.num_attention_heads)
        w.add_rope_dimension_count(head_dim)
        if head_dim != config.hidden_size // config.num_attention_heads:
            w.add_key_length(head_dim)
            w.add_value_length(head_dim)
        w.add_rope_freq_base(float(theta))
        w.add_layer_norm_rms_eps(float(config.rms_norm_eps))
        w.add_tokenizer_model(tok["model"])
        w.add_tokenizer_pre(tok["pre"])
        w.add_token_list(tok["tokens"])
        w.add_token_types(tok["types"])
        if tok["scores"] is not None:
            w.add_token_scores(tok["scores"])
            w.add_add_space_prefix(tok["space_prefix"])
        if tok["merges"]:
            w.add_token_merges(tok["merges"])
        for key, add in (("bos", w.add_bos_token_id), ("eos", w.add_eos_token_id), ("unk", w.add_unk_token_id),
                         ("pad", w.add_pad_token_id)):
            if tok[key] is not None:
                add(int(tok[key]))
        w.add_add_bos_token(tok["add_bos"])
        w.add_add_eos_token(tok["add_eos"])
        if tok["template"]:
            w.add_chat_template(tok["template"])
        for tensor_name, data, raw in _tensors(model, gguf_type):
            w.add_tensor(tensor_name, data, raw_dtype=raw)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

    return publish(path, write, folder=False)


def merged_stage(run: Run, label: str, stage: int):
    """(plain transformers model with stage `stage` of `label` folded in, tokenizer); stage 0 is the base. The stage
is put on the base by its method's own `load` (an adapter merged in, or a full fine-tune's whole weights)."""
    from curlora.methods.registry import method
    from curlora.models.loading import load_model

    cfg = run.config()
    folder = finished_stage(run, label, stage, weights="model") if stage else None
    kind = method(method_kind(run, label))
    base, tokenizer, _ = load_model(cfg.model.name, dtype=cfg.model.dtype, device="cpu", memory_check=False)
    check_architecture(base)  # before merging anything
    if folder is None:
        return base, tokenizer
    return kind.merge(kind.load(base, folder).model), tokenizer


def export_gguf(run: Run, label: str, stage: int, dest: Path, gguf_type: str = "f16") -> dict:
    """Stage `stage` of `label` merged into the run's base, as a GGUF file at `dest` (must not exist). Stage 0:
    the base model itself. Returns {"path", "type", "bytes"}."""
    dest = Path(dest)
    if gguf_type not in GGUF_TYPES:
        raise CurloraError(f"GGUF type must be one of {', '.join(GGUF_TYPES)}; got {gguf_type!r}.")
    check_destination(dest)
    model, tokenizer = merged_stage(run, label, stage)
    name = f"{Path(str(run.config().model.name)).name}-{label}-stage-{stage}"
    write_gguf(model, tokenizer, dest, gguf_type, name=name)
    return {"path": str(dest), "type": gguf_type, "bytes": dest.stat().st_size}
