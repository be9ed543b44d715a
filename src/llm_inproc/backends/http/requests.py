"""The client's half of the wire format: request bodies out, responses and streams in.

:mod:`.wire` writes responses for our server; this module builds the requests our HTTP
backend sends and reads what comes back, with the same field names, so the client, our
server and llama-server cannot drift apart (the tests round-trip :mod:`.wire`'s own
builders through these readers). Two dialects: ``llama`` (llama-server and ours: the
native ``/completion`` route and every sampler under llama-server's names) and
``openai`` (servers that only speak OpenAI: ``/v1/completions``, OpenAI's names, and a
sampler field only when it differs from its default). Nothing here does I/O.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Any, Literal

from ...errors import BackendError, InvalidInputError
from ...metrics import TokenPerformance
from ...prompting.messages import Message, Role
from ...sampling import Sampling, TokenProb
from ...tools.types import ToolCall, ToolRequest
from ...wire import ToolCallDeltas
from ..base import FinishReason, GenerationRequest, Outcome, RawItem
from .answers import error_from_response

__all__ = ["Call", "Dialect", "StreamDecoder", "generation_call"]

Dialect = Literal["llama", "openai"]
Route = Literal["completion", "oai_completion", "chat"]

# Sampler fields sent under the names llama-server reads (Sampling uses the same names).
_SAMPLERS = (
    "top_k",
    "top_p",
    "min_p",
    "typical_p",
    "repeat_penalty",
    "repeat_last_n",
    "presence_penalty",
    "frequency_penalty",
    "dry_multiplier",
    "dry_base",
    "dry_allowed_length",
    "dry_penalty_last_n",
    "dry_sequence_breakers",
    "xtc_probability",
    "xtc_threshold",
    "top_n_sigma",
)
_OPENAI_SAMPLERS = ("top_p", "presence_penalty", "frequency_penalty")
_DEFAULTS = {f.name: getattr(Sampling(), f.name) for f in fields(Sampling)}
_OPENAI_MAX_STOPS = 4
_ROLE_NAMES = {
    Role.SYSTEM: "system",
    Role.USER: "user",
    Role.ASSISTANT: "assistant",
    Role.AVAILABLE_TOOLS: "system",
    Role.TOOL_CALL: "assistant",
    Role.TOOL_CALL_RESULT: "tool",
}


@dataclass(frozen=True)
class Call:
    """One generation request on the wire."""

    path: str
    """Relative to the server's root, e.g. ``/completion`` or ``/v1/chat/completions``."""
    body: dict[str, Any]
    route: Route


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _bias(value: float) -> float | bool:
    if value == -math.inf:
        return False  # llama-server: false bans the token
    return min(value, 1e9)  # JSON has no infinity


def _changed(s: Sampling, names: tuple[str, ...]) -> dict[str, Any]:
    """The fields that differ from their defaults (Sampling's are llama-server's own)."""
    return {n: _plain(getattr(s, n)) for n in names if getattr(s, n) != _DEFAULTS[n]}


def _llama_sampling(s: Sampling, route: Route) -> dict[str, Any]:
    body = _changed(s, _SAMPLERS)
    body["temperature"] = s.temperature
    body["seed"] = s.seed or -1  # llama-server: -1 is random, any other seed repeatable
    if route == "chat":
        if s.max_tokens:
            body["max_tokens"] = s.max_tokens
        if s.n_probs:
            body.update(logprobs=True, top_logprobs=s.n_probs)
    else:
        body["n_predict"] = s.max_tokens or -1
        if s.n_probs:
            body["n_probs"] = s.n_probs
    if s.ignore_eos:
        body["ignore_eos"] = True
    if s.logit_bias:
        body["logit_bias"] = [[k, _bias(v)] for k, v in s.logit_bias.items()]
    if s.grammar:
        body["grammar"] = s.grammar
    if s.json_schema is not None:
        body["json_schema"] = dict(s.json_schema)
    return body


def _openai_sampling(s: Sampling, route: Route) -> dict[str, Any]:
    body: dict[str, Any] = {"temperature": s.temperature}
    if s.max_tokens:
        body["max_tokens"] = s.max_tokens
    if s.seed:
        body["seed"] = s.seed
    body.update({name: getattr(s, name) for name in _OPENAI_SAMPLERS})
    body.update(_changed(s, _SAMPLERS))  # other names only when asked for
    if s.n_probs:
        if route == "chat":
            body.update(logprobs=True, top_logprobs=s.n_probs)
        else:
            body["logprobs"] = s.n_probs
    if s.ignore_eos:
        body["ignore_eos"] = True
    if s.logit_bias:
        bias: dict[str, float] = {}
        for key, value in s.logit_bias.items():
            if isinstance(key, str):
                raise InvalidInputError(
                    f"logit_bias key {key!r}: this server speaks only OpenAI's API, which takes "
                    "token ids; pass the ids of the text's tokens instead"
                )
            bias[str(key)] = max(-100.0, min(100.0, value))
        body["logit_bias"] = bias
    if s.grammar:
        body["grammar"] = s.grammar
    if s.json_schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "reply", "schema": dict(s.json_schema)},
        }
    return body


def _message(m: Message) -> dict[str, Any]:
    """One message in OpenAI's shape: an assistant turn with its ``tool_calls`` (arguments
    as JSON text, ``content`` null when it wrote none), a ``tool`` result with the id of
    the call it answers."""
    out: dict[str, Any] = {"role": _ROLE_NAMES[m.role], "content": m.content}
    if m.tool_calls:
        out["content"] = m.content or None
        out["tool_calls"] = [c.to_openai() for c in m.tool_calls]
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    return out


def _tools(tools: ToolRequest, dialect: Dialect) -> dict[str, Any]:
    """``tools``, ``tool_choice`` and ``parallel_tool_calls``. A named choice is OpenAI's
    ``{"type": "function", "function": {"name": ...}}``; llama-server reads only strings
    (it takes that object for ``"auto"``), so the llama dialect offers the named tool
    alone with ``"required"``, which means the same."""
    offered = tools.tools
    choice: str | dict[str, Any] = tools.choice
    if tools.name is not None:
        if dialect == "llama":
            offered, choice = tools.offered, "required"
        else:
            choice = {"type": "function", "function": {"name": tools.name}}
    return {
        "tools": [t.to_openai() for t in offered],
        "tool_choice": choice,
        "parallel_tool_calls": tools.parallel,
    }


def generation_call(request: GenerationRequest, dialect: Dialect) -> Call:
    """The streaming request for ``request``: raw text or token ids through ``/completion``
    (``/v1/completions`` for OpenAI-only servers), messages (and tools) through the chat
    route."""
    route: Route
    if request.messages and request.prompt is None and request.tokens is None:
        route = "chat"
        path = "/v1/chat/completions"
        body: dict[str, Any] = {"messages": [_message(m) for m in request.messages]}
        if request.tools is not None:
            body.update(_tools(request.tools, dialect))
        if request.template_kwargs:
            body["chat_template_kwargs"] = dict(request.template_kwargs)
    else:
        route = "completion" if dialect == "llama" else "oai_completion"
        path = "/completion" if dialect == "llama" else "/v1/completions"
        prompt = request.prompt if request.prompt is not None else list(request.tokens or ())
        body = {"prompt": prompt}
    s = request.sampling
    if dialect == "llama":
        body.update(_llama_sampling(s, route))
        body["cache_prompt"] = True
        if route == "chat":  # the reply as written, thinking and all, as in this process
            body["reasoning_format"] = "none"
        stops = list(request.stops)
    else:
        body.update(_openai_sampling(s, route))
        # OpenAI takes four stop strings; the client-side cleaner still cuts at the rest.
        stops = list(request.stops[:_OPENAI_MAX_STOPS])
    if stops:
        body["stop"] = stops
    body["stream"] = True
    if route != "completion":
        body["stream_options"] = {"include_usage": True}
    return Call(path, body, route)


# -- reading a stream ---------------------------------------------------------------------------


def _prob(entry: Mapping[str, Any]) -> float:
    if "prob" in entry:
        return float(entry["prob"])
    lp = float(entry.get("logprob", -math.inf))
    return math.exp(lp) if lp > -1e30 else 0.0


def _token_prob(entry: Mapping[str, Any], with_top: bool = True) -> TokenProb:
    top = (entry.get("top_logprobs") or entry.get("top_probs") or ()) if with_top else ()
    return TokenProb(
        id=int(entry.get("id", -1)),
        text=str(entry.get("token", "")),
        prob=_prob(entry),
        top=tuple(_token_prob(t, False) for t in top if isinstance(t, Mapping)),
    )


def _legacy_probs(lp: Mapping[str, Any]) -> list[TokenProb]:
    """OpenAI's legacy ``logprobs`` (``tokens``, ``token_logprobs``, ``top_logprobs``)."""
    out = []
    tops = lp.get("top_logprobs") or []
    pairs = zip(lp.get("tokens") or [], lp.get("token_logprobs") or [], strict=False)
    for i, (text, value) in enumerate(pairs):
        alts = tops[i] if i < len(tops) and isinstance(tops[i], Mapping) else {}
        out.append(
            TokenProb(
                -1,
                str(text),
                math.exp(value) if value is not None else 0.0,
                tuple(TokenProb(-1, str(t), math.exp(v)) for t, v in alts.items()),
            )
        )
    return out


def _probs(obj: Any) -> list[TokenProb]:
    """Token probabilities from a ``completion_probabilities`` list, OpenAI's ``logprobs``
    object (``content`` list), or the legacy completion shape."""
    if isinstance(obj, list):
        return [_token_prob(e) for e in obj if isinstance(e, Mapping)]
    if isinstance(obj, Mapping):
        if isinstance(obj.get("content"), list):
            return _probs(obj["content"])
        return _legacy_probs(obj)
    return []


def _seconds(ms: Any) -> timedelta:
    return timedelta(milliseconds=float(ms or 0.0))


class StreamDecoder:
    """Turns one streamed response's events into text pieces and a final :class:`Outcome`.

    Costs come from the server's ``timings`` (llama-server and ours), else from OpenAI's
    ``usage`` with durations measured here; time to first token is measured here (from
    ``started``, a ``time.monotonic()`` taken when the request was submitted).
    """

    def __init__(self, route: Route, *, started: float, want_probs: bool = False) -> None:
        self.route = route
        self.started = started
        self.done = False
        self._want_probs = want_probs
        self._probs: list[TokenProb] = []
        self._calls = ToolCallDeltas()
        self._first: float | None = None
        self._last: float | None = None
        self._pieces = 0
        self._evaluated = 0
        self._reason: str | None = None
        self._timings: Mapping[str, Any] | None = None
        self._usage: Mapping[str, Any] | None = None

    def _tick(self) -> None:
        now = time.monotonic()
        if self._first is None:
            self._first = now
        self._last = now

    def _piece(self, text: Any, out: list[RawItem]) -> None:
        if isinstance(text, str) and text:
            self._tick()
            self._pieces += 1
            out.append(text)

    def _chat(self, choice: Mapping[str, Any], out: list[RawItem]) -> None:
        """A chat choice: a stream's ``delta`` (text, ``tool_calls`` fragments by index),
        or a whole answer's ``message`` from a server that would not stream."""
        delta = choice.get("delta")
        if isinstance(delta, Mapping):
            self._piece(delta.get("content"), out)
            if delta.get("tool_calls"):
                self._tick()
                self._calls.feed(delta["tool_calls"])
        message = choice.get("message")
        if isinstance(message, Mapping):
            self._piece(message.get("content"), out)
            if message.get("tool_calls"):
                self._tick()
                self._calls.whole(message["tool_calls"])

    def feed(self, event: dict[str, Any] | Literal["[DONE]"]) -> list[RawItem]:
        """Items for one event (a JSON payload, or ``"[DONE]"``)."""
        out: list[RawItem] = []
        if self.done:
            return out
        if event == "[DONE]":
            return self._finish()
        if isinstance(event.get("error"), Mapping):
            raise error_from_response(500, event, "the stream")
        if isinstance(event.get("timings"), Mapping):
            self._timings = event["timings"]
        if isinstance(event.get("usage"), Mapping):
            self._usage = event["usage"]
        if self.route == "completion":
            self._evaluated = int(event.get("tokens_evaluated") or self._evaluated)
            self._piece(event.get("content"), out)
            if self._want_probs:
                self._probs += _probs(event.get("completion_probabilities"))
            if event.get("stop") is True:
                self._reason = "length" if event.get("stop_type") == "limit" else "stop"
                out += self._finish()
            return out
        for choice in event.get("choices") or ():
            if not isinstance(choice, Mapping) or choice.get("index", 0) != 0:
                continue
            if self.route == "chat":
                self._chat(choice, out)
            else:
                self._piece(choice.get("text"), out)
            if self._want_probs:
                self._probs += _probs(choice.get("logprobs"))
            reason = choice.get("finish_reason")
            if reason:
                self._reason = reason if reason in ("length", "tool_calls") else "stop"
        return out

    def end_of_stream(self) -> list[RawItem]:
        """The last items when the response ended without ``[DONE]``; an error unless the
        server at least said why it finished."""
        if self._reason is None:
            raise BackendError(
                "the server ended the reply without its final event (it may have stopped "
                "or crashed); check the server's log"
            )
        return self._finish()

    def _finish(self) -> list[RawItem]:
        """The calls the server sent, then the outcome. A call whose arguments are not a
        JSON object (cut by the token budget, or a server's bad parse) is not a call: its
        text goes to the reply's content instead, as unparsed model output does."""
        out: list[RawItem] = []
        calls: list[ToolCall] = []
        for entry in self._calls.entries():
            try:
                calls.append(ToolCall.from_openai(entry, where="the server's tool call"))
            except InvalidInputError:
                fn = entry["function"]
                text = json.dumps(
                    {"name": fn["name"], "arguments": fn["arguments"]}, ensure_ascii=False
                )
                self._piece(text, out)
        out.append(self.outcome(tuple(calls)))
        return out

    def cancelled(self) -> Outcome:
        """The outcome of a request the caller stopped: counted here, as far as it got."""
        self._reason = "cancelled"
        self._timings = None
        return self.outcome()

    def outcome(self, calls: tuple[ToolCall, ...] = ()) -> Outcome:
        self.done = True
        reason: FinishReason = "length" if self._reason == "length" else "stop"
        if self._reason == "cancelled":
            reason = "cancelled"
        elif calls and self._reason in ("stop", "tool_calls"):
            reason = "tool_calls"
        first = self._first
        ttft = timedelta(seconds=first - self.started) if first is not None else timedelta()
        gen_time = timedelta(seconds=(self._last or 0.0) - first) if first is not None else ttft
        probs = tuple(self._probs) if self._want_probs else None
        t = self._timings
        if t is not None:
            return Outcome(
                finish_reason=reason,
                prompt=TokenPerformance(int(t.get("prompt_n") or 0), _seconds(t.get("prompt_ms"))),
                cached_tokens=int(t.get("cache_n") or 0),
                generated=TokenPerformance(
                    int(t.get("predicted_n") or 0), _seconds(t.get("predicted_ms"))
                ),
                time_to_first_token=ttft,
                logprobs=probs,
                drafted=int(t.get("draft_n") or 0),
                draft_accepted=int(t.get("draft_n_accepted") or 0),
                tool_calls=calls,
            )
        u = self._usage or {}
        details = u.get("prompt_tokens_details")
        cached = int(details.get("cached_tokens") or 0) if isinstance(details, Mapping) else 0
        n_prompt = int(u.get("prompt_tokens") or self._evaluated) - cached
        n_gen = int(u.get("completion_tokens") or self._pieces)
        return Outcome(
            finish_reason=reason,
            prompt=TokenPerformance(max(0, n_prompt), ttft),
            cached_tokens=cached,
            generated=TokenPerformance(n_gen, gen_time),
            time_to_first_token=ttft,
            logprobs=probs,
            tool_calls=calls,
        )
