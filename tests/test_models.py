"""Base-model loading: bundled name, local folder, hub id (offline and mocked online), every error a user can
cause, pad tokens, the bundled model's quality, and presets/models.yaml against real (tiny) architectures."""

import json
import math
import time
from pathlib import Path

import huggingface_hub
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from curlora.errors import CurloraError
from curlora.models import loading as cm
from curlora.models.presets import PRESETS_FILE, load_model_presets
from curlora.paths import DEFAULT_PROBE

WORDS = ["the", "lord", "said", "unto", "him", "and", "it", "was", "so", "light", "earth", "heaven"]

# Measured on the committed model: token perplexity 46.0 on the first PROBE_TOKENS tokens of the probe text, in
# windows of 256 (54.6 on the whole probe; see assets/README.md). The bound leaves ~20% for other torch builds and
# thread counts; the same tokens shuffled score about 7,000, an untrained model of this vocabulary about 4,000.
PROBE_TOKENS = 2048
PROBE_PPL_BOUND = 55.0


def word_tokenizer(*, pad=True, unk=True, eos=True, bos=False) -> PreTrainedTokenizerFast:
    specials = ["<unk>", "<pad>", "</s>", "<s>"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(specials + WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>" if pad else None,
                                   unk_token="<unk>" if unk else None, eos_token="</s>" if eos else None,
                                   bos_token="<s>" if bos else None)


TINY_CONFIGS = {
    "llama": lambda vocab: LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, vocab_size=vocab,
                                       max_position_embeddings=64),
    "mistral": lambda vocab: MistralConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                           num_attention_heads=4, num_key_value_heads=2, vocab_size=vocab,
                                           max_position_embeddings=64),
    "qwen2": lambda vocab: Qwen2Config(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, vocab_size=vocab,
                                       max_position_embeddings=64),
    "gpt2": lambda vocab: GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=vocab, n_positions=64),
}


def save_tiny(folder: Path, family: str = "llama", **tok_kwargs) -> torch.nn.Module:
    tokenizer = word_tokenizer(**tok_kwargs)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(TINY_CONFIGS[family](len(tokenizer))).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def bundled():
    return cm.load_model("bundled")


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """A hub cache with nothing in it, so a developer's own downloads can't make these tests pass."""
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def online(monkeypatch, empty_cache):
    """The hub counts as online; every network call is mocked by the test."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    return empty_cache


# --- the bundled model ---------------------------------------------------------------------------------------

def test_bundled_model_loads_by_any_of_its_names(bundled):
    model, tokenizer, info = bundled
    assert info.source == "bundled" and Path(info.path).name == cm.BUNDLED_DEFAULT
    assert info.architecture == "LlamaForCausalLM" and info.model_type == "llama"
    assert info.parameters == sum(p.numel() for p in model.parameters()) == 5_401_856
    assert info.dtype == "float32" and info.device == "cpu" and next(model.parameters()).dtype == torch.float32
    assert info.pad_token == "<pad>" and info.pad_token_source == "tokenizer"
    assert set(info.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                        "down_proj"}
    for name in ("default", cm.BUNDLED_DEFAULT):
        assert cm.locate(name) == ("bundled", Path(info.path))
    assert cm.load_model is not None and not model.training


def test_bundled_tokenizer_loads_offline_with_plain_autotokenizer(bundled):
    _, _, info = bundled
    tok = AutoTokenizer.from_pretrained(info.path, local_files_only=True)
    text = "And the LORD spake unto Moses, saying, 42 phones & cafés"  # byte-level: modern text has no <unk>
    assert tok.decode(tok(text)["input_ids"]) == text


def test_bundled_model_generates_text_of_its_corpus(bundled):
    model, tokenizer, _ = bundled
    probe_words = set(DEFAULT_PROBE.read_text(encoding="utf-8").lower().split())
    ids = tokenizer("And the LORD said unto", return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=30, do_sample=False)
    words = [w.strip(".,;:!?'").lower() for w in tokenizer.decode(out[0, ids.shape[1]:]).split()]
    words = [w for w in words if w]
    assert len(words) >= 10
    # King James words (unto, thou, hath, ...): most generated words also occur in the held-out books.
    assert sum(w in probe_words for w in words) / len(words) > 0.7, words


def test_bundled_heldout_perplexity_is_below_the_measured_bound(bundled):
    model, tokenizer, _ = bundled
    ids = torch.tensor(tokenizer(DEFAULT_PROBE.read_text(encoding="utf-8"))["input_ids"][:PROBE_TOKENS])
    windows = ids.view(-1, 256)
    with torch.no_grad():
        ppl = math.exp(model(input_ids=windows, labels=windows).loss.item())
    assert ppl < PROBE_PPL_BOUND
    # The same tokens in a random order are far less likely: the bound is about the text, not the vocabulary.
    shuffled = windows.flatten()[torch.randperm(windows.numel(), generator=torch.Generator().manual_seed(0))]
    with torch.no_grad():
        shuffled_ppl = math.exp(model(input_ids=shuffled.view(-1, 256), labels=shuffled.view(-1, 256)).loss.item())
    assert shuffled_ppl > 5 * ppl


def test_bundled_probe_text_is_not_in_the_preset_by_accident():
    presets = load_model_presets()
    first = next(iter(presets.values()))
    assert first.name == cm.BUNDLED_DEFAULT and first.source == "bundled"
    assert (PRESETS_FILE.parents[1] / first.probe).resolve() == DEFAULT_PROBE.resolve()
    assert DEFAULT_PROBE.stat().st_size > 50_000


# --- local folders -------------------------------------------------------------------------------------------

def test_local_folder_loads_the_saved_weights(tmp_path):
    original = save_tiny(tmp_path / "m")
    model, tokenizer, info = cm.load_model(str(tmp_path / "m"))
    assert info.source == "folder" and info.path == str((tmp_path / "m").resolve())
    ids = tokenizer("the lord said unto him", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, original(ids).logits)


def test_dtype_and_device_overrides(tmp_path):
    save_tiny(tmp_path / "m")
    model, _, info = cm.load_model(str(tmp_path / "m"), dtype="bf16")
    assert next(model.parameters()).dtype == torch.bfloat16 and info.dtype == "bfloat16"
    with pytest.raises(CurloraError, match="Unknown dtype"):
        cm.load_model(str(tmp_path / "m"), dtype="float8")
    if not torch.cuda.is_available():
        with pytest.raises(CurloraError, match="no CUDA GPU"):
            cm.load_model(str(tmp_path / "m"), device="cuda")


def test_auto_dtype_is_fp32_on_cpu_and_16_bit_on_gpu():
    assert cm.resolve_dtype("auto", "cpu") == torch.float32
    if torch.cuda.is_available():
        assert cm.resolve_dtype("auto", "cuda") in (torch.bfloat16, torch.float16)


def test_stories260k_loads_as_a_local_folder(shared_data):
    folder = shared_data / "models" / "stories260K" / "hf"
    model, tokenizer, info = cm.load_model(str(folder))
    assert info.source == "folder" and info.parameters == 260_032
    # It ships no pad token: unk (id 0) is borrowed, the vocabulary is untouched.
    assert info.pad_token_source == "unk" and info.pad_token_id == tokenizer.unk_token_id == 0
    assert model.get_input_embeddings().weight.shape[0] == 512 and model.config.pad_token_id == 0
    ids = tokenizer("Once upon a time", return_tensors="pt")["input_ids"]
    text = tokenizer.decode(model.generate(ids, max_new_tokens=12, do_sample=False)[0], skip_special_tokens=True)
    assert text.startswith("Once upon a time, there was a little")


@pytest.mark.parametrize("choice, message", [
    ("/no/such/model/folder", "does not exist"),
    ("./relative/missing", "does not exist"),
    ("not a model!", "does not exist"),
    ("  ", "No model chosen"),
])
def test_missing_folder_is_one_clear_sentence(choice, message):
    with pytest.raises(CurloraError, match=message):
        cm.load_model(choice)


def test_folder_errors(tmp_path):
    cases = {}
    empty = tmp_path / "empty"
    empty.mkdir()
    cases[empty] = "no config.json"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    cases[adapter] = "holds an adapter"
    save_tiny(tmp_path / "pickled")
    state = {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(tmp_path / "pickled").state_dict().items()}
    (tmp_path / "pickled" / "model.safetensors").unlink()
    torch.save(state, tmp_path / "pickled" / "pytorch_model.bin")
    cases[tmp_path / "pickled"] = "only pickle weights .pytorch_model.bin"
    save_tiny(tmp_path / "noweights")
    (tmp_path / "noweights" / "model.safetensors").unlink()
    cases[tmp_path / "noweights"] = "no weights"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    cases[broken] = "not valid JSON"
    for folder, message in cases.items():
        with pytest.raises(CurloraError, match=message):
            cm.load_model(str(folder))
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"x")
    with pytest.raises(CurloraError, match="is a file"):
        cm.load_model(str(file))


def test_folder_of_another_kind_of_model_is_refused(tmp_path):
    folder = tmp_path / "vit"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "vit", "architectures": ["ViTModel"]}))
    with pytest.raises(CurloraError, match="ViTModel model, which cannot generate text"):
        cm.load_model(str(folder))


def test_remote_code_is_refused_unless_asked_and_unknown_types_named(tmp_path):
    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(
        {"model_type": "my_llama", "auto_map": {"AutoModelForCausalLM": "modeling_my.MyLlama"}}))
    with pytest.raises(CurloraError, match="trust_remote_code"):
        cm.load_model(str(folder))
    (folder / "config.json").write_text(json.dumps({"model_type": "my_llama"}))
    with pytest.raises(CurloraError, match="does not know"):
        cm.describe_model(str(folder))


def test_not_enough_memory_is_refused_before_loading(tmp_path, monkeypatch):
    save_tiny(tmp_path / "m")
    monkeypatch.setattr(cm, "available_memory", lambda device: 1_000)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: pytest.fail("weights were read before the memory check"))
    with pytest.raises(CurloraError, match=r"needs about .* GB in float32 but only 0.0 GB of RAM is free"):
        cm.load_model(str(tmp_path / "m"))
    monkeypatch.undo()
    monkeypatch.setattr(cm, "available_memory", lambda device: 1_000)
    assert cm.load_model(str(tmp_path / "m"), memory_check=False)[2].source == "folder"


# --- pad tokens ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, source, token", [
    (dict(pad=True), "tokenizer", "<pad>"),
    (dict(pad=False), "unk", "<unk>"),
    (dict(pad=False, unk=False), "eos", "</s>"),
    (dict(pad=False, unk=False, eos=False, bos=True), "bos", "<s>"),
])
def test_pad_token_is_borrowed_from_an_existing_special_token(tmp_path, kwargs, source, token):
    save_tiny(tmp_path / "m", **kwargs)
    model, tokenizer, info = cm.load_model(str(tmp_path / "m"))
    assert (info.pad_token_source, info.pad_token, tokenizer.pad_token) == (source, token, token)
    assert model.config.pad_token_id == tokenizer.pad_token_id == info.pad_token_id
    assert model.get_input_embeddings().weight.shape[0] == len(WORDS) + 4  # never resized
    batch = tokenizer(["the lord", "and it was so light"], padding=True, return_tensors="pt")
    assert batch["input_ids"].shape == (2, 5)


def test_tokenizer_without_any_special_token_cannot_pad():
    with pytest.raises(CurloraError, match="no pad, unk, end or begin token"):
        cm.ensure_pad_token(word_tokenizer(pad=False, unk=False, eos=False))


# --- hub ids -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("repo_id", ["gpt2", "HuggingFaceTB/SmolLM2-135M", "nobody/no-such-model"])
def test_uncached_hub_id_offline_fails_fast_with_a_sentence(repo_id, empty_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(CurloraError, match=r"not in the Hugging Face cache while the hub is offline \(HF_HUB_OFFLINE"):
        cm.load_model(repo_id)
    assert time.monotonic() - start < 2


def test_offline_describe_of_a_preset_falls_back_to_its_yaml_entry(empty_cache):
    desc = cm.describe_model("mistralai/Mistral-7B-v0.3", device="cpu", dtype="bfloat16")
    assert desc.parameters == 7_248_023_552 and desc.memory_bytes == 2 * 7_248_023_552
    assert desc.target_modules == ["q_proj", "k_proj", "v_proj"] and "presets/models.yaml" in desc.note
    with pytest.raises(CurloraError, match="HF_HUB_OFFLINE"):
        cm.describe_model("nobody/no-such-model")


def _fake_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """The layout huggingface_hub writes: models--owner--name/{refs/main, snapshots/<commit>/files}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots").mkdir()
    folder.rename(repo / "snapshots" / commit)


def test_cached_hub_id_loads_offline_from_the_cache(tmp_path, empty_cache):
    original = save_tiny(tmp_path / "m", family="gpt2")
    _fake_cache(empty_cache, "someone/tiny-gpt2", tmp_path / "m")
    model, tokenizer, info = cm.load_model("someone/tiny-gpt2")
    assert info.source == "hub" and info.architecture == "GPT2LMHeadModel" and "snapshots" in info.path
    ids = tokenizer("and it was so", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, original(ids).logits)


class FakeResponse:
    headers: dict = {}
    request = None


class FakeInfo:
    def __init__(self, gated=False, files=("config.json", "model.safetensors")):
        self.gated = gated
        self.siblings = [type("S", (), {"rfilename": f})() for f in files]


def test_gated_hub_model_without_login_is_explained(online, monkeypatch):
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, *a, **k: FakeInfo(gated="manual"))
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(CurloraError, match="is gated: accept its license"):
        cm.load_model("meta-llama/Llama-3.2-1B")


def test_unreachable_hub_and_unknown_repo_are_explained(online, monkeypatch):
    def unreachable(self, *a, **k):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", unreachable)
    with pytest.raises(CurloraError, match="could not be reached .* HF_HUB_OFFLINE=1"):
        cm.load_model("gpt2")

    def missing(self, repo_id, **k):
        from huggingface_hub.errors import RepositoryNotFoundError

        raise RepositoryNotFoundError("404", response=FakeResponse())

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", missing)
    with pytest.raises(CurloraError, match="There is no model 'nobody/nothing' on the Hugging Face hub"):
        cm.load_model("nobody/nothing")


def test_gated_error_while_downloading_is_explained(online, monkeypatch, tmp_path):
    from huggingface_hub.errors import GatedRepoError

    def refuse(*a, **k):
        raise GatedRepoError("403", response=FakeResponse())

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, *a, **k: FakeInfo(gated="auto"))
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_token_without_access")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    with pytest.raises(CurloraError, match="is gated"):
        cm.load_model("mistralai/Mistral-7B-v0.3")


def test_hub_repo_with_only_pickle_weights_is_refused_before_download(online, monkeypatch):
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info",
                        lambda self, *a, **k: FakeInfo(files=("config.json", "pytorch_model.bin")))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: pytest.fail("downloaded"))
    # describe only needs config.json: give it one, as hf_hub_download would
    tmp = online.parent / "cfg"
    save_tiny(tmp)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: str(tmp / "config.json"))
    with pytest.raises(CurloraError, match="only pickle weights .pytorch_model.bin."):
        cm.load_model("old/pickled-model")


# --- describe ------------------------------------------------------------------------------------------------

def test_describe_reads_no_weights_and_lists_conv1d_targets(tmp_path, monkeypatch):
    save_tiny(tmp_path / "g", family="gpt2")
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda *a, **k: pytest.fail("weights were read"))
    desc = cm.describe_model(str(tmp_path / "g"))
    assert desc.architecture == "GPT2LMHeadModel" and desc.target_modules == ["c_attn", "c_proj", "c_fc"]
    real = AutoModelForCausalLM.from_config(TINY_CONFIGS["gpt2"](len(WORDS) + 4))
    assert desc.parameters == real.num_parameters()  # tied lm_head counted once
    assert desc.memory_bytes == 4 * desc.parameters and desc.dtype == "float32"


def test_describe_bundled_matches_the_loaded_model(bundled):
    desc = cm.describe_model("bundled")
    _, _, info = bundled
    assert (desc.parameters, desc.target_modules, desc.memory_bytes) == (
        info.parameters, info.target_modules, 4 * info.parameters)


# --- presets/models.yaml -------------------------------------------------------------------------------------

PRESETS = load_model_presets()


def test_presets_cover_the_issue_list_in_order():
    names = list(PRESETS)
    assert names[0] == cm.BUNDLED_DEFAULT
    for required in ["gpt2", "gpt2-large", "HuggingFaceTB/SmolLM2-135M", "HuggingFaceTB/SmolLM2-135M-Instruct",
                     "Qwen/Qwen2.5-0.5B-Instruct", "meta-llama/Llama-3.2-1B", "mistralai/Mistral-7B-v0.3"]:
        assert required in names
    assert PRESETS["meta-llama/Llama-3.2-1B"].gated and not PRESETS["gpt2"].gated
    assert PRESETS["gpt2-large"].paper_target_modules == ("c_attn",)


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_targets_exist_in_a_tiny_model_of_its_family(name):
    preset = PRESETS[name]
    model = AutoModelForCausalLM.from_config(TINY_CONFIGS[preset.family](64))
    assert type(model).__name__ == preset.architecture
    available = cm.linear_module_names(model)
    assert set(preset.target_modules) | set(preset.paper_target_modules) <= set(available), available
    for dtype, size in {"float32": 4, "bfloat16": 2}.items():
        assert preset.memory_gb[dtype] == pytest.approx(preset.parameters * size / 1e9, rel=0.05, abs=0.001)
    assert not preset.trust_remote_code and preset.rank >= 1 and preset.license


def test_bundled_preset_numbers_match_the_shipped_model(bundled):
    assert PRESETS[cm.BUNDLED_DEFAULT].parameters == bundled[2].parameters


@pytest.mark.parametrize("body, message", [
    ("gpt2: {source: hub}", "missing family"),
    ("gpt2: [1, 2]", "expected a mapping"),
    ("x: {source: hub, family: bert, architecture: A, parameters: 1, memory_gb: {float32: 1}, target_modules: [a],"
     " rank: 8, gated: false, license: mit}", "family must be one of"),
    ("x: {source: hub, family: gpt2, architecture: A, parameters: 1, memory_gb: {float32: 1}, target_modules: [a],"
     " rank: 8, gated: false, license: mit, colour: red}", "unknown setting 'colour'"),
    ("x: {source: hub, family: gpt2, architecture: A, parameters: 1, memory_gb: {float32: 1}, target_modules: [],"
     " rank: 8, gated: false, license: mit}", "at least one module"),
    ("x: [unclosed", "not valid YAML"),
])
def test_malformed_presets_file_is_explained(tmp_path, body, message):
    path = tmp_path / "models.yaml"
    path.write_text(body)
    with pytest.raises(CurloraError, match=message):
        load_model_presets(path)
