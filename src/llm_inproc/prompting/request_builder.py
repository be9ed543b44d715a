"""The one place where messages become a :class:`GenerationRequest`, for the Session and
the server alike: the order of roles checked, the system prompt's template rendered,
the prompt path chosen (a raw encoding, a ``--chat-template`` override, or the model's
own chat template) and the stop markers that go with it.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..backends.base import GenerationRequest
from ..errors import InvalidInputError
from ..sampling import Sampling
from .chat_template import fallback_encoding, render_chat_template
from .encoding import END_OF_TURN_MARKERS, TURN_START_MARKERS, PromptEncoding, check_order
from .messages import Message, Role, render_system_prompt

__all__ = ["NAMED_TEMPLATES", "build_request", "check_template"]

NAMED_TEMPLATES = {"chatml": "qwen2", "gemma": "gemma", "llama3": "llama", "phi3": "phi3"}
"""``--chat-template`` names, as llama-server's built-in ones, to our formats by architecture."""

_TEMPLATE_MARKERS = END_OF_TURN_MARKERS + TURN_START_MARKERS


def check_template(template: str) -> None:
    """Refuse a ``--chat-template`` that is neither a known name nor a Jinja template."""
    if template and template not in NAMED_TEMPLATES and "{" not in template:
        raise InvalidInputError(
            f"--chat-template {template!r} is not a known format "
            f"({', '.join(NAMED_TEMPLATES)}) nor a Jinja template"
        )


def build_request(
    messages: Sequence[Message],
    sampling: Sampling,
    *,
    model: str,
    encoding: PromptEncoding | None,
    template: str = "",
) -> GenerationRequest:
    """The request for ``messages``: through ``template`` when given (a name from
    :data:`NAMED_TEMPLATES` or a Jinja template), else the raw ``encoding``, else the
    model's own chat template (applied by the backend). ``model`` fills ``{{.Model}}``."""
    if not isinstance(messages, (list, tuple)):
        raise InvalidInputError(
            "messages must be a list of Message, e.g. [Message(Role.USER, 'Hi')]"
        )
    msgs = list(messages)
    check_order(msgs)
    if msgs[0].role is Role.SYSTEM:
        msgs[0] = Message(Role.SYSTEM, render_system_prompt(msgs[0].content, model))
    if template and template not in NAMED_TEMPLATES:
        text = render_chat_template(template, msgs)
        return GenerationRequest(sampling, prompt=text, stops=_stops(_TEMPLATE_MARKERS, sampling))
    if template:
        encoding = fallback_encoding(NAMED_TEMPLATES[template])
    if encoding is not None:
        markers = encoding.stop_markers() + (_TEMPLATE_MARKERS if template else ())
        return GenerationRequest(
            sampling, prompt=encoding.encode(msgs), stops=_stops(markers, sampling)
        )
    return GenerationRequest(sampling, messages=msgs, stops=_stops(_TEMPLATE_MARKERS, sampling))


def _stops(markers: tuple[str, ...], sampling: Sampling) -> tuple[str, ...]:
    return tuple(dict.fromkeys(markers + sampling.stop))
