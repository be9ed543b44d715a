"""A conversation's next turn after a restart: restored from disk versus evaluated cold.

A ~2,000-token history is evaluated once and saved with ``Session.save_conversations``.
Per round, a fresh session (a restart) either loads the file first or not, then sends
the history plus one new question; the time to first token is reported for both.

    python benchmarks/bench_restart.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from llm_inproc import Message, Options, Role, Session
from llm_inproc.models.embedded import GEMMA_BASE, embedded_model_path
from llm_inproc.paths import default_cache_dir

HISTORY = [
    Message(
        Role.USER,
        " ".join(f"Entry {i}: the keeper saw {i % 5} ships and wrote it down." for i in range(140)),
    ),
    Message(Role.ASSISTANT, "I have read your log."),
]
NEXT = Message(Role.USER, "How many entries are there?")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    model = str(embedded_model_path(GEMMA_BASE, default_cache_dir()))
    opts = Options(model=model, context_length=4096, threads=args.threads, parallel=1)
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "history.kv"
        with Session(opts) as s:
            n = s.count_tokens(HISTORY)
            s.complete(HISTORY, max_tokens=1, temperature=0)
            s.save_conversations(saved)
        times: dict[str, list[float]] = {"cold": [], "restored": []}
        for _ in range(args.rounds):
            for case in times:
                with Session(opts) as s:
                    t0 = time.perf_counter()
                    if case == "restored":
                        s.load_conversations(saved)
                    reply = s.complete([*HISTORY, NEXT], max_tokens=1, temperature=0)
                    times[case].append(time.perf_counter() - t0)
                    print(
                        json.dumps(
                            {"case": case, "history_tokens": n, "ttft_s": round(times[case][-1], 3),
                             "cached_tokens": reply.cached_tokens,
                             "evaluated": reply.prompt.count}
                        ),
                        flush=True,
                    )  # fmt: skip
        cold, restored = (statistics.median(times[c]) for c in ("cold", "restored"))
        size = saved.stat().st_size
        print(
            f"history {n} tokens ({size / 2**20:.1f} MiB on disk): cold {cold:.3f} s, "
            f"restored {restored:.3f} s ({restored / cold:.2f}x, load included)"
        )


if __name__ == "__main__":
    main()
