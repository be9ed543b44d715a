"""The pure-Python parts of the engine: admission and the choice of a slot (no model)."""

from __future__ import annotations

import pytest

from llm_inproc import BusyError
from llm_inproc.backends.inproc.admission import Admission
from llm_inproc.backends.inproc.slot import Slot, SlotState, choose_slot, common_prefix, plan_batch

PROMPT, GENERATING = SlotState.PROMPT, SlotState.GENERATING


def test_admission_is_first_come_first_served() -> None:
    a: Admission[str] = Admission(max_pending=3)
    for x in "abc":
        a.push(x, free_slots=0)
    assert len(a) == 3 and list(a) == ["a", "b", "c"]
    assert a.pop() == "a"
    assert a.remove("c") and not a.remove("c")
    assert a.pop() == "b" and a.pop() is None


def test_admission_counts_free_slots_before_refusing() -> None:
    a: Admission[int] = Admission(max_pending=1)
    a.push(1, free_slots=2)  # takes a free slot
    a.push(2, free_slots=2)  # takes the other
    a.push(3, free_slots=2)  # waits: the one pending place
    with pytest.raises(BusyError, match=r"1 requests already wait \(max_pending=1\)"):
        a.push(4, free_slots=2)
    assert a.drain() == [1, 2, 3] and len(a) == 0


def test_max_pending_zero_refuses_whenever_no_slot_is_free() -> None:
    a: Admission[int] = Admission(max_pending=0)
    a.push(1, free_slots=1)
    with pytest.raises(BusyError):
        a.push(2, free_slots=1)
    with pytest.raises(BusyError):
        Admission[int](max_pending=0).push(1, free_slots=0)


def slot(seq: int, cached: list[int], last_used: float) -> Slot:
    s = Slot(seq)
    s.cached, s.last_used = cached, last_used
    return s


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([1, 2], [1, 2, 3]) == 2


def test_a_request_takes_the_slot_with_its_conversation() -> None:
    a = slot(0, [1, 2, 3, 4], last_used=3.0)
    b = slot(1, [1, 2, 9], last_used=1.0)
    c = slot(2, [], last_used=0.0)
    assert choose_slot([a, b, c], [1, 2, 3, 4, 5, 6]) is a
    assert choose_slot([a, b, c], [1, 2, 9, 9]) is b


def test_without_a_shared_prefix_the_least_recently_used_slot_is_taken() -> None:
    a = slot(0, [5, 6], last_used=3.0)
    b = slot(1, [7, 8], last_used=1.0)
    c = slot(2, [9], last_used=2.0)
    assert choose_slot([a, b, c], [1, 2, 3]) is b


def test_a_few_shared_tokens_do_not_cost_another_conversation_its_slot() -> None:
    other = slot(0, [1, 2, *range(100, 200)], last_used=5.0)  # another user's, 102 tokens
    empty = slot(1, [], last_used=0.0)
    prompt = [1, 2, *range(300, 350)]  # shares only a BOS and one token with it
    assert choose_slot([other, empty], prompt) is empty
    # A whole cached conversation is always worth continuing, however long the new turn.
    mine = slot(2, [1, 2, 3], last_used=1.0)
    assert choose_slot([other, empty, mine], [1, 2, 3, *range(500, 600)]) is mine
    # A shared system prompt of 10 % of the prompt is, when no slot is empty or when it is
    # at least half of what the slot holds.
    system = [1, 2, *range(100, 106), *range(900, 940)]
    assert choose_slot([other, empty], system) is empty
    assert choose_slot([other], system) is other
    assert choose_slot([other, empty], [1, 2, *range(100, 160), 7]) is other
    # A prompt the slot's conversation starts with (a regenerated reply) reuses it whole.
    assert choose_slot([other, empty], [1, 2, *range(100, 110)]) is other


def busy(seq: int, state: SlotState, pending: int = 0) -> Slot:
    s = Slot(seq)
    s.state, s.pending = state, list(range(pending))
    return s


def test_a_batch_holds_every_stream_then_the_shortest_prompts_first() -> None:
    long, short, gen = busy(0, PROMPT, 4000), busy(1, PROMPT, 20), busy(2, GENERATING)
    generating, chunks = plan_batch([long, short, gen, busy(3, SlotState.IDLE)], 512)
    assert generating == [gen]
    # The short prompt is whole in this batch; the long one gets what room is left.
    assert chunks == [(short, 20), (long, 491)]


def test_a_full_batch_leaves_the_rest_of_the_prompts_for_the_next_step() -> None:
    a, b = busy(0, PROMPT, 300), busy(1, PROMPT, 100)
    gens = [busy(2 + i, GENERATING) for i in range(3)]
    generating, chunks = plan_batch([a, *gens, b], 256)
    assert generating == gens and chunks == [(b, 100), (a, 153)]
    assert plan_batch([a, b], 100)[1] == [(b, 100)]
