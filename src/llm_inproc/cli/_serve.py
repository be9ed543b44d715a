"""``llm-inproc serve``: the model over HTTP, a drop-in for llama-server (see
:mod:`llm_inproc.server`; ``python -m llm_inproc.server`` is the same server)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    from ..server.flags import add_server_flags

    p: argparse.ArgumentParser = sub.add_parser(
        "serve",
        help="serve the model over HTTP (llama-server's API and flags)",
        description="Serve the model over HTTP with llama-server's endpoints and flags "
        "(-m, -c, -t, -ngl, -np, --host, --port, --api-key, --alias, --metrics, ...) "
        "and OpenAI's /v1 routes. Listens at once; /health answers 503 until the model "
        "is loaded.",
    )
    add_server_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..server.flags import settings_from_args
    from ..server.run import serve

    return serve(settings_from_args(args))
