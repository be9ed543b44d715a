"""Keep a chat inside the context window: drop the oldest turns, never the system prompt."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..prompting.messages import Message, Role

__all__ = ["fit_history", "reply_reserve"]


def reply_reserve(n_ctx: int, max_tokens: int) -> int:
    """Context tokens to leave for the reply: ``max_tokens``, or a quarter of the context
    when it is 0 (until the model stops); never more than half, so history still fits."""
    wanted = max_tokens if max_tokens > 0 else n_ctx // 4
    return max(1, min(wanted, n_ctx // 2))


def fit_history(
    messages: Sequence[Message], count: Callable[[list[Message]], int], budget: int
) -> tuple[list[Message], int, int]:
    """The longest tail of whole turns (a user message and what follows it) whose prompt
    takes at most ``budget`` tokens by ``count``, behind the leading system prompt if any;
    how many messages were dropped; and what the kept ones count (more than ``budget``
    only when the last message alone does not fit: it is always kept, the caller tells
    the user).
    """
    msgs = list(messages)
    head = msgs[:1] if msgs and msgs[0].role is Role.SYSTEM else []
    body = msgs[len(head) :]
    dropped = 0
    used = count(head + body)
    while len(body) > 1 and used > budget:
        body.pop(0)
        dropped += 1
        # A turn goes whole: never leave a reply without the message it answered.
        while len(body) > 1 and body[0].role is not Role.USER:
            body.pop(0)
            dropped += 1
        used = count(head + body)
    return head + body, dropped, used
