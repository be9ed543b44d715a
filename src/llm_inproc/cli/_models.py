"""``llm-inproc models``: the models in the cache, with their size and origin.

Reads the cache only (no network), so it answers instantly and offline. The model that
``prompt`` and ``chat`` run when no ``--model`` is given is marked with ``*``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import MODEL_ENV, add_cache_dir_flag, add_config_flag

if TYPE_CHECKING:
    from ..models.hub import CachedModel

__all__ = ["add_parser", "format_models", "format_size", "is_model", "mark_default", "run"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "models",
        help="list the cached models",
        description="List the models in the cache with their size and where they came "
        "from. '*' marks the default model: the one prompt and chat run without --model "
        f"(${MODEL_ENV}, else the --config file's, else the embedded default).",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list")
    add_config_flag(p)
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


def is_model(ref: str, path: str | os.PathLike[str], model: str) -> bool:
    """Whether the cached model ``ref`` at ``path`` is what ``model`` (a reference or a
    path) names."""
    if not model:
        return False
    if model.startswith("hf:"):
        return ref == model
    return os.path.abspath(os.path.expanduser(model)) == os.path.abspath(path)


def mark_default(listed: list[dict[str, Any]], default: str) -> list[dict[str, Any]]:
    """JSON listings (``CachedModel.to_json``) with ``"default"`` set on each."""
    return [{**m, "default": is_model(m["ref"], m["path"], default)} for m in listed]


def format_models(models: Sequence[CachedModel], default: str = "") -> str:
    """Aligned columns: reference (``*`` before the default model's), size, source, commit,
    and what the model is for."""
    rows = [("  REF", "SIZE", "SOURCE", "COMMIT", "FOR")]
    rows += [
        (
            ("* " if is_model(m.ref, m.path, default) else "  ") + m.ref,
            format_size(m.size),
            m.source,
            m.commit[:12],
            m.purpose,
        )
        for m in models
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        (
            "  ".join(cell.ljust(w) for cell, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
        ).rstrip()
        for r in rows
    )


def run(args: argparse.Namespace) -> int:
    """List the models assembled from packages and downloaded from the Hub."""
    from ..config import DEFAULT_MODEL
    from ..models.resolve import list_models
    from ..paths import resolve_cache_dir
    from ._common import chosen_model

    default = chosen_model(args)[0] or DEFAULT_MODEL
    cache_dir = resolve_cache_dir(args.cache_dir)
    models = list_models(cache_dir)
    if args.json:
        listed = mark_default([m.to_json() for m in models], default)
        print(json.dumps(listed, indent=2))  # noqa: T201 - the command's output
    elif models:
        print(format_models(models, default))  # noqa: T201 - the command's output
    else:
        print(f"no models cached in {cache_dir}", file=sys.stderr)  # noqa: T201
    if default.startswith("hf:") and not any(is_model(m.ref, m.path, default) for m in models):
        print(  # noqa: T201
            f"the default model {default} is not cached; the first prompt fetches it "
            f"(or run: llm-inproc pull {default})",
            file=sys.stderr,
        )
    return 0
