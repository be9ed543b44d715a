"""From parsed request values to a :class:`GenerationRequest` for the served Session:
raw text or token ids for ``/completion``, messages for the chat routes (the model's
own template, or the one ``--chat-template`` names)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ..backends.base import GenerationRequest
from ..chat_template import fallback_encoding, render_chat_template
from ..encoding import END_OF_TURN_MARKERS, TURN_START_MARKERS, check_order
from ..errors import InvalidInputError
from ..messages import Message, Role, render_system_prompt
from ..sampling import Sampling
from ..session import Session

__all__ = ["chat_request", "check_template", "completion_request", "tokenize"]

# --chat-template names, as llama-server's built-in ones, to our formats by architecture.
_NAMED = {"chatml": "qwen2", "gemma": "gemma", "llama3": "llama", "phi3": "phi3"}


def check_template(template: str) -> None:
    """Refuse a ``--chat-template`` that is neither a known name nor a Jinja template."""
    if template and template not in _NAMED and "{" not in template:
        raise InvalidInputError(
            f"--chat-template {template!r} is not a known format ({', '.join(_NAMED)}) "
            "nor a Jinja template"
        )


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
    tokens: list[int] = []
    for i, part in enumerate(prompt):
        if isinstance(part, str):
            tokens += tokenize(session, part, add_special=i == 0, parse_special=True)
        else:
            tokens.append(part)
    return GenerationRequest(sampling=sampling, tokens=tokens, stops=stops)


def chat_request(
    session: Session,
    messages: Sequence[Message],
    sampling: Sampling,
    stops: tuple[str, ...],
    template: str = "",
) -> GenerationRequest:
    """The chat routes: the Session's own path unless ``template`` overrides it."""
    if not template:
        request = session.chat_request(messages, sampling)
        return dataclasses.replace(request, stops=tuple(dict.fromkeys(request.stops + stops)))
    msgs = list(messages)
    check_order(msgs)
    if msgs[0].role is Role.SYSTEM:
        msgs[0] = Message(Role.SYSTEM, render_system_prompt(msgs[0].content, session.model))
    markers = END_OF_TURN_MARKERS + TURN_START_MARKERS
    if template in _NAMED:
        encoding = fallback_encoding(_NAMED[template])
        text = encoding.encode(msgs)
        markers = encoding.stop_markers() + markers
    else:
        text = render_chat_template(template, msgs)
    return GenerationRequest(
        sampling=sampling, prompt=text, stops=tuple(dict.fromkeys(markers + stops))
    )
