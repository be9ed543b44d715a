"""What the model-running commands share: building a Session from flags, metrics as JSON."""

from __future__ import annotations

import argparse
import dataclasses
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..metrics import Metrics
    from ..session import Session

__all__ = ["metrics_dict", "session_from_args"]


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
