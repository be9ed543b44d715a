"""The engine thread: the only code that touches the llama.cpp context.

Each step builds one batch with the next token of every generating sequence plus
chunks of the prompts being evaluated, calls ``llama_decode`` once, and samples
every sequence that has logits with its own native sampler at its index in the
batch. Requests join and leave between steps; a lone request is the one-slot case
of the same loop. Consumers (threads or asyncio tasks) only push requests in and
read their output channels, so nothing in the context is shared between threads.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import enum
import logging
import threading
import time
from collections.abc import Callable, Sequence, Sized
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np

from ...errors import BusyError, InvalidInputError, LLMError, SessionClosedError
from ...metrics import TokenPerformance
from ...sampling import TokenProb
from ..base import FinishReason, Outcome
from ._llama import capture, signals_blocked
from .admission import Admission
from .draft_cost import DraftCost, drafting_pays
from .logprobs import token_probs
from .model import Context, Model
from .ngram import NgramDrafter
from .prompt_cache import CachedPrompt, PromptCache
from .request import Request
from .slot import UNBOUNDED, Slot, SlotState, choose_slot, common_prefix, plan_batch

__all__ = ["Engine"]

GENERATING, PROMPT = SlotState.GENERATING, SlotState.PROMPT
T = TypeVar("T")

logger = logging.getLogger(__name__)

_DECODE_NO_KV_SLOT = 1
_DECODE_ABORTED = 2
_CLOSE_WAIT = 30.0
_SPEC_MAX_SLOTS = 2
_IDLE_EXIT = 1.0
"""Seconds without work after which the engine thread ends (the next request starts a new
one). An idle thread keeps its OpenMP workers, and libgomp shortens its spin-waits for
every team while it manages more threads than there are CPUs: one idle Session cost
another in the same process ~20 % of its speed on two cores (98 vs 124 tok/s)."""


@dataclass
class EngineCounters:
    """Totals since the start, as llama-server counts them for ``/metrics``."""

    prompt_cached: int = 0
    """Prompt tokens found in the cells or the prompt cache, not evaluated again."""
    decode_calls: int = 0
    busy_slots: int = 0
    """Summed over decode calls: the slots each one served."""
    max_tokens: int = 0
    """The longest sequence (prompt and reply) a slot held at the end of a request."""
    drafted: int = 0
    draft_accepted: int = 0
    draft_steps: int = 0


class _Next(enum.Enum):
    STEP = "step"
    IDLE = "idle"
    CLOSE = "close"


class Engine:
    """Schedules requests onto ``ctx.parallel`` slots and decodes them together.

    The engine thread exists while there is work, and ends after :data:`_IDLE_EXIT`
    seconds without any (see there why).
    """

    def __init__(
        self,
        model: Model,
        ctx: Context,
        max_pending: int,
        cache_limit: int | None = 0,
        speculative: tuple[int, int] | None = None,
        context_shift: bool = False,
    ) -> None:
        self.ll = ll = model.ll
        self.model, self.ctx = model, ctx
        self.slots = [Slot(seq) for seq in range(ctx.parallel)]
        self._active: list[Slot] = []
        self._admission: Admission[Request] = Admission(max_pending)
        self._cond = threading.Condition()
        self._closing = False
        self.prompt = TokenPerformance()
        self.generated = TokenPerformance()
        self.counters = EngineCounters()
        n = ctx.n_batch
        self._batch = ll.llama_batch_init(n, 0, 1)
        b = self._batch
        self._tok = np.ctypeslib.as_array(b.token, shape=(n,))
        self._pos = np.ctypeslib.as_array(b.pos, shape=(n,))
        self._logits = np.ctypeslib.as_array(b.logits, shape=(n,))
        np.ctypeslib.as_array(b.n_seq_id, shape=(n,))[:] = 1
        self._seq_id = b.seq_id
        self._piece_buf = ctypes.create_string_buffer(256)
        self._in_batch: list[Request] = []
        self._abort_cb = ll.ggml_abort_callback(self._should_abort)
        self._no_abort = ll.ggml_abort_callback()  # NULL: no callback
        self._thread: threading.Thread | None = None
        self._calls: list[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = []
        self.speculative = speculative
        """(n-gram size, most tokens drafted per step) when drafting; None: off."""
        self.draft_cost = DraftCost()
        self.context_shift = context_shift and bool(ll.llama_memory_can_shift(ctx.mem))
        """Whether a reply that fills the context goes on, its slot's older half dropped
        (llama-server's ``--context-shift``); off where the KV cache cannot shift."""
        if context_shift and not self.context_shift:
            logger.warning("this model's KV cache cannot shift; context shift is off")
        self.cache = PromptCache(cache_limit) if cache_limit != 0 else None
        """Conversations out of the slots, in host memory (None: ``cache_ram=0``)."""

    # -- consumer side (any thread) ------------------------------------------------------

    @property
    def processing(self) -> int:
        return len(self._active)

    @property
    def pending(self) -> int:
        return len(self._admission)

    @property
    def kv_tokens(self) -> int:
        return sum(len(s.cached) for s in self.slots)

    @property
    def cache_bytes(self) -> int:
        return self.cache.bytes if self.cache is not None else 0

    @property
    def cache_tokens(self) -> int:
        return self.cache.n_tokens if self.cache is not None else 0

    def submit(self, req: Request) -> None:
        with self._cond:
            if self._closing:
                raise SessionClosedError("the session is closed; create a new Session")
            free = sum(1 for s in self.slots if not s.busy)
            self._admission.push(req, free_slots=free)
            if self._thread is None:
                self._start_thread()
            self._cond.notify()

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the engine thread between two steps (the only thread that may
        touch the context) and return its result."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._cond:
            if self._closing:
                raise SessionClosedError("the session is closed; create a new Session")
            self._calls.append((fn, future))
            if self._thread is None:
                self._start_thread()
            self._cond.notify()
        return future.result()

    def _run_calls(self) -> None:
        with self._cond:
            calls, self._calls = self._calls, []
        for fn, future in calls:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as e:
                    future.set_exception(e)

    def _start_thread(self) -> None:
        """Start the engine thread (called with the lock held)."""
        thread = threading.Thread(target=self._run, name="llm-inproc-engine", daemon=True)
        with signals_blocked():
            thread.start()
        self._thread = thread

    def cancel(self, req: Request) -> None:
        with self._cond:
            req.cancelled = True
            if self._admission.remove(req):
                self.free_sampler(req)
                req.push(Outcome("cancelled"))

    def free_sampler(self, req: Request) -> None:
        """Free a request's sampler chain (once; never while a slot samples with it)."""
        if req.sampler is not None:
            req.sampler.free()
            req.sampler = None

    def close(self) -> None:
        """Stop the engine, end every request with :class:`SessionClosedError`, free memory."""
        with self._cond:
            self._closing = True
            thread = self._thread
            self._cond.notify_all()
        if thread is None:  # idle: no thread, so nothing in flight; free here
            self._shutdown()
            return
        if threading.current_thread() is not thread:
            thread.join(_CLOSE_WAIT)
            if thread.is_alive():
                logger.warning("the engine is still finishing a step; it frees the model after")

    # -- engine thread --------------------------------------------------------------------

    def _run(self) -> None:
        with capture() as said:
            self._said = said
            try:
                while (next_ := self._wait_for_work()) is _Next.STEP:
                    if self._calls:
                        self._run_calls()
                    self._step()
                if next_ is _Next.IDLE:
                    return  # the context stays; the next request starts a thread
            except BaseException as e:  # a bug must not leave consumers waiting forever
                logger.exception("the engine failed")
                self._end_all(LLMError(f"the in-process engine failed: {e}"))
            self._shutdown()

    def _shutdown(self) -> None:
        """End what is left and free the context: once, by the engine thread, or by
        ``close()`` when there is no thread (none starts once closing)."""
        self._end_all(SessionClosedError("the session was closed during this request"))
        self._free()

    def _wait_for_work(self) -> _Next:
        with self._cond:
            while not (self._closing or self._active or self._admission or self._calls):
                if not self._cond.wait(_IDLE_EXIT) and not (
                    self._closing or self._active or self._admission or self._calls
                ):
                    self._thread = None
                    return _Next.IDLE
            if self._closing:
                return _Next.CLOSE
            self._admit()
            return _Next.STEP

    def _admit(self) -> None:
        """Give waiting requests the free slots (called with the lock held)."""
        free = [s for s in self.slots if not s.busy]
        while free and self._admission:
            req = self._admission.pop()
            assert req is not None
            if req.cancelled:
                self.free_sampler(req)
                req.push(Outcome("cancelled"))
                continue
            slot = choose_slot(free, req.tokens)
            free.remove(slot)
            self._start(slot, req)
        self._offload_idle()

    def _offload_idle(self) -> None:
        """Idle conversations stay in the shared cells only while nothing else runs: beside
        a running request they would cost it (attention spans every used cell), so they
        move to host memory, from where their next turn restores them."""
        if self.cache is None or not self._active:
            return
        for slot in self.slots:
            if not slot.busy and slot.cached:
                self._save(slot)
                self._clear(slot)

    def _save(self, slot: Slot) -> None:
        """Copy the slot's conversation to host memory (its cells stay as they are)."""
        assert self.cache is not None
        if slot.cached and (data := self._copy_out(slot, self.cache.fits)) is not None:
            self.cache.put(slot.cached, data)

    def _copy_out(self, slot: Slot, fits: Callable[[int], bool] = lambda n: True) -> Any:
        """llama.cpp's bytes for the slot's cells (a ctypes array), or None."""
        ll, ctx = self.ll, self.ctx.ptr
        size = int(ll.llama_state_seq_get_size(ctx, slot.seq))
        if not fits(size):
            return None
        buf = (ctypes.c_uint8 * size)()
        return buf if ll.llama_state_seq_get_data(ctx, buf, size, slot.seq) == size else None

    def _copy_in(self, slot: Slot, tokens: Sequence[int], data: Any) -> bool:
        """Load a state into the slot's (cleared) cells; False if llama.cpp refused it."""
        self._clear(slot)
        if self.ll.llama_state_seq_set_data(self.ctx.ptr, data, len(data), slot.seq) == 0:
            self._clear(slot)
            return False
        slot.cached = list(tokens)
        return True

    # -- conversations in and out (run through call()) ----------------------------------------

    def states(self) -> list[tuple[list[int], Sized]]:
        """Every conversation held: idle slots' cells and the prompt cache's states."""
        out = [
            (list(s.cached), data)
            for s in self.slots
            if not s.busy and s.cached and (data := self._copy_out(s)) is not None
        ]
        if self.cache is not None:
            out += [(list(e.tokens), e.data) for e in self.cache.entries()]
        return out

    def keep(self, states: Sequence[tuple[Sequence[int], Sized]]) -> int:
        """Put states read back from disk into the prompt cache; how many were kept."""
        if self.cache is None:
            raise InvalidInputError(
                "this session has no prompt cache (cache_ram=0); create it with cache_ram "
                "above 0 (MiB) or -1 to load saved conversations"
            )
        for tokens, data in states:
            self.cache.put(tokens, data)
        return len(states)

    def slot_state(self, seq: int) -> tuple[list[int], Sized]:
        slot = self._idle_slot(seq)
        data = self._copy_out(slot) if slot.cached else None
        if data is None:
            raise InvalidInputError(f"slot {seq} holds no conversation to save")
        return list(slot.cached), data

    def restore_slot(self, seq: int, tokens: Sequence[int], data: Sized) -> None:
        """Load a state into slot ``seq``; if llama.cpp refuses it, the slot is unchanged."""
        slot = self._idle_slot(seq)
        before = (list(slot.cached), self._copy_out(slot)) if slot.cached else None
        if self._copy_in(slot, tokens, data):
            return
        if before is not None and before[1] is not None:
            self._copy_in(slot, *before)
        raise InvalidInputError(
            "llama.cpp refused the saved state (damaged, or saved with another context "
            "layout); the slot is unchanged"
        )

    def erase_slot(self, seq: int) -> int:
        slot = self._idle_slot(seq)
        n = len(slot.cached)
        self._clear(slot)
        return n

    def _idle_slot(self, seq: int) -> Slot:
        if not 0 <= seq < len(self.slots):
            raise InvalidInputError(
                f"slot {seq} does not exist; this session has slots 0 to {len(self.slots) - 1}"
            )
        slot = self.slots[seq]
        if slot.busy:
            raise BusyError(f"slot {seq} is busy with a request; try again when it is idle")
        return slot

    def _clear(self, slot: Slot) -> None:
        self.ll.llama_memory_seq_rm(self.ctx.mem, slot.seq, -1, -1)
        slot.forget()

    def _restore(self, slot: Slot, entry: CachedPrompt, shared: int) -> bool:
        """Load a kept conversation into the slot; False if llama.cpp refused it.

        A conversation that goes on moves into the slot; one whose prefix only is shared
        (another user's, for the same system prompt) stays kept for its own next turn."""
        assert self.cache is not None
        if shared == len(entry.tokens):
            self.cache.take(entry)
        if self._copy_in(slot, entry.tokens, entry.data):
            return True
        logger.warning("llama.cpp refused a cached conversation; evaluating it again")
        return False

    def _start(self, slot: Slot, req: Request) -> None:
        tokens = req.tokens
        common = common_prefix(slot.cached, tokens) if req.request.cache_prompt else 0
        if self.cache is not None:
            found = (
                self.cache.best(tokens, better_than=common) if req.request.cache_prompt else None
            )
            if common < len(slot.cached) or found is not None:
                self._save(slot)  # what the slot gives up stays findable
            if found is not None:
                common = found[1] if self._restore(slot, *found) else 0
        if common == len(tokens):
            common -= 1  # evaluate the last token again to get fresh logits
        if common < len(slot.cached) and not self.ll.llama_memory_seq_rm(
            self.ctx.mem, slot.seq, common, -1
        ):
            self.ll.llama_memory_seq_rm(self.ctx.mem, slot.seq, -1, -1)
            common = 0
        sampling = req.request.sampling
        # With context shift, a reply is bounded by its max_tokens alone, as llama-server's.
        budget = UNBOUNDED if self.context_shift else self.ctx.n_ctx - len(tokens)
        if sampling.max_tokens:
            budget = min(budget, sampling.max_tokens)
        slot.start(req, common, budget)
        if self.speculative is not None:
            slot.drafter = NgramDrafter(*self.speculative)
            slot.drafter.extend(tokens)
        self._active.append(slot)

    def _step(self) -> None:
        for slot in [s for s in self._active if s.req is not None and s.req.cancelled]:
            self._finish(slot, "cancelled")
        if not self._active:
            return
        if self.context_shift:
            for slot in self._active:
                if slot.state is GENERATING and len(slot.cached) + 1 >= self.ctx.n_ctx:
                    self._shift(slot)
        tok, pos, logits, seq_ids = self._tok, self._pos, self._logits, self._seq_id
        n = 0
        outputs: list[tuple[Slot, int]] = []
        drafts = self._drafts() if self.speculative is not None else {}
        extra = sum(len(d) for d in drafts.values())
        generating, chunks = plan_batch(self._active, self.ctx.n_batch - extra)
        for slot in generating:
            # The next token, then any drafted ones after it, each with its logits.
            p0 = len(slot.cached)
            for i, t in enumerate((slot.next_token, *drafts.get(slot, ()))):
                tok[n] = t
                pos[n] = p0 + i
                logits[n] = 1
                seq_ids[n][0] = slot.seq
                n += 1
            outputs.append((slot, n - 1 - len(drafts.get(slot, ()))))
        for slot, k in chunks:
            p0 = len(slot.cached)
            tok[n : n + k] = slot.pending[:k]
            pos[n : n + k] = np.arange(p0, p0 + k, dtype=np.int32)
            logits[n : n + k] = 0
            for i in range(n, n + k):
                seq_ids[i][0] = slot.seq
            if k == len(slot.pending):
                logits[n + k - 1] = 1
                outputs.append((slot, n + k - 1))
            n += k
        started = time.perf_counter()
        if not self._decode(n, chunks):
            return
        if self.speculative is not None and not chunks and len(generating) == 1:
            self.draft_cost.observe(time.perf_counter() - started, extra)
        for slot, k in chunks:
            slot.chunk_evaluated(k)
        for slot, _ in outputs:
            if slot.state is GENERATING:
                slot.token_evaluated()
        now = time.perf_counter()
        ctx = self.ctx.ptr
        for slot, idx in outputs:
            if slot.first_at == 0.0:
                slot.first_at = now
            if slot in drafts:
                self._verify(slot, idx, drafts[slot])
            else:
                self._emit(slot, self._draw(slot, ctx, idx))

    def _shift(self, slot: Slot) -> None:
        """Drop the older half of a full slot's tokens (its first one kept, the BOS), and
        move the rest back in the cells, as llama-server's context shift does."""
        ll, mem = self.ll, self.ctx.mem
        n_keep = min(1 if ll.llama_vocab_get_add_bos(self.model.vocab) else 0, self.ctx.n_ctx - 4)
        n_left = len(slot.cached) - n_keep
        n_discard = max(0, min(n_left // 2, n_left - 1))
        if n_discard == 0:
            return
        ll.llama_memory_seq_rm(mem, slot.seq, n_keep, n_keep + n_discard)
        ll.llama_memory_seq_add(mem, slot.seq, n_keep + n_discard, len(slot.cached), -n_discard)
        del slot.cached[n_keep : n_keep + n_discard]
        logger.info("slot %d: context shift, %d tokens dropped", slot.seq, n_discard)

    def _draw(self, slot: Slot, ctx: Any, idx: int) -> int:
        token: int = slot.sampler.sample(ctx, idx)
        if slot.probs is not None:
            slot.probs.append(self._probs(idx, token, slot.req))
        return token

    # -- speculative decoding ---------------------------------------------------------------

    def _drafts(self) -> dict[Slot, list[int]]:
        """Draft tokens for the generating slots whose drafter is on: only while at most
        two slots generate (with more, the batch already keeps the CPU busy and verifying
        drafts would slow every stream), and never past the reply's budget or the context."""
        generating = [s for s in self._active if s.state is GENERATING]
        if len(generating) > _SPEC_MAX_SLOTS:
            return {}
        out = {}
        for slot in generating:
            if slot.drafter is None:
                continue
            room = min(slot.budget - slot.n_gen - 1, self.ctx.n_ctx - len(slot.cached) - 2)
            longest = self.draft_cost.draft_length(
                slot.drafted, slot.accepted, slot.refused, slot.drafter.max_draft
            )
            draft = slot.drafter.draft(min(room, longest))
            if draft:
                out[slot] = draft
        return out

    def _verify(self, slot: Slot, idx: int, draft: list[int]) -> None:
        """Sample at the next token's logits, then at each drafted token's while the draws
        agree with the draft: every agreeing draft token is already in the cells, so one
        step yields several tokens. Each draw is the sampler's own at the right position,
        so replies are what plain decoding gives (exactly so at temperature 0)."""
        ctx = self.ctx.ptr
        accepted = 0
        slot.drafted += len(draft)  # (before a draw can end the reply: _finish trims)
        for i in range(len(draft) + 1):
            token = self._draw(slot, ctx, idx + i)
            self._emit(slot, token)
            if slot.state is not GENERATING or i == len(draft) or token != draft[i]:
                break
            slot.token_evaluated()  # the draft token, evaluated in this step
            accepted += 1
        if accepted < len(draft) and slot.state is GENERATING:
            slot.refused += 1
            self._trim(slot)  # the refused drafts' cells
        slot.accepted += accepted
        self.counters.draft_steps += 1
        if not drafting_pays(slot.drafted, slot.accepted, self.draft_cost.break_even()):
            slot.drafter = None  # drafting does not pay for this reply: plain decoding

    def _trim(self, slot: Slot) -> None:
        """Drop the cells past the slot's tokens (drafts it did not accept)."""
        self.ll.llama_memory_seq_rm(self.ctx.mem, slot.seq, len(slot.cached), -1)

    def _decode(self, n: int, chunks: list[tuple[Slot, int]]) -> bool:
        """Evaluate the batch; False when nothing was evaluated (the step is retried)."""
        ll, ctx = self.ll, self.ctx.ptr
        self._batch.n_tokens = n
        if chunks:
            # While prompts are evaluated, llama.cpp asks between graph nodes whether to stop,
            # so cancelling a long prompt or closing takes milliseconds, not a whole batch.
            # (Not for generation steps: a Python call per node would cost ~5 %.)
            self._in_batch = [s.req for s in self._active if s.req is not None]
            ll.llama_set_abort_callback(ctx, self._abort_cb, None)
        try:
            rc = ll.llama_decode(ctx, self._batch)
        finally:
            if chunks:
                ll.llama_set_abort_callback(ctx, self._no_abort, None)
        if rc == 0:
            c = self.counters
            c.decode_calls += 1
            c.busy_slots += len(self._active)
            return True
        # Whatever part of the batch was stored, drop it: each slot's list stays exact.
        for slot in self._active:
            ll.llama_memory_seq_rm(self.ctx.mem, slot.seq, len(slot.cached), -1)
        if rc == _DECODE_ABORTED:
            return False
        if rc == _DECODE_NO_KV_SLOT:
            self._make_room()
            return False
        why = "; ".join(self._said.errors) or f"llama_decode returned {rc}"
        self._said.errors.clear()
        for slot in list(self._active):
            ll.llama_memory_seq_rm(self.ctx.mem, slot.seq, -1, -1)
            slot.forget()
            self._fail(slot, LLMError(f"llama.cpp failed to evaluate the batch: {why}"))
        return False

    def _should_abort(self, _data: object) -> bool:
        return self._closing or all(r.cancelled for r in self._in_batch)

    def _make_room(self) -> None:
        """The shared KV cache is full: drop idle slots' caches, oldest first; with none
        left, end the request holding the most cells (its reply is cut: ``length``)."""
        idle = sorted((s for s in self.slots if not s.busy and s.cached), key=lambda s: s.last_used)
        if idle:
            if self.cache is not None:
                self._save(idle[0])
            self._clear(idle[0])
            return
        biggest = max(self._active, key=lambda s: len(s.cached))
        if self.context_shift and biggest.state is GENERATING and len(biggest.cached) > 4:
            self._shift(biggest)
            return
        logger.info("the context is full; ending the request in slot %d", biggest.seq)
        self._finish(biggest, "length")

    def _emit(self, slot: Slot, token: int) -> None:
        ll, vocab = self.ll, self.model.vocab
        req = slot.req
        assert req is not None and slot.decoder is not None
        if ll.llama_vocab_is_eog(vocab, token):
            if slot.probs:
                slot.probs.pop()  # not part of the reply
            self._finish(slot, "stop")
            return
        piece = self._piece(token, special=False)
        if not piece and self._is_stop_token(token, req.request.stops):
            if slot.probs:
                slot.probs.pop()
            self._finish(slot, "stop")  # a control token such as <start_of_turn>
            return
        if not piece and req.request.tool_format is not None:
            # Tool-call markers are control tokens in many models ([TOOL_CALLS],
            # <|python_tag|>): the reply's parser must see them, as llama-server's
            # preserved tokens.
            piece = self._piece(token, special=True)
        slot.n_gen += 1
        if piece:
            text = slot.decoder.decode(piece)
            if text:
                req.push(text)
        if slot.n_gen >= slot.budget:
            self._finish(slot, "length")
        else:
            slot.sampled(token)
            if slot.drafter is not None:
                slot.drafter.extend((token,))

    def _probs(self, idx: int, token: int, req: Request | None) -> TokenProb:
        """The chosen token's probability and the most likely ones, from the raw logits."""
        assert req is not None
        ptr = self.ll.llama_get_logits_ith(self.ctx.ptr, idx)
        logits = np.ctypeslib.as_array(ptr, shape=(self.model.n_vocab,))
        prob, top = token_probs(logits, token, req.request.sampling.n_probs)
        piece = self._piece_text
        return TokenProb(
            token, piece(token), prob, tuple(TokenProb(t, piece(t), p) for t, p in top)
        )

    def _piece_text(self, token: int) -> str:
        """A token's text as ``logprobs`` show it (control tokens by name)."""
        return self._piece(token, special=True).decode("utf-8", errors="replace")

    def _piece(self, token: int, *, special: bool) -> bytes:
        """The one way a token becomes bytes: llama.cpp's piece, in a buffer that grows
        once for a long piece (no allocation per token)."""
        ll, vocab, buf = self.ll, self.model.vocab, self._piece_buf
        n = ll.llama_token_to_piece(vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = self._piece_buf = ctypes.create_string_buffer(-n)
            n = ll.llama_token_to_piece(vocab, token, buf, len(buf), 0, special)
        return ctypes.string_at(buf, n) if n > 0 else b""

    def _is_stop_token(self, token: int, stops: tuple[str, ...]) -> bool:
        if not stops or not self.ll.llama_vocab_is_control(self.model.vocab, token):
            return False
        return self.model.token_text(token) in stops

    def _release(self, slot: Slot) -> Request:
        req = slot.release()
        self.free_sampler(req)
        self._active.remove(slot)
        return req

    def _finish(self, slot: Slot, reason: FinishReason) -> None:
        now = time.perf_counter()
        if slot.decoder is not None:
            tail = slot.decoder.decode(b"", final=True)
            if tail and slot.req is not None:
                slot.req.push(tail)
        first = slot.first_at
        prompt = TokenPerformance(
            slot.evaluated, timedelta(seconds=(first or now) - slot.prompt_started)
        )
        generated = TokenPerformance(slot.n_gen, timedelta(seconds=now - first if first else 0))
        if slot.drafted:
            self._trim(slot)  # refused drafts must not outlive the reply in its cells
            logger.debug(
                "slot %d: %d of %d drafted tokens accepted (break-even here: %.0f %%)",
                slot.seq,
                slot.accepted,
                slot.drafted,
                100 * self.draft_cost.break_even(),
            )
        self.prompt += prompt
        self.generated += generated
        c = self.counters
        c.prompt_cached += slot.reused
        c.drafted += slot.drafted
        c.draft_accepted += slot.accepted
        c.max_tokens = max(c.max_tokens, len(slot.cached))
        req = self._release(slot)
        self._offload_idle()
        req.push(
            Outcome(
                reason,
                prompt=prompt,
                cached_tokens=slot.reused,
                generated=generated,
                time_to_first_token=timedelta(seconds=first - req.arrived if first else 0),
                logprobs=tuple(slot.probs) if slot.probs is not None else None,
                drafted=slot.drafted,
                draft_accepted=slot.accepted,
            )
        )

    def _fail(self, slot: Slot, error: BaseException) -> None:
        self._release(slot).push(error)

    def _end_all(self, error: BaseException) -> None:
        for slot in list(self._active):
            self._fail(slot, error)
        with self._cond:
            self._closing = True
            waiting = self._admission.drain()
            calls, self._calls = self._calls, []
        for _, future in calls:
            if future.set_running_or_notify_cancel():
                future.set_exception(error)
        for req in waiting:
            self.free_sampler(req)
            req.push(error)

    def _free(self) -> None:
        for slot in self.slots:
            slot.forget()
        if self.cache is not None:
            self.cache.clear()
        self.ll.llama_batch_free(self._batch)
        self.ctx.free()
        self.model.free()
