"""``llm-inproc embed TEXT... | --file F [--out X.npy]``: vectors of texts.

Writes one JSON line per text (``{"index": i, "embedding": [...]}``) on stdout, or a
float32 ``.npy`` array with ``--out``. A file is read lazily and embedded 256 lines at a
time, each line written as soon as its chunk is done, so a file of any length runs in
bounded memory (``--out`` holds the result array); progress goes to stderr when there is
more than one chunk.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any, TextIO

from . import add_common_model_flags

if TYPE_CHECKING:
    from ..session import Session

__all__ = ["add_parser", "run"]

_CHUNK = 256


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "embed",
        help="print the vectors of texts (JSON lines, or an .npy file)",
        description=(
            "Embed each TEXT, or each line of --file (- for stdin; blank lines are skipped), "
            "with the model in this process. Prints one JSON line per text, "
            '{"index": i, "embedding": [...]}, or writes a float32 .npy array with --out.'
        ),
    )
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to embed")
    p.add_argument(
        "--file", metavar="F", default=None, help="one text per line (- for stdin) (default: none)"
    )
    p.add_argument(
        "--out", metavar="X.npy", default=None, help="write a .npy array (default: JSON lines)"
    )
    p.add_argument(
        "--pooling",
        choices=("mean", "cls", "last", "none"),
        default=None,
        help="how token vectors become one (default: the model's own, else mean; none: "
        "one vector per token)",
    )
    p.add_argument(
        "--no-normalize", action="store_true", help="raw vectors, not scaled to length 1"
    )
    p.add_argument(
        "--truncate",
        action="store_true",
        help="embed the first tokens of a text longer than the context instead of failing",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    add_common_model_flags(p)
    p.set_defaults(func=run)


def _lines(path: str) -> Iterator[str]:
    f: TextIO = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    try:
        for line in f:
            text = line.rstrip("\r\n")
            if text.strip():
                yield text
    finally:
        if f is not sys.stdin:
            f.close()


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..errors import InvalidInputError
    from ._common import session_from_args

    if args.texts and args.file:
        raise InvalidInputError("give TEXT arguments or --file F, not both")
    if not args.texts and not args.file:
        raise InvalidInputError("nothing to embed: give TEXT arguments or --file F")
    if args.out and args.pooling == "none":
        raise InvalidInputError("--out writes one row per text; drop --pooling none")
    if args.file and args.file != "-":
        open(args.file, encoding="utf-8").close()  # a missing file fails before loading
    texts: Iterator[str] = iter(args.texts) if args.texts else _lines(args.file)
    rows: list[Any] = []
    done = 0
    with session_from_args(args) as session:
        while chunk := list(islice(texts, _CHUNK)):
            vectors = _embed(session, chunk, args)
            if args.out:
                rows.append(vectors)
            else:
                _write(vectors, done)
            done += len(chunk)
            if not args.no_progress and (done > _CHUNK or len(chunk) == _CHUNK):
                print(f"embedded {done} texts", file=sys.stderr, flush=True)  # noqa: T201
    if args.out:
        np.save(args.out, np.concatenate(rows) if rows else np.empty((0, 0), np.float32))
    return 0


def _embed(session: Session, chunk: list[str], args: argparse.Namespace) -> Any:
    return session.embed(
        chunk, pooling=args.pooling, normalize=not args.no_normalize, truncate=args.truncate
    )


def _write(vectors: Any, start: int) -> None:
    out = sys.stdout
    for i, v in enumerate(vectors):
        out.write(json.dumps({"index": start + i, "embedding": v.tolist()}) + "\n")
    out.flush()
