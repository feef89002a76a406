"""Drift probes, the learnability verdict and the matched-loss comparison, on tiny models."""

import copy
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from curlora.adapter.layer import math_weight
from curlora.cli.main import build_parser
from curlora.data.task_config import TaskConfig
from curlora.data.tasks import load_task
from curlora.errors import CurloraError
from curlora.experiment import ExperimentConfig, MethodSettings, TrainingSettings
from curlora.measure import probes
from curlora.measure.metrics import majority_share
from curlora.measure.record import RunMetrics
from curlora.methods import adapters
from curlora.run.runner import Executor, adapter_config, start
from curlora.run.sweep import SWEEP_FILE, lr_sweep
from curlora.run.train import train_task
from test_runner import experiment, make_tasks  # noqa: F401  (experiment is a fixture)
from tiny_models import save_tiny_llama_dir, tiny_model, tokens


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_tiny_llama_dir(tmp_path_factory.mktemp("model"))


def load(folder):
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def attach(model, kind, r=4, targets=("q_proj", "v_proj")):
    return adapters.attach(model, adapter_config(MethodSettings(kind=kind, r=r, target_modules=list(targets)), model))


def perturb(adapted, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapted.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))


# -- self-sampled probe text -------------------------------------------------------------------------------
def test_self_probe_texts_are_reproducible_for_a_seed_and_stored(llama_dir, tmp_path):
    model, tok = load(llama_dir)
    a = probes.sample_self_probe(model, tok, texts=3, tokens=12, seed=5)
    b = probes.sample_self_probe(model, tok, texts=3, tokens=12, seed=5)
    c = probes.sample_self_probe(model, tok, texts=3, tokens=12, seed=6)
    assert a.shape == (3, 13) and (a[:, 0] == tok.bos_token_id).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len({tuple(row) for row in a.tolist()}) == 3  # sampled, not three copies of one greedy text
    with pytest.raises(CurloraError, match=r"self_probe_tokens: 400 tokens do not fit .* 256 positions"):
        probes.sample_self_probe(model, tok, texts=1, tokens=400)
    greedy = probes.sample_self_probe(model, tok, texts=2, tokens=12, temperature=0, seed=1)
    assert torch.equal(greedy[0], greedy[1])
    ids, ref, info = probes.load_or_sample(tmp_path, model, tok, 3, 12, 1.0, 5)
    assert torch.equal(ids, a) and info["reference"] == "full" and ref["logp"].shape == (3, 12, len(tok))
    stored = json.loads((tmp_path / probes.PROBE_FILE).read_text())
    assert stored["ids"] == a.tolist() and len(stored["texts"]) == 3
    again, ref2, _ = probes.load_or_sample(tmp_path, None, None, 3, 12, 1.0, 5)  # read back: no model needed
    assert torch.equal(again, ids) and torch.equal(ref2["logp"], ref["logp"])


def test_texts_grouped_under_a_small_logits_budget_give_the_same_reference_and_measures(llama_dir, monkeypatch):
    model, tok = load(llama_dir)
    ids = probes.sample_self_probe(model, tok, texts=5, tokens=16, seed=1)
    budget = 2 * 2 * 17 * len(tok) * 4  # two texts per group: 2, 2, 1
    together = probes.reference(model, ids)
    with monkeypatch.context() as m:
        m.setattr(probes, "LOGITS_BUDGET", budget)
        assert [start for start, _ in probes._groups(model, ids)] == [0, 2, 4]
        apart = probes.reference(model, ids)
    assert torch.allclose(apart["logp"], together["logp"], atol=1e-6)
    moved = attach(model, "lora")
    perturb(moved)
    want = probes.self_probe_measures(moved, ids, together)
    monkeypatch.setattr(probes, "LOGITS_BUDGET", budget)
    got = probes.self_probe_measures(moved, ids, apart)
    assert got["self_ppl"] == pytest.approx(want["self_ppl"], rel=1e-6) and got["kl_to_base"] > 0
    assert got["kl_to_base"] == pytest.approx(want["kl_to_base"], rel=1e-4, abs=1e-9)


@pytest.mark.parametrize("kind", ["curlora", "lora"])
@pytest.mark.parametrize("full_vocab", [True, False])
def test_kl_is_zero_untrained_and_positive_after_training(llama_dir, kind, full_vocab, monkeypatch):
    if not full_vocab:
        monkeypatch.setattr(probes, "FULL_VOCAB_MAX", 16)  # force the top-k + remainder reference
    model, tok = load(llama_dir)
    ids = probes.sample_self_probe(model, tok, texts=3, tokens=16, seed=0)
    ref = probes.reference(model, ids, top_k=8)
    assert ("index" in ref) != full_vocab
    base = probes.self_probe_measures(model, ids, ref)
    assert base["kl_to_base"] == 0.0 and base["self_ppl"] > 1
    adapted = attach(model, kind)
    untrained = probes.self_probe_measures(adapted, ids, ref)
    assert untrained == base  # exactly: U = 0 / B = 0 leave every logit as it was
    opt = torch.optim.Adam([p for p in adapted.parameters() if p.requires_grad], lr=0.05)
    batch = ids[:, :8]
    adapted.train()
    for _ in range(5):  # learn the first half of the probe texts: a real, small drift
        loss = adapted(input_ids=batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    trained = probes.self_probe_measures(adapted, ids, ref)
    assert trained["kl_to_base"] > 0 and trained["self_ppl"] != base["self_ppl"]
    adapters.detach(adapted)


def test_topk_kl_is_a_lower_bound_of_the_full_kl(llama_dir, monkeypatch):
    model, tok = load(llama_dir)
    ids = probes.sample_self_probe(model, tok, texts=2, tokens=16, seed=3)
    full_ref = probes.reference(model, ids)
    monkeypatch.setattr(probes, "FULL_VOCAB_MAX", 16)
    top_ref = probes.reference(model, ids, top_k=8)
    adapted = attach(model, "lora")
    perturb(adapted)
    full = probes.self_probe_measures(adapted, ids, full_ref)["kl_to_base"]
    top = probes.self_probe_measures(adapted, ids, top_ref)["kl_to_base"]
    assert 0 < top <= full
    adapters.detach(adapted)


# -- weight drift ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch,targets", [("llama", ["q_proj", "v_proj", "down_proj"]), ("gpt2", ["c_attn", "c_fc"])])
@pytest.mark.parametrize("kind", ["curlora", "lora"])
def test_weight_drift_matches_the_dense_merged_difference(arch, targets, kind):
    model = tiny_model(arch)
    before = {n: math_weight(m).detach().clone() for n, m in model.named_modules() if hasattr(m, "weight")}
    adapted = attach(model, kind, r=3, targets=targets)
    assert probes.weight_drift(adapted)["total"] == 0.0
    perturb(adapted, seed=1)
    drift = probes.weight_drift(adapted)
    merged = adapters.merge(copy.deepcopy(adapted))
    after = {n: math_weight(m).detach() for n, m in merged.named_modules() if hasattr(m, "weight")}
    n_adapted = 2 * len(targets)
    assert len(drift["per_matrix"]) == n_adapted
    d2 = w2 = 0.0
    for name, value in drift["per_matrix"].items():
        delta = (after[name] - before[name]).double()
        dense = float(delta.norm() / before[name].double().norm())
        assert value == pytest.approx(dense, rel=1e-4) and value > 0
        d2, w2 = d2 + float(delta.pow(2).sum()), w2 + float(before[name].double().pow(2).sum())
    assert drift["total"] == pytest.approx((d2 / w2) ** 0.5, rel=1e-4)
    adapters.detach(adapted)


def test_weight_drift_of_a_full_fine_tune_against_its_snapshot():
    model = tiny_model("gpt2")
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    assert probes.weight_drift(model, snapshot)["total"] == 0.0
    with torch.no_grad():
        model.transformer.h[0].attn.c_attn.weight.mul_(1.5)
    drift = probes.weight_drift(model, snapshot)
    assert drift["per_matrix"]["transformer.h.0.attn.c_attn.weight"] == pytest.approx(0.5)
    assert drift["per_matrix"]["transformer.h.1.attn.c_attn.weight"] == 0.0
    assert 0 < drift["total"] < 0.5
    assert probes.weight_drift(tiny_model("llama")) == {"total": 0.0, "per_matrix": {}}  # no adapter, no snapshot


# -- matched loss ------------------------------------------------------------------------------------------
def test_stop_at_loss_stops_at_the_first_step_at_or_below_the_target(llama_dir, tmp_path):
    make_tasks(tmp_path)
    model, tok = load(llama_dir)
    task = load_task(TaskConfig.from_dict({"name": "sent", "train_file": str(tmp_path / "sent.csv"), "eval_size": 12,
                                           "verbalizers": {"0": "bad", "1": "good"}}))
    cfg = TrainingSettings(max_steps=12, batch_size=4, lr=0.01, max_length=48, scheduler="constant")

    def train(**kw):
        torch.manual_seed(0)  # PEFT initialises lora_A from the global generator
        adapted = attach(model, "lora")
        seen = []
        result = train_task(adapted, tok, task, cfg, lr=cfg.lr, on_step=lambda e: seen.append(e["smoothed_loss"]), **kw)
        adapters.detach(adapted)
        return result, seen

    free, curve = train()
    assert free.reached is None and free.steps == 12 and free.smoothed_loss == curve[-1]
    target = sorted(curve)[len(curve) // 2]  # reached somewhere mid-run
    expected = next(i + 1 for i, s in enumerate(curve) if s <= target)
    matched, seen = train(stop_at_loss=target)
    assert matched.reached is True and matched.steps == expected < 12 and matched.smoothed_loss <= target
    assert seen == curve[:expected]  # same examples, same order: the same run, cut short
    never, _ = train(stop_at_loss=0.0)
    assert never.reached is False and never.steps == 12


def test_matched_loss_config_needs_a_reference_that_runs_first():
    base = {"tasks": [{"name": "a", "train_file": "x.csv"}],
            "methods": [{"kind": "curlora"}, {"kind": "lora"}]}

    def matched(reference):
        return {"comparison": "matched_loss", "matched_loss_reference": reference}

    with pytest.raises(CurloraError, match=r"training\.matched_loss_reference: 'lora' must run first.*curlora"):
        ExperimentConfig.from_dict({**base, "training": matched("lora")})
    with pytest.raises(CurloraError, match=r"exactly one of training\.target_loss"):
        ExperimentConfig.from_dict({**base, "training": {"comparison": "matched_loss"}})
    with pytest.raises(CurloraError, match=r"'qlora' is not a method of this run"):
        ExperimentConfig.from_dict({**base, "training": matched("qlora")})
    with pytest.raises(CurloraError, match=r"training\.comparison: 'equal'"):
        ExperimentConfig.from_dict({**base, "training": {"comparison": "equal"}})
    with pytest.raises(CurloraError, match=r"evaluation\.self_probe_tokens: expected a whole number"):
        ExperimentConfig.from_dict({**base, "evaluation": {"self_probe_tokens": "many"}})
    ok = ExperimentConfig.from_dict({**base, "training": matched("curlora")})
    assert ExperimentConfig.from_yaml(ok.to_yaml()).to_dict() == ok.to_dict()


# -- the runner end to end ---------------------------------------------------------------------------------
def test_runner_records_probes_learnability_and_matched_loss(experiment):  # noqa: F811
    cfg, root = experiment
    d = cfg.to_dict()
    d["methods"] = [{"kind": "lora", "r": 4, "target_modules": ["q_proj", "v_proj"]},
                    {"kind": "curlora", "r": 4, "target_modules": ["q_proj", "v_proj"]}, {"kind": "base"}]
    d["training"].update(comparison="matched_loss", matched_loss_reference="lora", matched_loss_max_steps=6)
    d["evaluation"].update(self_probe_texts=3, self_probe_tokens=16, probe_every=0)
    cfg = ExperimentConfig.from_dict(d)
    run, loaded = start(cfg, root)
    assert Executor(run, cfg, loaded).execute() == "completed"
    m = run.metrics()
    assert m["self_probe"]["texts"] == 3 and (run.path / "self_probe.json").is_file()
    assert m["comparison"] == "matched_loss" and m["base"]["kl_to_base"] == 0.0
    for label, rec in m["methods"].items():
        assert len(rec["self_ppl"]) == len(rec["kl_to_base"]) == len(rec["drift"]) == 3
        assert rec["self_ppl"][0] == m["base"]["self_ppl"] and rec["kl_to_base"][0] == 0.0
        assert rec["drift"][0] == {"total": 0.0, "per_matrix": {}}
    for label in ("lora", "curlora"):
        rec = m["methods"][label]
        assert all(k > 0 for k in rec["kl_to_base"][1:]) and all(x["total"] > 0 for x in rec["drift"][1:])
        assert len(rec["drift"][2]["per_matrix"]) == 4  # q, v in 2 layers
    lora, cur = m["methods"]["lora"]["train"], m["methods"]["curlora"]["train"]
    assert [t["target_loss"] for t in lora] == [None, None] and [t["steps"] for t in lora] == [4, 4]
    for ref, t in zip(lora, cur):
        assert t["target_loss"] == ref["smoothed_loss"] and t["lr"] == 0.01
        assert t["reached"] == (t["smoothed_loss"] <= t["target_loss"]) and 1 <= t["steps"] <= 6
        assert t["reached"] or t["steps"] == 6
    assert m["methods"]["base"]["kl_to_base"] == [0.0, 0.0, 0.0]
    # The learnability line is the majority share of each task's eval set, and the verdict names who cleared it.
    assert len(m["learnability"]) == 2
    for j, (line, task) in enumerate(zip(m["learnability"], loaded.tasks)):
        assert line["majority"] == majority_share(list(task.eval["label_id"])) == m["majority"][j]
        assert line["base"] == m["base"]["accuracy"][j]
        assert set(line["after_training"]) == {"lora", "curlora"}
        for label, acc in line["after_training"].items():
            t = line["tests"][label]  # a one-sided test on the stored rows, not a margin
            rec = m["methods"][label]
            assert t["n"] == rec["matrix_n"][j + 1][j] == len(task.eval) and t["k"] == round(acc * t["n"])
            assert set(t["p"]) == {"majority", "base"} and t["unpaired"] == []
            assert t["p_value"] == max(t["p"].values())
            assert (label in line["learned_by"]) == (t["p_value"] < 0.05)
        assert line["verdict"].startswith("No method learned" if not line["learned_by"] else f"Task '{task.name}' was")


def _rec(kind, cells, n=64):
    """A record whose stages' accuracies are k/n with per-row bits (the first k rows right)."""
    from curlora.measure.stats import to_bits, wilson

    def row(ks):
        return [None if k is None else k / n for k in ks], [None if k is None else n for k in ks], \
            [None if k is None else to_bits([i < k for i in range(n)]) for k in ks]

    rows = [row(ks) for ks in cells]
    return {"kind": kind, "matrix": [r[0] for r in rows], "matrix_n": [r[1] for r in rows],
            "matrix_correct": [r[2] for r in rows]}


def test_learned_is_a_one_sided_test_not_a_margin():
    # 33/64 against a 50 % majority: p = 0.45, not learned; 37/64 (p = 0.13) neither; 46/64 (p = 0.0003) is.
    metrics = {"tasks": ["a"], "majority": [0.5], "base": None,
               "methods": {"lora": _rec("lora", [[None], [33]]), "curlora": _rec("curlora", [[None], [46]]),
                           "full": _rec("full", [[None], [37]])}}
    (a,) = probes.learnability(RunMetrics.of(metrics))
    assert a["learned_by"] == ["curlora"]
    assert abs(a["tests"]["lora"]["p_value"] - 0.4503) < 1e-3 and abs(a["tests"]["full"]["p_value"] - 0.1302) < 1e-3
    assert a["tests"]["curlora"]["p_value"] < 0.001 and a["tests"]["curlora"]["k"] == 46
    assert "curlora 46/64 (p < 0.001)" in a["verdict"]


def test_against_the_base_the_same_rows_are_paired():
    # base right on rows 0..39, the method on rows 0..45: 6 rows only the method gets, 0 the other way round:
    # McNemar p = 0.5**6 = 0.016, learned; right on rows 18..63 instead (still 46/64) it gains 24 rows the base
    # missed and loses 18 the base had: McNemar p = P(X >= 24 | 42, 1/2) = 0.22, not learned.
    from curlora.measure.stats import to_bits
    n = 64
    base_bits = [i < 40 for i in range(n)]
    metrics = {"tasks": ["a"], "majority": [0.5],
               "base": {"accuracy": [40 / n], "n": [n], "correct": [to_bits(base_bits)]},
               "methods": {"lora": _rec("lora", [[40], [46]])}}
    (a,) = probes.learnability(RunMetrics.of(metrics), untrained=set())
    assert abs(a["tests"]["lora"]["p"]["base"] - 0.5 ** 6) < 1e-12 and a["learned_by"] == ["lora"]
    shifted = [18 <= i < 64 for i in range(n)]
    metrics["methods"]["lora"]["matrix_correct"][1] = [to_bits(shifted)]
    (a,) = probes.learnability(RunMetrics.of(metrics))
    assert abs(a["tests"]["lora"]["p"]["base"] - 0.2204) < 1e-3 and a["learned_by"] == []
    assert a["verdict"].startswith("No method learned task 'a'")


def test_learnability_verdict_with_a_head_only_control():
    metrics = {"tasks": ["a", "b"], "majority": [0.5, 0.5], "base": None,
               "methods": {"head-only": _rec("head-only", [[None, None], [40, None], [40, 32]]),
                           "curlora": _rec("curlora", [[None, None], [56, None], [56, 32]]),
                           "lora": _rec("lora", [[None, None], [42, None], [38, 50]])}}
    a, b = probes.learnability(RunMetrics.of(metrics), control="head-only")
    assert a["head_only"] == 40 / 64 and a["learned_by"] == ["curlora"] and "head-only control (0.625)" in a["verdict"]
    assert a["tests"]["lora"]["p"]["head_only"] == 0.25  # 2 rows more than the control: nothing
    assert b["learned_by"] == ["lora"]
    metrics["methods"]["lora"] = _rec("lora", [[None, None], [42, None], [38, 36]])
    b = probes.learnability(RunMetrics.of(metrics), control="head-only")[1]
    assert b["learned_by"] == [] and b["verdict"].startswith("No method learned task 'b'")
    metrics["methods"] = {k: {**v, **{f: v[f][:2] for f in ("matrix", "matrix_n", "matrix_correct")}}
                          for k, v in metrics["methods"].items()}
    verdict = probes.learnability(RunMetrics.of(metrics), control="head-only")[1]["verdict"]
    assert verdict == "Task 'b' has not been trained yet."


def test_a_run_stored_without_row_counts_is_not_called_learned():
    metrics = {"tasks": ["a"], "majority": [0.5], "methods": {"lora": {"kind": "lora", "matrix": [[0.5], [0.9]]}}}
    (a,) = probes.learnability(RunMetrics.of(metrics))
    assert a["learned_by"] == [] and "not testable" in a["verdict"]


# -- the learning-rate sweep -------------------------------------------------------------------------------
def test_lr_sweep_picks_the_lowest_final_loss_and_keeps_results(experiment):  # noqa: F811
    cfg, root = experiment
    d = cfg.to_dict()
    d["methods"] = [{"kind": "lora", "r": 4, "target_modules": ["q_proj"]}, {"kind": "base"},
                    {"kind": "curlora", "r": 4, "target_modules": ["q_proj"], "name": "cur", "lr": 5.0}]
    cfg = ExperimentConfig.from_dict(d)
    run, results = lr_sweep(cfg, [1e-5, 1e-2, 1e12], steps=3, root=root)
    assert json.loads((run.path / SWEEP_FILE).read_text()) == results
    assert set(results["methods"]) == {"lora", "cur"} and results["task"] == "sent"
    for r in results["methods"].values():
        assert [x["lr"] for x in r["runs"]] == [1e-5, 1e-2, 1e12]
        ok = [x for x in r["runs"] if not x["diverged"]]
        assert r["best_lr"] == min(ok, key=lambda x: x["smoothed_loss"])["lr"]
        assert all(x["steps"] == 3 for x in ok)
    assert results["methods"]["lora"]["runs"][2]["diverged"]
    assert run.status()["status"] == "completed"
    assert "sweep" in build_parser().format_help()
