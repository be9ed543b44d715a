"""Errors as llama-server answers them: one exception for the routes to raise, and the one
place where our own errors become HTTP status codes and llama-server's ``error.type``.
(Starlette is imported only when a response is built: the CLI imports this module.)"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..errors import (
    BusyError,
    ContextOverflowError,
    InvalidInputError,
    ModelNotFoundError,
    RequestTimeoutError,
    SessionClosedError,
)
from ..wire import error_body

if TYPE_CHECKING:
    from starlette.responses import JSONResponse

__all__ = ["ApiError", "error_response", "invalid", "translate"]

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answered with ``{"error": {"code", "message", "type", ...extra}}``."""

    def __init__(self, status: int, message: str, type_: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.type, **self.extra)

    def response(self) -> JSONResponse:
        from starlette.responses import JSONResponse

        return JSONResponse(self.body(), status_code=self.status)


def invalid(message: str) -> ApiError:
    return ApiError(400, message, "invalid_request_error")


def translate(exc: BaseException) -> ApiError:
    """The HTTP answer for an exception raised while serving a request."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ContextOverflowError):
        return ApiError(400, str(exc), "exceed_context_size_error")
    if isinstance(exc, (InvalidInputError, ModelNotFoundError)):
        return invalid(str(exc))
    if isinstance(exc, BusyError):
        return ApiError(503, str(exc), "unavailable_error")
    if isinstance(exc, SessionClosedError):
        return ApiError(503, "the server is shutting down", "unavailable_error")
    if isinstance(exc, RequestTimeoutError):
        return ApiError(500, str(exc), "server_error")
    logger.error("request failed", exc_info=exc)
    return ApiError(500, f"{type(exc).__name__}: {exc}", "server_error")


def error_response(exc: BaseException) -> JSONResponse:
    return translate(exc).response()
