"""What every request passes before its route: CORS, the API key, and the loading check.

A plain ASGI middleware, so streamed responses pass through untouched. ``/health`` is
public (it reports loading itself); CORS preflights are answered without a key, as
llama-server answers them; every other path needs the key when one is set, and the
loaded model.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..wire import error_body
from .state import ServerState

__all__ = ["PUBLIC_PATHS", "Gate", "key_matches"]

PUBLIC_PATHS = frozenset({"/health", "/v1/health"})


def key_matches(keys: Iterable[bytes], headers: dict[bytes, bytes]) -> bool:
    """``Authorization: Bearer KEY`` (or bare ``KEY``) or ``X-Api-Key: KEY``, compared in
    constant time against every accepted key."""
    offered = []
    auth = headers.get(b"authorization")
    if auth is not None:
        offered.append(auth[7:] if auth[:7].lower() == b"bearer " else auth)
    api_key = headers.get(b"x-api-key")
    if api_key is not None:
        offered.append(api_key)
    ok = False
    for key in keys:
        for candidate in offered:
            ok |= hmac.compare_digest(candidate.strip(), key)
    return ok


class Gate:
    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state
        self.keys = [k.encode() for k in state.settings.api_keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        origin = headers.get(b"origin")
        path = scope["path"]
        if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
            await self._preflight(send, origin, headers)
            return
        if self.keys and path not in PUBLIC_PATHS and not key_matches(self.keys, headers):
            await _json(send, 401, error_body(401, "Invalid API Key"), origin)
            return
        if path not in PUBLIC_PATHS and self.state.session is None:
            err = self.state.not_ready()
            await _json(send, err.status, err.body(), origin)
            return

        async def send_with_cors(message: Message) -> None:
            if origin is not None and message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"access-control-allow-origin", origin),
                ]
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(
        self, send: Send, origin: bytes | None, headers: dict[bytes, bytes]
    ) -> None:
        out = [
            (b"access-control-allow-origin", origin or b"*"),
            (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
            (b"access-control-allow-headers", headers.get(b"access-control-request-headers", b"*")),
            (b"access-control-max-age", b"600"),
            (b"content-length", b"0"),
        ]
        if origin is not None:
            out.append((b"access-control-allow-credentials", b"true"))
        await send({"type": "http.response.start", "status": 200, "headers": out})
        await send({"type": "http.response.body", "body": b""})


async def _json(send: Send, status: int, body: object, origin: bytes | None) -> None:
    data = json.dumps(body, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json; charset=utf-8")]
    headers.append((b"content-length", str(len(data)).encode()))
    if origin is not None:
        headers.append((b"access-control-allow-origin", origin))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
