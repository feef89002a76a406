"""The task report: what `python -m curlora check-data` prints and the Tasks tab shows after every check — one fact a
line, the same numbers as `Task.summary`."""

from __future__ import annotations

from curlora.data.labels import describe_counts


def _stats(s: dict, unit: str) -> str:
    if not s:
        return "none"
    return (f"min {s['min']:,}, median {s['median']:,.0f}, mean {s['mean']:,.1f}, p95 {s['p95']:,}, "
            f"max {s['max']:,} {unit}")


def format_summary(s: dict) -> str:
    """The check-data report: one fact per line, the same numbers as `Task.summary`."""
    rows, counts, classes = s["rows"], s["label_counts"], s["classes"]
    tf = rows["train_file"]
    lines = [
        f"{s['train_source']}: {tf['read']:,} rows, columns {', '.join(s['columns'])} ({s['format']})",
        f"mapping: {s['mapping']['described']}",
        f"labels in {s['train_source']}: {describe_counts(counts['train_file'], classes)}",
    ]
    if rows["eval_file"] is not None:
        lines.append(f"labels in {s['eval_source']}: {describe_counts(counts['eval_file'], classes)} "
                     f"({rows['eval_file']['read']:,} rows)")
    dropped = {k: v for k, v in tf.items() if k in ("empty_label", "excluded") and v}
    if dropped:
        lines.append("left out: " + ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in dropped.items()))
    lines += [
        f"eval: {s['eval_source']}",
        f"split: train {rows['train']:,} ({describe_counts(counts['train'], classes)}), "
        f"eval {rows['eval']:,} ({describe_counts(counts['eval'], classes)})",
        f"duplicates: {s['duplicates']['repeated_rows']:,} rows repeat an earlier text, "
        f"{s['duplicates']['conflicting_labels']:,} texts with conflicting labels",
        f"length (train, characters): {_stats(s['lengths_chars']['train'], 'chars')}",
    ]
    tokens = s.get("lengths_tokens")
    if tokens:
        limit = f", model limit {tokens['max_length']:,}" if tokens.get("max_length") else ""
        lines.append(f"prompt length (train, tokens{limit}): {_stats(tokens['train'], 'tokens')}")
    lines.append("verbalizers: " + ", ".join(f"{k} -> {v!r}" for k, v in s["verbalizers"].items()))
    lines.append(f"prompt template: {s['template']!r}")
    if s["warnings"]:
        lines.append(f"warnings ({len(s['warnings'])}):")
        lines += [f"  - {w}" for w in s["warnings"]]
    lines.append("OK: usable as a task.")
    return "\n".join(lines)
