"""The ASGI application: llama-server's routes on Starlette, behind the :class:`Gate`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import LLMError
from ..session import Session
from ..wire import error_body
from . import anthropic_api, embeddings, generation, info, responses, webui
from .cors import Cors
from .errors import ApiError, translate
from .flags import ServerSettings
from .gate import Gate
from .state import ServerState

__all__ = ["create_app"]


async def _not_found(request: Request, exc: Exception) -> Response:
    # llama-server answers an unknown path and a known path with the wrong method alike.
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status in (404, 405):
        return JSONResponse(error_body(404, "File Not Found"), status_code=404)
    return JSONResponse(error_body(status, str(getattr(exc, "detail", exc))), status_code=status)


async def _error(request: Request, exc: Exception) -> Response:
    """Every error a route raises, answered in llama-server's shape (one path for all)."""
    return translate(exc).response()


async def _bug(request: Request, exc: Exception) -> Response:
    # Starlette re-raises it after this answer, so uvicorn logs the traceback once.
    return ApiError(500, f"{type(exc).__name__}: {exc}", "server_error").response()


def create_app(settings: ServerSettings, load: Callable[[], Session]) -> Starlette:
    """The app serving the Session ``load`` returns; loading starts with the app and runs
    in a thread, so the server listens (and answers 503 "Loading model") meanwhile."""
    state = ServerState(settings, load)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.start_loading()
        try:
            yield
        finally:
            state.close()

    post, get = ["POST"], ["GET"]
    routes = [
        Route("/health", info.health, methods=get),
        Route("/v1/health", info.health, methods=get),
        Route("/metrics", info.metrics, methods=get),
        Route("/props", info.props, methods=get),
        Route("/props", info.set_props, methods=post),
        Route("/slots", info.slots, methods=get),
        Route("/slots/{id_slot}", info.slot_action, methods=["POST"]),
        Route("/models", info.models, methods=get),
        Route("/v1/models", info.models, methods=get),
        Route("/completion", generation.completion, methods=post),
        Route("/completions", generation.completion, methods=post),
        Route("/v1/completions", generation.oai_completions, methods=post),
        Route("/chat/completions", generation.chat_completions, methods=post),
        Route("/v1/chat/completions", generation.chat_completions, methods=post),
        Route("/tokenize", info.tokenize_route, methods=post),
        Route("/detokenize", info.detokenize, methods=post),
        Route("/apply-template", info.apply_template, methods=post),
        *anthropic_api.routes(),
        *embeddings.routes(),
        *responses.routes(),
        *webui.routes(settings),  # last: it may serve a whole directory at /
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            HTTPException: _not_found,
            ApiError: _error,
            LLMError: _error,
            Exception: _bug,
        },
    )
    app.state.llm = state
    app.add_middleware(Gate, state=state)
    app.add_middleware(Cors, settings=settings)  # outermost: preflights need no key
    return app
