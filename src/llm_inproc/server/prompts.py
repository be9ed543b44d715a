"""``/completion``'s prompt as a :class:`GenerationRequest` (raw text, or token ids mixed
with text), and llama-server's tokenization switches. Chat messages go through the
Session's own builder (:mod:`llm_inproc.prompting.request_builder`)."""

from __future__ import annotations

from collections.abc import Sequence

from ..backends.base import GenerationRequest
from ..sampling import Sampling
from ..session import Session

__all__ = ["completion_request", "mixed_tokens", "tokenize"]


def tokenize(session: Session, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
    """llama-server's tokenization switches: BOS (``add_special``) and control tokens
    (``parse_special``) separately."""
    if not parse_special:
        tokens = session.tokenize(text, special=False)
        return (session.tokenize("") + tokens) if add_special else tokens
    tokens = session.tokenize(text, special=True)
    if not add_special:
        added = session.tokenize("")  # what tokenizing adds by itself: BOS or nothing
        own = bool(added) and text.startswith(session.detokenize(added))
        if added and tokens[: len(added)] == added and not own:
            tokens = tokens[len(added) :]
    return tokens


def completion_request(
    session: Session, prompt: str | list[int | str], sampling: Sampling, stops: tuple[str, ...]
) -> GenerationRequest:
    """``/completion``: text gets BOS as the model wants it; token ids are used as they are;
    strings among token ids are tokenized in place (BOS only for a leading string)."""
    if isinstance(prompt, str):
        return GenerationRequest(sampling=sampling, prompt=prompt, stops=stops)
    return GenerationRequest(sampling=sampling, tokens=mixed_tokens(session, prompt), stops=stops)


def mixed_tokens(session: Session, prompt: Sequence[int | str]) -> list[int]:
    """Token ids mixed with strings, as llama-server's ``tokenize_mixed``: each string
    tokenized in place, control tokens parsed, BOS only for a leading string."""
    tokens: list[int] = []
    for i, part in enumerate(prompt):
        if isinstance(part, str):
            tokens += tokenize(session, part, add_special=i == 0, parse_special=True)
        else:
            tokens.append(part)
    return tokens
