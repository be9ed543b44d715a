"""What every request passes before its route: the API key, and the loading check.

Plain ASGI middlewares, so streamed responses pass through untouched. ``/health`` is
public (it reports loading itself), and so is the chat page with its files (it asks for the
key and shows the loading itself: :func:`.webui.public_paths`); CORS preflights are answered
without a key, as llama-server answers them (:mod:`.cors`, outermost);
every other path needs the key when one is set, and the loaded model.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from ..wire import error_body
from .state import ServerState
from .webui import public_paths

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
        self.public = PUBLIC_PATHS | public_paths(state.settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        path = scope["path"]
        public = path in self.public
        if self.keys and not public and not key_matches(self.keys, headers):
            await _json(send, 401, error_body(401, "Invalid API Key"))
            return
        if not public and self.state.session is None:
            err = self.state.not_ready()
            await _json(send, err.status, err.body())
            return
        await self.app(scope, receive, send)


async def _json(send: Send, status: int, body: object) -> None:
    data = json.dumps(body, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json; charset=utf-8")]
    headers.append((b"content-length", str(len(data)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
