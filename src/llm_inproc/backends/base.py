"""The small interface every backend implements."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..messages import Message
from ..metrics import Metrics
from ..sampling import Sampling

__all__ = ["Backend", "GenerationRequest"]


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt, already validated: either a raw prompt or messages for the chat template."""

    sampling: Sampling
    prompt: str | None = None
    """Raw ``/completion`` text, when the model has a prompt encoding."""
    messages: Sequence[Message] = ()
    """Messages for the model's own chat template, when it has no raw encoding."""
    stops: tuple[str, ...] = ()
    """Text that ends the reply (never shown to the caller)."""


class Backend(Protocol):
    """Runs generation. ``generate`` yields raw text pieces; the caller cleans them."""

    name: str

    def generate(self, request: GenerationRequest, cancel: threading.Event) -> Iterator[str]:
        """Yield text as it is produced; stop promptly when ``cancel`` is set or on close."""
        ...

    def count_tokens(self, request: GenerationRequest) -> int:
        """Tokens the prompt of ``request`` takes in the context."""
        ...

    def health(self) -> str: ...

    def metrics(self) -> Metrics: ...

    def close(self) -> None: ...
