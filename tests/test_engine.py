"""Many requests at once on one session: parallel slots, admission, cancellation, timeouts.

Real model (SmolLM2-135M-Instruct, the default), real threads and event loops. Replies
generated in a batch with other sequences may differ from the same request run alone
(llama.cpp's CPU kernels are not batch-invariant, as with llama-server's slots), so the
tests check what is guaranteed: each reply answers its own prompt, counts add up, the
limits hold, and nothing hangs or crashes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from llm_inproc import (
    BusyError,
    Message,
    Metrics,
    Options,
    Reply,
    RequestTimeoutError,
    Role,
    Sampling,
    Session,
    SessionClosedError,
)
from llm_inproc.backends.base import GenerationRequest

pytestmark = pytest.mark.model

WORDS = ["apple", "river", "cloud", "stone", "tiger", "piano", "candle", "mirror"]


def ask(word: str) -> list[Message]:
    return [Message(Role.USER, f"Repeat the word {word} ten times: " + " ".join([word] * 6))]


def own_word_only(word: str, text: str) -> bool:
    low = text.lower()
    return word in low and not any(w in low for w in WORDS if w != word)


def wait_for(condition: Callable[[], bool], what: str, within: float = 30.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"not {what} within {within:g} s"
        time.sleep(0.002)


def endless(s: Session, messages: list[Message], n: int = 0) -> GenerationRequest:
    """The request for ``messages`` that only ends after ``n`` tokens (0: when the context
    is full) or when stopped: end-of-generation tokens banned, no stop markers (a control
    token such as <|im_start|> is then just a token)."""
    request = s.chat_request(messages, Sampling(temperature=0, max_tokens=n, ignore_eos=True))
    return dataclasses.replace(request, stops=())


class Monitor:
    """Samples the session's gauges while requests run: a sample can only miss a broken
    limit, never report one that held, so only limits are asserted on the samples."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.samples: list[Metrics] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.session.get_metrics())
            time.sleep(0.001)

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_eight_threads_and_eight_tasks_at_once(chat_session: Session) -> None:
    s = chat_session
    parallel = s.model_info.parallel
    assert parallel == 4
    prompt_tokens = {w: s.count_tokens(ask(w)) for w in WORDS}
    before = s.get_metrics()
    replies: dict[str, Reply] = {}
    errors: list[BaseException] = []

    def worker(w: str) -> None:
        try:
            replies[w] = s.complete(ask(w), max_tokens=16, temperature=0)
        except BaseException as e:  # reported below
            errors.append(e)

    async def tasks() -> list[Reply]:
        return await asyncio.gather(
            *(s.acomplete(ask(w), max_tokens=16, temperature=0) for w in WORDS)
        )

    with Monitor(s) as mon:
        threads = [threading.Thread(target=worker, args=(w,)) for w in WORDS]
        for t in threads:
            t.start()
        async_replies = asyncio.run(tasks())
        for t in threads:
            t.join(120)
    assert not errors
    together = [replies[w] for w in WORDS] + async_replies
    # No reply carries another request's word (no cross-talk between sequences). A tiny
    # model may drift off its word when batched (greedy "1. Candle" alone became
    # "1234567890…" once in CI), so its own word is required in nearly all replies.
    for w, r in zip(WORDS + WORDS, together, strict=True):
        assert not any(o in r.text.lower() for o in WORDS if o != w), (w, r.text)
        assert r.finish_reason in ("stop", "length")
        assert 0 < r.generated.count <= 16
    own = [(w, r.text) for w, r in zip(WORDS + WORDS, together, strict=True)]
    assert sum(own_word_only(w, t) for w, t in own) >= 14, own
    # Each request's own accounting is exact, batched or not: its whole prompt was either
    # evaluated or found in its slot's cache, and "length" means the whole budget.
    for w, r in zip(WORDS + WORDS, together, strict=True):
        assert r.prompt.count + r.cached_tokens == prompt_tokens[w], (w, r)
        assert r.prompt.count >= 1  # at least the last prompt token, for fresh logits
        assert (r.finish_reason == "length") == (r.generated.count == 16), (w, r)
    # Never more than `parallel` generate at once, never more waiting than were sent.
    # (That all slots fill and the rest wait is shown, as a state, by the flood test.)
    assert mon.samples
    assert all(0 <= m.requests_processing <= parallel for m in mon.samples)
    assert all(0 <= m.requests_pending <= 16 - m.requests_processing for m in mon.samples)
    # The session's counters are the sum of the finished requests' results.
    after = s.get_metrics()
    assert after.generated.count - before.generated.count == sum(
        r.generated.count for r in together
    )
    assert after.prompt.count - before.prompt.count == sum(r.prompt.count for r in together)
    assert (after.requests_processing, after.requests_pending) == (0, 0)


def test_an_idle_engine_lets_its_thread_go_and_keeps_its_caches(chat_model_path: Path) -> None:
    # An idle engine thread keeps OpenMP workers that slow every other session in the
    # process; it ends after a second without work, and the next request starts one.
    opts = Options(model=str(chat_model_path), context_length=1024, parallel=2)
    with Session(opts) as s:
        engine = s._backend._engine  # type: ignore[attr-defined]
        first = s.complete(ask("apple"), max_tokens=8, temperature=0)
        deadline = time.monotonic() + 10
        while engine._thread is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine._thread is None
        again = s.complete(ask("apple"), max_tokens=8, temperature=0)
        assert again.text == first.text
        assert again.prompt.count == 1 and again.cached_tokens > 0  # the cache was kept
        streamed = "".join(s.prompt_streaming(ask("river"), max_tokens=8, temperature=0))
        assert "river" in streamed.lower()
    # Closing an idle session frees it without a thread; a later request is refused.
    with Session(opts) as idle:
        idle.complete(ask("cloud"), max_tokens=4, temperature=0)
        engine = idle._backend._engine  # type: ignore[attr-defined]
        deadline = time.monotonic() + 10
        while engine._thread is not None and time.monotonic() < deadline:
            time.sleep(0.05)
    with pytest.raises(SessionClosedError):
        idle.complete(ask("cloud"), max_tokens=4)


def test_slots_fill_then_requests_wait_and_a_flood_is_refused_at_once(
    chat_model_path: Path,
) -> None:
    """Two streams that never end by themselves hold both slots; two requests wait; more
    are refused while nothing can have freed a slot, so they were refused without waiting."""
    opts = Options(model=str(chat_model_path), context_length=2048, parallel=2, max_pending=2)
    with Session(opts) as s:
        holders = [s.generate(endless(s, ask(w))) for w in ("river", "cloud")]
        wait_for(lambda: s.get_metrics().requests_processing == 2, "both slots taken")

        answers: dict[str, object] = {}

        def waiter(w: str) -> None:
            try:
                answers[w] = s.prompt(ask(w), max_tokens=16, temperature=0, timeout=120)
            except BaseException as e:  # reported below
                answers[w] = e

        waiters = [threading.Thread(target=waiter, args=(w,)) for w in ("apple", "stone")]
        for t in waiters:
            t.start()
        wait_for(lambda: s.get_metrics().requests_pending == 2, "two requests waiting")

        refused: list[object] = []
        gate = threading.Barrier(6)

        def flood(i: int) -> None:
            gate.wait()
            try:  # (a refusal that waited would end in RequestTimeoutError instead)
                refused.append(s.prompt(ask(WORDS[i]), max_tokens=16, timeout=60))
            except BaseException as e:  # reported below
                refused.append(e)

        flooders = [threading.Thread(target=flood, args=(i,)) for i in range(6)]
        for t in flooders:
            t.start()
        for t in flooders:
            t.join(90)
        assert len(refused) == 6 and all(isinstance(e, BusyError) for e in refused), refused
        assert "max_pending=2" in str(refused[0])
        # Nothing moved meanwhile: the holders never end by themselves.
        m = s.get_metrics()
        assert (m.requests_processing, m.requests_pending) == (2, 2)
        assert not answers

        for h in holders:
            h.close()
        for t in waiters:
            t.join(120)
        for w in ("apple", "stone"):
            assert isinstance(answers[w], str) and w in str(answers[w]).lower(), answers
        wait_for(lambda: s.get_metrics().requests_processing == 0, "idle")
        assert s.get_metrics().requests_pending == 0


def test_cancellation_storm_leaves_the_session_healthy(chat_model_path: Path) -> None:
    opts = Options(model=str(chat_model_path), context_length=2048, parallel=4)
    # A reply the model is sure of: a broken cache would show as garbage, while the tiny
    # differences of batch-dependent kernels cannot turn it (a near-tie could, see README).
    probe = ask("stone")
    rng = random.Random(7)

    doomed = set(rng.sample([i for i in range(20) if i % 4 != 1], 5))

    async def storm(s: Session) -> list[object]:
        never = asyncio.Event()  # never set: a doomed task ends only by being cancelled

        async def one(i: int) -> object:
            msgs = [Message(Role.USER, f"Tell me a long story about {WORDS[i % 8]}s.")]
            if i in doomed:  # cancelled at a random point: waiting, mid-prompt, mid-reply
                stream = s.aprompt_streaming(msgs, max_tokens=200, temperature=0.8, seed=i + 1)
                async with stream:
                    async for _ in stream:
                        break
                    await never.wait()
            if i % 4 == 1:  # cancelled by its own timeout, or done before it
                try:
                    return await s.acomplete(msgs, max_tokens=200, timeout=rng.uniform(0.05, 1))
                except RequestTimeoutError as e:
                    return e
            return await s.acomplete(msgs, max_tokens=24, temperature=0.8, seed=i + 1)

        tasks = [asyncio.create_task(one(i)) for i in range(20)]
        for i in sorted(doomed):
            # Random moments: whatever state the task is in then, it cannot have finished.
            await asyncio.sleep(rng.uniform(0, 0.4))
            tasks[i].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    with Session(opts) as s:
        before = s.get_metrics()
        outcomes = asyncio.run(storm(s))
        for i, o in enumerate(outcomes):
            allowed = (
                (asyncio.CancelledError,)
                if i in doomed
                else (Reply, RequestTimeoutError)
                if i % 4 == 1
                else (Reply,)
            )
            assert isinstance(o, allowed), (i, o)
        finished = [o for o in outcomes if isinstance(o, Reply)]
        assert len(finished) >= 10  # every one neither doomed nor timed
        wait_for(lambda: s.get_metrics().requests_processing == 0, "idle")
        m = s.get_metrics()
        assert (m.requests_processing, m.requests_pending) == (0, 0)
        # Cancelled requests count what they did before they stopped.
        assert m.generated.count - before.generated.count >= sum(
            r.generated.count for r in finished
        )
        after_storm = s.prompt(probe, max_tokens=8, temperature=0)
    with Session(opts) as fresh:
        assert fresh.prompt(probe, max_tokens=8, temperature=0) == after_storm


def test_timeout_stops_the_request_and_the_session_goes_on(chat_session: Session) -> None:
    s = chat_session
    # A reply far longer than 0.3 s can generate, which nothing but its budget ends: the
    # end-of-generation tokens and <|im_start|> (which would end the turn) are banned.
    budget = 2000
    (turn_start,) = s.tokenize("<|im_start|>")
    endless_reply = Sampling(ignore_eos=True, logit_bias={turn_start: -math.inf})
    before = s.get_metrics().generated.count
    started = time.monotonic()
    with pytest.raises(RequestTimeoutError, match=r"timeout of 0\.3 s") as info:
        s.prompt(
            [Message(Role.USER, "Tell me a very long story.")],
            max_tokens=budget,
            sampling=endless_reply,
            timeout=0.3,
        )
    assert isinstance(info.value, TimeoutError)
    assert time.monotonic() - started >= 0.29  # not before its time
    # The request is stopped, not left to run out its budget for nobody.
    wait_for(lambda: s.get_metrics().requests_processing == 0, "idle")
    assert s.get_metrics().generated.count - before < budget
    assert "apple" in s.prompt(ask("apple"), max_tokens=12, temperature=0).lower()


def test_the_event_loop_runs_free_while_four_streams_run(chat_session: Session) -> None:
    """Waiting for the next piece never blocks the event loop: while four streams of 64
    tokens are under way, another task gets through hundreds of loop turns (blocked on each
    token instead, they would take longer than the streams themselves)."""
    s = chat_session
    turns = 300

    async def main() -> tuple[int, int, list[int]]:
        all_started = asyncio.Event()
        started: set[str] = set()
        done: list[str] = []

        async def stream(w: str) -> int:
            n = 0
            async for _ in s.agenerate(endless(s, ask(w), 64)):
                n += 1
                started.add(w)
                if len(started) == 4:
                    all_started.set()
            done.append(w)
            return n

        async def other_task() -> tuple[int, int]:
            await all_started.wait()
            for _ in range(turns):
                await asyncio.sleep(0)  # one turn of the loop
            return len(done), s.get_metrics().requests_processing

        busy = asyncio.create_task(other_task())
        counts = await asyncio.gather(*(stream(w) for w in WORDS[:4]))
        finished_meanwhile, processing = await busy
        return finished_meanwhile, processing, counts

    finished_meanwhile, processing, counts = asyncio.run(main())
    assert counts and all(n > 0 for n in counts) and sum(counts) > 20
    assert finished_meanwhile == 0 and processing == 4, (
        f"the other task's {turns} loop turns took until {finished_meanwhile} streams ended"
    )


def test_stream_reply_and_typed_close(chat_session: Session) -> None:
    s = chat_session
    stream = s.prompt_streaming(ask("piano"), max_tokens=16, temperature=0)
    text = "".join(stream)
    assert stream.reply is not None and stream.reply.text == text.strip()
    assert stream.reply.generated.count <= 16
    assert stream.reply.time_to_first_token.total_seconds() > 0
    stream2 = s.prompt_streaming(ask("piano"), max_tokens=200, temperature=0)
    next(stream2)
    stream2.close()
    assert stream2.reply is None

    async def main() -> None:
        st = s.aprompt_streaming(ask("tiger"), max_tokens=200, temperature=0)
        await st.__anext__()
        await st.aclose()
        assert st.reply is None

    asyncio.run(main())
    deadline = time.monotonic() + 5
    while s.get_metrics().requests_processing and time.monotonic() < deadline:
        time.sleep(0.01)
    assert s.get_metrics().requests_processing == 0


def test_next_turn_stays_cheap_while_others_talk(chat_session: Session) -> None:
    """A conversation's next turn finds its slot's cache even while other users stream."""
    s = chat_session
    convo = [Message(Role.USER, "My name is Ada. Remember it, please.")]
    first = s.complete(convo, max_tokens=24, temperature=0)
    convo += [Message(Role.ASSISTANT, first.text), Message(Role.USER, "What is my name?")]
    others = [s.prompt_streaming(ask(w), max_tokens=64, temperature=0) for w in ("river", "cloud")]
    for o in others:
        next(o)
    second = s.complete(convo, max_tokens=16, temperature=0)
    for o in others:
        o.close()
    n = s.count_tokens(convo)
    assert second.cached_tokens >= s.count_tokens(convo[:1])
    assert second.prompt.count < 0.5 * n
