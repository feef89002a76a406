"""Trained stages in the formats people serve: a CURLoRA stage as a plain PEFT LoRA (checked in a process that never
imports curlora), a merged stage as GGUF (read back through transformers' GGUF loader), and `curlora export --lora /
--gguf` on a finished run, with its refusals."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml

from curlora.adapter.config import CURLoRAConfig
from curlora.errors import CurloraError
from curlora.methods import adapters
from curlora.share.export_gguf import TOLERANCE, tokenizer_metadata, write_gguf
from curlora.share.export_lora import curlora_as_lora, write_lora
from tiny_experiment import make_experiment
from tiny_models import TARGETS, save_tiny_llama_dir, tiny_model, tokens

ALPHA = 1.7  # not 1, so a factor split that drops α (or puts it in PEFT's α/r twice) shows


def randomise_u(adapted, seed: int = 3) -> None:
    """A trained-looking U: large enough that the stage's logits differ clearly from the base's."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in adapted.curlora_layers().values():
            layer.curlora_factors["default"].U.normal_(0, 5.0, generator=g)


# -- CURLoRA as LoRA, loaded by PEFT alone ----------------------------------------------------------------------
CHILD = textwrap.dedent("""
    import json, sys
    import torch, peft
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(1)
    out = {}
    for arch in sys.argv[2:]:
        base = AutoModelForCausalLM.from_pretrained(f"{sys.argv[1]}/{arch}-base")
        model = peft.PeftModel.from_pretrained(base, f"{sys.argv[1]}/{arch}-lora").eval()
        want = torch.load(f"{sys.argv[1]}/{arch}-want.pt")
        with torch.no_grad():
            got = model(input_ids=want["ids"]).logits
        out[arch] = {"max_abs": float((got - want["logits"]).abs().max()), "type": type(model).__name__}
    assert "curlora" not in sys.modules, "the child process imported curlora"
    out["imported_curlora"] = any(name.split(".")[0] == "curlora" for name in sys.modules)
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def lora_exports(tmp_path_factory):
    """A CURLoRA stage (α 1.7, random U) on a tiny Llama and a tiny GPT-2 (Conv1D), exported as LoRA; one child
    process without curlora loads both with PEFT and measures the logits against the stage's."""
    tmp = tmp_path_factory.mktemp("lora")
    stage = {}
    for arch in ("llama", "gpt2"):
        base = tiny_model(arch)
        base.save_pretrained(tmp / f"{arch}-base")
        adapted = adapters.attach(base, CURLoRAConfig(r=4, alpha=ALPHA, target_modules=TARGETS[arch]))
        randomise_u(adapted)
        ids = tokens()
        with torch.no_grad():
            logits = adapted(input_ids=ids).logits
        config, state = curlora_as_lora(adapted, base_name=str(tmp / f"{arch}-base"))
        write_lora(config, state, tmp / f"{arch}-lora")
        torch.save({"ids": ids, "logits": logits}, tmp / f"{arch}-want.pt")
        layers = adapted.curlora_layers()
        with torch.no_grad():
            base_logits = adapters.detach(adapted)(input_ids=ids).logits
        stage[arch] = {"layers": layers, "moved": float((logits - base_logits).abs().max())}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    child = subprocess.run([sys.executable, "-c", CHILD, str(tmp), "llama", "gpt2"], cwd=tmp, env=env,
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr[-3000:]
    return tmp, stage, json.loads(child.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_curlora_stage_as_lora_gives_the_stages_logits_in_peft_without_curlora(lora_exports, arch):
    tmp, stage, child = lora_exports
    assert stage[arch]["moved"] > 1e-2  # U is not zero: the stage is not the base model
    assert child["imported_curlora"] is False
    assert child[arch]["type"] == "PeftModelForCausalLM"
    assert child[arch]["max_abs"] <= 1e-5


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_the_lora_folder_is_peft_layout_with_b_alpha_c_u_and_a_r(lora_exports, arch):
    from safetensors.torch import load_file

    tmp, stage, _ = lora_exports
    folder = tmp / f"{arch}-lora"
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 4  # PEFT's scale 1
    assert config["fan_in_fan_out"] is (arch == "gpt2")
    layers = stage[arch]["layers"]
    assert sorted(config["target_modules"]) == sorted(layers)
    state = load_file(str(folder / "adapter_model.safetensors"))
    assert len(state) == 2 * len(layers)
    for name, layer in layers.items():
        a = state[f"base_model.model.{name}.lora_A.weight"]
        b = state[f"base_model.model.{name}.lora_B.weight"]
        m, n = layer.weight_math().shape  # out x in, whatever the layer stores
        assert a.shape == (4, n) and b.shape == (m, 4) and a.dtype == b.dtype == torch.float32
        f = layer.curlora_factors["default"]
        assert torch.allclose(b @ a, f.delta(), atol=1e-6)  # B·A = α·C·U·R
        assert torch.equal(a, f.R)


# -- GGUF ----------------------------------------------------------------------------------------------------------
TEMPLATE = "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"


@pytest.fixture(scope="module")
def merged_llama(tmp_path_factory):
    """A tiny Llama with its own BPE tokenizer and a chat template, a CURLoRA stage (random U) merged in."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = save_tiny_llama_dir(tmp_path_factory.mktemp("gguf") / "model")
    base = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = TEMPLATE
    adapted = adapters.attach(base, CURLoRAConfig(r=4, alpha=ALPHA, target_modules=TARGETS["llama"]))
    randomise_u(adapted)
    merged = adapters.merge(adapted)
    return merged, tokenizer


def rounded(w: torch.Tensor, gguf_type: str) -> torch.Tensor:
    """A weight as the GGUF type stores it, read back as float32: vectors exact, matrices float16 or Q8_0 (where a
    row is a whole number of 32-blocks)."""
    import gguf

    if w.ndim == 1:
        return w
    if gguf_type == "q8_0" and w.shape[-1] % 32 == 0:
        q = gguf.GGMLQuantizationType.Q8_0
        return torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(w.numpy(), q), q).reshape(w.shape))
    return w.half().float()


@pytest.mark.parametrize("gguf_type", ["f16", "q8_0"])
def test_a_merged_stage_as_gguf_reads_back_through_transformers(merged_llama, tmp_path, gguf_type):
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = merged_llama
    path = write_gguf(model, tokenizer, tmp_path / "stage.gguf", gguf_type)
    assert [p.name for p in tmp_path.iterdir()] == ["stage.gguf"]  # nothing left beside it
    text = "the king went and the people came said yes"
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        want = model(input_ids=ids).logits
    again = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name).eval()
    with torch.no_grad():
        got = again(input_ids=ids).logits
    delta = float((got - want).abs().max())
    assert delta <= TOLERANCE[gguf_type]
    assert delta > 0  # rounded for real: the bound is not vacuous
    # Every weight comes back where it was, to its type's rounding: F16 to half a unit in the last place, Q8_0 to
    # one step of its 8-bit grid (a block's max / 127). A q/k row order llama.cpp and transformers disagree on
    # would move whole rows by the weights' own size.
    read = dict(again.named_parameters())
    for name, w in model.named_parameters():
        err = (read[name].detach() - w.detach()).abs()
        bound = w.abs() * 2 ** -11 + 1e-7 if gguf_type == "f16" or w.ndim == 1 else w.abs().max() / 127 + 1e-7
        assert (err <= bound).all(), name
        # and exactly what the type's own rounding gives, in transformers' layout: nothing else moved
        assert torch.equal(read[name].detach(), rounded(w.detach(), gguf_type)), name
    read_tokenizer = AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    assert read_tokenizer(text).input_ids == tokenizer(text).input_ids
    assert read_tokenizer.chat_template == TEMPLATE
    reader = gguf.GGUFReader(str(path))
    field = reader.fields["general.architecture"]
    assert bytes(field.parts[field.data[0]]).decode() == "llama"
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_norm.weight"] == "F32"
    assert types["blk.0.attn_q.weight"] == {"f16": "F16", "q8_0": "Q8_0"}[gguf_type]
    assert "output.weight" in types  # the tiny Llama's head is not tied to its embeddings


def test_q8_0_keeps_rows_that_are_no_whole_number_of_blocks_in_f16():
    from curlora.share.export_gguf import _tensors

    model = tiny_model("llama")  # intermediate 48: down_proj's rows are 48 long, not a multiple of 32
    raw = {name: raw for name, _, raw in _tensors(model, "q8_0")}
    assert raw["blk.0.ffn_down.weight"] is None  # written as float16
    assert raw["blk.0.ffn_up.weight"].name == "Q8_0"


def test_the_tokenizer_metadata_is_llama_cpps_byte_level_bpe(merged_llama):
    model, tokenizer = merged_llama
    meta = tokenizer_metadata(tokenizer, model.config.vocab_size)
    assert meta["model"] == "gpt2" and meta["pre"] == "gpt-2"
    assert len(meta["tokens"]) == model.config.vocab_size and meta["tokens"][1] == "<s>"
    assert meta["types"][1] == 3 and meta["types"][5] == 1  # <s> is a control token, the rest normal
    assert meta["bos"] == 1 and meta["eos"] == 2 and meta["pad"] == 3 and meta["add_bos"] is True
    assert meta["merges"] and all(len(m.split(" ")) == 2 for m in meta["merges"])


def test_gguf_refuses_a_model_that_is_not_llama_and_writes_nothing(merged_llama, tmp_path):
    _, tokenizer = merged_llama
    for arch, name in (("gpt2", "gpt2"), ("qwen2", "qwen2")):
        with pytest.raises(CurloraError, match=f"Llama-family models only, and this base is a {name} model"):
            write_gguf(tiny_model(arch), tokenizer, tmp_path / f"{arch}.gguf")
    assert list(tmp_path.iterdir()) == []


# -- the CLI on a finished run --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The tiny two-task experiment (CURLoRA, LoRA, a full fine-tune and the base line) run to the end, in its own
    store."""
    from curlora.experiment import ExperimentConfig
    from curlora.run.runner import run_experiment

    tmp = tmp_path_factory.mktemp("cli-export")
    exp = make_experiment(tmp, steps=2, methods=("curlora", "lora", "base", "full"))
    exp["methods"][3] = {"kind": "full", "lr": 1e-3}
    exp["evaluation"].update(probe_every=0, self_probe_texts=2, self_probe_tokens=8)
    run = run_experiment(ExperimentConfig.from_dict(exp), root=tmp / "runs")
    assert run.status()["status"] == "completed"
    return tmp, run


@pytest.fixture
def cli(finished, monkeypatch, capsys):
    from curlora.cli.main import main

    monkeypatch.setenv("CURLORA_DATA_DIR", str(finished[0] / "runs"))

    def call(*args):
        code = main(["export", finished[1].id, *map(str, args)])
        out = capsys.readouterr()
        return code, out.out, out.err

    return call


def stage_logits(run, method, stage, ids, exported=None):
    """The stage's logits as the studio computes them, or (exported) through PEFT on a fresh base."""
    import peft
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(run.config().model.name).eval()
    model = (peft.PeftModel.from_pretrained(base, str(exported)) if exported else
             adapters.load_adapter(base, run.adapter_dir(method, stage))).eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_cli_exports_a_curlora_stage_as_lora_and_a_lora_stage_as_it_is(finished, cli):
    tmp, run = finished
    code, out, err = cli("--method", "curlora", "--stage", 2, "--lora", tmp / "out" / "curlora-2")
    assert code == 0, err
    assert "converted from CURLoRA exactly" in out and "--lora-modules" in out
    ids = torch.tensor([[1, 40, 41, 42, 43, 44]])
    want, got = stage_logits(run, "curlora", 2, ids), stage_logits(run, "curlora", 2, ids, tmp / "out" / "curlora-2")
    assert float((want - got).abs().max()) <= 1e-5
    code, out, err = cli("--method", "lora", "--stage", 1, "--lora", tmp / "out" / "lora-1")
    assert code == 0, err
    stage = run.adapter_dir("lora", 1)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (tmp / "out" / "lora-1" / name).read_bytes() == (stage / name).read_bytes()
    assert sorted(p.name for p in (tmp / "out").iterdir()) == ["curlora-2", "lora-1"]  # no temporary left
    (tmp / "fresh").mkdir()  # the user's usual permissions, not a private temporary folder's 0700
    assert (tmp / "out" / "curlora-2").stat().st_mode == (tmp / "fresh").stat().st_mode


@pytest.mark.parametrize("gguf_type", ["f16", "q8_0"])
def test_cli_exports_a_merged_stage_as_gguf(finished, cli, gguf_type):
    from transformers import AutoModelForCausalLM

    tmp, run = finished
    path = tmp / f"curlora-2-{gguf_type}.gguf"
    code, out, err = cli("--method", "curlora", "--stage", 2, "--gguf", path, "--gguf-type", gguf_type)
    assert code == 0, err
    assert f"GGUF ({gguf_type.upper()}" in out and f"FROM ./{path.name}" in out
    fresh = tmp / f"fresh-{gguf_type}"
    fresh.write_bytes(b"")
    assert path.stat().st_mode == fresh.stat().st_mode  # not mkstemp's private 0600
    ids = torch.tensor([[1, 40, 41, 42, 43, 44]])
    again = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=path.name).eval()
    with torch.no_grad():
        got = again(input_ids=ids).logits
    assert float((got - stage_logits(run, "curlora", 2, ids)).abs().max()) <= TOLERANCE[gguf_type]


def test_cli_exports_a_full_fine_tunes_stage_as_gguf(finished, cli):
    """A full fine-tune's stage is a whole model: the GGUF holds its weights (nothing to merge)."""
    from safetensors.torch import load_model
    from transformers import AutoModelForCausalLM

    tmp, run = finished
    path = tmp / "full-2.gguf"
    code, _, err = cli("--method", "full", "--stage", 2, "--gguf", path)
    assert code == 0, err
    trained = AutoModelForCausalLM.from_pretrained(run.config().model.name).eval()
    load_model(trained, str(run.adapter_dir("full", 2) / "model.safetensors"), strict=False)
    again = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=path.name).eval()
    read = dict(again.named_parameters())
    for name, w in trained.named_parameters():
        assert torch.equal(read[name].detach(), rounded(w.detach(), "f16")), name
    base = AutoModelForCausalLM.from_pretrained(run.config().model.name)
    assert not torch.equal(trained.model.layers[0].self_attn.q_proj.weight,  # trained weights, not the base's
                           base.model.layers[0].self_attn.q_proj.weight)


def unfinished_copy(run, tmp):
    """A copy of the run in another store whose metrics.json vouches for CURLoRA's first stage only (the app killed
    after saving stage 2 but before evaluating it)."""
    import shutil

    root = tmp / "runs-cut"
    shutil.copytree(run.path, root / run.id)
    metrics = json.loads((root / run.id / "metrics.json").read_text())
    rec = metrics["methods"]["curlora"]
    for key, value in list(rec.items()):
        if isinstance(value, list) and len(value) == 3:  # base row + 2 stages
            rec[key] = value[:2]
    (root / run.id / "metrics.json").write_text(json.dumps(metrics))
    return root


def test_cli_refuses_what_it_cannot_export_in_one_sentence_and_writes_nothing(finished, cli, monkeypatch):
    tmp, run = finished
    dest = tmp / "refused"
    dest.mkdir()
    taken = dest / "taken.gguf"
    taken.write_text("mine")
    cases = [
        (("--method", "dora", "--stage", 1, "--lora", dest / "a"), "has no method 'dora'; its methods are curlora, "
                                                                   "lora, base, full."),
        (("--method", "base", "--stage", 1, "--gguf", dest / "b.gguf"), "'base' (base) saves no stage"),
        (("--method", "full", "--stage", 1, "--lora", dest / "g"), "'full' (full) saves no stage that can be "
                                                                   "exported this way; pick one of the adapter methods"),
        (("--method", "curlora", "--stage", 3, "--lora", dest / "c"), "Stage must be between 1 and 2"),
        (("--method", "curlora", "--lora", dest / "d"), "needs --method M and --stage K"),
        (("--method", "curlora", "--stage", 1, "--gguf", taken), "already exists; choose a new path"),
        (("--method", "curlora", "--stage", 1, "--lora", dest / "e", "--gguf", taken), "already exists"),
        (("--method", "curlora", "--stage", 1), "choose the stage for --lora DIR or --gguf FILE"),
    ]
    for args, sentence in cases:
        code, out, err = cli(*args)
        assert code == 2 and sentence in err, (args, err)
        assert err.count("\n") == 1 and err.startswith("error: ") and err.rstrip().endswith(".")
    assert sorted(p.name for p in dest.iterdir()) == ["taken.gguf"] and taken.read_text() == "mine"

    monkeypatch.setenv("CURLORA_DATA_DIR", str(unfinished_copy(run, tmp)))
    code, _, err = cli("--method", "curlora", "--stage", 2, "--lora", dest / "f")
    assert code == 2 and "Stage 2 of 'curlora' in run" in err and "is not finished (finished: 1)" in err
    assert sorted(p.name for p in dest.iterdir()) == ["taken.gguf"]


def test_cli_refuses_gguf_for_a_base_that_is_not_llama(finished, cli, monkeypatch):
    """The same run pointed at a tiny GPT-2 base: refused, naming the architecture, before anything is merged."""
    import shutil

    tmp, run = finished
    gpt2 = tmp / "gpt2-model"
    tiny_model("gpt2").save_pretrained(gpt2)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tmp / "model" / name, gpt2 / name)
    root = tmp / "runs-gpt2"
    shutil.copytree(run.path, root / run.id)
    config = yaml.safe_load((root / run.id / "config.yaml").read_text())
    config["model"]["name"] = str(gpt2)
    (root / run.id / "config.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("CURLORA_DATA_DIR", str(root))
    code, _, err = cli("--method", "lora", "--stage", 1, "--gguf", tmp / "gpt2.gguf")
    assert code == 2 and "Llama-family models only, and this base is a gpt2 model (GPT2LMHeadModel)" in err
    assert not (tmp / "gpt2.gguf").exists()
    assert not [p for p in tmp.iterdir() if p.name.startswith(".gpt2.gguf.partial")]


def test_the_results_tab_engine_call_gives_a_lora_zip_and_a_gguf_file(finished):
    """What the Results tab's "Export stage" button calls (the tab only wires it): files in the owner's exports
    folder, made by the same engine as the CLI."""
    import zipfile

    from curlora.serve.downloads import export_stage_file
    from curlora.serve.jobs import JobManager

    tmp, run = finished
    jobs = JobManager(tmp / "runs")
    archive = export_stage_file(jobs, run.id, "curlora", 1, "lora")
    assert archive.endswith(f"{run.id}-curlora-stage-1-lora.zip")
    with zipfile.ZipFile(archive) as z:
        assert sorted(z.namelist()) == ["curlora-stage-1-lora/", "curlora-stage-1-lora/adapter_config.json",
                                        "curlora-stage-1-lora/adapter_model.safetensors"]
        assert json.loads(z.read("curlora-stage-1-lora/adapter_config.json"))["peft_type"] == "LORA"
    path = export_stage_file(jobs, run.id, "lora", 2, "gguf-q8_0")
    assert path.endswith(f"{run.id}-lora-stage-2-q8_0.gguf") and open(path, "rb").read(4) == b"GGUF"
    with pytest.raises(CurloraError, match="Unknown stage export 'gguf-q4'"):
        export_stage_file(jobs, run.id, "lora", 2, "gguf-q4")


def test_the_results_tab_exports_a_stage_through_the_app(finished):
    gradio_client = pytest.importorskip("gradio_client")

    from app_server import serving

    tmp, run = finished
    with serving(run.root) as (url, _):
        client = gradio_client.Client(url, verbose=False)
        path = client.predict(run.id, "curlora", 2, "gguf-f16", api_name="/export_stage")
        assert path.endswith("-curlora-stage-2-f16.gguf") and open(path, "rb").read(4) == b"GGUF"
        with pytest.raises(gradio_client.exceptions.AppError, match="Stage must be between 1 and 2"):
            client.predict(run.id, "curlora", 3, "lora", api_name="/export_stage")


def spm_tokenizer():
    """A Llama-2-style tokenizer: sentencepiece-like BPE with byte fallback (no byte-level alphabet), trained on
    the tiny corpus, with <unk>, <s>, </s> and the 256 byte tokens first."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizer

    from tiny_models import WORDS

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tok.train_from_iterator([" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(12)) for i in range(200)],
                            trainers.BpeTrainer(vocab_size=400, special_tokens=specials))
    data = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in data["merges"]]
    return LlamaTokenizer(vocab=data["vocab"], merges=merges)


def test_a_sentencepiece_style_llama_tokenizer_round_trips_with_scores_and_byte_tokens(tmp_path):
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    tokenizer = spm_tokenizer()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=len(tokenizer), max_position_embeddings=64, bos_token_id=1, eos_token_id=2)).eval()
    path = write_gguf(model, tokenizer, tmp_path / "spm.gguf", "f16")
    reader = gguf.GGUFReader(str(path))
    field = reader.fields["tokenizer.ggml.model"]
    assert bytes(field.parts[field.data[0]]).decode() == "llama"
    meta = tokenizer_metadata(tokenizer, len(tokenizer))
    assert meta["types"][:4] == [2, 3, 3, 6] and meta["scores"][300] == -300.0  # unk, <s>, </s>, <0x00>; -id
    assert meta["space_prefix"] is True
    text = "the king went é!"  # é and ! are not in the trained vocabulary: byte fallback
    again = AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    assert again(text).input_ids == tokenizer(text).input_ids
    ids = torch.tensor([tokenizer(text).input_ids])
    read = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name).eval()
    with torch.no_grad():
        assert float((read(input_ids=ids).logits - model(input_ids=ids).logits).abs().max()) <= TOLERANCE["f16"]
