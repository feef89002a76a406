"""PEFT's forgetting-aware methods beside CURLoRA and LoRA on the quick demo, one seed: docs/peers-demo.md.

    python bench/peers_demo.py                         # runs presets/experiments/peers-demo.yaml (CLI), then writes
    python bench/peers_demo.py --run RUN_DIR           # writes from a finished run of that experiment

One setting per method (the top of each method's learning-rate prior; CURLoRA at the quick demo's 2e-2), one seed:
this shows that every method runs end to end and where each lands, not which method is better.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

PRESET = REPO / "presets" / "experiments" / "peers-demo.yaml"


def pooled(codes: list[str], ns: list[int]) -> tuple[int, int]:
    """Right answers and rows over a row of the matrix (per-row correctness is stored as bits)."""
    from curlora.measure.stats import from_bits

    return sum(sum(from_bits(c, n)) for c, n in zip(codes, ns)), sum(ns)


def document(run_dir: Path) -> str:
    from curlora.measure.stats import wilson
    from curlora.methods.registry import described, method

    m = json.loads((run_dir / "metrics.json").read_text())
    lines = ["# PEFT's forgetting-aware methods beside CURLoRA and LoRA: the quick demo, one seed", "",
             f"`python -m curlora run presets/experiments/peers-demo.yaml` (run `{run_dir.name}`): the bundled "
             "kjv-llama-5m, its three demo tasks (testament → reviews → answers, 64 eval rows each), 30 steps per "
             "task, all seven projection matrices, **one seed and one learning rate per method** (the top of its "
             "prior). It shows that each method runs and where it lands at that setting — not which is better: "
             "that needs a study over learning rates and seeds (Compare tab). Perplexity is on the model's own "
             "held-out King James text, KL to base and self-perplexity on texts the base model sampled itself "
             "(both in its own domain).", "",
             "| method (setting) | group | trainable | final ACC [95 % Wilson, n] | forgetting | KL to base | "
             "self-ppl (base → final) | probe ppl (base → final) |",
             "|---|---|---|---|---|---|---|---|"]
    base = m["base"]
    base_self, base_ppl = base.get("self_ppl"), base.get("ppl")
    right, n = pooled(base["correct"], base["n"])
    lo, hi = wilson(right, n)
    lines.append(f"| base (no training) | baselines | 0 | {100 * right / n:.1f} [{100 * lo:.1f}, {100 * hi:.1f}], "
                 f"n = {n} | — | 0 | {base_self:.1f} | {base_ppl:.2f} |")
    for label, rec in m["methods"].items():
        right, n = pooled(rec["matrix_correct"][-1], rec["matrix_n"][-1])
        lo, hi = wilson(right, n)
        s = rec.get("summary") or {}
        kind = rec.get("kind", label)
        trainable = rec.get("trainable")
        lines.append(
            f"| {described(label, rec.get('setting'))} | {method(kind).group} | "
            f"{trainable:,} | {100 * right / n:.1f} [{100 * lo:.1f}, {100 * hi:.1f}], n = {n} | "
            f"{100 * s.get('forgetting', float('nan')):.1f} | {rec['kl_to_base'][-1]:.3f} | "
            f"{base_self:.1f} → {rec['self_ppl'][-1]:.1f} | {base_ppl:.2f} → {rec['ppl'][-1]:.2f} |")
    majority = ", ".join(f"{100 * x:.0f} %" for x in m.get("majority") or [])
    lines += ["", "Final ACC pools the last row's three tasks (3 × 64 rows); forgetting (Chaudhry) has no interval "
              f"here: one seed. The majority class per task: {majority}. OSF's trainable count is its last task's "
              "(it shrinks per task).", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="a finished run folder of presets/experiments/peers-demo.yaml")
    p.add_argument("--out", default=str(REPO / "docs" / "peers-demo.md"))
    a = p.parse_args(argv)
    if a.run:
        run_dir = Path(a.run)
    else:
        import tempfile

        from cli_run import run_cli

        res = run_cli(PRESET, Path(tempfile.mkdtemp()) / "store", threads=2)
        if res["rc"] != 0:
            raise SystemExit(f"the run exited {res['rc']}; see {res['log']}")
        run_dir = Path(res["run_dir"])
    Path(a.out).write_text(document(run_dir), encoding="utf-8")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
