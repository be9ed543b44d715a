"""How the suite measures: medians, peak memory of a process, and how busy the rest of
the machine was (the noise), plus :func:`measure_session`, one session's own rates.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..session import Session

__all__ = [
    "BenchResult",
    "CpuWatch",
    "load_average",
    "measure_session",
    "median",
    "vmhwm_kib",
    "wait_for_quiet",
]

_TEXT = "Write a long story about a lighthouse keeper and the sea."


@dataclass(frozen=True)
class BenchResult:
    """Medians over the runs, in tokens per second."""

    generation: float
    """Generated tokens per second, from the session's metrics."""
    generation_wall: float
    """Generated tokens per second seen by the caller between the first and last piece."""
    prompt: float
    """Prompt tokens evaluated per second."""
    runs: int
    tokens: int


def measure_session(session: Session, *, tokens: int = 128, runs: int = 3) -> BenchResult:
    """Generate ``tokens`` greedily ``runs`` times, each on a fresh prompt; rates from the
    session's metrics, plus a client-side wall clock over the streamed pieces."""
    from ..prompting.messages import Message, Role

    session.prompt([Message(Role.USER, "warm up")], max_tokens=4, temperature=0)
    gen: list[float] = []
    wall: list[float] = []
    pp: list[float] = []
    for i in range(runs):
        # A different prompt each run, so the KV cache cannot help prompt processing.
        msgs = [Message(Role.USER, f"{i}: {_TEXT}" + " Once upon a time" * 40)]
        before = session.get_metrics()
        first = last = 0.0
        for _ in session.prompt_streaming(msgs, max_tokens=tokens, temperature=0):
            last = time.perf_counter()
            first = first or last
        after = session.get_metrics()
        n = after.generated.count - before.generated.count
        gen.append(n / (after.generated.duration - before.generated.duration).total_seconds())
        pp.append(
            (after.prompt.count - before.prompt.count)
            / (after.prompt.duration - before.prompt.duration).total_seconds()
        )
        if last > first:
            wall.append((n - 1) / (last - first))
    return BenchResult(
        generation=statistics.median(gen),
        generation_wall=statistics.median(wall) if wall else 0.0,
        prompt=statistics.median(pp),
        runs=runs,
        tokens=tokens,
    )


def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values."""
    return statistics.median(values) if values else float("nan")


def vmhwm_kib(pid: int) -> int:
    """Peak resident set size (``VmHWM``) of a running process in KiB; 0 if unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (0.0, 0.0, 0.0)


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _busy_ticks() -> int:
    """CPU ticks the whole machine spent busy (Linux /proc/stat; 0 elsewhere)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0
    return sum(fields) - fields[3] - fields[4]  # minus idle and iowait


def _own_ticks(pids: Sequence[int]) -> int:
    total = 0
    for pid in (os.getpid(), *pids):
        try:
            with open(f"/proc/{pid}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(rest[11]) + int(rest[12])
    return total


class CpuWatch:
    """How many cores *other* processes kept busy while we measured: the noise.

    ``pids`` are the peers' processes (their work is ours); :meth:`add_own` counts the
    CPU seconds of a child that already exited (llama-bench)."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.t0, self.busy0, self.own0 = time.monotonic(), _busy_ticks(), _own_ticks(pids)
        self.extra = 0.0

    def add_own(self, cpu_seconds: float) -> None:
        self.extra += cpu_seconds

    def others(self) -> float:
        wall = time.monotonic() - self.t0
        busy = (_busy_ticks() - self.busy0) / _TICK
        own = (_own_ticks(self.pids) - self.own0) / _TICK + self.extra
        return max(0.0, (busy - own) / wall) if wall > 0 else 0.0


def wait_for_quiet(pids: Sequence[int], limit: float, max_wait: float) -> float:
    """Wait (at most ``max_wait`` s) until other processes use under ``limit`` cores;
    return what they used in the last second."""
    deadline = time.monotonic() + max_wait
    while True:
        watch = CpuWatch(pids)
        time.sleep(0.5)
        others = watch.others()
        if others < limit or time.monotonic() > deadline:
            return others
