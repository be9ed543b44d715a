"""Request bodies in, validated values out: the fields of llama-server's and OpenAI's
requests that we honour, checked with messages that name the field.

Unknown fields are ignored, as llama-server ignores them; a known field with the wrong
type is a 400 naming it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..sampling import Sampling
from .errors import invalid

__all__ = [
    "Defaults",
    "Generation",
    "Route",
    "choice_seed",
    "parse_generation",
    "parse_json",
    "parse_prompts",
]

Route = Literal["completion", "oai_completion", "chat"]
"""Which API a body follows: llama.cpp's ``/completion``, OpenAI's legacy or chat route."""

_RANDOM_SEEDS = (-1, 0xFFFFFFFF)
# Our seeds are 1 .. 2**32-2: 0 is our "random", and llama.cpp treats 0xFFFFFFFF as random.
# A client's seed 0 (fixed in llama-server) maps to the one value left over.
_SEED_FOR_ZERO = 0xFFFFFFFE
_SEED_SPAN = 0xFFFFFFFE
_INT_FIELDS = frozenset(
    {"top_k", "repeat_last_n", "dry_allowed_length", "dry_penalty_last_n", "n_probs"}
)
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
)


@dataclass(frozen=True)
class Defaults:
    """The server's sampling defaults (``-n``, ``--temp``, ``--seed``), llama-server's own."""

    n_predict: int = -1
    temperature: float = Sampling.temperature
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
    n_choices: int = 1
    """``n`` (``n_cmpl``): completions of each prompt, generated at once."""
    n_top: int = 0
    """Alternatives shown per token when probabilities are asked for (``sampling.n_probs``
    is at least 1 then, for the chosen token's own probability)."""
    cache_prompt: bool = True
    """False: evaluate the whole prompt, reusing nothing cached (llama-server's field)."""


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
        elif name in _INT_FIELDS:
            value = _integer(body, name)
        else:
            _number(body, name)
        out[name] = value
    return out


def _seed(body: Mapping[str, Any], defaults: Defaults) -> int:
    """llama-server's seed (-1 or absent: random; any other, 0 included, repeatable) as ours
    (0: random; 1 .. 2**32-2: repeatable)."""
    seed = _integer(body, "seed")
    if seed is None or seed in _RANDOM_SEEDS:
        seed = defaults.seed
    if seed in _RANDOM_SEEDS:
        return 0
    if not 0 <= seed < 2**32:
        raise invalid(f"Field 'seed': must be -1 (random) or in [0, 2**32), not {seed}")
    return _SEED_FOR_ZERO if seed == 0 else seed


def choice_seed(seed: int, i: int) -> int:
    """The seed of choice ``i`` of ``n``: the request's for the first, distinct and repeatable
    for the others (0, random, stays random)."""
    if seed == 0 or i == 0:
        return seed
    return (seed - 1 + i) % _SEED_SPAN + 1


def _bias_value(where: str, value: Any) -> float:
    if value is False:
        return -math.inf  # llama-server: false bans the token
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(f"Field '{where}': a bias must be a number or false, not {json.dumps(value)}")
    return float(value)


def _bias_key(where: str, key: Any) -> int | str:
    out: int | str
    if isinstance(key, str) and key.lstrip("-").isdigit():
        out = int(key)  # OpenAI's {"15339": -100}: token ids as object keys
    elif isinstance(key, str) and key:
        return key
    elif isinstance(key, int) and not isinstance(key, bool):
        out = key
    else:
        raise invalid(f"Field '{where}': a token must be an id or a non-empty text")
    if out < 0:
        raise invalid(f"Field '{where}': token id {out} is negative")
    return out


def _logit_bias(body: Mapping[str, Any]) -> dict[int | str, float]:
    """``logit_bias`` in all of llama-server's forms: ``[[id or text, bias], ...]``,
    ``{"id or text": bias}`` (OpenAI's), ``false`` as the bias to ban; repeats add up."""
    value = body.get("logit_bias")
    if value is None:
        return {}
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, list):
        pairs = []
        for i, el in enumerate(value):
            if not isinstance(el, list) or len(el) != 2:
                raise invalid(f"Field 'logit_bias[{i}]': must be a [token id or text, bias] pair")
            pairs.append((el[0], el[1]))
    else:
        raise invalid(
            "Field 'logit_bias': must be an array of [token, bias] pairs or an object "
            "mapping tokens to biases"
        )
    out: dict[int | str, float] = {}
    for key, bias in pairs:
        k = _bias_key(f"logit_bias[{json.dumps(key)}]", key)
        out[k] = out.get(k, 0.0) + _bias_value(f"logit_bias[{json.dumps(key)}]", bias)
    return out


def _structured(body: Mapping[str, Any]) -> dict[str, Any]:
    """``grammar``, ``json_schema``, and OpenAI's ``response_format`` (``json_object``: any
    JSON object, or the ``schema`` given with it; ``json_schema``: its ``schema``)."""
    grammar = body.get("grammar")
    schema = body.get("json_schema")
    if grammar is not None and not isinstance(grammar, str):
        raise invalid("Field 'grammar': must be a string (a GBNF grammar)")
    if schema is not None and not isinstance(schema, dict):
        raise invalid("Field 'json_schema': must be an object (a JSON Schema)")
    if schema is not None and grammar:
        raise invalid("Cannot use both json_schema and grammar")
    fmt = body.get("response_format")
    if fmt is not None:
        if not isinstance(fmt, dict):
            raise invalid("Field 'response_format': must be an object with a 'type'")
        kind = fmt.get("type", "")
        if kind == "json_object":
            if "schema" in fmt or schema is None:
                schema = fmt.get("schema")
                if schema is None:
                    schema = {}  # any JSON object (llama-server's choice too)
        elif kind == "json_schema":
            wrapper = fmt.get("json_schema")
            if not isinstance(wrapper, dict):
                raise invalid("Field 'response_format.json_schema': must be an object")
            schema = wrapper.get("schema", {})
        elif kind not in ("text", ""):
            raise invalid(
                'response_format type must be one of "text", "json_object" or '
                f'"json_schema", but got: {kind}'
            )
        if schema is not None and not isinstance(schema, dict):
            raise invalid("Field 'response_format': its schema must be an object")
        if schema is not None and grammar:
            raise invalid("Cannot use both response_format and grammar")
    out: dict[str, Any] = {}
    if grammar:
        out["grammar"] = grammar
    if schema == {} or schema == {"type": "object"}:
        out["grammar"] = _json_object_grammar()
    elif schema is not None:
        out["json_schema"] = schema
    return out


def _json_object_grammar() -> str:
    from llama_cpp.llama_grammar import JSON_GBNF

    return str(JSON_GBNF)


def _probabilities(body: Mapping[str, Any], route: Route) -> tuple[int, int]:
    """``(n_probs, n_top)``: probabilities to compute and alternatives to show.

    ``/completion``: ``n_probs`` (or ``logprobs``); ``/v1/completions``: ``logprobs`` (an
    integer, as OpenAI's); chat: ``logprobs: true`` with ``top_logprobs`` (20 when absent,
    as llama-server; 0 shows only the chosen tokens' own).
    """
    if route == "chat":
        top = _integer(body, "top_logprobs")
        if not _flag(body, "logprobs"):
            if top is not None:
                raise invalid("top_logprobs requires logprobs to be set to true")
            return 0, 0
        top = 20 if top is None else top
        if top < 0:
            raise invalid(f"Field 'top_logprobs': must be 0 or more, not {top}")
        return max(top, 1), top
    n = _integer(body, "n_probs")
    if n is None:
        logprobs = body.get("logprobs")
        # A chat-style switch on a completion route, or OpenAI's legacy integer.
        n = (20 if logprobs else None) if isinstance(logprobs, bool) else _integer(body, "logprobs")
    if n is None or n <= 0:
        return 0, 0
    return n, n


def parse_generation(
    body: Mapping[str, Any], defaults: Defaults, route: Route = "completion", parallel: int = 1
) -> Generation:
    """Sampling, stops and streaming options of a completion or chat request (``parallel``:
    the server's slots, the most choices one request may ask for, as llama-server)."""
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
    seed = _seed(body, defaults)
    extra = _sampler_fields(body)
    extra.update(_structured(body))
    bias = _logit_bias(body)
    if bias:
        extra["logit_bias"] = bias
    n_probs, n_top = _probabilities(body, route)
    if n_probs:
        extra["n_probs"] = n_probs
    if _flag(body, "post_sampling_probs"):
        raise invalid(
            "Field 'post_sampling_probs': not supported; probabilities are the model's "
            "before sampling (llama-server's default)"
        )
    n_choices = _integer(body, "n_cmpl") if body.get("n_cmpl") is not None else None
    if n_choices is None:
        n_choices = _integer(body, "n")
    n_choices = 1 if n_choices is None else n_choices
    if not 1 <= n_choices <= max(parallel, 1):
        raise invalid(
            f"Field 'n': must be in [1, {max(parallel, 1)}] (the server's parallel slots, "
            f"-np), not {n_choices}"
        )
    if _flag(body, "ignore_eos"):
        if "ignore_eos" not in _SAMPLING_FIELDS:
            raise invalid("Field 'ignore_eos': true is not supported by this server yet")
        extra["ignore_eos"] = True
    stops = _stops(body)
    if "stop" in _SAMPLING_FIELDS:
        extra["stop"] = stops
    cache_prompt = body.get("cache_prompt") is None or _flag(body, "cache_prompt")
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
        n_choices=n_choices,
        n_top=n_top,
        cache_prompt=cache_prompt,
    )


def _one_prompt(prompt: Any) -> str | list[int | str]:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, dict) and "prompt_string" in prompt:
        # llama-server's object form; its media need a multimodal model, which we lack.
        if prompt.get("multimodal_data"):
            raise invalid(
                "Multimodal data provided, but model does not support multimodal requests."
            )
        return _one_prompt(prompt["prompt_string"])
    if isinstance(prompt, list) and all(
        isinstance(p, str) or (isinstance(p, int) and not isinstance(p, bool)) for p in prompt
    ):
        if not prompt:
            raise invalid("Field 'prompt': is empty")
        return list(prompt)
    raise invalid(
        "Field 'prompt': must be a string, an array of token ids (maybe mixed with strings), "
        'an object {"prompt_string": ...}, or an array of such prompts'
    )


def parse_prompts(body: Mapping[str, Any]) -> list[str | list[int | str]]:
    """``prompt``: a string, token ids (mixed with strings or not), or an array of those,
    one result each, as llama-server reads it."""
    if "prompt" not in body:
        raise invalid("Field 'prompt': is required")
    prompt = body["prompt"]
    if isinstance(prompt, list) and prompt:
        ids = [isinstance(p, int) and not isinstance(p, bool) for p in prompt]
        one = any(ids) and all(i or isinstance(p, str) for i, p in zip(ids, prompt, strict=True))
        if not one:  # not token ids (mixed with text or not): several prompts
            return [_one_prompt(p) for p in prompt]
    return [_one_prompt(prompt)]
