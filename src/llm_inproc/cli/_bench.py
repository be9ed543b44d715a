"""``llm-inproc bench``: tokens per second of the in-process session on this machine."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from . import add_common_model_flags
from ._common import session_from_args

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "bench",
        help="measure generation and prompt tokens per second",
        description="Measure the in-process session's throughput (greedy, fresh prompts). "
        "benchmarks/bench_tokens.py compares it with llama-bench and llama-server.",
    )
    p.add_argument("--tokens", type=int, default=128, help="tokens to generate per run")
    p.add_argument("--runs", type=int, default=3, help="runs; the median is reported")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_common_model_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bench import measure
    from ..errors import InvalidInputError

    if args.tokens < 1 or args.runs < 1:
        raise InvalidInputError("--tokens and --runs must be at least 1")
    with session_from_args(args) as session:
        result = measure(session, tokens=args.tokens, runs=args.runs)
        info = session.model_info
        if args.json:
            out = {
                "model": str(session.model),
                "threads": info.threads,
                **dataclasses.asdict(result),
            }
            print(json.dumps(out, indent=2))  # noqa: T201
        else:
            print(  # noqa: T201
                f"{session.model} ({info.description}), {info.threads} threads, "
                f"{result.tokens} tokens, median of {result.runs}:\n"
                f"  generation {result.generation:8.1f} tok/s "
                f"({result.generation_wall:.1f} tok/s wall clock)\n"
                f"  prompt     {result.prompt:8.1f} tok/s"
            )
    return 0
