"""The engine's pure parts: slot states and their invariants, and token probabilities."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llm_inproc import Sampling
from llm_inproc.backends.base import GenerationRequest
from llm_inproc.backends.inproc.logprobs import token_probs
from llm_inproc.backends.inproc.request import Request
from llm_inproc.backends.inproc.slot import Slot, SlotState


def _req(tokens: list[int], n_probs: int = 0) -> Request:
    return Request(GenerationRequest(Sampling(n_probs=n_probs)), tokens, lambda _: None, None)


def test_a_slot_goes_idle_prompt_generating_idle_and_keeps_its_cells() -> None:
    slot = Slot(0)
    assert slot.state is SlotState.IDLE and not slot.busy
    slot.cached = [1, 2, 3, 9]  # a finished conversation: 1 2 3 are reused, 9 is not
    slot.start(_req([1, 2, 3, 4, 5]), reused=3, budget=8)
    assert slot.state is SlotState.PROMPT and slot.busy
    assert slot.cached == [1, 2, 3] and slot.pending == [4, 5] and slot.reused == 3
    slot.chunk_evaluated(1)
    assert (slot.cached, slot.pending, slot.evaluated) == ([1, 2, 3, 4], [5], 1)
    with pytest.raises(AssertionError):
        slot.sampled(7)  # no token is drawn before the whole prompt is in
    slot.chunk_evaluated(1)
    slot.sampled(7)
    assert slot.state is SlotState.GENERATING and slot.next_token == 7
    slot.token_evaluated()
    assert slot.cached == [1, 2, 3, 4, 5, 7]
    req = slot.release()
    assert req.tokens == [1, 2, 3, 4, 5]
    assert slot.state is SlotState.IDLE and slot.req is None and slot.next_token == -1
    assert slot.cached == [1, 2, 3, 4, 5, 7]  # kept for the next turn
    with pytest.raises(AssertionError):
        slot.release()  # idle already


def test_a_new_request_asks_for_probabilities_only_when_it_wants_them() -> None:
    slot = Slot(1)
    slot.start(_req([1], n_probs=2), reused=0, budget=4)
    assert slot.probs == []
    slot.release()
    slot.start(_req([1]), reused=0, budget=4)
    assert slot.probs is None


def test_token_probs_is_the_softmax_and_its_top_n() -> None:
    logits = np.array([1.0, 3.0, 2.0, -1.0], dtype=np.float32)
    z = sum(math.exp(x) for x in logits)
    prob, top = token_probs(logits, 2, 3)
    assert prob == pytest.approx(math.exp(2.0) / z)
    assert [t for t, _ in top] == [1, 2, 0]
    assert [p for _, p in top] == pytest.approx([math.exp(x) / z for x in (3.0, 2.0, 1.0)])
    # Huge logits do not overflow: the maximum is subtracted first.
    big = np.array([1000.0, 999.0], dtype=np.float32)
    assert token_probs(big, 0, 1)[0] == pytest.approx(1 / (1 + math.exp(-1)))
