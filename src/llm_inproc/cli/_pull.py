"""``llm-inproc pull REF``: download a model into the cache and print its local path.

Like ``ollama pull``: it always asks the Hub whether the reference's revision moved, shows
huggingface_hub's progress bar on stderr, verifies the file, and prints only the path on
stdout so scripts can use it (``llama-cli -m "$(llm-inproc pull hf:...)"``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from . import add_cache_dir_flag

__all__ = ["Resolver", "add_parser", "hub_resolver", "run"]

Resolver = Callable[[str, Path, bool], Path]
"""``(reference, cache_dir, progress) -> local path``; the hook ``run`` downloads through."""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "pull",
        help="download a model into the cache and print its path",
        description=(
            "Download an hf:<author>/<repo>/<revision>/<file> reference (or update it when the "
            "revision moved), verify its sha256, and print the local path. Honours HF_TOKEN, "
            "HF_ENDPOINT and HF_HUB_OFFLINE."
        ),
    )
    p.add_argument("ref", metavar="REF", help="hf:<author>/<repo>/<revision>/<file without .gguf>")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_cache_dir_flag(p)
    p.set_defaults(func=run)


def hub_resolver(ref: str, cache_dir: Path, progress: bool) -> Path:
    """An installed package's copy of ``ref`` if there is one, else the Hub's latest commit."""
    from ..embedded import embedded_model_path, find_embedded
    from ..hub import download_model

    embedded = find_embedded(ref)
    if embedded is not None:
        path = embedded_model_path(embedded, cache_dir)
        if path is not None:
            return path
    return download_model(ref, cache_dir, progress=progress, update=True)


def run(args: argparse.Namespace, *, resolver: Resolver | None = None) -> int:
    """Pull ``args.ref``; ``resolver`` defaults to :func:`hub_resolver`."""
    from ..paths import resolve_cache_dir

    cache_dir = resolve_cache_dir(args.cache_dir)
    path = (resolver or hub_resolver)(args.ref, cache_dir, not args.no_progress)
    print(path)  # noqa: T201 - the command's output
    return 0
