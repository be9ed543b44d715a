"""What a server answers besides generated text: its errors, as our exceptions with the
server's own message, and what it says it runs (``/props``, ``/v1/models``) as
:class:`~.backends.base.ModelInfo`. Shapes are llama-server's (as :mod:`.wire` writes them
for our server) and OpenAI's; nothing here does I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ...errors import BackendError, BusyError, ContextOverflowError, InvalidInputError, LLMError
from ...wire import EXCEPTION_STATUS
from ..base import ModelInfo

__all__ = ["error_from_response", "info_from_models", "info_from_props", "model_name"]


# -- errors -------------------------------------------------------------------------------------


def _error_fields(body: Any) -> tuple[str, str]:
    """``(message, type)`` from llama-server's, OpenAI's or a plain body."""
    if isinstance(body, (bytes, str)):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        try:
            body = json.loads(text)
        except ValueError:
            return text.strip()[:500], ""
    if isinstance(body, Mapping):
        err = body.get("error")
        if isinstance(err, Mapping):
            return str(err.get("message", "")), str(err.get("type", ""))
        if isinstance(err, str):
            return err, ""
        if "detail" in body:  # FastAPI-based servers (vLLM and others)
            return str(body["detail"]), ""
    return str(body)[:500], ""


def error_from_response(status: int, body: Any, where: str) -> LLMError:
    """Our error for a server's error answer, with the server's own message.

    ``where`` names what was asked (the URL), for messages that say what to check.
    """
    message, kind = _error_fields(body)
    said = f": {message}" if message else ""
    if kind == EXCEPTION_STATUS[ContextOverflowError][1]:
        return ContextOverflowError(
            f"the prompt does not fit in the server's context{said}; shorten the conversation "
            "or start the server with a larger context (-c)"
        )
    if status in (401, 403) or kind in ("authentication_error", "permission_error"):
        return BackendError(
            f"the server refused the API key ({status}{said}) at {where}; check Options.api_key "
            "or $LLM_INPROC_API_KEY"
        )
    if status == 404 or kind == "not_found_error":
        return BackendError(
            f"{where} does not exist on the server (404{said}); check that Options.remote points "
            "at a llama-server or OpenAI-compatible server (and the /v1 part of a URL)"
        )
    busy_status, busy_kind = EXCEPTION_STATUS[BusyError]
    if status == 429 or (status == busy_status and "loading" not in message.lower()):
        return BusyError(f"the server is busy ({status}{said}); retry later")
    if status == 400 or kind == EXCEPTION_STATUS[InvalidInputError][1]:
        return InvalidInputError(f"the server refused the request{said}")
    if status == busy_status or kind == busy_kind:
        return BackendError(f"the server is not ready ({message}); retry once it has loaded")
    return BackendError(f"the server failed at {where} ({status}{said})")


# -- what the server runs -----------------------------------------------------------------------


def _first_model(models: Any) -> Mapping[str, Any]:
    data = models.get("data") if isinstance(models, Mapping) else None
    if isinstance(data, list) and data and isinstance(data[0], Mapping):
        return data[0]
    return {}


def model_name(props: Any, models: Any) -> str:
    """The model the server runs, as it names it (alias, path, or OpenAI model id)."""
    if isinstance(props, Mapping):
        for key in ("model_alias", "model_path"):
            if props.get(key):
                return str(props[key])
    return str(_first_model(models).get("id", ""))


def _int(value: Any) -> int | None:
    """A count the server gave, or None when it gave none (or nonsense)."""
    try:
        return int(value) if value else None
    except (TypeError, ValueError):
        return None


def info_from_props(props: Mapping[str, Any], models: Any, url: str) -> ModelInfo:
    """:class:`ModelInfo` from llama-server's ``/props`` (and ``/v1/models`` for the trained
    context length); what a server does not say reads None."""
    settings = props.get("default_generation_settings")
    settings = settings if isinstance(settings, Mapping) else {}
    meta = _first_model(models).get("meta")
    meta = meta if isinstance(meta, Mapping) else {}
    ftype = props.get("model_ftype") or meta.get("ftype") or ""
    return ModelInfo(
        architecture=None,
        description=f"{model_name(props, models)} {ftype}".strip() + f" at {url}",
        chat_template=str(props.get("chat_template") or "") or None,
        n_ctx=_int(settings.get("n_ctx") or meta.get("n_ctx")),
        n_ctx_train=_int(meta.get("n_ctx_train")),
        n_layers=None,
        gpu_layers_offloaded=None,
        gpu_offload_supported=None,
        threads=None,
        parallel=max(1, _int(props.get("total_slots")) or 1),
    )


def info_from_models(models: Any, url: str) -> ModelInfo:
    """:class:`ModelInfo` of an OpenAI-only server, from ``/v1/models``."""
    first = _first_model(models)
    meta = first.get("meta")
    meta = meta if isinstance(meta, Mapping) else {}
    n_ctx = _int(meta.get("n_ctx") or first.get("max_model_len") or first.get("context_length"))
    return ModelInfo(
        architecture=None,
        description=f"{first.get('id', 'a model')} at {url}",
        chat_template=None,
        n_ctx=n_ctx,
        n_ctx_train=_int(meta.get("n_ctx_train")),
        n_layers=None,
        gpu_layers_offloaded=None,
        gpu_offload_supported=None,
        threads=None,
    )
