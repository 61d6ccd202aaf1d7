"""A warning before a CPU job shares its cores with another one.

torch's OpenMP threads spin-wait for each other at every parallel region, so two jobs that each run 2 threads on
2 cores do not run 2x slower but ~4x (experiments/LOG.md: the eval CLI took 471-521 s next to pytest, ~40 s
alone). What the other processes use is sampled from /proc/stat just before the job starts (the load average
would still count an install that just finished)."""

from __future__ import annotations

import os
import time
from pathlib import Path

PROC_STAT = Path("/proc/stat")


def _cpu_times() -> tuple[int, int]:
    """(all, idle) jiffies since boot from /proc/stat's first line (guest time is already in user time)."""
    values = [int(v) for v in PROC_STAT.read_text().split("\n", 1)[0].split()[1:9]]
    return sum(values), values[3] + values[4]  # idle + iowait


def busy_cores(interval: float = 0.25) -> float | None:
    """How many cores the machine kept busy over `interval` seconds (None where /proc/stat is missing)."""
    try:
        total_before, idle_before = _cpu_times()
        time.sleep(interval)
        total_after, idle_after = _cpu_times()
    except (OSError, ValueError, IndexError):
        return None
    elapsed = total_after - total_before
    if elapsed <= 0:
        return None
    return (1.0 - (idle_after - idle_before) / elapsed) * (os.cpu_count() or 1)


def busy_cpu_warning(threads: int, busy: float | None, cores: int) -> str | None:
    """A one-line warning when `threads` torch threads and the `busy` cores others use exceed the machine."""
    if busy is None or threads <= 1 or busy + threads <= cores + 0.5:
        return None
    return (f"warning: the CPU is busy ({busy:.1f} of {cores} cores in use) and torch runs {threads} threads; "
            f"OpenMP threads spin-wait on each other, so this job and the others may each run several times "
            f"slower. Run one CPU job at a time, or set OMP_NUM_THREADS=1.")


def warn_if_cpu_busy(device: str, say=print) -> None:
    """Print the warning for a job about to run on the CPU (`device` as the config or flag gives it)."""
    import torch

    from stateset_agents.models.loading import UnsupportedSettingError, resolve_device

    try:
        on_cpu = resolve_device(device).type == "cpu"
    except (UnsupportedSettingError, RuntimeError):  # an unusable device is reported where the model loads
        return
    if on_cpu:
        warning = busy_cpu_warning(torch.get_num_threads(), busy_cores(), os.cpu_count() or 1)
        if warning:
            say(warning)
