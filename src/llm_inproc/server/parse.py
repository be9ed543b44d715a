"""Request bodies in, validated values out: the fields of llama-server's and OpenAI's
requests that we honour, checked with messages that name the field.

Unknown fields are ignored, as llama-server ignores them; a known field with the wrong
type is a 400 naming it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..messages import Message, Role
from ..sampling import Sampling
from .errors import invalid

__all__ = [
    "Defaults",
    "Generation",
    "parse_generation",
    "parse_json",
    "parse_messages",
    "parse_prompt",
]

_RANDOM_SEEDS = (-1, 0xFFFFFFFF)
_SAMPLING_FIELDS = frozenset(f.name for f in dataclasses.fields(Sampling))
# Sampler parameters passed through under their llama-server names, when Sampling has them.
_PASSTHROUGH = (
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
    "grammar",
    "json_schema",
    "n_probs",
)


@dataclass(frozen=True)
class Defaults:
    """The server's sampling defaults (``-n``, ``--temp``, ``--seed``), llama-server's own."""

    n_predict: int = -1
    temperature: float = 0.8
    seed: int = -1


@dataclass(frozen=True)
class Generation:
    """What a completion or chat request asks for, besides its prompt."""

    sampling: Sampling
    stops: tuple[str, ...]
    """The caller's ``stop`` strings."""
    stream: bool
    include_usage: bool
    n_predict: int
    """As asked (-1: no limit), for ``generation_settings``."""


def parse_json(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object; malformed JSON is a 400 (llama-server says 500)."""
    try:
        body = json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError) as e:
        raise invalid(f"the request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise invalid(f"the request body must be a JSON object, not {type(body).__name__}")
    return body


def _number(body: Mapping[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(f"Field '{name}': must be a number, not {json.dumps(value)}")
    return float(value)


def _integer(body: Mapping[str, Any], name: str) -> int | None:
    value = _number(body, name)
    if value is None:
        return None
    if value != int(value):
        raise invalid(f"Field '{name}': must be an integer, not {body[name]}")
    return int(value)


def _flag(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise invalid(f"Field '{name}': must be true or false, not {json.dumps(value)}")
    return value


def _stops(body: Mapping[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,) if stop else ()
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return tuple(s for s in stop if s)
    raise invalid("Field 'stop': must be a string or an array of strings")


def _sampler_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _PASSTHROUGH:
        value = body.get(name)
        if value is None or name not in _SAMPLING_FIELDS:
            continue
        if name == "dry_sequence_breakers":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise invalid(f"Field '{name}': must be an array of strings")
            value = tuple(value)
        elif name == "json_schema":
            if not isinstance(value, dict):
                raise invalid(f"Field '{name}': must be an object")
        elif name == "grammar":
            if not isinstance(value, str):
                raise invalid(f"Field '{name}': must be a string")
        else:
            _number(body, name)
        out[name] = value
    return out


def parse_generation(body: Mapping[str, Any], defaults: Defaults) -> Generation:
    """Sampling, stops and streaming options of a completion or chat request."""
    n_predict = None
    for name in ("n_predict", "max_tokens", "max_completion_tokens"):
        n_predict = _integer(body, name)
        if n_predict is not None:
            break
    if n_predict is None:
        n_predict = defaults.n_predict
    if n_predict < -1:
        raise invalid(f"Field 'n_predict': must be -1 (no limit) or more, not {n_predict}")
    temperature = _number(body, "temperature")
    if temperature is None:
        temperature = defaults.temperature
    seed = _integer(body, "seed")
    if seed is None or seed in _RANDOM_SEEDS:
        seed = defaults.seed
    if seed in _RANDOM_SEEDS:
        seed = 0
    if not 0 <= seed < 2**32:
        raise invalid(f"Field 'seed': must be -1 (random) or in [0, 2**32), not {seed}")
    extra = _sampler_fields(body)
    if _flag(body, "ignore_eos"):
        if "ignore_eos" not in _SAMPLING_FIELDS:
            raise invalid("Field 'ignore_eos': true is not supported by this server yet")
        extra["ignore_eos"] = True
    stops = _stops(body)
    if "stop" in _SAMPLING_FIELDS:
        extra["stop"] = stops
    _flag(body, "cache_prompt")  # prefixes are always reused; checked for its type only
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise invalid("Field 'stream_options': must be an object")
    try:
        sampling = Sampling(
            # -1 is no limit (our 0); llama-server generates one token for 0, and so do we.
            max_tokens=1 if n_predict == 0 else max(n_predict, 0),
            seed=seed,
            temperature=max(temperature, 0.0),  # llama-server: negative is greedy
            **extra,
        )
    except (TypeError, ValueError) as e:
        raise invalid(str(e)) from None
    return Generation(
        sampling=sampling,
        stops=stops,
        stream=_flag(body, "stream"),
        include_usage=_flag(options or {}, "include_usage"),
        n_predict=n_predict,
    )


def parse_prompt(body: Mapping[str, Any]) -> str | list[int | str]:
    """``prompt``: a string, token ids, or token ids mixed with strings; one prompt only."""
    if "prompt" not in body:
        raise invalid("Field 'prompt': is required")
    prompt = body["prompt"]
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(
        isinstance(p, str) or (isinstance(p, int) and not isinstance(p, bool)) for p in prompt
    ):
        if sum(isinstance(p, str) for p in prompt) > 1 and all(isinstance(p, str) for p in prompt):
            raise invalid(
                "Field 'prompt': several prompts in one request are not supported; "
                "send one request per prompt"
            )
        if not prompt:
            raise invalid("Field 'prompt': is empty")
        return list(prompt)
    if isinstance(prompt, list):
        raise invalid(
            "Field 'prompt': several prompts in one request are not supported; "
            "send one request per prompt"
        )
    raise invalid("Field 'prompt': must be a string or an array of token ids")


_ROLES = {"system": Role.SYSTEM, "developer": Role.SYSTEM, "user": Role.USER}


def _content(i: int, message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if content is None:
        if message.get("role") == "assistant":
            return ""
        raise invalid("All non-assistant messages must contain 'content'")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise invalid(
                    f"messages[{i}].content: only text parts are supported "
                    '({"type": "text", "text": ...})'
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise invalid(f"messages[{i}].content: a text part needs a string 'text'")
            texts.append(text)
        return "\n".join(texts)
    raise invalid(f"messages[{i}].content: must be a string or an array of text parts")


def parse_messages(body: Mapping[str, Any]) -> list[Message]:
    """``messages`` of a chat request as our :class:`Message` list."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise invalid("Expected 'messages' to be an array")
    if not messages:
        raise invalid("Field 'messages': is empty; send at least one message")
    out: list[Message] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise invalid(f"messages[{i}]: must be an object with 'role' and 'content'")
        role = m.get("role")
        if role == "assistant":
            out.append(Message(Role.ASSISTANT, _content(i, m)))
        elif isinstance(role, str) and role in _ROLES:
            out.append(Message(_ROLES[role], _content(i, m)))
        else:
            raise invalid(
                f"messages[{i}].role: {json.dumps(role)} is not supported; "
                "use system, user or assistant"
            )
    return out
