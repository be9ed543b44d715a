"""``llm-inproc models``: the models in the cache, with their size and origin.

Reads the cache only (no network), so it answers instantly and offline.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import add_cache_dir_flag

if TYPE_CHECKING:
    from ..hub import CachedModel

__all__ = ["add_parser", "format_models", "format_size", "run"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "models",
        help="list the cached models",
        description="List the models in the cache with their size and where they came from.",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list")
    add_cache_dir_flag(p)
    p.set_defaults(func=run)


def format_size(n: int) -> str:
    """Bytes in binary units: ``512 B``, ``4.9 KiB``, ``253.0 MiB``, ``1.2 GiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def format_models(models: Sequence[CachedModel]) -> str:
    """Aligned columns: reference, size, source and commit."""
    rows = [("REF", "SIZE", "SOURCE", "COMMIT")]
    rows += [(m.ref, format_size(m.size), m.source, m.commit[:12]) for m in models]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:3], widths, strict=True)) + "  " + r[3]
        for r in rows
    )


def run(args: argparse.Namespace) -> int:
    """List the models assembled from packages and downloaded from the Hub."""
    from ..paths import resolve_cache_dir
    from ..resolve import list_models

    cache_dir = resolve_cache_dir(args.cache_dir)
    models = list_models(cache_dir)
    if args.json:
        print(json.dumps([m.to_json() for m in models], indent=2))  # noqa: T201 - the command's output
    elif models:
        print(format_models(models))  # noqa: T201 - the command's output
    else:
        print(f"no models cached in {cache_dir}", file=sys.stderr)  # noqa: T201
    return 0
