"""Errors as llama-server answers them: one exception for the routes to raise, and our own
errors turned into HTTP answers through :data:`~llm_inproc.wire.EXCEPTION_STATUS` (the
table the client reads back). Starlette is imported only when a response is built: the
CLI imports this module."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..errors import LLMError, SessionClosedError
from ..wire import error_body, status_of

if TYPE_CHECKING:
    from starlette.responses import JSONResponse

__all__ = ["ApiError", "invalid", "translate"]

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
    status, kind = status_of(exc)
    if isinstance(exc, SessionClosedError):
        return ApiError(status, "the server is shutting down", kind)
    if not isinstance(exc, LLMError):
        logger.error("request failed", exc_info=exc)
        return ApiError(status, f"{type(exc).__name__}: {exc}", kind)
    return ApiError(status, str(exc), kind)
