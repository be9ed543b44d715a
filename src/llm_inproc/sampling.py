"""Sampling parameters as one value, validated once."""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

from .errors import InvalidInputError

__all__ = ["Sampling"]


@dataclass(frozen=True)
class Sampling:
    """How to pick tokens for one request."""

    max_tokens: int = 0
    """Tokens to generate at most; 0 means until the model stops or the context is full."""
    seed: int = 0
    """0 picks a random seed; any other value repeats the same output."""
    temperature: float = 1.0
    """0 is greedy; higher is more random."""

    def __post_init__(self) -> None:
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int):
            raise InvalidInputError(f"max_tokens must be an integer, not {self.max_tokens!r}")
        if self.max_tokens < 0:
            raise InvalidInputError(
                f"max_tokens must be >= 0 (0 means no limit), not {self.max_tokens}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise InvalidInputError(f"seed must be an integer, not {self.seed!r}")
        if not 0 <= self.seed < 2**32:
            raise InvalidInputError(f"seed must be in [0, 2**32), not {self.seed}")
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
            raise InvalidInputError(f"temperature must be a finite number, not {t!r}")
        if t < 0:
            raise InvalidInputError(f"temperature must be >= 0 (0 is greedy), not {t}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def effective_seed(self) -> int:
        """The seed to hand to the sampler: the given one, or a fresh random one for 0."""
        return self.seed or (secrets.randbits(32) or 1)
