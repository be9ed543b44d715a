"""A slot: one sequence id in the shared context, the tokens its KV cells hold, the
request it is serving and its state (idle, evaluating a prompt, generating), with the
transitions that keep them consistent. Choosing a slot for a new request is a pure
function."""

from __future__ import annotations

import codecs
import enum
import time
from collections.abc import Sequence
from typing import Any

from ...sampling import TokenProb
from ..base import SlotInfo
from .ngram import NgramDrafter
from .request import Request

__all__ = ["UNBOUNDED", "Slot", "SlotState", "choose_slot", "common_prefix", "plan_batch"]

UNBOUNDED = 2**62
"""The budget of a reply that only its end of generation or the caller ends."""


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class SlotState(enum.Enum):
    """Where a slot is in serving a request (llama-server's ``slot_state``)."""

    IDLE = "idle"
    """No request; its cells may still hold a finished conversation for the next turn."""
    PROMPT = "prompt"
    """Evaluating the request's prompt, a chunk per step."""
    GENERATING = "generating"
    """A sampled token waits to be evaluated in the next step."""


class Slot:
    """Sequence ``seq`` of the context and the state of the request it serves, if any.

    The transitions keep the invariants: :meth:`start` (idle to prompt) sets every
    per-request field; :meth:`sampled` (prompt or generating to generating) holds the
    next token; :meth:`release` (to idle) drops the request and its sampler. ``cached``
    always lists exactly the tokens whose KV cells the sequence holds.
    """

    __slots__ = (
        "accepted",
        "budget",
        "cached",
        "decoder",
        "drafted",
        "drafter",
        "evaluated",
        "first_at",
        "last_used",
        "n_gen",
        "next_token",
        "pending",
        "probs",
        "prompt_started",
        "refused",
        "req",
        "reused",
        "sampler",
        "seq",
        "state",
        "task",
    )

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.state = SlotState.IDLE
        self.cached: list[int] = []
        """Tokens whose KV cells this sequence holds, in position order."""
        self.last_used = 0.0
        self.req: Request | None = None
        self.sampler: Any = None
        self.pending: list[int] = []
        """Prompt tokens still to evaluate."""
        self.next_token = -1
        """The sampled token to evaluate next step (while generating)."""
        self.drafter: NgramDrafter | None = None
        """Drafts tokens for speculative decoding; None: off (or turned off: it did not pay)."""
        self.drafted = 0
        self.accepted = 0
        self.refused = 0
        """Verification steps whose draft a refused token cut short."""
        self.n_gen = 0
        self.budget = 0
        self.reused = 0
        self.evaluated = 0
        self.prompt_started = 0.0
        self.first_at = 0.0
        self.decoder: codecs.IncrementalDecoder | None = None
        self.probs: list[TokenProb] | None = None
        self.task = -1
        """The number of the request served, or last served (-1: none yet)."""

    @property
    def busy(self) -> bool:
        return self.state is not SlotState.IDLE

    def start(self, req: Request, reused: int, budget: int) -> None:
        """Serve ``req``, whose first ``reused`` tokens the cells already hold."""
        assert self.state is SlotState.IDLE and reused <= len(self.cached)
        del self.cached[reused:]
        self.state = SlotState.PROMPT
        self.req = req
        self.task = req.task
        self.sampler = req.sampler
        self.pending = list(req.tokens[reused:])
        self.reused = reused
        self.evaluated = 0
        self.next_token = -1
        self.n_gen = 0
        self.budget = budget
        self.probs = [] if req.request.sampling.n_probs else None
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.prompt_started = time.perf_counter()
        self.first_at = 0.0
        self.drafter = None
        self.drafted = self.accepted = self.refused = 0

    def chunk_evaluated(self, k: int) -> None:
        """The next ``k`` prompt tokens are now in the cells."""
        assert self.state is SlotState.PROMPT and k <= len(self.pending)
        self.cached.extend(self.pending[:k])
        del self.pending[:k]
        self.evaluated += k

    def token_evaluated(self) -> None:
        """The sampled token is now in the cells."""
        assert self.state is SlotState.GENERATING
        self.cached.append(self.next_token)

    def sampled(self, token: int) -> None:
        """``token`` was drawn and goes on: it is evaluated next step."""
        assert self.state is not SlotState.IDLE and not self.pending
        self.state = SlotState.GENERATING
        self.next_token = token

    def release(self) -> Request:
        """Back to idle, the cells kept for the next turn; the request it served."""
        req = self.req
        assert req is not None and self.state is not SlotState.IDLE
        self.state = SlotState.IDLE
        self.req = None
        self.sampler = None
        self.pending = []
        self.next_token = -1
        self.drafter = None
        self.last_used = time.perf_counter()
        return req

    def report(self) -> SlotInfo:
        """What ``/slots`` shows of this slot (read from another thread: a snapshot of
        plain fields, each read once)."""
        state, task, n_gen = self.state, self.task, self.n_gen
        return SlotInfo(
            id=self.seq,
            processing=state is not SlotState.IDLE,
            state=state.value,
            task=task if task >= 0 else None,
            n_cached=len(self.cached),
            n_prompt_evaluated=self.evaluated,
            n_prompt_reused=self.reused,
            n_decoded=n_gen,
            n_remain=(
                -1  # bounded by nothing but the end of the reply (context shift, no limit)
                if self.budget == UNBOUNDED
                else max(self.budget - n_gen, 0)
                if state is not SlotState.IDLE
                else 0
            ),
        )

    def forget(self) -> None:
        """The cells were cleared: nothing is cached any more."""
        self.cached.clear()


MIN_SIMILARITY = 0.1
"""A slot holding another conversation is reused only when it shares at least this
fraction of the new prompt (llama-server's ``--slot-prompt-similarity``): a few common
tokens (a BOS, a greeting) are not worth giving up a whole conversation for."""


def choose_slot(free: Sequence[Slot], tokens: Sequence[int]) -> Slot:
    """The free slot whose cache shares the longest prefix with ``tokens``, if that prefix
    is useful: the slot's whole conversation; or :data:`MIN_SIMILARITY` of the prompt and,
    while an empty slot exists, half of the prompt or of what the slot holds (a prompt
    that repeats the start of a conversation, as a regenerated reply does, reuses it).

    Otherwise an empty slot, else the least recently used one, so that the caches of
    recent conversations stay for their next turn.
    """
    best = max(free, key=lambda s: (common_prefix(s.cached, tokens), -s.last_used))
    n = common_prefix(best.cached, tokens)
    if n == len(best.cached) and n > 0:
        return best  # its whole conversation goes on: nothing is lost
    empty = [s for s in free if not s.cached]
    small = 2 * n < len(tokens) and 2 * n < len(best.cached)
    if n < MIN_SIMILARITY * len(tokens) or (empty and small):
        # Not worth giving another conversation up for (an empty slot loses nothing).
        return empty[0] if empty else min(free, key=lambda s: s.last_used)
    return best


def plan_batch(active: Sequence[Slot], n_batch: int) -> tuple[list[Slot], list[tuple[Slot, int]]]:
    """What the next batch holds: every generating slot's next token (streams never wait
    for prompts), then prompt chunks in the room left, shortest remaining prompt first,
    so a short request's first token does not wait behind a long document's whole
    prompt (the document loses one chunk per step)."""
    generating = [s for s in active if s.state is SlotState.GENERATING]
    room = n_batch - len(generating)
    chunks: list[tuple[Slot, int]] = []
    for slot in sorted(
        (s for s in active if s.state is SlotState.PROMPT), key=lambda s: len(s.pending)
    ):
        if room <= 0:
            break
        k = min(room, len(slot.pending))
        chunks.append((slot, k))
        room -= k
    return generating, chunks
