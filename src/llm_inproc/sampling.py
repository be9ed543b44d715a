"""Sampling parameters as one value, validated once, with llama-server's defaults.

Pass it as ``sampling=`` to any prompt call, or set ``Options.sampling`` (YAML
``sampling:``) for a session default. ``max_tokens``, ``seed`` and ``temperature``
are also keyword arguments of the prompt calls: given, they override the sampling for
that request; left out (None), the sampling's values hold.
Every field maps to one of llama.cpp's native samplers: nothing runs in Python.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import InvalidInputError

__all__ = ["Sampling", "TokenProb"]


@dataclass(frozen=True)
class TokenProb:
    """A token and the probability the model gave it (``Reply.logprobs`` entries)."""

    id: int
    text: str
    prob: float
    """In [0, 1], from the softmax of the model's logits before sampling."""
    top: tuple[TokenProb, ...] = ()
    """The ``n_probs`` most likely tokens at that position, most likely first."""

    @property
    def logprob(self) -> float:
        return math.log(self.prob) if self.prob > 0 else -math.inf


@dataclass(frozen=True)
class Sampling:
    """How to pick tokens for one request (llama-server's parameters and defaults)."""

    max_tokens: int = 0
    """Tokens to generate at most; 0 means until the model stops or the context is full."""
    seed: int = 0
    """0 picks a random seed; any other value repeats the same output."""
    temperature: float = 0.8
    """0 is greedy; higher is more random (0.8 is llama-server's and Ollama's default)."""
    top_k: int = 40
    """Keep the k most likely tokens; 0 keeps all."""
    top_p: float = 0.95
    """Keep the smallest set of tokens whose probability adds up to p; 1.0 disables."""
    min_p: float = 0.05
    """Drop tokens less likely than min_p times the most likely one; 0 disables."""
    typical_p: float = 1.0
    """Locally typical sampling; 1.0 disables."""
    repeat_penalty: float = 1.0
    """Divide the logits of recently seen tokens by this; 1.0 disables."""
    repeat_last_n: int = 64
    """How many recent tokens the penalties look at; -1 the whole context, 0 disables."""
    presence_penalty: float = 0.0
    """Subtract this from tokens that appeared at all; 0 disables."""
    frequency_penalty: float = 0.0
    """Subtract this times the count of each token seen; 0 disables."""
    dry_multiplier: float = 0.0
    """DRY ("don't repeat yourself") penalty strength; 0 disables."""
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    dry_penalty_last_n: int = -1
    """-1: the whole context."""
    dry_sequence_breakers: tuple[str, ...] = ("\n", ":", '"', "*")
    xtc_probability: float = 0.0
    """Exclude-top-choices sampling: chance to drop the top tokens; 0 disables."""
    xtc_threshold: float = 0.1
    top_n_sigma: float = -1.0
    """Keep tokens within n standard deviations of the top logit; -1 disables."""
    stop: tuple[str, ...] = ()
    """Text that ends the reply; it is never shown, even when split across pieces."""
    logit_bias: Mapping[int | str, float] = field(default_factory=dict)
    """Token id, or text (all its tokens), to a bias added to its logit; ``-math.inf`` bans."""
    grammar: str = ""
    """A GBNF grammar the reply must follow (root rule ``root``)."""
    json_schema: Mapping[str, Any] | None = None
    """A JSON Schema; the reply is JSON valid for it (converted to a grammar)."""
    n_probs: int = 0
    """Report the n most likely tokens at each step in ``Reply.logprobs``."""
    ignore_eos: bool = False
    """Keep generating past the end-of-generation tokens (for benchmarks)."""

    def __post_init__(self) -> None:
        # Accept a single string or a list (as YAML and JSON give them); store tuples.
        stop: object = self.stop
        if isinstance(stop, str):
            object.__setattr__(self, "stop", (stop,))
        elif isinstance(stop, list):
            object.__setattr__(self, "stop", tuple(stop))
        breakers: object = self.dry_sequence_breakers
        if isinstance(breakers, list):
            object.__setattr__(self, "dry_sequence_breakers", tuple(breakers))
        self._check()

    def _check(self) -> None:
        for name in ("max_tokens", "seed", "top_k", "repeat_last_n", "dry_allowed_length"):
            _int(name, getattr(self, name))
        for name in ("dry_penalty_last_n", "n_probs"):
            _int(name, getattr(self, name))
        for name in (
            "temperature",
            "top_p",
            "min_p",
            "typical_p",
            "repeat_penalty",
            "presence_penalty",
            "frequency_penalty",
            "dry_multiplier",
            "dry_base",
            "xtc_probability",
            "xtc_threshold",
            "top_n_sigma",
        ):
            _finite(name, getattr(self, name))
        if self.max_tokens < 0:
            raise InvalidInputError(
                f"max_tokens must be >= 0 (0 means no limit), not {self.max_tokens}"
            )
        if not 0 <= self.seed < 2**32:
            raise InvalidInputError(f"seed must be in [0, 2**32), not {self.seed}")
        if self.temperature < 0:
            raise InvalidInputError(
                f"temperature must be >= 0 (0 is greedy), not {self.temperature}"
            )
        if self.top_k < 0:
            raise InvalidInputError(f"top_k must be >= 0 (0 keeps all), not {self.top_k}")
        for name in ("top_p", "min_p", "typical_p", "xtc_probability"):
            if not 0 <= getattr(self, name) <= 1:
                raise InvalidInputError(f"{name} must be in [0, 1], not {getattr(self, name)}")
        if self.repeat_penalty <= 0:
            raise InvalidInputError(
                f"repeat_penalty must be > 0 (1.0 disables), not {self.repeat_penalty}"
            )
        if self.repeat_last_n < -1 or self.dry_penalty_last_n < -1:
            raise InvalidInputError("repeat_last_n and dry_penalty_last_n must be >= -1")
        if not 0 <= self.n_probs <= 100:
            raise InvalidInputError(f"n_probs must be in [0, 100], not {self.n_probs}")
        if not all(isinstance(s, str) and s for s in self.stop):
            raise InvalidInputError(f"stop must be non-empty strings, not {self.stop!r}")
        if not isinstance(self.grammar, str):
            raise InvalidInputError("grammar must be a GBNF string")
        if self.json_schema is not None and not isinstance(self.json_schema, Mapping):
            raise InvalidInputError("json_schema must be a dict (a JSON Schema)")
        if self.grammar and self.json_schema is not None:
            raise InvalidInputError("give either grammar or json_schema, not both")
        if not isinstance(self.logit_bias, Mapping):
            raise InvalidInputError("logit_bias must map token ids or text to a bias")
        for key, bias in self.logit_bias.items():
            ok_key = (isinstance(key, int) and not isinstance(key, bool) and key >= 0) or (
                isinstance(key, str) and key
            )
            if not ok_key:
                raise InvalidInputError(
                    f"logit_bias key {key!r} must be a token id (int >= 0) or non-empty text"
                )
            if isinstance(bias, bool) or not isinstance(bias, (int, float)) or math.isnan(bias):
                raise InvalidInputError(f"logit_bias[{key!r}] must be a number, not {bias!r}")
        if not isinstance(self.ignore_eos, bool):
            raise InvalidInputError(f"ignore_eos must be true or false, not {self.ignore_eos!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def effective_seed(self) -> int:
        """The seed to hand to the sampler: the given one, or a fresh random one for 0."""
        return self.seed or (secrets.randbits(32) or 1)

    @classmethod
    def from_dict(cls, data: Any, where: str = "sampling") -> Sampling:
        """Build from a YAML mapping; errors name ``where.key``."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise InvalidInputError(f"{where}: expected a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise InvalidInputError(
                    f"{where}: unknown key {key!r}; valid keys: {', '.join(sorted(known))}"
                )
        try:
            return cls(**dict(data))
        except InvalidInputError as e:
            raise InvalidInputError(f"{where}: {e}") from None
        except TypeError as e:
            raise InvalidInputError(f"{where}: {e}") from None


def _int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{name} must be an integer, not {value!r}")


def _finite(name: str, value: object) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value):  # type: ignore[arg-type]
        raise InvalidInputError(f"{name} must be a finite number, not {value!r}")
