"""The llama-server / OpenAI wire format, as pure functions shared by our server and client.

Response bodies (llama.cpp's native ``/completion``, OpenAI's ``/v1/completions`` and
``/v1/chat/completions``, whole and as stream chunks), the error shape, the ``usage``
and ``timings`` objects, and Server-Sent Events framing all live here, so the server
that writes them and the client that reads them cannot drift apart. Nothing here does
I/O; field names and shapes follow llama-server (llama.cpp ``tools/server``).
"""

from __future__ import annotations

import json
import secrets
import string
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from .metrics import TokenPerformance

__all__ = [
    "ERROR_TYPES",
    "SSE_DONE",
    "Cost",
    "chat_chunk",
    "chat_response",
    "completion_chunk",
    "completion_response",
    "error_body",
    "new_id",
    "oai_completion_chunk",
    "oai_completion_response",
    "oai_finish_reason",
    "parse_sse",
    "sse_event",
    "stop_type",
    "timings",
    "usage",
]

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    500: "server_error",
    501: "not_supported_error",
    503: "unavailable_error",
}
"""llama-server's ``error.type`` for each status code it answers with."""

SSE_DONE = b"data: [DONE]\n\n"
"""The last event of an OpenAI-style stream."""

_ID_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str = "chatcmpl-") -> str:
    """A response id in llama-server's form: the prefix and 32 random letters and digits."""
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(32))


def error_body(code: int, message: str, type_: str | None = None, **extra: Any) -> dict[str, Any]:
    """``{"error": {"code", "message", "type", ...}}``, llama-server's (and OpenAI's) shape."""
    error: dict[str, Any] = {
        "code": code,
        "message": message,
        "type": type_ or ERROR_TYPES.get(code, "server_error"),
    }
    error.update(extra)
    return {"error": error}


# -- Server-Sent Events -----------------------------------------------------------------------


def sse_event(data: Any) -> bytes:
    """One ``data:`` event holding ``data`` as compact JSON."""
    return b"data: " + _dumps(data).encode() + b"\n\n"


def parse_sse(lines: Iterator[str]) -> Iterator[dict[str, Any] | Literal["[DONE]"]]:
    """The JSON payloads of a ``text/event-stream`` given line by line; ``"[DONE]"`` ends it.

    Comments (``: ping``), other fields (``event:``, ``id:``) and blank lines are skipped;
    multi-line ``data`` is joined as the SSE standard says.
    """
    data: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                payload = "\n".join(data)
                data = []
                if payload == "[DONE]":
                    yield "[DONE]"
                    return
                yield json.loads(payload)
            continue
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        payload = "\n".join(data)
        if payload == "[DONE]":
            yield "[DONE]"
        else:
            yield json.loads(payload)


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


# -- what a request cost -----------------------------------------------------------------------


@dataclass(frozen=True)
class Cost:
    """What one request cost, as every response reports it."""

    finish_reason: str
    """``stop`` or ``length`` (``cancelled`` is reported as ``stop``)."""
    prompt: TokenPerformance
    """Prompt tokens evaluated (not taken from the cache) and their time."""
    cached_tokens: int
    generated: TokenPerformance


def _ms(d: timedelta) -> float:
    return d.total_seconds() * 1000.0


def timings(cost: Cost) -> dict[str, Any]:
    """llama-server's ``timings`` object."""
    p, g = cost.prompt, cost.generated
    p_ms, g_ms = _ms(p.duration), _ms(g.duration)
    return {
        "cache_n": cost.cached_tokens,
        "prompt_n": p.count,
        "prompt_ms": p_ms,
        "prompt_per_token_ms": p_ms / p.count if p.count else 0.0,
        "prompt_per_second": p.rate(),
        "predicted_n": g.count,
        "predicted_ms": g_ms,
        "predicted_per_token_ms": g_ms / g.count if g.count else 0.0,
        "predicted_per_second": g.rate(),
    }


def usage(cost: Cost) -> dict[str, Any]:
    """OpenAI's ``usage``: prompt tokens count the cached ones too, as llama-server's do."""
    n_prompt = cost.prompt.count + cost.cached_tokens
    return {
        "completion_tokens": cost.generated.count,
        "prompt_tokens": n_prompt,
        "total_tokens": n_prompt + cost.generated.count,
        "prompt_tokens_details": {"cached_tokens": cost.cached_tokens},
    }


def oai_finish_reason(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def stop_type(reason: str) -> str:
    """``/completion``'s ``stop_type``: ``limit`` for the token budget, else ``eos``."""
    return "limit" if reason == "length" else "eos"


# -- llama.cpp's native /completion -------------------------------------------------------------


def completion_response(
    content: str,
    cost: Cost,
    *,
    model: str,
    prompt: str,
    settings: dict[str, Any],
    n_ctx: int,
) -> dict[str, Any]:
    """The body of a non-streaming ``/completion`` (also the last event of a stream)."""
    n_gen = cost.generated.count
    return {
        "index": 0,
        "content": content,
        "tokens": [],
        "id_slot": -1,
        "stop": True,
        "model": model,
        "tokens_predicted": n_gen,
        "tokens_evaluated": cost.prompt.count + cost.cached_tokens,
        "generation_settings": settings,
        "prompt": prompt,
        "has_new_line": "\n" in content,
        "truncated": cost.finish_reason == "length" and n_gen == 0,
        "stop_type": stop_type(cost.finish_reason),
        "stopping_word": "",
        "tokens_cached": cost.prompt.count + cost.cached_tokens + n_gen,
        "timings": timings(cost),
        "n_ctx": n_ctx,
    }


def completion_chunk(content: str, n_predicted: int, n_evaluated: int) -> dict[str, Any]:
    """One streamed ``/completion`` event before the last."""
    return {
        "index": 0,
        "content": content,
        "tokens": [],
        "stop": False,
        "id_slot": -1,
        "tokens_predicted": n_predicted,
        "tokens_evaluated": n_evaluated,
    }


# -- OpenAI /v1/completions ---------------------------------------------------------------------


def _envelope(obj: str, model: str, response_id: str, created: int | None) -> dict[str, Any]:
    return {
        "created": int(time.time()) if created is None else created,
        "model": model,
        "system_fingerprint": "llm-inproc",
        "object": obj,
        "id": response_id,
    }


def oai_completion_response(
    text: str, cost: Cost, *, model: str, response_id: str, created: int | None = None
) -> dict[str, Any]:
    choice = {
        "text": text,
        "index": 0,
        "logprobs": None,
        "finish_reason": oai_finish_reason(cost.finish_reason),
    }
    return {
        "choices": [choice],
        **_envelope("text_completion", model, response_id, created),
        "usage": usage(cost),
        "timings": timings(cost),
    }


def oai_completion_chunk(
    text: str,
    *,
    model: str,
    response_id: str,
    created: int,
    cost: Cost | None = None,
) -> dict[str, Any]:
    """A streamed ``text_completion``; the last one (``cost`` given) carries usage."""
    choice = {
        "text": text,
        "index": 0,
        "logprobs": None,
        "finish_reason": None if cost is None else oai_finish_reason(cost.finish_reason),
    }
    body = {"choices": [choice], **_envelope("text_completion", model, response_id, created)}
    if cost is not None:
        body["usage"] = usage(cost)
        body["timings"] = timings(cost)
    return body


# -- OpenAI /v1/chat/completions ----------------------------------------------------------------


def chat_response(
    content: str, cost: Cost, *, model: str, response_id: str, created: int | None = None
) -> dict[str, Any]:
    choice = {
        "finish_reason": oai_finish_reason(cost.finish_reason),
        "index": 0,
        "message": {"role": "assistant", "content": content},
    }
    return {
        "choices": [choice],
        **_envelope("chat.completion", model, response_id, created),
        "usage": usage(cost),
        "timings": timings(cost),
    }


def chat_chunk(
    *,
    model: str,
    response_id: str,
    created: int,
    content: str | None = None,
    role: bool = False,
    finish_reason: str | None = None,
    cost: Cost | None = None,
) -> dict[str, Any]:
    """A ``chat.completion.chunk``: the role first, then content deltas, then the finish
    reason; with ``cost`` alone, the usage chunk (``choices`` empty) of ``include_usage``."""
    body: dict[str, Any] = {"choices": []}
    if cost is None:
        delta: dict[str, Any] = {}
        if role:
            delta = {"role": "assistant", "content": None}
        elif content is not None:
            delta = {"content": content}
        reason = None if finish_reason is None else oai_finish_reason(finish_reason)
        body["choices"] = [{"finish_reason": reason, "index": 0, "delta": delta}]
    body.update(_envelope("chat.completion.chunk", model, response_id, created))
    if cost is not None:
        body["usage"] = usage(cost)
        body["timings"] = timings(cost)
    return body
