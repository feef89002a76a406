"""The study documents regenerate from their committed JSON: each generated block of docs/demo-study.md and
docs/forgetting-study-toys.md (bench/doc_blocks.py) equals what its bench script renders today, from the committed
study.json files analysed again (`curlora study --analyse`), and each *-results.md equals its JSON re-rendered."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import demo_study_time  # noqa: E402
import doc_blocks  # noqa: E402
import forgetting_frontier  # noqa: E402
import forgetting_study  # noqa: E402

TOYS = dict(study="docs/studies/stories260k-frontier.json", matched="docs/studies/stories260k-matched-loss.json",
            matrices="docs/studies/stories260k-frontier-matrices.json",
            earlier=["docs/forgetting-study-results.json", "docs/forgetting-study-head-results.json",
                     "docs/forgetting-study-kjv-results.json"])


def _same_blocks(doc: str, made: dict[str, list[str]]) -> None:
    text = (REPO / doc).read_text(encoding="utf-8")
    assert made
    for name, lines in made.items():
        assert doc_blocks.block(text, name) == "\n".join(lines).rstrip("\n"), f"{doc}: block {name} is stale"


def test_the_demo_study_document_regenerates_from_its_committed_studies():
    _same_blocks("docs/demo-study.md", demo_study_time.blocks())


def test_the_toy_model_appendix_regenerates_from_its_committed_json():
    made = forgetting_frontier.blocks(**TOYS)
    assert set(made) == {"stories260k-matched-loss", "stories260k-frontier", "toy-earlier-runs"}
    _same_blocks("docs/forgetting-study-toys.md", made)
    # what the re-analysis says about the committed stories260K study, as the appendix's prose quotes it
    rec = forgetting_frontier.reanalysed(str(REPO / TOYS["study"]), None, str(REPO / TOYS["matrices"]))
    (c, *_) = rec.comparison
    assert c.verdict == "nothing learned" and round(c.learning, 1) == 3.3 and round(c.p, 3) == 0.209
    kl = {t.probe: t for t in rec.probes}["kl_to_base"]
    assert round(kl.rho, 2) == -0.04 and not kl.tracks and kl.n == 30
    assert rec.warnings and "Only the last task, reviews" in rec.warnings[0]


@pytest.mark.parametrize("name", ["forgetting-study-results.md", "forgetting-study-head-results.md",
                                  "forgetting-study-kjv-results.md"])
def test_each_results_file_regenerates_from_its_json(name):
    path = REPO / "docs" / name
    assert forgetting_study.rerender(path) == path.read_text(encoding="utf-8")


def test_a_generated_block_is_spliced_between_its_marks_and_nowhere_else(tmp_path):
    doc = tmp_path / "d.md"
    doc.write_text("prose\n<!-- generated: t -->\nold\n<!-- end generated: t -->\nmore prose\n")
    doc_blocks.splice(doc, "t", ["a", "b"])
    assert doc.read_text() == "prose\n<!-- generated: t -->\na\nb\n<!-- end generated: t -->\nmore prose\n"
    assert doc_blocks.block(doc.read_text(), "t") == "a\nb" and doc_blocks.block("x", "t") is None
    with pytest.raises(SystemExit, match="has no block"):
        doc_blocks.splice(doc, "other", ["x"])


def test_the_smollm2_study_document_regenerates_from_its_committed_packs():
    import smollm2_study

    _same_blocks("docs/forgetting-study.md", smollm2_study.blocks())
