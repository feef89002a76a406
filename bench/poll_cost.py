"""What one poll of a run costs as the run grows: the Train tab's timer and `/run_status` read the run's events
every second for every open page.

    python bench/poll_cost.py [--sizes 1000,100000,300000] [--out docs/poll-cost.md]

For each size it writes that many step events (the runner's own event shape) into a fresh run folder, then times,
interleaved over 9 rounds (median of process CPU time): the old way (re-reading the whole events.jsonl) and the
app's way (curlora.run.store.EventCache: read only what was appended since the last poll, here 1 new event a poll).
Prints the ratios and writes a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import CLOCKS, cpu_name, race  # noqa: E402
from curlora.run.store import EventCache, Run  # noqa: E402


def step(i: int) -> dict:
    return {"method": "curlora", "stage": 1, "task": "reviews", "step": i, "steps": 10**6, "loss": 0.5,
            "smoothed_loss": 0.5, "lr": 2e-3, "elapsed": i * 0.1}


def measure(size: int, folder: Path) -> dict:
    run = Run.create("x: 1\n", root=folder)
    with open(run.path / "events.jsonl", "a", encoding="utf-8") as f:  # faster than `size` Run.log calls
        import json
        import time

        t = round(time.time(), 3)
        for i in range(size):
            f.write(json.dumps({"t": t, "kind": "step", **step(i)}) + "\n")
    cache = EventCache()
    cache.events(run)  # the page's first poll reads everything once
    counter = {"i": size}

    def append():  # the runner's side, the same in both: one new event since the last poll
        run.log("step", **step(counter["i"]))
        counter["i"] += 1

    def full():
        append()
        return run.events()

    def incremental():
        append()
        return cache.events(run)

    times = race({"full": full, "incremental": incremental}, warmup=1, repeats=9, clock=CLOCKS["cpu"])
    return {"events": size, **times}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1000,100000,300000")
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "poll-cost.md"))
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            r = measure(size, Path(tmp))
            rows.append(r)
            print(f"{size:>8,} events: full re-read {r['full'] * 1e3:8.1f} ms, incremental {r['incremental'] * 1e3:6.2f} "
                  f"ms, ratio {r['full'] / r['incremental']:.0f}x", flush=True)
    lines = ["# Poll cost as a run grows", "",
             f"`python bench/poll_cost.py` on {cpu_name()}: median process CPU time of one poll over 9 interleaved "
             "rounds (each poll first appends one event, as a training step does). *full* re-reads the whole events.jsonl (what `/run_status` and the "
             "Train tab's timer did before); *incremental* is `curlora.run.store.EventCache`, which reads only the bytes "
             "appended since the last poll.", "",
             "| events in the run | full re-read | incremental | ratio |", "|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['events']:,} | {r['full'] * 1e3:.1f} ms | {r['incremental'] * 1e3:.2f} ms | "
                     f"{r['full'] / r['incremental']:.0f}× |")
    lines += ["", "A single run of each size: medians of 9, so read the ratios, not the last digit."]
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
