"""Base models: resolve a user's choice — a bundled name, a packaged GGUF (SmolLM2), a local .gguf file, a local
folder or a hub id — to (model, tokenizer, info). A GGUF is converted once into a cached safetensors folder
(curlora/models/gguf.py) and loaded from there like any folder.

Every way this can go wrong that a user can fix (a typo in a path, a hub id that is not cached while offline, a
gated repository, pickle-only weights, a model too big for the machine) raises `CurloraError` with one sentence,
and is detected *before* anything slow happens: the hub cache is looked at before the network, the network is
not touched at all under HF_HUB_OFFLINE, and memory is estimated from the config before weights are read.

    model, tokenizer, info = load_model("bundled")           # or "gpt2", "/path/to/folder"
    describe_model("Qwen/Qwen2.5-0.5B-Instruct")             # architecture, size, target modules; no weights
"""

from __future__ import annotations


import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from curlora.errors import CurloraError, clip
from curlora.models import gguf
from curlora.models.build_lock import BUILD_LOCK
from curlora.models.lookup import hub_only, hub_only_on  # noqa: F401  (hub_only re-exported)
from curlora.models.remote_code import refuse_remote_code, remote_code_allowed
from curlora.paths import ASSETS, hub_offline

BUNDLED_DEFAULT = "kjv-llama-5m"
BUNDLED_ALIASES = ("bundled", "default")

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# What a hub download fetches: configs, tokenizer files and safetensors weights; never pickles.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.tiktoken", "*.txt", "tokenizer*"]
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[\w.-]{1,96})?$")
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}
DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")  # what resolve_dtype offers (DTYPES also reads aliases)
DEVICE_NAMES = ("auto", "cpu", "cuda", "mps")  # what resolve_device offers, besides cuda:N
# Loading needs a little more than the weights themselves (buffers, allocator slack, the Python process).
MEMORY_HEADROOM = 1.2


@dataclass
class ModelDescription:
    """What a model is, found without loading its weights where possible (the UI shows this before loading)."""

    choice: str = field(metadata={"help": "What the user typed: bundled name, folder or hub id."})
    source: str = field(metadata={"help": "bundled | package (a GGUF a registry package ships) | gguf | folder | hub"})
    path: str | None = field(default=None, metadata={"help": "Local folder (None: hub id not downloaded)."})
    architecture: str | None = field(default=None, metadata={"help": "e.g. LlamaForCausalLM."})
    model_type: str | None = field(default=None, metadata={"help": "config.model_type, e.g. llama."})
    parameters: int | None = field(default=None, metadata={"help": "Parameter count (tied weights once)."})
    dtype: str = field(default="float32", metadata={"help": "dtype the memory estimate assumes."})
    memory_bytes: int | None = field(default=None, metadata={"help": "parameters x bytes per parameter."})
    target_modules: list[str] = field(default_factory=list,
                                      metadata={"help": "Leaf Linear/Conv1D names an adapter can target."})
    note: str | None = field(default=None, metadata={"help": "Why some fields are missing or estimated."})
    weights: str | None = field(default=None, metadata={
        "help": "How the weights were stored where they are not the original, e.g. 'Q4_1, dequantised: not the "
                "bf16 original'."})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class ModelInfo(ModelDescription):
    """A description plus how the model was actually loaded; recorded with every run."""

    device: str = field(default="cpu", metadata={"help": "Where the weights are."})
    pad_token: str | None = field(default=None, metadata={"help": "The padding token used for batches."})
    pad_token_id: int | None = field(default=None, metadata={"help": "Its id."})
    pad_token_source: str = field(default="tokenizer",
                                  metadata={"help": "tokenizer (it had one) | unk | eos | bos (borrowed)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Whether repository code was allowed."})


# --- choosing where a model comes from ---------------------------------------------------------------------


def bundled_models() -> dict[str, Path]:
    """Name → folder of every model shipped under assets/models (a folder with a config.json)."""
    root = ASSETS / "models"
    return {p.name: p for p in sorted(root.iterdir()) if (p / "config.json").is_file()} if root.is_dir() else {}


def looks_like_path(choice: str) -> bool:
    """Hub ids are `name` or `owner/name`; anything else with a separator or a leading ./~ is a path."""
    return (choice.startswith((".", "/", "~", "\\")) or choice.endswith(("/", "\\")) or choice.count("/") > 1
            or "\\" in choice or bool(re.match(r"^[A-Za-z]:", choice)))


def locate(choice: str, *, revision: str | None = None, weights: bool = False) -> tuple[str, Path]:
    """(source, local folder) for a choice: a bundled name, a packaged GGUF, a .gguf file (both converted on first
    use), then an existing folder, then a hub id.

    Hub ids come from the local cache first; the network is used only when the hub is not offline, and only
    for config.json unless `weights` is set.
    """
    choice = str(choice).strip()
    if not choice:
        raise CurloraError("No model chosen: give the bundled model's name, a local model folder or a hub id.")
    bundled = bundled_models()
    name = BUNDLED_DEFAULT if choice in BUNDLED_ALIASES else choice
    if name in bundled:
        return "bundled", bundled[name]
    if choice in gguf.PACKAGED:  # a preset: allowed hosted too (the file is in the server's own packages)
        return "package", gguf.converted(gguf.packaged(choice))
    if hub_only_on():
        if looks_like_path(choice) or not HUB_ID.match(choice) or gguf.is_gguf(choice):
            raise CurloraError(f"model.name: {clip(choice)} is not a preset, the bundled model or a hub id "
                               "(owner/name); folders and files on the server cannot be used here.")
        return "hub", _hub_folder(choice, revision, weights)
    gguf_file = gguf_source_file(choice)
    if gguf_file is not None:
        return "gguf", gguf.converted(gguf_file)
    folder = Path(choice).expanduser()
    if folder.is_dir():
        return "folder", folder.resolve()
    if folder.exists():
        raise CurloraError(f"'{choice}' is a file, not a model folder; give the folder that holds config.json.")
    if looks_like_path(choice) or not HUB_ID.match(choice):
        raise CurloraError(f"The model folder '{choice}' does not exist; check the path (it is read on the machine "
                           "running the app).")
    return "hub", _hub_folder(choice, revision, weights)


def gguf_source_file(choice: str) -> Path | None:
    """The .gguf behind a choice (a packaged model's name or a path ending in .gguf), None for any other choice."""
    choice = str(choice).strip()
    if choice in gguf.PACKAGED:
        return gguf.packaged(choice)
    if gguf.is_gguf(choice):
        path = Path(choice).expanduser()
        if path.is_dir():
            raise CurloraError(f"'{choice}' is a folder; give the .gguf file itself.")
        if not path.is_file():
            raise CurloraError(f"The GGUF file '{choice}' does not exist; check the path (it is read on the machine "
                               "running the app).")
        return path.resolve()
    return None


def _cached_snapshot(repo_id: str, revision: str | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    return Path(hit).parent if isinstance(hit, str) else None


def _has_safetensors(folder: Path) -> bool:
    return any(folder.glob("*.safetensors"))


def _has_weight_files(folder: Path) -> bool:
    return any(p.name.endswith((".safetensors",) + PICKLE_SUFFIXES) for p in folder.iterdir())


def _hub_folder(repo_id: str, revision: str | None, weights: bool) -> Path:
    cached = _cached_snapshot(repo_id, revision)
    if cached is not None and (not weights or _has_weight_files(cached)):
        return cached
    if hub_offline():
        what = "its weights are" if cached is not None else "it is"
        raise CurloraError(
            f"'{repo_id}' is not a bundled name or a local folder, and {what} not in the Hugging Face cache while "
            "the hub is offline (HF_HUB_OFFLINE=1); download it once with network access, or choose the bundled "
            "model or a local folder.")
    info = _hub_info(repo_id, revision)
    files = [s.rfilename for s in (info.siblings or [])]
    if "config.json" not in files:
        raise CurloraError(f"The hub repository '{repo_id}' has no config.json, so it is not a transformers model.")
    if weights and not any(f.endswith(".safetensors") for f in files):
        raise CurloraError(f"'{repo_id}' has only pickle weights ({_first(files, PICKLE_SUFFIXES)}); this app loads "
                           "safetensors only, because pickles can run code — pick a repository with .safetensors.")
    from huggingface_hub import hf_hub_download, snapshot_download

    try:
        if weights:
            return Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_PATTERNS))
        return Path(hf_hub_download(repo_id, "config.json", revision=revision)).parent
    except Exception as err:  # noqa: BLE001 — every download failure becomes one sentence for the user
        raise _hub_error(repo_id, err) from None


def _hub_info(repo_id: str, revision: str | None):
    from huggingface_hub import HfApi, get_token

    try:
        info = HfApi().model_info(repo_id, revision=revision, timeout=10)
    except Exception as err:  # noqa: BLE001
        raise _hub_error(repo_id, err) from None
    if info.gated and not get_token():
        raise _gated(repo_id)
    return info


def _gated(repo_id: str) -> CurloraError:
    return CurloraError(
        f"'{repo_id}' is gated: accept its license on https://huggingface.co/{repo_id} with your account, then "
        "log in here (`hf auth login` or the HF_TOKEN variable) and try again.")


def _hub_error(repo_id: str, err: Exception) -> CurloraError:
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(err, GatedRepoError):
        return _gated(repo_id)
    if isinstance(err, RepositoryNotFoundError):
        return CurloraError(f"There is no model '{repo_id}' on the Hugging Face hub (or it is private and you are "
                            "not logged in); check the spelling.")
    if isinstance(err, RevisionNotFoundError):
        return CurloraError(f"'{repo_id}' has no such revision; leave the revision empty for the main branch.")
    return CurloraError(f"The Hugging Face hub could not be reached for '{repo_id}' ({type(err).__name__}); check "
                        "the network, or set HF_HUB_OFFLINE=1 and use the bundled model or a local folder.")


def _first(files, suffixes) -> str:
    return next((f for f in files if f.endswith(suffixes)), "no weight files")


# --- what is in a folder --------------------------------------------------------------------------------------

def read_config(folder: Path, choice: str, trust_remote_code: bool = False):
    """The folder's transformers config, after the checks that give a clearer sentence than transformers would."""
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if trust_remote_code and not remote_code_allowed():  # every load reads its config here first
        raise refuse_remote_code()
    path = folder / "config.json"
    if not path.is_file():
        if (folder / "adapter_config.json").is_file():
            raise CurloraError(f"'{choice}' holds an adapter, not a base model; load its base model here and the "
                               "adapter where adapters are loaded.")
        raise CurloraError(f"'{choice}' is not a model folder: it has no config.json (save a model there with "
                           "save_pretrained, or pick the folder that contains config.json).")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CurloraError(f"The config.json in '{choice}' is not valid JSON ({err}); re-save the model.") from None
    model_type = raw.get("model_type")
    if model_type not in CONFIG_MAPPING_NAMES:
        if raw.get("auto_map") and not trust_remote_code:
            raise CurloraError(f"'{choice}' needs its own Python code (auto_map in config.json); allow "
                               "trust_remote_code only if you trust its source, since that code will run.")
        if not raw.get("auto_map"):
            import transformers

            raise CurloraError(f"'{choice}' has model type {clip(model_type)}, which transformers "
                               f"{transformers.__version__} does not know; upgrade transformers or pick another "
                               "model.")
    elif model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        arch = (raw.get("architectures") or [model_type])[0]
        raise CurloraError(f"'{choice}' is a {arch} model, which cannot generate text; pick a causal language "
                           "model (an architecture ending in ForCausalLM).")
    try:
        return AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code, local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise CurloraError(f"The config of '{choice}' could not be read ({_short(err)}); re-save the model.") from None


def check_weights(folder: Path, choice: str) -> None:
    """Safetensors only: pickle checkpoints (.bin, .pt, ...) can run arbitrary code when loaded."""
    if _has_safetensors(folder):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.name.endswith(PICKLE_SUFFIXES))
    if pickles:
        raise CurloraError(
            f"'{choice}' has only pickle weights ({pickles[0]}); this app loads safetensors only, because pickles "
            "can run code — convert it once with save_pretrained(folder, safe_serialization=True).")
    raise CurloraError(f"'{choice}' has a config.json but no weights (*.safetensors); copy the weight files too.")


def _short(err: Exception, width: int = 160) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= width else text[: width - 1] + "…"


# --- size, memory, target modules -----------------------------------------------------------------------------

def empty_model(config, trust_remote_code: bool = False) -> nn.Module:
    """The model's module tree with no memory behind its weights (meta device)."""
    from transformers import AutoModelForCausalLM

    # Not accelerate's init_empty_weights: under it tied input/output embeddings stay two tensors, so a
    # GPT-2 would be counted 39M parameters too large.
    with BUILD_LOCK, torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)


def default_targets(model) -> list[str]:
    """The paper's choice: q, k, v for Llama-family models; GPT-2's fused c_attn."""
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    if {"q_proj", "k_proj", "v_proj"} <= names:
        return ["q_proj", "k_proj", "v_proj"]
    if "c_attn" in names:
        return ["c_attn"]
    raise CurloraError("This model has no q_proj/k_proj/v_proj or c_attn layers; set target_modules for each method.")


def linear_module_names(model: nn.Module) -> list[str]:
    """Distinct last names of leaf Linear / GPT-2 Conv1D modules, in model order, except the output head."""
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names: list[str] = []
    for full, module in model.named_modules():
        if isinstance(module, (nn.Linear, Conv1D)) and module is not head and not list(module.children()):
            last = full.rsplit(".", 1)[-1]
            if last not in names:
                names.append(last)
    return names


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """'auto' → bfloat16 on a GPU that supports it, else float16 on a GPU; float32 on CPU (and MPS)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    key = (dtype or "auto").lower()
    if key == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if key not in DTYPES:
        raise CurloraError(f"Unknown dtype {clip(dtype)}; use auto, float32, bfloat16 or float16.")
    return DTYPES[key]


def resolve_device(device: str | None) -> str:
    key = (device or "auto").lower()
    if key == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if key.startswith("cuda") and not torch.cuda.is_available():
        raise CurloraError(f"Device {clip(device)} was asked for but no CUDA GPU is visible; use device 'cpu' or 'auto'.")
    if key not in ("cpu", "mps") and not key.startswith("cuda"):
        raise CurloraError(f"Unknown device {clip(device)}; use auto, cpu, cuda, cuda:N or mps.")
    return key


def available_memory(device: str) -> int:
    """Free bytes where the weights will live: GPU memory for CUDA, otherwise available system RAM."""
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def check_memory(desc: ModelDescription, device: str) -> None:
    if not desc.memory_bytes:
        return
    need, free = desc.memory_bytes * MEMORY_HEADROOM, available_memory(device)
    if need > free:
        where = "GPU memory" if device.startswith("cuda") else "RAM"
        raise CurloraError(
            f"'{desc.choice}' needs about {need / 1e9:.1f} GB in {desc.dtype} but only {free / 1e9:.1f} GB "
            f"of {where} is free; pick a smaller model or a 16-bit dtype, or free some memory.")


def _describe_config(desc: ModelDescription, config, dtype: torch.dtype, trust_remote_code: bool) -> None:
    desc.model_type = config.model_type
    desc.architecture = (getattr(config, "architectures", None) or [None])[0]
    desc.dtype = str(dtype).removeprefix("torch.")
    try:
        skeleton = empty_model(config, trust_remote_code)
    except Exception as err:  # noqa: BLE001 — e.g. a quantisation config; the rest of the description still helps
        desc.note = f"size unknown: the model could not be built from its config ({_short(err, 80)})"
        return
    desc.architecture = desc.architecture or type(skeleton).__name__
    desc.parameters = skeleton.num_parameters()
    desc.memory_bytes = desc.parameters * torch.empty((), dtype=dtype).element_size()
    desc.target_modules = linear_module_names(skeleton)


def describe_model(choice: str, *, dtype: str | torch.dtype | None = "auto", device: str | None = "auto",
                   revision: str | None = None, trust_remote_code: bool = False) -> ModelDescription:
    """Architecture, parameter count, memory estimate and candidate target modules, without reading weights.

    A hub id that is neither cached nor reachable falls back to its entry in presets/models.yaml (with a note);
    without one, the usual `CurloraError` is raised.
    """
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    gguf_file = gguf_source_file(choice)
    if gguf_file is not None and gguf.cached(gguf_file) is None:  # not converted yet: read its metadata only
        source = "package" if str(choice).strip() in gguf.PACKAGED else "gguf"
        desc = ModelDescription(choice=choice, source=source, note="converted once into a safetensors folder "
                                "in the model cache on first load (20–50 s on two cores)")
        _, quant = gguf.read_header(gguf_file)
        desc.weights = gguf.quality_note(quant)
        _describe_config(desc, gguf.gguf_config(gguf_file), torch_dtype, trust_remote_code)
        return desc
    try:
        source, folder = locate(choice, revision=revision)
    except CurloraError as err:
        preset = _preset(choice)
        if preset is None:
            raise
        return ModelDescription(
            choice=choice, source="hub", architecture=preset.architecture, model_type=preset.family,
            parameters=preset.parameters, dtype=str(torch_dtype).removeprefix("torch."),
            memory_bytes=preset.parameters * torch.empty((), dtype=torch_dtype).element_size(),
            target_modules=list(preset.target_modules), note=f"from presets/models.yaml: {err}")
    desc = ModelDescription(choice=choice, source=source, path=str(folder))
    _describe_config(desc, read_config(folder, choice, trust_remote_code), torch_dtype, trust_remote_code)
    desc.weights = _weights_note(folder)
    return desc


def _weights_note(folder: Path) -> str | None:
    origin = gguf.source_of(folder)
    return origin.quality_note if origin else None


def _preset(choice: str):
    from curlora.models.presets import load_model_presets

    try:
        return load_model_presets().get(choice)
    except CurloraError:
        return None


# --- loading -------------------------------------------------------------------------------------------------

def ensure_pad_token(tokenizer, model: nn.Module | None = None) -> str:
    """Give a tokenizer without a pad token an existing special token as its pad; never add one.

    Adding a token would resize the embeddings, changing the base model behind every adapter's back. unk is
    preferred to eos because collators mask pad positions out of the loss: with pad = eos the model would never
    be trained to stop. Returns where the pad came from: tokenizer | unk | eos | bos.
    """
    source = "tokenizer"
    if tokenizer.pad_token is None:
        for source in ("unk", "eos", "bos"):
            token = getattr(tokenizer, f"{source}_token")
            if token is not None:
                tokenizer.pad_token = token
                break
        else:
            raise CurloraError("The tokenizer has no pad, unk, end or begin token to pad batches with; add a pad "
                               "token to the model folder's tokenizer and resize its embeddings yourself.")
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    return source


def load_tokenizer(folder: Path, choice: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise CurloraError(f"'{choice}' has no usable tokenizer ({_short(err, 100)}); the folder needs the files "
                           "tokenizer.save_pretrained writes.") from None


def quantization_config(quantization: str, compute_dtype: torch.dtype):
    """transformers' BitsAndBytesConfig for "8bit" / "4bit" (NF4, double quantisation), None for "none"; one sentence
    when bitsandbytes (an optional extra) is missing."""
    if quantization in (None, "none"):
        return None
    if quantization not in ("8bit", "4bit"):
        raise CurloraError(f"model.quantization: {clip(quantization)} is not one of none, 8bit, 4bit.")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise CurloraError(f"model.quantization: {quantization} needs bitsandbytes, an optional extra; install it "
                           "with `pip install -r requirements-extras.txt` or set quantization: none.") from None
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def load_model(choice: str = BUNDLED_DEFAULT, *, dtype: str | torch.dtype | None = "auto",
               device: str | None = "auto", revision: str | None = None, trust_remote_code: bool = False,
               memory_check: bool = True, quantization: str = "none"):
    """(model, tokenizer, ModelInfo) for a bundled name, a local folder or a hub id; the model is in eval mode.

    dtype and device default to 'auto' (see `resolve_dtype`). `trust_remote_code` must be asked for explicitly.
    `memory_check=False` skips the estimate-versus-free-memory refusal. `quantization` "8bit" / "4bit" (NF4)
    loads the linear layers through bitsandbytes, computing in `dtype`.
    """
    from transformers import AutoModelForCausalLM

    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    source, folder = locate(choice, revision=revision)
    config = read_config(folder, choice, trust_remote_code)
    info = ModelInfo(choice=choice, source=source, path=str(folder), device=device,
                     trust_remote_code=trust_remote_code)
    _describe_config(info, config, torch_dtype, trust_remote_code)
    info.weights = _weights_note(folder)
    if memory_check:
        check_memory(info, device)
    if source == "hub":
        folder = _hub_folder(choice, revision, weights=True)
        info.path = str(folder)
    check_weights(folder, choice)
    tokenizer = load_tokenizer(folder, choice, trust_remote_code)
    quantized = quantization_config(quantization, torch_dtype)
    try:
        with BUILD_LOCK:
            model = AutoModelForCausalLM.from_pretrained(
                folder, dtype=torch_dtype, use_safetensors=True, local_files_only=True,
                trust_remote_code=trust_remote_code, quantization_config=quantized,
                device_map={"": device} if device != "cpu" or quantized else None)
    except (OSError, ValueError, RuntimeError) as err:
        raise CurloraError(f"The weights of '{choice}' could not be loaded ({_short(err)}); check that the folder "
                           "is complete and its files match config.json.") from None
    model.eval()
    if quantized is not None:
        for module in model.modules():
            # bitsandbytes repacks a 4-bit weight for its CPU inference kernel at the first no-grad forward, and
            # nothing differentiates through that kernel afterwards: the base row's evaluation would silently
            # stop every adapter on top from training. The generic kernel trains and scores the same.
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False
    info.pad_token_source = ensure_pad_token(tokenizer, model)
    info.pad_token, info.pad_token_id = tokenizer.pad_token, tokenizer.pad_token_id
    return model, tokenizer, info
