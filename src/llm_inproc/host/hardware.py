"""What the CPU offers, for choosing a thread count.

llama.cpp generation is memory-bound: one thread per physical core is the
sweet spot, hyper-threads only add contention. llama-cpp-python defaults to
half the logical CPUs, which on a 2-core machine costs about 40 % of throughput.
"""

from __future__ import annotations

import os
from functools import cache

__all__ = ["physical_cores", "usable_cpus"]


def usable_cpus() -> int:
    """Logical CPUs this process may run on (at least 1); for parallel compiles."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@cache
def physical_cores() -> int:
    """Physical cores this process may run on (at least 1)."""
    usable = usable_cpus()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return usable
    cores: set[tuple[str, str]] = set()
    phys = core = ""
    for line in [*text.splitlines(), ""]:
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            phys = value.strip()
        elif key == "core id":
            core = value.strip()
        elif not line.strip():
            if core:
                cores.add((phys, core))
            phys = core = ""
    if not cores:
        return usable
    return max(1, min(len(cores), usable))
