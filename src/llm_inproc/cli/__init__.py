"""The ``llm-inproc`` command line.

Each subcommand lives in its own module exposing ``add_parser(subparsers)``;
that function registers the parser and sets ``func`` to a ``run(args) -> int``.
Output goes to stdout, logs and progress to stderr. Exit status: 0 success,
2 bad usage, 1 failure with a one-line reason (a traceback only with ``--verbose``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from ..errors import LLMError

__all__ = ["add_common_model_flags", "build_parser", "main"]

_SUBCOMMANDS = ("prompt", "chat", "serve", "pull", "models", "build", "info", "bench")


def add_common_model_flags(parser: argparse.ArgumentParser) -> None:
    """The flags every command that loads a model shares."""
    g = parser.add_argument_group("model")
    g.add_argument("--model", default=None, help="hf: reference, local .gguf path, or 'python'")
    g.add_argument("--context-length", type=int, default=None, help="0: the model's trained length")
    g.add_argument("--threads", type=int, default=None, help="default: all physical cores")
    g.add_argument("--gpu-layers", type=int, default=None, help="-1 all (default), 0 none")
    add_cache_dir_flag(parser)


def add_cache_dir_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache-dir", default=None, help="default: $LLM_INPROC_CACHE or the user cache dir"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-inproc", description="Run a local LLM inside this process."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs and tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _SUBCOMMANDS:
        module = importlib.import_module(f"{__name__}._{name}")
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # The reader went away (``llm-inproc models | head``): not an error.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("llm-inproc: interrupted", file=sys.stderr)  # noqa: T201
        return 130
    except (LLMError, OSError) as e:
        if args.verbose:
            raise
        reason = " ".join(str(e).split()) or type(e).__name__
        print(f"llm-inproc: error: {reason}", file=sys.stderr)  # noqa: T201
        return 1


if __name__ == "__main__":
    sys.exit(main())
