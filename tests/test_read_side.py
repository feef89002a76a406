"""The registry on the read side (issue 27 item 5): one `Method.load(base, folder)` serves chat, evaluation and merged
export, so every kind that saves a stage is a chat pane and can be evaluated, `full` included, and what each of them
reads back is what the runner measured at that stage: the same per-row correctness and the same perplexity, to the
last bit. Each kind recognises its own stages (`Method.owns`), and the peers that rewrite the base share one helper
that keeps the weights aside and writes them back."""

import json

import pytest
import torch

from curlora.errors import CurloraError
from curlora.experiment import ExperimentConfig
from curlora.measure.perplexity import perplexity
from curlora.measure.scoring import score
from curlora.measure.stats import to_bits
from curlora.methods import adapters
from curlora.methods.kinds import stage_kind
from curlora.methods.peers import kept_aside
from curlora.methods.registry import method
from curlora.models.loading import load_model
from curlora.run.chat import Chat, pane_choices
from curlora.run.evaluate import stage_model
from curlora.run.runner import load_everything, run_experiment
from curlora.run.store import Run
from tiny_experiment import make_experiment
from tiny_models import tiny_model, tokens

LABELS = ("curlora", "lora", "full")


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """A finished two-task run of curlora, lora and full fine-tuning on the tiny Llama, with what the runner loaded
    (its tasks and probe ids) to measure the stages again."""
    folder = tmp_path_factory.mktemp("readside")
    exp = make_experiment(folder / "exp", steps=2, methods=LABELS)
    exp["methods"][2] = {"kind": "full", "lr": 1e-3}
    exp["evaluation"].update(probe_every=0, self_probe_texts=2, self_probe_tokens=8)
    cfg = ExperimentConfig.from_dict(exp)
    run = run_experiment(cfg, root=folder / "runs")
    assert run.status()["status"] == "completed"
    return run, cfg, load_everything(cfg), folder


def measured(model, cfg, loaded) -> tuple[list[str], float]:
    """(per-row correctness of every task, as stored; probe perplexity) of `model`, measured as the runner does."""
    ev, tr = cfg.evaluation, cfg.training
    bits = [to_bits(score(model, loaded.tokenizer, t, t.eval, ev.scoring, tr.max_length, ev.batch_size)["correct"])
            for t in loaded.tasks]
    return bits, perplexity(model, loaded.probe_ids, ev.ppl_window, ev.ppl_stride)["ppl"]


def stored(run: Run, label: str, stage: int) -> tuple[list[str], float]:
    rec = run.record().methods[label]
    return list(rec.matrix_correct[stage]), rec.ppl[stage]


def test_every_kind_that_saves_a_stage_is_a_chat_pane(three):
    run, _, _, _ = three
    assert pane_choices(run) == {"curlora": [1, 2], "full": [1, 2], "lora": [1, 2]}
    assert [k for k in ("curlora", "lora", "full", "joint", "ewc", "mica", "pissa", "corda", "osf", "dora")
            if not method(k).loads_stage] == []
    assert [k for k in ("base", "head-only") if method(k).loads_stage] == []
    full = run.adapter_dir("full", 2)
    assert method("full").has_stage(full) and not method("lora").has_stage(full)
    assert method("lora").has_stage(run.adapter_dir("lora", 2)) and not method("full").has_stage(
        run.adapter_dir("lora", 2))


def test_chat_loads_every_stage_as_the_runner_measured_it_and_gives_the_base_back(three):
    run, cfg, loaded, _ = three
    chat = Chat()
    base, _ = chat.base(cfg)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    base_ppl = run.record().base.ppl
    for label in LABELS:
        for stage in (1, 2):
            with chat.pane_model(run, base, f"{label}@{stage}") as model:
                bits, ppl = measured(model, cfg, loaded)
            assert (bits, ppl) == stored(run, label, stage), (label, stage)
            assert ppl != base_ppl  # the stage's own weights were read, not the base's
            assert all(torch.equal(before[k], v) for k, v in base.state_dict().items()), (label, stage)
    reply = list(chat.stream(run.id, "full@2", "the king", max_new_tokens=6, root=run.root))[-1]
    assert isinstance(reply, str)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    with pytest.raises(CurloraError, match="no saved full weights after stage 3"):
        list(chat.stream(run.id, "full@3", "the king", root=run.root))


def test_evaluation_reproduces_every_stage_of_every_kind(three, capsys, monkeypatch):
    """The evaluate module's stage loading gives the stored rows; `python -m curlora eval --text` the stored
    perplexity (before, a full stage was refused)."""
    from curlora.cli.main import main
    from curlora.run.store import DATA_DIR_ENV

    run, cfg, loaded, folder = three
    base = load_model(cfg.model.name, dtype=cfg.model.dtype, device=cfg.model.device)[0]
    monkeypatch.setenv(DATA_DIR_ENV, str(run.root))
    for label in LABELS:
        for stage in (1, 2):
            model, release = stage_model(run, cfg, base, label, stage)
            try:
                assert measured(model, cfg, loaded) == stored(run, label, stage), (label, stage)
            finally:
                release()
            capsys.readouterr()
            assert main(["eval", run.id, "--method", label, "--stage", str(stage),
                         "--text", str(folder / "exp" / "probe.txt")]) == 0
            out = json.loads(capsys.readouterr().out)
            assert (out["method"], out["stage"], out["ppl"]) == (label, stage, stored(run, label, stage)[1])


def test_merged_export_of_every_kind(three, tmp_path):
    from curlora.share.export import export_merged
    from curlora.share.export_gguf import merged_stage

    run, cfg, loaded, _ = three
    written = export_merged(run, run.record(), tmp_path)
    assert sorted(p.name for p in written) == sorted(LABELS)
    for label in LABELS:
        merged = load_model(str(tmp_path / label), dtype=cfg.model.dtype)[0]
        ppl = measured(merged, cfg, loaded)[1]
        if label == "full":
            assert ppl == stored(run, label, 2)[1]  # the whole weights, saved as they were
        else:
            assert ppl == pytest.approx(stored(run, label, 2)[1], rel=1e-4)  # folded in: float sums reordered
    assert measured(merged_stage(run, "full", 1)[0], cfg, loaded) == stored(run, "full", 1)


def test_each_kind_recognises_its_own_stages():
    lora = {"peft_type": "LORA", "init_lora_weights": True}
    assert stage_kind(lora, {}) == "lora"
    assert stage_kind({**lora, "init_lora_weights": "mica"}, {}) == "mica"  # MiCA refines LoRA
    assert stage_kind({**lora, "use_dora": True}, {}) == "dora"
    assert stage_kind({**lora, "init_lora_weights": "pissa_niter_4"}, {}) == "pissa"
    assert stage_kind({**lora, "init_lora_weights": "corda"}, {}) == "corda"
    assert stage_kind({"peft_type": "OSF"}, {}) == "osf"
    assert stage_kind({"peft_type": "CURLORA"}, {}) == "curlora"
    for kind in ("pissa", "corda", "osf"):  # their stages read as plain LoRA: the marker says which
        assert stage_kind(lora, {"kind": kind}) == kind
    assert stage_kind({"peft_type": "IA3"}, {}) is None
    with pytest.raises(CurloraError, match="reads as mica and as dora"):
        stage_kind({**lora, "init_lora_weights": "mica", "use_dora": True}, {})
    assert adapters.kind_of({"peft_type": "IA3"}) == "lora"  # as before: what no kind claims is plain LoRA


def test_kept_aside_writes_the_base_back_on_failure_and_on_cleanup():
    base = tiny_model("llama")
    names = ["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"]
    before = {k: v.clone() for k, v in base.state_dict().items()}

    def spoil_then_fail():
        with torch.no_grad():
            for n in names:
                base.get_submodule(n).weight.add_(1.0)
        raise RuntimeError("init stopped half way")

    with pytest.raises(RuntimeError, match="half way"):
        kept_aside(base, names, spoil_then_fail)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())

    def spoil_then_attach():
        with torch.no_grad():
            base.get_submodule(names[0]).weight.mul_(0.5)
        return adapters.attach(base, method("lora").peft_config(
            type("S", (), {"r": 2, "alpha": None, "dropout": 0.0, "target_modules": ["q_proj"]})(), base), kind="lora")

    attached = kept_aside(base, names, spoil_then_attach)
    assert sorted(attached.snapshot) == sorted(names)
    assert adapters.method_of(attached.model) == "lora"
    attached.model(tokens())
    attached.cleanup()
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
