"""A lone request beside idle conversations: what keeping other users' histories costs.

In-process, flash attention off (the CPU default). Per round: three ~1,000-token
conversations are run on a ``parallel=4`` session and left idle, then one request
generates alone; its generation rate is compared with the same request on a fresh
``parallel=1`` session. With ``cache_ram`` on (the default) the idle conversations move
to host memory as the request starts; with ``cache_ram=0`` they stay in the shared cells,
which attention then spans.

    python benchmarks/bench_idle.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from llm_inproc import Message, Options, Role, Session
from llm_inproc.models.embedded import GEMMA_BASE, embedded_model_path
from llm_inproc.paths import default_cache_dir


def history(user: int) -> list[Message]:
    text = " ".join(f"Note {i} of user {user}: the tide was {i % 7} feet." for i in range(90))
    return [Message(Role.USER, text + " Summarise.")]


def rate(session: Session, tokens: int) -> float:
    lone = [Message(Role.USER, "Write a long story about a lighthouse keeper.")]
    reply = session.complete(lone, max_tokens=tokens, temperature=0)
    return reply.generated.rate()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    model = str(embedded_model_path(GEMMA_BASE, default_cache_dir()) or Path(GEMMA_BASE.ref))
    common = {"model": model, "threads": args.threads, "flash_attention": False}
    cases = {
        "parallel=1": Options(**common, parallel=1, context_length=8192),  # type: ignore[arg-type]
        "parallel=4, idle in host memory": Options(**common, parallel=4, context_length=8192),  # type: ignore[arg-type]
        "parallel=4, idle in the cells (cache_ram=0)": Options(
            **common,  # type: ignore[arg-type]
            parallel=4,
            context_length=8192,
            cache_ram=0,
        ),
    }
    rates: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, opts in cases.items():
            with Session(opts) as s:
                if opts.parallel > 1:
                    for user in range(3):
                        s.complete(history(user), max_tokens=4, temperature=0)
                rate(s, 8)  # warm-up, on the same footing for every case
                kept = s.get_metrics()
                rates[name].append(rate(s, args.tokens))
                print(
                    json.dumps(
                        {"case": name, "gen_tok_s": round(rates[name][-1], 1),
                         "kv_cache_tokens": kept.kv_cache_tokens,
                         "prompt_cache_tokens": kept.prompt_cache_tokens}
                    ),
                    flush=True,
                )  # fmt: skip
    base = statistics.median(rates["parallel=1"])
    for name, xs in rates.items():
        med = statistics.median(xs)
        print(f"{name}: median {med:.1f} tok/s, {med / base:.3f}x parallel=1")


if __name__ == "__main__":
    main()
