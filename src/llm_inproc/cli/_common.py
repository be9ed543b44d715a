"""What the model-running commands share: sampling flags, building a Session from flags,
streaming a reply to stdout, metrics as JSON."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..metrics import Metrics
    from ..session import Session

__all__ = [
    "add_sampling_flags",
    "metrics_dict",
    "sampling_kwargs",
    "session_from_args",
    "stream_to_stdout",
]


def add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    """``--max-tokens``, ``--temperature``, ``--seed``, with the Session's meanings."""
    g = parser.add_argument_group("sampling")
    g.add_argument(
        "--max-tokens",
        type=int,
        default=512,
        help="reply length limit (default 512; 0: until the model stops or the context is full)",
    )
    g.add_argument("--temperature", type=float, default=1.0, help="0 is greedy")
    g.add_argument("--seed", type=int, default=0, help="0 is random; fix it to repeat a reply")


def sampling_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``Session.prompt`` that the sampling flags set."""
    return {"max_tokens": args.max_tokens, "seed": args.seed, "temperature": args.temperature}


def stream_to_stdout(pieces: Iterable[str]) -> str:
    """Print a streamed reply as it comes (leading white space dropped); return it stripped."""
    out: list[str] = []
    for piece in pieces:
        if not out:
            piece = piece.lstrip()
            if not piece:
                continue
        out.append(piece)
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    return "".join(out).strip()


def session_from_args(args: argparse.Namespace) -> Session:
    from ..config import Options
    from ..session import Session

    opts = Options(model=args.model or "")
    if args.context_length is not None:
        opts.context_length = args.context_length
    if args.threads is not None:
        opts.threads = args.threads
    if args.gpu_layers is not None:
        opts.gpu_layers = args.gpu_layers
    return Session(opts, cache_dir=args.cache_dir)


def _plain(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def metrics_dict(m: Metrics) -> dict[str, Any]:
    """Metrics as JSON-ready values (durations in seconds, rates in tokens/s)."""
    out: dict[str, Any] = _plain(dataclasses.asdict(m))
    out["prompt"]["rate"] = m.prompt.rate()
    out["generated"]["rate"] = m.generated.rate()
    return out
