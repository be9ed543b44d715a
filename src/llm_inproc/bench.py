"""Measure a session's own throughput, the way ``llm-inproc bench`` and benchmarks/ do.

Rates come from the session's metrics (time spent in llama.cpp and our loop), plus a
client-side wall clock over the streamed pieces, so the two can be compared.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from .messages import Message, Role
from .session import Session

__all__ = ["BenchResult", "measure"]

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


def measure(session: Session, *, tokens: int = 128, runs: int = 3) -> BenchResult:
    """Generate ``tokens`` greedily ``runs`` times, each on a fresh prompt."""
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
