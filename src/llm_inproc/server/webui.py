"""The chat page at ``/`` and ``--path`` static files.

The page is plain HTML, CSS and JavaScript in the ``webui/`` directory beside this module
(a directory without ``__init__.py``: data, not a package; ``from . import webui`` still
finds this module). It is served as written, with no build step, and asks for nothing
outside this server: its Content-Security-Policy lets the browser load and connect to this
origin only. ``--path DIR`` serves DIR at ``/`` instead, as llama-server does, so llama.cpp's
own web UI can be pointed at this server; ``--no-webui`` serves neither (404 at ``/``).
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from .flags import ServerSettings

__all__ = ["ASSETS", "PAGE_DIR", "public_paths", "routes"]

PAGE_DIR = Path(__file__).with_name("webui")
"""The packaged page: ``index.html`` and the files it loads."""

ASSETS = "/webui"
"""Where the page's files other than ``index.html`` are served."""

CACHE_CONTROL = "no-cache"
"""The files keep their names from one version to the next, so the browser may keep them
but asks (with the ETag) whether they changed before each use."""

PAGE_HEADERS = {
    "Cache-Control": CACHE_CONTROL,
    "X-Content-Type-Options": "nosniff",
    # The page's promise made binding: nothing from or to another host, no inline script
    # (a reply rendered as HTML could not run code even if the renderer let some through).
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
        "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'self'"
    ),
}


def public_paths(settings: ServerSettings) -> frozenset[str]:
    """The packaged page's paths, which need neither the API key nor the loaded model: the
    page must load to ask for the key and to say the model is loading (llama-server's own
    UI assets are public alike). ``--path`` files stay behind the key, as llama-server's."""
    if not settings.webui or settings.static_path:
        return frozenset()
    names = (p.name for p in PAGE_DIR.iterdir() if p.is_file())
    return frozenset({"/", "/index.html", *(f"{ASSETS}/{n}" for n in names)})


class _Files(StaticFiles):
    """Starlette's static files (content types, ETag and 304, 404 for a missing file, no
    escape from the directory) with our Cache-Control and, for the page, its headers."""

    def __init__(self, directory: str | os.PathLike[str], *, page: bool, html: bool) -> None:
        super().__init__(directory=directory, html=html)
        self.headers = PAGE_HEADERS if page else {"Cache-Control": CACHE_CONTROL}

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(self.headers)
        return response


async def _index(request: Request) -> Response:
    return FileResponse(PAGE_DIR / "index.html", headers=PAGE_HEADERS)


def routes(settings: ServerSettings) -> list[BaseRoute]:
    """The page's routes, placed after the API's so that an API path always wins."""
    if not settings.webui:
        return []
    if settings.static_path:
        return [Mount("/", app=_Files(settings.static_path, page=False, html=True))]
    return [
        Route("/", _index, methods=["GET"]),
        Route("/index.html", _index, methods=["GET"]),
        Mount(ASSETS, app=_Files(PAGE_DIR, page=True, html=False)),
    ]
