"""CORS as llama-server answers it (``--cors-origins``, ``--cors-methods``,
``--cors-headers``, ``--cors-credentials``), outermost, so that preflights are answered
without a key and refusals carry the header.

Every response gets ``Access-Control-Allow-Origin``: the request's origin echoed back
when origins are ``*`` and credentials are on (the default, so a page on another host,
a web UI or a notebook, can call the API with its key), a local origin echoed for
``localhost``. Given a list, llama-server writes the list itself, which browsers refuse;
we echo the request's origin when it is in the list. ``OPTIONS`` is a preflight: 200
with the allowed credentials, methods and headers, and no body. Where llama-server
answers ``Access-Control-Allow-Headers: *``, we echo the headers the preflight asks for:
with credentials a browser reads ``*`` literally, and never as covering ``Authorization``,
so a page sending its key would be refused.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .flags import ServerSettings

__all__ = ["Cors", "allowed_origin"]

logger = logging.getLogger(__name__)

_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def allowed_origin(settings: ServerSettings, origin: str) -> str | None:
    """The ``Access-Control-Allow-Origin`` value for a request from ``origin``."""
    configured = settings.cors_origins.strip()
    if configured == "*":
        return (origin or None) if settings.cors_credentials else "*"
    if configured == "localhost":
        try:
            host = urlsplit(origin).hostname
        except ValueError:
            host = None
        if origin and host in _LOCAL_HOSTS:
            return origin
        if origin:
            logger.warning("CORS: not allowing the non-local origin %s", origin)
        return None
    allowed = [o.strip() for o in configured.split(",") if o.strip()]
    return origin if origin in allowed else None


class Cors:
    def __init__(self, app: ASGIApp, settings: ServerSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        s = self.settings
        request_headers = Headers(scope=scope)
        origin = allowed_origin(s, request_headers.get("origin", ""))
        if scope["method"] == "OPTIONS":
            allow_headers = s.cors_headers
            if allow_headers.strip() == "*":
                allow_headers = request_headers.get("access-control-request-headers", "*")
            headers = [
                (b"access-control-allow-credentials", b"true" if s.cors_credentials else b"false"),
                (b"access-control-allow-methods", s.cors_methods.encode()),
                (b"access-control-allow-headers", allow_headers.encode("latin-1")),
                (b"content-type", b"text/html"),
                (b"content-length", b"0"),
            ]
            if origin is not None:
                headers.append((b"access-control-allow-origin", origin.encode()))
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_origin(message: Message) -> None:
            if message["type"] == "http.response.start" and origin is not None:
                MutableHeaders(scope=message)["access-control-allow-origin"] = origin
            await send(message)

        await self.app(scope, receive, send_with_origin)
