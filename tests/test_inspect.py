"""CURLoRA's sampling made visible: leverage scores, the inspection report, `python -m curlora inspect` and the
Model tab's figure — exact on hand-made matrices, and the draws checked against what the adapter holds."""

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from conftest import REPO
from curlora import CURLoRAConfig, get_curlora_model
from curlora.adapter.sampling import SAMPLING_MODES, leverage_scores, probabilities, sampling_probabilities
from curlora.cli.main import main
from curlora.experiment import SAMPLING_RULES
from curlora.measure.cur_sampling import energy_share, inspect_model, table, tv_from_uniform, uniform_energy
from tiny_models import TARGETS, save_tiny_llama_dir, tiny_model

FIELDS = {"name", "shape", "probabilities", "tv_from_uniform", "rows", "cols", "unique_columns", "unique_rows",
          "energy_c", "energy_r", "histograms"}
F64 = torch.float64


class OneLinear(nn.Module):
    """A model with one adaptable matrix, `proj`, set by hand."""

    def __init__(self, weight):
        super().__init__()
        self.proj = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        with torch.no_grad():
            self.proj.weight.copy_(weight)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_llama_dir(tmp_path_factory.mktemp("tiny-llama"))


# --- leverage -------------------------------------------------------------------------------------------------

def test_leverage_on_a_scaled_permutation_is_the_closed_form():
    # W = P diag(5, 4, 3, 2, 1) Q: its top-2 singular vectors are the basis vectors where 5 and 4 sit, so half the
    # mass goes to each of those two rows and columns and nothing to the others.
    rows_perm, cols_perm = [2, 0, 4, 1, 3], [3, 1, 0, 4, 2]
    d = torch.diag(torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0]))
    w = d[rows_perm][:, cols_perm]
    row_p, col_p = leverage_scores(w, 2)
    want_rows = torch.zeros(5, dtype=F64)
    want_rows[[rows_perm.index(0), rows_perm.index(1)]] = 0.5
    want_cols = torch.zeros(5, dtype=F64)
    want_cols[[cols_perm.index(0), cols_perm.index(1)]] = 0.5
    assert torch.allclose(row_p, want_rows, atol=1e-12) and torch.allclose(col_p, want_cols, atol=1e-12)
    assert probabilities(w, 2, "leverage")[1].dtype == F64


def test_leverage_sums_to_one_and_full_rank_columns_are_uniform():
    w = torch.randn(40, 12, generator=torch.Generator().manual_seed(0))
    for k in (1, 3, 12):
        row_p, col_p = leverage_scores(w, k)
        assert row_p.sum().item() == pytest.approx(1.0) and col_p.sum().item() == pytest.approx(1.0)
    # k = n: V is a full orthogonal matrix, every row of it has norm 1, so π_j = 1/n; the row scores are the
    # hat matrix's diagonal W (WᵀW)⁻¹ Wᵀ over n.
    row_p, col_p = leverage_scores(w, 12)
    w64 = w.double()
    hat = torch.diagonal(w64 @ torch.linalg.inv(w64.T @ w64) @ w64.T) / 12
    assert torch.allclose(col_p, torch.full((12,), 1 / 12, dtype=F64)) and torch.allclose(row_p, hat)


def test_leverage_stops_at_the_rank_of_w():
    # Rank 1 (u vᵀ): asking for k = 4 gives the k = 1 scores v² / ‖v‖², not arbitrary null-space vectors.
    u, v = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([3.0, 0.0, 1.0, -1.0])
    row_p, col_p = leverage_scores(torch.outer(u, v), 4)
    assert torch.allclose(col_p, (v.double() ** 2) / (v.double() ** 2).sum())
    assert torch.allclose(row_p, (u.double() ** 2) / (u.double() ** 2).sum())
    uniform_rows, uniform_cols = leverage_scores(torch.zeros(3, 4), 2)
    assert torch.equal(uniform_cols, torch.full((4,), 0.25, dtype=F64))
    assert torch.allclose(uniform_rows, torch.full((3,), 1 / 3, dtype=F64))


def test_leverage_needs_the_matrix_and_is_a_valid_setting_everywhere():
    with pytest.raises(ValueError, match="needs the matrix"):
        sampling_probabilities(torch.ones(4), "leverage")
    assert "leverage" in SAMPLING_MODES and SAMPLING_RULES == SAMPLING_MODES
    assert CURLoRAConfig(r=2, target_modules=["q_proj"], sampling="leverage").sampling == "leverage"


# --- the report's measures --------------------------------------------------------------------------------------

def test_tv_from_uniform_by_hand():
    assert tv_from_uniform(torch.full((7,), 1 / 7, dtype=F64)) == pytest.approx(0.0, abs=1e-15)
    assert tv_from_uniform(torch.tensor([0.5, 0.5, 0.0, 0.0])) == pytest.approx(0.5)  # ½ (4 × 0.25)
    assert tv_from_uniform(torch.tensor([1.0, 0.0, 0.0, 0.0])) == pytest.approx(0.75)  # ½ (0.75 + 3 × 0.25)


def test_energy_is_exact_on_a_hand_matrix():
    # Column norms² 1, 4, 9, 0; row norms² 1, 4, 9: ‖W‖²_F = 14.
    w = torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 3.0, 0]])
    col_sq, row_sq = (w.double() ** 2).sum(0), (w.double() ** 2).sum(1)
    assert energy_share(col_sq, torch.tensor([1, 2])) == pytest.approx(13 / 14)
    assert energy_share(col_sq, torch.tensor([2, 2, 3])) == pytest.approx(9 / 14)  # a repeat counts once
    report = inspect_model(OneLinear(w), r=2, sampling="norm", targets=["proj"], seed=1)
    (m,) = report["matrices"]
    assert m["shape"] == [3, 4] and 3 not in m["cols"]  # norm sampling never takes the zero column
    assert m["energy_c"] == pytest.approx(sum(col_sq[j].item() for j in set(m["cols"])) / 14)
    assert m["energy_r"] == pytest.approx(sum(row_sq[i].item() for i in set(m["rows"])) / 14)
    assert m["energy_c_uniform"] == pytest.approx(1 - (3 / 4) ** 2) and uniform_energy(4, 2, False) == 0.5


# --- the report on models ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch, sampling, replace", [
    ("llama", "inverted", True), ("llama", "leverage", False), ("gpt2", "leverage", True), ("qwen2", "norm", True)])
def test_drawn_indices_are_what_the_adapter_holds(arch, sampling, replace):
    report = inspect_model(tiny_model(arch), r=4, sampling=sampling, targets=TARGETS[arch], seed=7, replace=replace)
    adapted = get_curlora_model(tiny_model(arch), CURLoRAConfig(r=4, target_modules=TARGETS[arch], sampling=sampling,
                                                                replace=replace, seed=7))
    held = {n: (l.curlora_factors["default"].I.tolist(), l.curlora_factors["default"].J.tolist())
            for n, l in adapted.curlora_layers().items()}
    assert {m["name"]: (m["rows"], m["cols"]) for m in report["matrices"]} == held


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_every_matrix_has_every_field_and_consistent_numbers(arch):
    report = inspect_model(tiny_model(arch), r=4)
    assert report["targets"] == (["c_attn"] if arch == "gpt2" else ["q_proj", "k_proj", "v_proj"])
    assert len(report["matrices"]) == (2 if arch == "gpt2" else 6)
    for m in report["matrices"]:
        assert FIELDS <= set(m)
        rows, cols = m["shape"]
        for side, n in (("columns", cols), ("rows", rows)):
            assert set(m["probabilities"][side]) == set(SAMPLING_MODES)
            for rule, p in m["probabilities"][side].items():
                assert len(p) == n and sum(p) == pytest.approx(1.0)
                h = m["histograms"][side]
                assert sum(h["counts"][rule]) + h["zeros"][rule] == n
            assert m["tv_from_uniform"][side]["uniform"] == pytest.approx(0.0, abs=1e-12)
        assert 1 <= m["unique_columns"] <= 4 and 1 <= m["unique_rows"] <= 4
        assert 0 <= m["energy_c"] <= 1 and 0 <= m["energy_r"] <= 1
    json.dumps(report)  # plain lists and numbers
    if arch == "gpt2":  # the fused c_attn is 96 x 32 out x in, whatever Conv1D's storage
        assert report["matrices"][0]["shape"] == [96, 32]


def test_the_bundled_model_report_and_its_summary():
    from curlora.models.loading import load_model

    model, _, _ = load_model("bundled", device="cpu")
    report = inspect_model(model, r=8)
    assert len(report["matrices"]) == 18
    assert report["summary"].startswith("18 matrices (q_proj, k_proj, v_proj; width 256), r 8:")
    headers, rows = table(report)
    assert len(rows) == 18 and all(len(row) == len(headers) for row in rows)


# --- the command line -------------------------------------------------------------------------------------------

def test_cli_json_prints_the_per_matrix_fields(tiny_dir):
    out = subprocess.run([sys.executable, "-m", "curlora", "inspect", str(tiny_dir), "--r", "3", "--sampling",
                          "leverage", "--targets", "q_proj,v_proj", "--json"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["sampling"] == "leverage" and report["targets"] == ["q_proj", "v_proj"]
    assert len(report["matrices"]) == 4
    for m in report["matrices"]:
        assert FIELDS <= set(m) and len(m["cols"]) == 3


def test_cli_table_and_user_errors(tiny_dir, capsys):
    assert main(["inspect", str(tiny_dir), "--r", "2"]) == 0
    out = capsys.readouterr().out
    assert "TV leverage c/r" in out and "model.layers.1.self_attn.v_proj" in out and "6 matrices" in out
    for argv, words in [(["--targets", "nope,q_prj"], "No module matches targets"),
                        (["--r", "500"], "Rank r=500 is larger than"),
                        (["--targets", "embed_tokens"], "CURLoRA adapts torch.nn.Linear")]:
        assert main(["inspect", str(tiny_dir), *argv]) == 2
        (err,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
        assert words in err and err.endswith(".")
    assert main(["inspect", str(tiny_dir / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


# --- the Model tab's figure -------------------------------------------------------------------------------------

def test_the_model_tab_figure_has_one_trace_per_rule():
    from curlora.ui.sampling_charts import sampling_figure

    (m,) = inspect_model(OneLinear(torch.randn(6, 10)), r=3, targets=["proj"])["matrices"]
    for side in ("columns", "rows"):
        fig = sampling_figure(m, side)
        assert [t.legendgroup for t in fig.data] == list(SAMPLING_MODES)
        assert [list(t.y) for t in fig.data] == [m["histograms"][side]["counts"][r] for r in SAMPLING_MODES]
    assert len(sampling_figure(None).data) == 0


def test_inspecting_sampling_asks_the_allowance_only_after_the_model_is_admitted():
    """The panel loads a whole model under the device gate: `allow` (the visitor's allowance) is asked once the
    policy admits the model, never for one it refuses, and its refusal stops the load."""
    from curlora.errors import CurloraError
    from curlora.serve.hosting import Policy
    from curlora.ui.model_tab import inspect_sampling

    asked = []
    hosted = Policy(hosted=True)
    with pytest.raises(CurloraError):
        inspect_sampling("/etc", "auto", 4, "inverted", 0, hosted, None, lambda: asked.append(1))
    assert asked == []  # a server folder is refused before the allowance is touched

    def full():
        raise CurloraError("Time estimates, evaluations and exports per hour: the limit here is 1; try again in 5 min.")
    with pytest.raises(CurloraError, match="try again in 5 min"):
        inspect_sampling("kjv-llama-5m", "auto", 4, "inverted", 0, Policy.local(), None, full)
    report, *_ = inspect_sampling("kjv-llama-5m", "auto", 4, "inverted", 0, Policy.local(), None,
                                  lambda: asked.append(1))
    assert asked == [1] and report["matrices"]
