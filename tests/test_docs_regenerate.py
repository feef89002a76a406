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


def test_the_sampling_cross_check_is_analysed_beside_the_frontiers_inverted_runs(tmp_path):
    """A sampling pack whose rule's runs repeat the frontier's inverted CURLoRA runs exactly (their metrics copied,
    the method renamed): the joint analysis gives both labels the same groups, and the row test finds no row that
    one keeps and the other loses."""
    import dataclasses
    import json
    import shutil

    import smollm2_study

    packs = dict(smollm2_study.PACKS)
    front = smollm2_study.load("frontier")[0]
    sampling = tmp_path / "smollm2-sampling"
    pts = [p for p in front.points if p.method == "curlora" and p.order == 0]
    for p in pts:  # the same runs under the rule's label, in folders of their own
        dest = sampling / "runs" / (p.run_id + "-u")
        shutil.copytree(packs["frontier"] / "runs" / p.run_id, dest)
        body = json.loads((dest / "metrics.json").read_text())
        body["methods"] = {"curlora-uniform": body["methods"]["curlora"]}
        (dest / "metrics.json").write_text(json.dumps(body))
    lrs = sorted({p.lr for p in pts})
    rec = dataclasses.replace(front, points=[dataclasses.replace(p, method="curlora-uniform", run_id=p.run_id + "-u")
                                             for p in pts],
                              plan=[dataclasses.replace(e, method="curlora-uniform", run_id=e.run_id + "-u")
                                    for e in front.plan
                                    if e.method == "curlora" and e.order == 0 and e.status == "completed"],
                              settings=dataclasses.replace(front.settings, lrs={"curlora-uniform": lrs},
                                                           orders=front.settings.orders[:1]))
    packs["sampling"] = sampling
    joint = smollm2_study.sampling_record({"frontier": (front, {}), "sampling": (rec, {})}, packs)
    assert joint.labels == ["curlora", "curlora-uniform"]
    for lr in lrs:
        a, b = (next(g for g in joint.groups.values() if g.method == m and g.lr == lr)
                for m in ("curlora", "curlora-uniform"))
        assert (a.learning, a.forgetting, a.chat_kl) == (b.learning, b.forgetting, b.chat_kl)
    (c,) = joint.comparison
    assert c.methods == ["curlora", "curlora-uniform"]
    if c.rows is not None:
        assert c.rows.only_first_right == c.rows.only_second_right == 0
    assert smollm2_study.sampling_record({"frontier": (front, {})}, packs) is None
    said = smollm2_study.sampling_sentence({"sampling": (rec, {"points": len(rec.points)})}, packs, rec=joint)[0]
    assert said.startswith(f"**CURLoRA's sampling rules** (cross-check, first order; {len(rec.points)} of ")
    assert "Against the inverted rule at matched learning (" in said and "nearest settings the paper's inverted rule lr" \
        in said and "uniform sampling" in said
    # the same runs under both labels: every pair differs by 0, inside the margin, so the same with no test
    assert "uniform sampling: the same forgetting within ±3 pts (no spread left to test)" in said
    assert said.count("Holm p") == sum(c.verdict in ("less", "more") and c.p_adjusted is not None
                                       for c in joint.comparison + joint.comparison_known + joint.comparison_chat)


def test_the_readme_summary_of_the_smollm2_study_regenerates_from_the_same_packs():
    import smollm2_study

    loaded = smollm2_study.load_all()
    made = smollm2_study.readme_blocks(loaded=loaded)
    _same_blocks("README.md", made)
    text = "\n".join(made["smollm2-summary"])
    # where a chosen rate has fewer than 3 runs, the summary says no claim is made from it
    few = [label for phase in ("frontier", "peers") if loaded.get(phase) for rec in [loaded[phase][0]]
           for label, b in rec.best.items() if b is not None and len(rec.groups[b.key].run_ids) < 3]
    assert ("no claim is made" in text) == bool(few)


def test_the_paragraph_on_the_papers_claim_follows_the_verdicts_whichever_method_they_favour():
    """claim_block: every pair verdict and every setting against the base is said with its adjusted p; the
    conclusion is 'no test favours either' until a verdict is less or more, and then names the side it favours."""
    import copy

    import smollm2_study

    rec, meta = smollm2_study.load("frontier")
    text = smollm2_study.claim_block({"frontier": (rec, meta)})[0]
    assert f"({meta['points']} of {smollm2_study.planned('frontier')} frontier runs" in text
    for c in rec.comparison + rec.comparison_known + rec.comparison_chat:
        assert f"*{c.verdict}*" in text and (c.p_adjusted is None or f"Holm p = {c.p_adjusted:.2g}" in text)
    for t in rec.against_base:
        assert smollm2_study.AGAINST_WORDS[(t.measure, t.verdict)] in text
    favours = [c for c in rec.comparison + rec.comparison_top + rec.comparison_known + rec.comparison_chat
               if c.verdict in ("less", "more")]
    assert ("no test at matched learning favours either method" in text.lower()) == (not favours)
    # the verdict says "so far" while the frontier has runs left, and not once all have run
    done = meta["points"] + (meta["edge"]["points"] if meta.get("edge") else 0)
    full = done == smollm2_study.planned("frontier") + (smollm2_study.planned(smollm2_study.EDGE)
                                                         if meta.get("edge") else 0)
    assert ("So far" in text) == (not full)
    partial = smollm2_study.claim_block({"frontier": (rec, dict(meta, points=meta["points"] - 1))})[0]
    assert "So far the tests at matched learning" in partial or "So far no test" in partial
    # the same record with CURLoRA forgetting less, then more, at the primary level
    for verdict, side in (("less", "favour CURLoRA by forgetting"), ("more", "go against CURLoRA by forgetting")):
        other = copy.deepcopy(rec)
        for c in other.comparison_top + other.comparison_known + other.comparison_chat:
            c.verdict = "inconclusive"  # only the primary one decided, this way
        other.comparison[0].verdict = verdict
        other.comparison[0].methods = ["curlora", "lora"]
        said = smollm2_study.claim_block({"frontier": (other, meta)})[0]
        assert side in said and "favours either method" not in said
        assert ("the data goes against the paper's claim" in said) == (verdict == "more")
        assert ("the data supports the paper's claim" in said) == (verdict == "less")
    # every setting of LoRA losing: said so, at every rate
    other = copy.deepcopy(rec)
    for t in other.against_base:
        if t.method == "lora":
            t.verdict = "loses"
    lrs = smollm2_study._lrs({g.lr for g in rec.groups.values() if g.method == "lora"})
    assert f"LoRA loses some of the base's abilities at every learning rate tried ({lrs})" in \
        smollm2_study.claim_block({"frontier": (other, meta)})[0]
    assert smollm2_study.claim_block({}) == ["No frontier run has finished yet: nothing to say about the paper's "
                                             "claim."]


def test_the_readme_headline_is_the_claim_paragraphs_conclusion_with_the_studys_size():
    """headline: the README's first word on the study ends with the claim paragraph's last sentence (its verdicts,
    Holm p and settings) and says how many frontier runs, tasks, orders and seeds it rests on."""
    import smollm2_study

    rec, meta = smollm2_study.load("frontier")
    loaded = {"frontier": (rec, meta)}
    head = smollm2_study.headline(loaded)
    said = smollm2_study.claim_sentences(loaded)
    assert len(head) == 1 and head[0].endswith(said[-1]) and said[-1] in smollm2_study.claim_block(loaded)[0]
    assert head[0].startswith(f"**What it found on a real model** (SmolLM2-135M-Instruct, {len(rec.tasks)} tasks in "
                              f"{len(rec.settings.orders)} orders, {len(rec.settings.seeds)} seeds; "
                              f"{meta['points']} CURLoRA and LoRA runs over 3 learning rates each;")
    assert "Holm p = " in said[-1] or "No test at matched learning" in said[-1]
    assert smollm2_study.headline({}) == smollm2_study.claim_block({})


def test_the_compute_table_prices_each_phases_methods_from_their_packed_runs():
    """compute_block: one row per phase and method, from the packed runs' events (curlora/run/study_data.py
    run_times, tested in tests/test_study_progress.py)."""
    import smollm2_study

    made = smollm2_study.compute_block(smollm2_study.load_all())
    assert made[0].startswith("| phase | method | runs |") and any(line.startswith("| frontier | curlora |")
                                                                     for line in made)


def test_the_claim_paragraph_sets_the_head_only_control_beside_the_frontier():
    """With a control pack: its best learning on test rows, its runs, and the abilities it keeps by the test against
    the base; its table in the status block is headed as not compared."""
    import smollm2_study
    from curlora.measure import study_analysis as A
    from curlora.measure.study_record import Point, StudySettings

    points = [Point(method="head-only", lr=lr, seed=s, run_id=f"h{lr}{s}", learning=10.0 + s, learning_test=9.0 + s,
                    forgetting=0.0, facts=72.2, facts_base=72.2, probe_ppl_ratio=1.0)
              for lr in (1e-3, 1e-2) for s in range(3)]
    control = A.analyse(StudySettings(lrs={"head-only": [1e-3, 1e-2]}, seeds=[0, 1, 2]), None, [], points, None,
                        tasks=["sst2", "answers", "mrpc"])
    front = smollm2_study.load("frontier")
    text = smollm2_study.claim_block({"frontier": front, "control": (control, {"points": 6})})[0]
    assert "The paper's control, a linear head per task on the frozen model" in text
    assert "learns at its rate chosen on validation rows 10.0 [7.5, 12.5] points at lr 0.001 (3 runs) and keeps its " \
           "factual answers and its WikiText-2 perplexity by the test against the base" in text
    loaded = smollm2_study.load_all()
    loaded["control"] = (control, {"points": 6, "pending": 3, "runs": {}})
    status = "\n".join(smollm2_study.blocks(loaded=loaded)["smollm2-status"])
    assert "Control: head-only, a linear head per task on the frozen model, under head scoring" in status
    control_part = status[status.index("Control: head-only"):]
    assert "| head-only lr 0.001 | facts right (pts) | 72.2 | 72.2 | +0.0" in control_part
    assert control_part.count("| keeps |") == 4


def test_the_peers_are_compared_against_both_frontier_methods_on_the_union_of_the_phases(tmp_path):
    """across_record: a peers pack whose one method repeats the frontier's LoRA runs exactly (metrics copied, the
    method renamed) is analysed with the frontier as one study; the pairs are CURLoRA–LoRA and the peer against each,
    and the peer against LoRA finds nothing between them."""
    import dataclasses
    import json
    import shutil

    import smollm2_study

    packs = dict(smollm2_study.PACKS)
    front = smollm2_study.load("frontier")[0]
    peers = tmp_path / "smollm2-peers"
    mid = sorted(front.settings.lrs["lora"])[1]
    pts = [p for p in front.points if p.method == "lora" and p.lr == mid]
    for p in pts:
        dest = peers / "runs" / (p.run_id + "-p")
        shutil.copytree(packs["frontier"] / "runs" / p.run_id, dest)
        body = json.loads((dest / "metrics.json").read_text())
        body["methods"] = {"lora-copy": body["methods"]["lora"]}
        (dest / "metrics.json").write_text(json.dumps(body))
    rec = dataclasses.replace(front, points=[dataclasses.replace(p, method="lora-copy", run_id=p.run_id + "-p")
                                             for p in pts], plan=[],
                              settings=dataclasses.replace(front.settings, lrs={"lora-copy": [mid]}))
    packs["peers"] = peers
    joint = smollm2_study.across_record({"frontier": (front, {}), "peers": (rec, {})}, packs)
    assert [c.methods for c in joint.comparison] == [["curlora", "lora"], ["curlora", "lora-copy"],
                                                     ["lora", "lora-copy"]]
    same = joint.comparison[2]
    at = smollm2_study.lr_text(mid)
    assert same.nearest == {"lora": f"lora@{at}", "lora-copy": f"lora-copy@{at}"}
    assert same.paired.mean == 0 and same.rows.only_first_right == same.rows.only_second_right == 0
    assert smollm2_study.across_record({"frontier": (front, {})}, packs) is None


def test_a_comparisons_block_tables_the_decided_pairs_and_says_once_why_the_others_wait():
    """The decided pairs in the table; a pair not compared says why once, however many measures its family tests it
    on; the pairs of methods with no finished run are one line naming them and counting the pairs."""
    import smollm2_study
    from curlora.measure.study_record import Comparison, Group, StudyRecord, StudySettings

    rec = StudyRecord(settings=StudySettings(lrs={"a": [1e-3], "b": [1e-3], "c": [1e-3], "d": [1e-3]}),
                      groups={"a@1e-3": Group(method="a", lr=1e-3), "b@1e-3": Group(method="b", lr=1e-3)})
    assert rec.labels == ["a", "b", "c", "d"]
    far = "a and b never reach the same learning: widen a grid."
    comps = [Comparison(methods=["a", "b"], verdict="less", p=0.01, p_adjusted=0.03, sentence="a forgets less."),
             *[Comparison(methods=["a", "b"], measure=m, sentence=far) for m in ("chat_kl", "facts")],
             *[Comparison(methods=pair, measure=m, sentence=f"No comparison of {pair[0]} and {pair[1]}.")
               for pair in (["a", "c"], ["b", "c"], ["c", "d"]) for m in ("chat_kl", "facts")]]
    lines = smollm2_study.comparisons_block(rec, comps)
    assert [line for line in lines if line.startswith("| a vs b |")] == ["| a vs b | less | 0.01 | 0.03 | — | — |"]
    assert lines.count(f"- {far}") == 1 and "- a forgets less." in lines
    assert lines[-1] == "- c, d: no finished run yet; the 3 pairs with them are compared once each has one."
    three = StudyRecord(settings=StudySettings(lrs={"a": [1e-3], "b": [1e-3], "c": [1e-3]}), groups=rec.groups)
    one = smollm2_study.comparisons_block(three, [c for c in comps if "d" not in c.methods])  # one idle method
    assert one[-1] == "- c: no finished run yet; the 2 pairs with it are compared once it has one."
    assert not [line for line in lines if "No comparison of" in line]
    only = smollm2_study.comparisons_block(rec, comps[3:])  # nothing decided: no empty table
    assert only[0] == "Not compared yet:" and not [line for line in only if line.startswith("|")]


def test_the_which_paragraph_says_each_peers_decided_verdicts_of_the_peer_and_waits_for_three_runs():
    """Each peer with 3 runs at its chosen rate against CURLoRA and LoRA at theirs: the verdicts that decide, said of
    the peer (the record reads 'curlora against mica'), with their adjusted p; a peer with fewer runs waits."""
    import smollm2_study
    from curlora.measure import study_analysis as A
    from curlora.measure.study_record import Point, StudySettings

    noise = [0.3, -0.2, 0.1]

    def pt(m, lr, s, learn, kl, facts):
        e = -noise[s] if m == "mica" else noise[s]  # the peer's seeds vary the other way: the pairs have spread
        return Point(method=m, lr=lr, seed=s, run_id=f"{m}{lr}{s}", setting={"lr": lr}, learning=learn + e,
                     learning_val=learn, learning_test=learn + e, forgetting=5.0, chat_kl=kl + 0.01 * s, facts=facts)
    points = [pt(m, lr, s, learn, kl, 50.0) for m, grid in (("curlora", (1e-3, 1e-2)), ("lora", (1e-4, 1e-3)))
              for lr, learn, kl in zip(grid, (1.0, 4.0), (0.1, 0.9 if m == "curlora" else 0.2)) for s in range(3)]
    points += [pt("mica", 6e-4, s, 9.0, 0.05, 50.0) for s in range(3)] + [pt("dora", 1e-3, 0, 5.0, 0.1, 50.0)]
    settings = StudySettings(lrs={"curlora": [1e-3, 1e-2], "lora": [1e-4, 1e-3], "mica": [6e-4], "dora": [1e-3]},
                             seeds=[0, 1, 2])
    pairs = [("curlora", "lora")] + [(a, m) for a in ("curlora", "lora") for m in ("mica", "dora")]
    across = A.analyse(settings, None, [], points, None, tasks=["t1", "t2"], pairs=pairs)
    (text,) = smollm2_study.which_block({}, across=across)
    assert text.startswith("**Which method, each at its chosen rate**")
    mica = text[text.index("MiCA at lr 0.0006 (3 runs): "):]  # the method's registered title
    assert "against CURLoRA lr 0.01 it learns more (Holm p = " in mica
    assert "loses less by chat KL, " in mica  # every pair 0.85 apart: decided without a test, so no p
    assert "shows the same facts right within ±3 pts" in mica and "shows the same forgetting within ±3 pts" in mica
    assert "against LoRA lr 0.001 it learns more" in mica
    assert text.endswith("Fewer than 3 runs so far at the chosen rate of DoRA (1 run): not judged yet.")
    assert [smollm2_study.title(x) for x in ("lora-replay25", "curlora-replay12_5", "full", "no-such")] == [
        "LoRA + 25 % replay", "CURLoRA + 12.5 % replay", "full fine-tune", "no-such"]
    # a perplexity ratio's margin reads as a share of the base's, a margin in points with its unit
    assert (A.margin_text(0.05, "", "probe_ppl_ratio"), A.margin_text(3.0, " pts", "facts"),
            A.margin_text(None, "", "chat_kl")) == ("±5 %", "±3 pts", "no margin")


def test_the_frontiers_edge_is_analysed_as_part_of_the_frontier():
    """with_edge merges the edge's runs into the frontier as one study: the committed frontier split in two (its top
    rates as an 'edge') and merged again gives the frontier's own analysis — the same groups, best rates, tests and
    verdicts — and the frontier's meta carries the edge's; with no edge run, nothing changes."""
    import dataclasses

    import smollm2_study as S
    from curlora.measure import study_analysis as A

    full, meta = S.load("frontier")
    top = {m: max(lrs) for m, lrs in full.settings.lrs.items()}
    folder = S.PACKS["frontier"]

    def part(keep) -> object:
        lrs = {m: [x for x in lrs if keep(m, x)] for m, lrs in full.settings.lrs.items()}
        pts = [p for p in full.points if keep(p.method, p.lr)]
        plan = [e for e in full.plan if keep(e.method, e.lr)]
        return A.analyse(dataclasses.replace(full.settings, lrs=lrs), full.base, plan, pts,
                         S.metrics_reader(folder), tasks=full.tasks)
    front, edge = part(lambda m, x: x != top[m]), part(lambda m, x: x == top[m])
    loaded = {"frontier": (front, meta), S.EDGE: (edge, {"points": len(edge.points), "pending": 0})}
    packs = {"frontier": folder, S.EDGE: folder}
    assert S.with_edge({"frontier": (front, meta), S.EDGE: None}, packs)["frontier"][0] is front
    # a partial edge stays apart: one or two runs of a rate would be chosen on noise and move every matched level
    partial = {"frontier": (front, meta), S.EDGE: (edge, {"points": 3, "pending": 9})}
    assert S.with_edge(partial, packs)["frontier"][0] is front
    status = "\n".join(S.blocks(packs={"frontier": folder}, loaded=partial)["smollm2-status"])
    assert "The frontier's edge so far (3 of 12 runs; it joins the frontier's analysis" in status
    assert "(chosen" not in status[status.index("edge so far"):status.index("Frontier (means")]
    merged, mmeta = S.with_edge(loaded, packs)["frontier"]
    assert mmeta["edge"]["points"] == len(edge.points) and mmeta["points"] == meta["points"]
    assert sorted(merged.groups) == sorted(full.groups)
    for k, g in full.groups.items():
        for name in ("learning", "learning_test", "forgetting", "chat_kl", "facts"):
            assert merged.groups[k].mean(name) == pytest.approx(g.mean(name))
    assert {m: b.key for m, b in merged.best.items()} == {m: b.key for m, b in full.best.items()}
    assert [(c.verdict, c.measure) for c in merged.comparison_chat] == [(c.verdict, c.measure)
                                                                        for c in full.comparison_chat]
    assert [(t.measure, t.verdict) for t in merged.at_chosen] == [(t.measure, t.verdict) for t in full.at_chosen]
    want = {(t.key, t.measure): t.p_adjusted for t in full.against_base}
    got = {(t.key, t.measure): t.p_adjusted for t in merged.against_base}
    assert got.keys() == want.keys() and [got[k] for k in want] == pytest.approx(list(want.values()))


def test_the_probe_paragraph_names_each_probe_by_its_corrected_verdict():
    import smollm2_study as S

    assert S.probes_sentence({}) == ["No drift probe has been checked against forgetting yet."]
    front = S.load("frontier")
    rec = front[0]
    (text,) = S.probes_sentence({"frontier": front})
    tracked, _, rest = text.partition(" tracked it")
    for t in rec.probes:
        name = f"{S.PROBE_NAMES[t.probe]} (ρ {t.rho:.2f}, Holm p {t.p_adjusted:.2g})"
        assert name in (tracked if t.tracks else rest)
    assert f"over the {len(rec.probes) + len(rec.probes_known)} probes × targets" in text


def test_the_study_estimate_document_regenerates_from_its_json():
    """docs/study-estimate.md: a study's time told before it starts, beside what its runs took, from
    docs/study-estimate.json; each estimate / measured ratio is its row's own two numbers."""
    import json

    import study_estimate

    data = json.loads((REPO / "docs" / "study-estimate.json").read_text(encoding="utf-8"))
    lines = study_estimate.document(data)
    assert (REPO / "docs" / "study-estimate.md").read_text(encoding="utf-8") == "\n".join(lines) + "\n"
    row = next(x for x in lines if x.startswith("| frontier | curlora |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[6]) == pytest.approx(float(cells[3]) / float(cells[4].split()[0]), abs=0.011)


def test_remeasuring_keeps_the_estimates_and_dates_the_measured_runs(tmp_path, monkeypatch):
    """--remeasure: the committed estimates stay as they were; only the measured side is read again (here a stand-in
    for the packs), and the document says when."""
    import json
    import shutil

    import study_estimate

    shutil.copy(REPO / "docs" / "study-estimate.json", tmp_path / "e.json")
    monkeypatch.setattr(study_estimate, "OUT", tmp_path / "e.json")
    monkeypatch.setattr(study_estimate, "DOC", tmp_path / "e.md")
    monkeypatch.setattr(study_estimate, "measured", lambda: {"frontier": {"curlora": [20.0, 20.0, 20.0]}})
    before = json.loads((tmp_path / "e.json").read_text())
    assert study_estimate.main(["--remeasure"]) == 0
    after = json.loads((tmp_path / "e.json").read_text())
    assert after["phases"] == before["phases"] and after["measured"] == {"frontier": {"curlora": [20.0, 20.0, 20.0]}}
    text = (tmp_path / "e.md").read_text()
    assert f"committed pack on {after['measured_when']} (median" in text
    e = before["phases"]["frontier"]["run_s"]["curlora"] / 60
    assert f"| frontier | curlora | 18 | {e:.1f} | 20.0 [20.0, 20.0] | 3 | {e / 20:.2f} |" in text


def test_the_matched_loss_tables_clip_interval_ends_to_the_measures_range():
    """A 3-seed t interval on facts right can run below 0 % (31 [−13, 76]); the table shows the end the measure can
    reach, as the study tables do; learning, which can fall below 0, is not clipped."""
    from curlora.measure.study_record import Summary

    s = Summary(mean=31.0, ci95=[-13.0, 76.0], n=3, sd=18.0)
    assert forgetting_frontier.fmt(s, 0, "facts") == "31 [0, 76]"
    assert forgetting_frontier.fmt(s, 0) == "31 [-13, 76]"
    assert forgetting_frontier.ratio_ppl(Summary(mean=1.5, ci95=[-0.2, 3.2], n=3), 32.0) == "48 [0, 102]"


def test_the_matched_loss_paragraph_tests_both_directions_as_one_family():
    """The claim's matched-loss paragraph, from the committed summaries: each direction's steps to the target, and
    per measure both means, the paired difference CURLoRA − LoRA over seeds and its p, Holm over every test of both
    directions; a verdict only below 0.05 adjusted."""
    import json

    import smollm2_study
    from curlora.measure import stats

    bodies = smollm2_study.matched_bodies()
    if not all(bodies.values()):
        pytest.skip("a matched-loss direction is not committed yet")
    (text,) = smollm2_study.matched_block(bodies)
    assert text.startswith("**Matched training loss, both ways round**")
    body = json.loads((REPO / "docs/studies/smollm2-matched-curlora-chases/summary.json").read_text())
    steps = ", ".join(f"{s['mean']:.0f}" for s in body["groups"]["curlora"]["steps"])
    assert f"CURLoRA at lr 0.003 chasing LoRA at lr 0.0003 (3 seeds) reached its loss in {steps} steps per task" in text
    kl = [r["methods"]["curlora"]["chat_kl"] - r["methods"]["lora"]["chat_kl"] for r in body["runs"]]
    p = stats.paired_t(kl)["p_value"]
    assert f"(p = {p:.2g}, Holm " in text
    assert text.count("Holm") == 1 + 6  # the heading and the six tests of one family
