"""Many conversations, few slots: conversations move to host memory and come back by
prefix (``Options.cache_ram``), and the KV cache types (``cache_type_k``/``_v``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from llm_inproc import InvalidInputError, Message, Options, Reply, Role, Sampling, Session
from llm_inproc.backends.base import GenerationRequest
from llm_inproc.backends.inproc.prompt_cache import PromptCache
from llm_inproc.models.embedded import GEMMA_BASE

pytestmark = pytest.mark.timeout(600)

SYSTEM = Message(Role.SYSTEM, "You answer in one short sentence, kindly and plainly.")


# -- the cache itself (no model) ----------------------------------------------------------


def test_the_longest_shared_prefix_wins_and_short_ones_are_not_worth_it() -> None:
    c = PromptCache(limit=None)
    c.put(list(range(100)), b"a" * 10)
    c.put([*range(50), *range(500, 600)], b"b" * 10)
    entry, n = c.best([*range(80), 7]) or (None, 0)
    assert entry is not None and n == 80 and len(entry.data) == 10
    assert c.best([*range(80), 7], better_than=80) is None  # the slot already holds as much
    assert c.best([*range(10), 9, 9]) is None  # 10 shared tokens: evaluating them is as fast
    c.take(entry)
    assert len(c) == 1 and c.bytes == 10 and c.n_tokens == 150


def test_a_later_turn_replaces_the_earlier_one_and_an_earlier_one_adds_nothing() -> None:
    c = PromptCache(limit=None)
    c.put(list(range(40)), b"x" * 40)
    c.put(list(range(60)), b"y" * 60)  # the same conversation, one turn on
    assert len(c) == 1 and c.bytes == 60 and c.n_tokens == 60
    c.put(list(range(30)), b"z" * 30)  # already inside the kept one
    assert len(c) == 1 and c.bytes == 60


def test_least_recently_used_goes_first_within_the_limit() -> None:
    c = PromptCache(limit=100)
    for k in range(3):
        c.put([k * 1000 + i for i in range(20)], bytes(40))
    assert len(c) == 2 and c.bytes == 80  # the first went
    assert c.best([i for i in range(20)]) is None
    assert c.best([1000 + i for i in range(20)]) is not None  # now the most recent
    c.put([3000 + i for i in range(20)], bytes(40))
    assert c.best([1000 + i for i in range(20)]) is not None
    assert c.best([2000 + i for i in range(20)]) is None  # least recently used: evicted
    c.put([9] * 20, bytes(101))  # larger than the whole cache: not kept
    assert c.bytes <= 100 and c.best([9] * 20) is None


# -- a crowd on a real model --------------------------------------------------------------


@pytest.fixture(scope="module")
def crowd(cache_dir: Path, model_path: Path) -> Iterator[Session]:
    opts = Options(model=GEMMA_BASE.ref, context_length=4096, parallel=4)
    with Session(opts, cache_dir=cache_dir) as s:
        yield s


def _first(user: int) -> Message:
    return Message(Role.USER, f"I am user {user}. My cat is called Tom{user}. Say hi.")


@pytest.mark.model
def test_forty_users_four_turns_each_later_turn_evaluates_only_its_new_text(
    crowd: Session,
) -> None:
    """40 users, 4 turns, 4 at a time on 4 slots: far more conversations than slots, yet
    each later turn reuses its whole conversation so far (restored from host memory)."""
    users, turns = 40, 4
    conversations = {u: [SYSTEM, _first(u)] for u in range(users)}
    replies: dict[tuple[int, int], Reply] = {}
    lock = threading.Lock()

    def talk(user: int) -> None:
        msgs = conversations[user]
        before = 0
        for turn in range(turns):
            if turn:
                msgs.append(Message(Role.USER, f"Turn {turn}: and then?"))
            reply = crowd.complete(msgs, max_tokens=1, temperature=0)
            with lock:
                replies[user, turn] = reply
            # The previous turn's whole prompt was in the cache, at the very least.
            assert reply.cached_tokens >= before, (user, turn, reply.cached_tokens, before)
            before = reply.cached_tokens + reply.prompt.count
            msgs.append(Message(Role.ASSISTANT, reply.text))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(talk, range(users)))
    later = [r for (u, t), r in replies.items() if t > 0]
    evaluated = sum(r.prompt.count for r in later)
    assert evaluated <= 40 * len(later), f"{evaluated} prompt tokens for {len(later)} turns"
    m = crowd.get_metrics()
    assert m.prompt_cache_tokens > 0 and m.prompt_cache_bytes > 0
    # Replies equal a fresh session's wherever batching allows; the rate is measured.
    with Session(Options(model=GEMMA_BASE.ref, context_length=4096, parallel=1)) as fresh:
        same = sum(
            fresh.complete(conversations[u][: 2 * turns], max_tokens=1, temperature=0).text
            == replies[u, turns - 1].text
            for u in range(0, users, 10)
        )
    print(f"last turns equal to a fresh session's: {same} of {len(range(0, users, 10))}")
    assert same >= 1


@pytest.mark.model
def test_idle_conversations_leave_the_shared_cells_while_another_request_runs(
    crowd: Session,
) -> None:
    """A lone request pays nothing for idle conversations: they are in host memory, not in
    the cells its attention spans."""
    for u in range(100, 103):
        crowd.complete([SYSTEM, _first(u)], max_tokens=2, temperature=0)
    lone = [SYSTEM, _first(200)]
    reply = crowd.complete(lone, max_tokens=2, temperature=0)
    m = crowd.get_metrics()
    assert m.kv_cache_tokens <= reply.prompt.count + reply.cached_tokens + 2
    assert m.prompt_cache_tokens >= 3 * crowd.count_tokens([SYSTEM, _first(100)])


@pytest.mark.model
def test_a_small_cache_ram_evicts_the_least_recently_used_conversation(
    cache_dir: Path, model_path: Path
) -> None:
    def doc(user: int) -> list[Message]:
        words = " ".join(f"{user}-{i}" for i in range(40))
        return [Message(Role.USER, f"Document of user {user}: {words}. Summarise it.")]

    opts = Options(model=GEMMA_BASE.ref, context_length=1024, parallel=1, cache_ram=4)
    with Session(opts, cache_dir=cache_dir) as s:
        n = s.count_tokens(doc(0))
        for user in range(4):  # one slot: each new user moves the previous one out
            s.complete(doc(user), max_tokens=1, temperature=0)
        m = s.get_metrics()
        per_token = m.prompt_cache_bytes / m.prompt_cache_tokens
        held = m.prompt_cache_tokens // n
        assert m.prompt_cache_bytes <= 4 * 2**20
        assert 1 <= held < 3, (held, per_token)  # not all three fit in 4 MiB
        # The most recent one moved out comes back whole; the oldest was evicted.
        assert s.complete(doc(2), max_tokens=1, temperature=0).cached_tokens >= n - 1
        assert s.complete(doc(0), max_tokens=1, temperature=0).cached_tokens < n // 2


@pytest.mark.model
def test_cache_ram_zero_keeps_conversations_only_in_their_slots(
    cache_dir: Path, model_path: Path
) -> None:
    opts = Options(model=GEMMA_BASE.ref, context_length=1024, parallel=2, cache_ram=0)
    with Session(opts, cache_dir=cache_dir) as s:
        for u in range(3):
            s.complete([SYSTEM, _first(u)], max_tokens=2, temperature=0)
        m = s.get_metrics()
        assert m.prompt_cache_bytes == 0 and m.prompt_cache_tokens == 0
        again = s.complete([SYSTEM, _first(0)], max_tokens=2, temperature=0)
        assert again.cached_tokens < s.count_tokens([SYSTEM, _first(0)]) - 4


# -- KV cache types -----------------------------------------------------------------------


def test_kv_types_are_checked_and_round_trip_through_yaml() -> None:
    with pytest.raises(InvalidInputError, match=r"cache_type_k: unknown KV cache type 'q3'"):
        Options(cache_type_k="q3").validate()
    with pytest.raises(InvalidInputError, match=r"needs flash attention.*flash_attention"):
        Options(cache_type_v="q8_0", flash_attention=False).validate()
    with pytest.raises(InvalidInputError, match=r"cache_ram: -2 is invalid"):
        Options(cache_ram=-2).validate()
    opts = Options(cache_type_k="q8_0", cache_type_v="q4_0", cache_ram=-1)
    assert Options.from_dict(opts.to_dict()) == opts


@pytest.mark.model
def test_a_quantized_kv_cache_answers_in_half_the_memory(cache_dir: Path, model_path: Path) -> None:
    """q8_0 keys and values (flash attention turned on for them): a sensible reply, and
    each token's state takes about half the bytes of f16 (read from the prompt cache)."""
    long = [Message(Role.USER, "List these: " + " ".join(f"item{i}" for i in range(60)))]
    count = GenerationRequest(
        prompt="1, 2, 3, 4, 5, 6, 7,", sampling=Sampling(temperature=0, max_tokens=6)
    )
    per_token = {}
    for kind in ("f16", "q8_0"):
        opts = Options(
            model=GEMMA_BASE.ref,
            context_length=512,
            parallel=1,
            cache_type_k=kind,
            cache_type_v=kind,
        )
        with Session(opts, cache_dir=cache_dir) as s:
            assert s.model_info.flash_attention is (kind == "q8_0")
            s.complete(long, max_tokens=1, temperature=0)
            with s.generate(count) as stream:
                text = "".join(stream)
            assert text.startswith(" 8, 9"), (kind, text)
            m = s.get_metrics()
            per_token[kind] = m.prompt_cache_bytes / m.prompt_cache_tokens
    ratio = per_token["q8_0"] / per_token["f16"]
    assert 0.45 < ratio < 0.6, per_token
