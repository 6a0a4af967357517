"""What the benchmarks ran on, recorded next to every figure they write."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any


def calibration_ms() -> float:
    """Milliseconds for a fixed pure-Python loop (best of three): how fast this machine ran
    Python at the time, so that runs on a shared or throttled host can be compared."""
    best = float("inf")
    for _ in range(3):
        start, total = time.perf_counter(), 0
        for i in range(1_000_000):
            total += i * i
        best = min(best, time.perf_counter() - start)
    return best * 1000


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": model,
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "python_loop_ms": calibration_ms(),
    }
