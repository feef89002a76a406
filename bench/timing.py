"""What the timing benchmarks share: the clocks, interleaved medians, and the CPU's name for a report.

    times = race({"a": fa, "b": fb}, warmup=2, repeats=9, clock=CLOCKS["cpu"])   # {"a": median s, "b": ...}
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def race(fns: dict, warmup: int, repeats: int, clock=time.perf_counter) -> dict[str, float]:
    """Median seconds of each fn, run interleaved (order alternating each round), so drift in machine load hits
    every fn alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    keys = list(fns)
    for i in range(repeats):
        for k in keys if i % 2 == 0 else reversed(keys):
            t = clock()
            fns[k]()
            times[k].append(clock() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def cpu_name() -> str:
    """'CPU (N cores, model name)' from /proc/cpuinfo where there is one."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU ({os.cpu_count()} cores, {cpu})"


def clock_name(clock) -> str:
    return "process CPU time" if clock is time.process_time else "wall time"
