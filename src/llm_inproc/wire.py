"""The llama-server / OpenAI wire format, as pure functions shared by our server and client.

Response bodies (llama.cpp's native ``/completion``, OpenAI's ``/v1/completions`` and
``/v1/chat/completions``, whole and as stream chunks), the error shape, the ``usage``
and ``timings`` objects, and Server-Sent Events framing all live here, so the server
that writes them and the client that reads them cannot drift apart. Nothing here does
I/O; field names and shapes follow llama-server (llama.cpp ``tools/server``).
"""

from __future__ import annotations

import json
import math
import secrets
import string
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from .errors import (
    BusyError,
    ContextOverflowError,
    InvalidInputError,
    LLMError,
    ModelNotFoundError,
    RequestTimeoutError,
    SessionClosedError,
)
from .metrics import TokenPerformance
from .sampling import TokenProb

if TYPE_CHECKING:
    from .tools.types import ToolCall

__all__ = [
    "ERROR_TYPES",
    "EXCEPTION_STATUS",
    "SSE_DONE",
    "Cost",
    "SSEDecoder",
    "ToolCallDeltas",
    "chat_chunk",
    "chat_response",
    "completion_chunk",
    "completion_response",
    "error_body",
    "legacy_logprobs",
    "new_id",
    "oai_completion_chunk",
    "oai_completion_response",
    "oai_finish_reason",
    "sse_event",
    "sse_named_event",
    "status_of",
    "stop_type",
    "timings",
    "token_probs",
    "tool_call_deltas",
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

EXCEPTION_STATUS: dict[type[LLMError], tuple[int, str]] = {
    ContextOverflowError: (400, "exceed_context_size_error"),
    InvalidInputError: (400, "invalid_request_error"),
    ModelNotFoundError: (400, "invalid_request_error"),
    BusyError: (503, "unavailable_error"),
    SessionClosedError: (503, "unavailable_error"),
    RequestTimeoutError: (500, "server_error"),
}
"""Our errors as HTTP: the status and ``error.type`` the server answers each with, and
what the client turns them back into (the most derived class wins)."""


def status_of(exc: BaseException) -> tuple[int, str]:
    """The HTTP status and ``error.type`` for an exception (500 ``server_error`` when it
    is none of ours)."""
    for cls in type(exc).__mro__:
        if cls in EXCEPTION_STATUS:
            return EXCEPTION_STATUS[cls]
    return 500, "server_error"


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


def sse_named_event(name: str, data: Any) -> bytes:
    """One ``event: NAME`` event holding ``data`` as compact JSON (Anthropic's and the
    Responses API's framing; :class:`SSEDecoder` reads its data and skips the name)."""
    return b"event: " + name.encode() + b"\n" + sse_event(data)


class SSEDecoder:
    """Server-Sent Events fed line by line (for a client reading a stream as it comes).

    :meth:`feed` returns the JSON payload an event completes, ``"[DONE]"``, or None.
    Comments (``: ping``), other fields (``event:``, ``id:``) and blank lines are skipped;
    multi-line ``data`` is joined as the SSE standard says.
    """

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, raw: str) -> dict[str, Any] | Literal["[DONE]"] | None:
        line = raw.rstrip("\r\n")
        if line:
            if line.startswith("data:"):
                self._data.append(line[5:].removeprefix(" "))
            return None
        return self.flush()

    def flush(self) -> dict[str, Any] | Literal["[DONE]"] | None:
        """The payload of an event the stream ended without its blank line, if any."""
        if not self._data:
            return None
        payload = "\n".join(self._data)
        self._data = []
        if payload == "[DONE]":
            return "[DONE]"
        data: dict[str, Any] = json.loads(payload)
        return data


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
    drafted: int = 0
    draft_accepted: int = 0


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
        **(
            {"draft_n": cost.drafted, "draft_n_accepted": cost.draft_accepted}
            if cost.drafted
            else {}
        ),
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
    """OpenAI's ``finish_reason``: ``length``, ``tool_calls``, else ``stop``."""
    return reason if reason in ("length", "tool_calls") else "stop"


def stop_type(reason: str, stopping_word: str = "") -> str:
    """``/completion``'s ``stop_type``: ``limit`` for the token budget, ``word`` when a
    stop string ended the reply, else ``eos``."""
    if reason == "length":
        return "limit"
    return "word" if stopping_word else "eos"


# -- token probabilities ------------------------------------------------------------------------

LOWEST_LOGPROB = -3.4028234663852886e38
"""A probability of 0 as llama-server writes its log (the lowest float; JSON has no -inf)."""


def _logprob(p: float) -> float:
    return math.log(p) if p > 0 else LOWEST_LOGPROB


def _token(t: TokenProb) -> dict[str, Any]:
    return {
        "id": t.id,
        "token": t.text,
        "bytes": list(t.text.encode()),
        "logprob": _logprob(t.prob),
    }


def token_probs(probs: Sequence[TokenProb], n_top: int) -> list[dict[str, Any]]:
    """Per generated token, llama-server's ``completion_probabilities`` entries (also the
    ``logprobs.content`` of the OpenAI routes): ``id``, ``token``, ``bytes``, ``logprob``
    and its ``n_top`` most likely alternatives in ``top_logprobs``."""
    return [{**_token(t), "top_logprobs": [_token(a) for a in t.top[:n_top]]} for t in probs]


def legacy_logprobs(probs: Sequence[TokenProb], n_top: int) -> dict[str, Any]:
    """``/v1/completions``' ``logprobs``: llama-server's ``content`` list, and the fields of
    OpenAI's legacy shape (``tokens``, ``token_logprobs``, ``top_logprobs``, ``text_offset``)."""
    offsets: list[int] = []
    at = 0
    for t in probs:
        offsets.append(at)
        at += len(t.text)
    return {
        "content": token_probs(probs, n_top),
        "tokens": [t.text for t in probs],
        "token_logprobs": [_logprob(t.prob) for t in probs],
        "top_logprobs": [{a.text: _logprob(a.prob) for a in t.top[:n_top]} for t in probs],
        "text_offset": offsets,
    }


# -- llama.cpp's native /completion -------------------------------------------------------------


def completion_response(
    content: str,
    cost: Cost,
    *,
    model: str,
    prompt: str,
    settings: dict[str, Any],
    n_ctx: int,
    stopping_word: str = "",
    probs: list[dict[str, Any]] | None = None,
    index: int = 0,
) -> dict[str, Any]:
    """The body of a non-streaming ``/completion`` (also the last event of a stream);
    ``probs`` (:func:`token_probs`) become ``completion_probabilities``."""
    n_gen = cost.generated.count
    body: dict[str, Any] = {
        "index": index,
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
        "stop_type": stop_type(cost.finish_reason, stopping_word),
        "stopping_word": stopping_word,
        "tokens_cached": cost.prompt.count + cost.cached_tokens + n_gen,
        "timings": timings(cost),
        "n_ctx": n_ctx,
    }
    if probs is not None:
        body["completion_probabilities"] = probs
    return body


def completion_chunk(
    content: str,
    n_predicted: int,
    n_evaluated: int,
    *,
    index: int = 0,
    probs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One streamed ``/completion`` event before the last."""
    body: dict[str, Any] = {
        "index": index,
        "content": content,
        "tokens": [],
        "stop": False,
        "id_slot": -1,
        "tokens_predicted": n_predicted,
        "tokens_evaluated": n_evaluated,
    }
    if probs is not None:
        body["completion_probabilities"] = probs
    return body


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
    text: str,
    cost: Cost,
    *,
    model: str,
    response_id: str,
    created: int | None = None,
    logprobs: dict[str, Any] | None = None,
    index: int = 0,
) -> dict[str, Any]:
    """``logprobs``: :func:`legacy_logprobs`, or None."""
    choice = {
        "text": text,
        "index": index,
        "logprobs": logprobs,
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
    logprobs: dict[str, Any] | None = None,
    index: int = 0,
) -> dict[str, Any]:
    """A streamed ``text_completion``; the last one (``cost`` given) carries usage."""
    choice = {
        "text": text,
        "index": index,
        "logprobs": logprobs,
        "finish_reason": None if cost is None else oai_finish_reason(cost.finish_reason),
    }
    body = {"choices": [choice], **_envelope("text_completion", model, response_id, created)}
    if cost is not None:
        body["usage"] = usage(cost)
        body["timings"] = timings(cost)
    return body


# -- OpenAI /v1/chat/completions ----------------------------------------------------------------


def chat_response(
    content: str,
    cost: Cost,
    *,
    model: str,
    response_id: str,
    created: int | None = None,
    logprobs: list[dict[str, Any]] | None = None,
    index: int = 0,
    tool_calls: Sequence[ToolCall] = (),
    reasoning: str | None = None,
) -> dict[str, Any]:
    """``logprobs``: :func:`token_probs`, sent as ``choices[].logprobs.content``.

    With ``tool_calls``, the message carries them (OpenAI's shape, arguments as JSON
    text) and its ``content`` is null unless the model wrote text beside them.
    ``reasoning``: the thinking split from the reply (``reasoning_content``)."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning:
        message["reasoning_content"] = reasoning
    if tool_calls:
        message["content"] = content if content.strip() else None
        message["tool_calls"] = [c.to_openai() for c in tool_calls]
    choice: dict[str, Any] = {
        "finish_reason": oai_finish_reason(cost.finish_reason),
        "index": index,
        "message": message,
    }
    if logprobs is not None:
        choice["logprobs"] = {"content": logprobs}
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
    logprobs: list[dict[str, Any]] | None = None,
    index: int = 0,
    tool_call: dict[str, Any] | None = None,
    reasoning: str | None = None,
) -> dict[str, Any]:
    """A ``chat.completion.chunk``: the role first, then content deltas (or ``tool_call``
    deltas, :func:`tool_call_deltas`, or ``reasoning_content`` deltas), then the finish
    reason; with ``cost`` alone, the usage chunk (``choices`` empty) of ``include_usage``."""
    body: dict[str, Any] = {"choices": []}
    if cost is None:
        delta: dict[str, Any] = {}
        if role:
            delta = {"role": "assistant", "content": None}
        elif tool_call is not None:
            delta = {"tool_calls": [tool_call]}
        elif reasoning is not None:
            delta = {"reasoning_content": reasoning}
        elif content is not None:
            delta = {"content": content}
        reason = None if finish_reason is None else oai_finish_reason(finish_reason)
        choice: dict[str, Any] = {"finish_reason": reason, "index": index, "delta": delta}
        if logprobs is not None:
            choice["logprobs"] = {"content": logprobs}
        body["choices"] = [choice]
    body.update(_envelope("chat.completion.chunk", model, response_id, created))
    if cost is not None:
        body["usage"] = usage(cost)
        body["timings"] = timings(cost)
    return body


# -- tool calls in a stream ----------------------------------------------------------------------


def tool_call_deltas(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    """The ``delta.tool_calls[]`` entries that stream ``calls``, as llama-server sends them:
    for each call (keyed by ``index``) first its id, type and name with empty arguments,
    then the arguments' JSON text."""
    out: list[dict[str, Any]] = []
    for i, call in enumerate(calls):
        head = {"index": i, "id": call.id, "type": "function"}
        out.append({**head, "function": {"name": call.name, "arguments": ""}})
        if call.raw:
            out.append({"index": i, "function": {"arguments": call.raw}})
    return out


class ToolCallDeltas:
    """Tool calls put back together from a stream's ``delta.tool_calls`` (or taken whole
    from a ``message.tool_calls``): ids, names and argument fragments gathered by ``index``,
    as an OpenAI client does."""

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, str]] = {}

    def feed(self, entries: Any) -> None:
        """One delta's ``tool_calls`` list (entries without ``index`` count in order)."""
        if not isinstance(entries, list):
            return
        for n, entry in enumerate(entries):
            if not isinstance(entry, Mapping):
                continue
            index = entry.get("index", n)
            call = self._calls.setdefault(index if isinstance(index, int) else n, {})
            if isinstance(entry.get("id"), str) and entry["id"]:
                call["id"] = entry["id"]
            fn = entry.get("function")
            if isinstance(fn, Mapping):
                if isinstance(fn.get("name"), str) and fn["name"]:
                    call.setdefault("name", fn["name"])  # sent whole, once (or repeated)
                args = fn.get("arguments")
                if isinstance(args, Mapping):  # some servers send the object itself
                    args = _dumps(args)
                if isinstance(args, str):
                    call["arguments"] = call.get("arguments", "") + args

    def whole(self, entries: Any) -> None:
        """A whole answer's ``message.tool_calls`` (replacing anything gathered)."""
        self._calls = {}
        if isinstance(entries, list):
            self.feed([{**e, "index": i} for i, e in enumerate(entries) if isinstance(e, Mapping)])

    def __bool__(self) -> bool:
        return bool(self._calls)

    def entries(self) -> list[dict[str, Any]]:
        """The calls in OpenAI's ``tool_calls`` shape, in index order (for
        :meth:`ToolCall.from_openai <llm_inproc.tools.types.ToolCall.from_openai>`)."""
        return [
            {
                "id": c.get("id", ""),
                "type": "function",
                "function": {"name": c.get("name", ""), "arguments": c.get("arguments", "")},
            }
            for _, c in sorted(self._calls.items())
        ]
