"""The benchmark suite behind ``llm-inproc bench`` and ``python -m benchmarks``.

Modules, one job each: :mod:`.peers` (what is compared, each in its own process),
:mod:`.worker` (an in-process peer's process), :mod:`.measure` (medians, peak RSS,
machine noise), :mod:`.suite` (the interleaved rounds), :mod:`.report` (tables, targets,
files), :mod:`.plot` (the PNG). Importing this package loads none of the heavy libraries.
"""

from __future__ import annotations

from .measure import BenchResult, measure_session

__all__ = ["BenchResult", "measure_session"]
