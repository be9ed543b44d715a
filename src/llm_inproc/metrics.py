"""Token throughput and server load, and their Prometheus text form.

HTTP backends read these numbers from a llama-server ``/metrics`` page, and our
own server publishes them in the same form, so the parser and the writer live
together and share one table of metric names: they cannot drift apart.

Parsing is tolerant because servers differ between llama.cpp versions: unknown
metrics are ignored, missing ones read 0, and a malformed line is skipped (and
logged at debug level) rather than failing the whole page.

Not ``prometheus_client``: the remote backend parses these pages in the core library,
which should not take a dependency (and 64-147 ms of imports) for a dozen lines of
``name value``; its parser gives floats, where ours round-trips the page exactly.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import operator
import re
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Literal

from .errors import InvalidInputError

__all__ = ["PROMETHEUS_CONTENT_TYPE", "Metrics", "TokenPerformance"]

logger = logging.getLogger(__name__)

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The ``Content-Type`` of a page produced by :meth:`Metrics.to_prometheus`."""


@dataclass
class TokenPerformance:
    """How many tokens were processed and how long it took."""

    count: int = 0
    """Number of tokens."""
    duration: _dt.timedelta = field(default_factory=_dt.timedelta)
    """Time spent processing them."""

    def rate(self) -> float:
        """Tokens per second; 0 when no time was spent."""
        seconds = self.duration.total_seconds()
        if seconds == 0:
            return 0.0
        return self.count / seconds

    def __add__(self, other: object) -> TokenPerformance:
        if not isinstance(other, TokenPerformance):
            return NotImplemented
        return TokenPerformance(self.count + other.count, self.duration + other.duration)


@dataclass
class Metrics:
    """Cumulative performance and current load of a session or server."""

    prompt: TokenPerformance = field(default_factory=TokenPerformance)
    """Prompt tokens evaluated since the start."""
    generated: TokenPerformance = field(default_factory=TokenPerformance)
    """Tokens generated since the start."""
    kv_cache_usage: float = 0.0
    """Fraction of the KV cache in use, from 0 to 1."""
    kv_cache_tokens: int = 0
    """Tokens currently held in the KV cache."""
    requests_processing: int = 0
    """Requests being processed right now."""
    requests_pending: int = 0
    """Requests waiting for a free slot."""
    prompt_cache_bytes: int = 0
    """Host memory holding conversations moved out of the slots (``Options.cache_ram``)."""
    prompt_cache_tokens: int = 0
    """Tokens of those conversations."""
    prompt_cached_tokens: int = 0
    """Prompt tokens reused from the KV cache or the prompt cache since the start."""
    decode_calls: int = 0
    """``llama_decode`` calls since the start."""
    busy_slots_per_decode: float = 0.0
    """Requests served by an average decode call: how well batching works."""
    max_sequence_tokens: int = 0
    """The longest sequence (prompt and reply) a slot held."""
    draft_tokens: int = 0
    """Tokens drafted by speculative decoding since the start."""
    draft_accepted_tokens: int = 0
    """Drafted tokens the model agreed with."""
    draft_steps: int = 0
    """Steps that verified a draft."""

    @classmethod
    def from_prometheus(cls, text: str) -> Metrics:
        """Parse a Prometheus text exposition page such as llama-server's ``/metrics``.

        Only the series listed in :data:`_SERIES` (``llamacpp:*`` and our
        ``llminproc:*``) are read; others are ignored, missing ones read 0, and
        non-finite values (``NaN``, ``+Inf``) read 0. When a series appears more
        than once (several label sets), the last sample wins.
        """
        if not isinstance(text, str):
            raise InvalidInputError(
                f"a Prometheus page must be str, not {type(text).__name__}; "
                "decode the HTTP body first"
            )
        values: dict[str, Decimal] = {}
        for number, line in enumerate(text.splitlines(), 1):
            parsed = _parse_line(line)
            if parsed is None:
                continue
            name, raw = parsed
            series = _SERIES.get(name)
            if series is None:
                continue
            value = _sanitize(raw, series.unit)
            if value is None:
                logger.debug("metrics line %d: unusable value for %s: %r", number, name, line)
                continue
            values[series.field] = value
        return cls._from_fields(values)

    def to_prometheus(self) -> str:
        """Render as a Prometheus text exposition page with the llama-server names.

        ``Metrics.from_prometheus(m.to_prometheus()) == m`` holds exactly:
        durations are written in seconds with all six microsecond digits.
        """
        lines: list[str] = []
        for name, series in _SERIES.items():
            value = operator.attrgetter(series.field)(self)
            lines.append(f"# HELP {name} {series.help}")
            lines.append(f"# TYPE {name} {series.type}")
            lines.append(f"{name} {_format(value, series.unit)}")
        return "\n".join(lines) + "\n"

    @classmethod
    def _from_fields(cls, values: dict[str, Decimal]) -> Metrics:
        def get(key: str) -> Decimal:
            return values.get(key, Decimal(0))

        def seconds(key: str) -> _dt.timedelta:
            return _dt.timedelta(microseconds=int(get(key).scaleb(6)))

        return cls(
            prompt=TokenPerformance(int(get("prompt.count")), seconds("prompt.duration")),
            generated=TokenPerformance(int(get("generated.count")), seconds("generated.duration")),
            kv_cache_usage=float(get("kv_cache_usage")),
            kv_cache_tokens=int(get("kv_cache_tokens")),
            requests_processing=int(get("requests_processing")),
            requests_pending=int(get("requests_pending")),
            prompt_cache_bytes=int(get("prompt_cache_bytes")),
            prompt_cache_tokens=int(get("prompt_cache_tokens")),
            prompt_cached_tokens=int(get("prompt_cached_tokens")),
            decode_calls=int(get("decode_calls")),
            busy_slots_per_decode=float(get("busy_slots_per_decode")),
            max_sequence_tokens=int(get("max_sequence_tokens")),
            draft_tokens=int(get("draft_tokens")),
            draft_accepted_tokens=int(get("draft_accepted_tokens")),
            draft_steps=int(get("draft_steps")),
        )


_Unit = Literal["count", "seconds", "ratio"]


@dataclass(frozen=True)
class _Series:
    """One Prometheus series and the :class:`Metrics` attribute it maps to."""

    field: str
    """Dotted attribute path in :class:`Metrics`."""
    type: Literal["counter", "gauge"]
    unit: _Unit
    help: str


# The single table of names, used by both from_prometheus and to_prometheus.
# Help texts are llama-server's.
_SERIES: dict[str, _Series] = {
    "llamacpp:prompt_tokens_total": _Series(
        "prompt.count", "counter", "count", "Number of prompt tokens processed."
    ),
    "llamacpp:prompt_seconds_total": _Series(
        "prompt.duration", "counter", "seconds", "Prompt process time"
    ),
    "llamacpp:tokens_predicted_total": _Series(
        "generated.count", "counter", "count", "Number of generation tokens processed."
    ),
    "llamacpp:tokens_predicted_seconds_total": _Series(
        "generated.duration", "counter", "seconds", "Predict process time"
    ),
    "llamacpp:prompt_tokens_cached_total": _Series(
        "prompt_cached_tokens", "counter", "count", "Number of prompt tokens reused from the cache"
    ),
    "llamacpp:n_decode_total": _Series(
        "decode_calls", "counter", "count", "Total number of llama_decode() calls"
    ),
    "llamacpp:n_tokens_max": _Series(
        "max_sequence_tokens",
        "counter",
        "count",
        "Largest observed sequence length (prompt + generation)",
    ),
    "llamacpp:n_busy_slots_per_decode": _Series(
        "busy_slots_per_decode",
        "gauge",
        "ratio",
        "Average number of busy slots per llama_decode() call",
    ),
    "llamacpp:spec_decode_num_draft_tokens_total": _Series(
        "draft_tokens", "counter", "count", "Speculative: Total draft tokens generated"
    ),
    "llamacpp:spec_decode_num_accepted_tokens_total": _Series(
        "draft_accepted_tokens",
        "counter",
        "count",
        "Speculative: Total draft tokens accepted by the target model",
    ),
    "llamacpp:spec_decode_num_drafts_total": _Series(
        "draft_steps",
        "counter",
        "count",
        "Speculative: Total speculative decoding verification steps",
    ),
    "llamacpp:kv_cache_usage_ratio": _Series(
        "kv_cache_usage", "gauge", "ratio", "KV-cache usage. 1 = 100 percent usage."
    ),
    "llamacpp:kv_cache_tokens": _Series("kv_cache_tokens", "gauge", "count", "KV-cache tokens."),
    "llamacpp:requests_processing": _Series(
        "requests_processing", "gauge", "count", "Number of requests processing."
    ),
    "llamacpp:requests_deferred": _Series(
        "requests_pending", "gauge", "count", "Number of requests deferred."
    ),
    # Ours (llama-server reports no such thing):
    "llminproc:prompt_cache_bytes": _Series(
        "prompt_cache_bytes", "gauge", "count", "Host memory of conversations out of the slots."
    ),
    "llminproc:prompt_cache_tokens": _Series(
        "prompt_cache_tokens", "gauge", "count", "Tokens of conversations out of the slots."
    ),
}

# name, optional {labels} (quoted values may hold '}' and escapes), value, optional timestamp.
_SAMPLE = re.compile(
    r"""
    ^\s*(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)
    \s*(?:\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?
    \s+(?P<value>\S+)
    (?:\s+-?\d+)?
    \s*$
    """,
    re.VERBOSE,
)

_MAX_MICROSECONDS = Decimal(_dt.timedelta.max // _dt.timedelta(microseconds=1))


def _parse_line(line: str) -> tuple[str, Decimal] | None:
    """Return ``(name, value)`` for a sample line, None for blanks, comments and garbage."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    match = _SAMPLE.match(stripped)
    if match is None:
        logger.debug("metrics: skipping malformed line %r", line)
        return None
    try:
        value = Decimal(match["value"])
    except InvalidOperation:
        logger.debug("metrics: skipping line with a malformed value %r", line)
        return None
    return match["name"], value


def _sanitize(value: Decimal, unit: _Unit) -> Decimal | None:
    """Bring a parsed value to the unit's resolution; 0 when not finite, None when unusable."""
    if not value.is_finite():
        return Decimal(0)
    if unit == "ratio":
        return value if math.isfinite(float(value)) else None
    if value.is_zero() or value.adjusted() < -7:  # rounds to 0 µs or 0 tokens
        return Decimal(0)
    if value.adjusted() > 18:  # more than an int64 counter holds: not a real reading
        return None
    if unit == "seconds":
        micro = value.scaleb(6).to_integral_value(ROUND_HALF_EVEN)
        return micro.scaleb(-6) if abs(micro) <= _MAX_MICROSECONDS else None
    return value.to_integral_value(ROUND_HALF_EVEN)


def _format(value: object, unit: _Unit) -> str:
    """Write an attribute value in Prometheus text form, exactly."""
    if unit == "seconds":
        if not isinstance(value, _dt.timedelta):
            raise InvalidInputError(f"a duration must be a timedelta, not {value!r}")
        micro = value // _dt.timedelta(microseconds=1)
        return format(Decimal(micro).scaleb(-6), "f")
    if unit == "ratio":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise InvalidInputError(f"kv_cache_usage must be a float, not {value!r}")
        number = float(value)
        if math.isnan(number):
            return "NaN"
        if math.isinf(number):
            return "+Inf" if number > 0 else "-Inf"
        return repr(number)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInputError(f"a token or request count must be an int, not {value!r}")
    return str(value)
