"""One core per pytest-xdist worker, and every core back for a compile.

The suite runs one worker per core (``-n auto`` in pyproject's addopts). Pinned, a
worker's sessions default to one thread (``physical_cores`` counts the CPUs a process may
run on) and its subprocesses inherit the core, so two workers never take turns at each
other's llama.cpp barriers: on two cores the suite ran in 5:25 pinned against 9:44 with
one process and two threads. A run without xdist (``-n 0``) keeps every core.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["all_cores", "pin_xdist_worker"]

_ALL = frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else frozenset()


def pin_xdist_worker() -> None:
    """Pin this process to one core if it is xdist worker ``gwN`` (core N, wrapping)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ...
    if not worker.startswith("gw") or len(_ALL) < 2:
        return
    cpus = sorted(_ALL)
    os.sched_setaffinity(0, {cpus[int(worker[2:]) % len(cpus)]})


@contextmanager
def all_cores() -> Iterator[None]:
    """Every core the run started with, for a compile (a first build of llama-server takes
    minutes on two cores, twice that on one); this worker's core again after."""
    if not _ALL:
        yield
        return
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, _ALL)
    try:
        yield
    finally:
        os.sched_setaffinity(0, mine)
