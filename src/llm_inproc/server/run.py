"""Start the server: bind the port first (a clear error when it is taken), then run uvicorn
on that socket while the model loads behind it; a model that fails to load stops the server."""

from __future__ import annotations

import argparse
import errno
import functools
import logging
import socket
import sys
from collections.abc import Callable, Sequence

from ..errors import LLMError
from ..prompting.request_builder import check_template
from ..session import Session
from .flags import ServerSettings, add_server_flags, settings_from_args, unsupported

__all__ = ["ListenError", "bind", "build_parser", "main", "serve"]

logger = logging.getLogger(__name__)


class ListenError(OSError):
    """The address could not be listened on (most often: the port is taken)."""


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say TCP, and
    # without it every response waits ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        # Reuse a port left in TIME_WAIT; a port someone listens on still fails below.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise ListenError(
                f"port {port} on {host} is already in use; stop the program using it "
                "or pick another with --port"
            ) from None
        raise ListenError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def _load(settings: ServerSettings) -> Session:
    return Session(settings.options, cache_dir=settings.cache_dir)


def serve(settings: ServerSettings, load: Callable[[], Session] | None = None) -> int:
    """Serve until interrupted; raise the load error if the model cannot be loaded."""
    try:
        import uvicorn

        from .app import create_app
    except ImportError as e:
        raise LLMError(
            f"serving needs the server extra ({e.name} is not installed): "
            "pip install 'llm-inproc[server]'"
        ) from None

    check_template(settings.chat_template)
    sock = bind(settings.host, settings.port)
    app = create_app(settings, load or functools.partial(_load, settings))
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    state = app.state.llm
    failures: list[BaseException] = []

    def on_failure(error: BaseException) -> None:
        failures.append(error)
        server.should_exit = True

    state.on_failure = on_failure
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    port = sock.getsockname()[1]
    sys.stderr.write(f"llm-inproc: listening on http://{host}:{port} (loading the model)\n")
    sys.stderr.flush()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if failures:
        raise failures[0]
    return 0


def build_parser(prog: str = "python -m llm_inproc.server") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve a model over HTTP with llama-server's API (and its flags).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs and tracebacks")
    add_server_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.error(unsupported(unknown))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return serve(settings_from_args(args))
    except KeyboardInterrupt:
        return 130
    except (LLMError, OSError) as e:
        if args.verbose:
            raise
        reason = " ".join(str(e).split()) or type(e).__name__
        sys.stderr.write(f"llm-inproc: error: {reason}\n")
        return 1
