"""Embeddings and reranking in-process: a second ``llama_context`` on the session's weights.

Why a second context, not slots of the generating one:

* Embedding never touches generation's KV cache. A unified cache gives idle slots' cached
  prefixes up when a busy sequence needs cells; a batch of 64 texts would evict every
  conversation a bot keeps warm. Here the cells are the embedding context's own.
* ``embeddings`` and ``pooling_type`` are context-wide in llama.cpp: llama-server flips
  ``llama_set_embeddings`` per batch, so a batch is all-embedding or all-generation; and
  an embedding context outputs every token, which needs output buffers sized for that.
* The weights are shared (a ``llama_context`` holds only its KV cache and buffers), and
  the context is made on first use, so a session that never embeds pays nothing.

Every ``llama_decode`` still runs on the engine thread (:meth:`Engine.call`), between two
generation steps: two threads decoding at once on the same cores make both wait on each
other's spinning workers, and a step of generation waits for at most one embedding batch.

A generative model (a GGUF that names no pooling type) is embedded through its per-token
hidden states, pooled here (:mod:`llm_inproc.embeddings.pooling`). llama.cpp computes the
output head for every token of an embedding batch (``output_all``), and a graph callback
stops the graph once the final norm (the hidden states) is done, so the head is skipped:
on Gemma 3 270M, whose 262k-token head is two thirds of its weights, that is ~2x the
throughput (measured, benchmarks/RESULTS.md). It also lets a text longer than one batch
be evaluated in pieces through the KV cache. A model that names its pooling (a real
embedding model, maybe non-causal, maybe with dense layers after pooling) and a reranker
are pooled by llama.cpp itself, exactly as llama-server does, whole texts per batch.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from ...embeddings.batches import Span, fit, plan_batches
from ...embeddings.pooling import LLAMA_POOLING, pool, pooling_name
from ...errors import InvalidInputError, LLMError, ModelLoadError, SessionClosedError
from ..base import Vectors
from ._llama import capture

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from .engine import Engine
    from .model import Model

__all__ = ["RERANK_ARCHITECTURES", "InprocEmbedder"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

N_SEQ = 64
"""Most texts evaluated in one batch."""
_BATCH_MAX = 512
"""Most tokens per batch: CPU matrix kernels gain little past it (pp512 is llama-bench's
measure of prompt speed), and the output buffers grow with it."""
_OUTPUT_BUDGET = 256 * 2**20
"""Bytes for one batch's logits: llama.cpp sizes an embedding context's output buffer and
its graph's head for every token of a batch, ``n_vocab`` floats each (1 MiB a token for
Gemma's 262k vocabulary), so the batch is capped by this budget too."""
_BATCH_MIN = 64

RERANK_ARCHITECTURES = frozenset(
    {"bert", "jina-bert-v2", "modern-bert", "neo-bert", "qwen3", "qwen3vl"}
)
"""Architectures whose llama.cpp loader reads a classification head (``cls``/``cls.output``
tensors). Rank pooling on any other model reads a raw hidden-state value, not a score."""

_HIDDEN_NAMES = (b"result_norm", b"result_embd_pooled")
"""The final norm's output in every llama.cpp graph (renamed by pooling ``none``)."""


def batch_size(n_vocab: int, n_ctx: int) -> int:
    """Tokens per embedding batch for a model with ``n_vocab`` tokens (see the constants)."""
    by_memory = _OUTPUT_BUDGET // (4 * max(1, n_vocab))
    return max(1, min(n_ctx, _BATCH_MAX, max(_BATCH_MIN, by_memory // 32 * 32)))


@dataclass
class _Ctx:
    """One embedding context: how it pools, and its batch."""

    ptr: Any
    mem: Any
    batch: Any
    n_batch: int
    n_ctx: int
    llama_pooling: int
    """The pooling llama.cpp applies (``none`` where the session pools hidden states)."""
    hidden: bool
    """Whether the session pools the per-token hidden states itself."""
    can_split: bool
    """Whether a text longer than a batch may be evaluated in pieces."""


class _GraphStop:
    """The graph callback that ends a decode once the hidden states are computed.

    ggml asks, node by node, whether the caller wants a node's data; we want the final
    norm's, and once it is computed we answer False, which ends the graph there (the output
    head and llama.cpp's own pooling come after it). Any failure answers "go on": the
    result is then merely computed in full."""

    def __init__(self, ll: Any) -> None:
        import llama_cpp._ggml as ggml

        lib = ctypes.CDLL(ggml.libggml._name)  # our own handle: our own argtypes
        get_name = lib.ggml_get_name
        get_name.restype = ctypes.c_char_p
        get_name.argtypes = [ctypes.c_void_p]
        self._name = get_name
        self.callback = ll.ggml_backend_sched_eval_callback(self._eval)

    def _eval(self, tensor: int, ask: bool, _user: int) -> bool:
        try:
            if ask:
                return self._name(tensor) in _HIDDEN_NAMES
            return False
        except BaseException:  # never let an exception cross into C
            return not ask


class InprocEmbedder:
    """Embeds and reranks on the session's model; see the module docstring."""

    def __init__(
        self, model: Model, engine: Engine, *, n_ctx: int, threads: int, flash_attention: bool
    ) -> None:
        self._model = model
        self._engine = engine
        self._n_ctx = n_ctx
        self._threads = threads
        self._flash = flash_attention
        self._ctx: _Ctx | None = None
        self._key: tuple[bool, int] | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._stop: _GraphStop | None = None
        ll = model.ll
        arch = model.architecture or ""
        self.architecture = arch
        value = model.meta(f"{arch}.pooling_type")
        self.model_pooling = pooling_name(int(value)) if value.lstrip("-").isdigit() else None
        """The pooling type the GGUF names; None when it names none (every chat model)."""
        self.causal = model.meta(f"{arch}.attention.causal").lower() != "false"
        self.n_embd = int(ll.llama_model_n_embd_out(model.ptr))
        self.n_vocab = model.n_vocab
        self.batch_tokens = batch_size(self.n_vocab, n_ctx)

    # -- the contract (Session's thread) ----------------------------------------------------

    def default_pooling(self) -> str:
        """What ``pooling=None`` means: the GGUF's pooling type, else mean (the usual choice
        for a generative model's vectors; llama-server would give one vector per token)."""
        return self.model_pooling or "mean"

    def embed(
        self, inputs: Sequence[str | Sequence[int]], pooling: str | None, *, truncate: bool
    ) -> Vectors:
        """Unnormalised vectors of ``inputs`` (texts, or token ids used as they are)."""
        pooling = pooling or self.default_pooling()
        native = self.model_pooling is not None or pooling == "rank"
        key = (not native, LLAMA_POOLING[pooling] if native else 0)
        limit, where = self._limit(key)
        tokens = [
            fit(self._tokens(x), limit, truncate=truncate, index=i, where=where)
            for i, x in enumerate(inputs)
        ]
        rows = self._run(key, tokens)
        if not native:
            rows = [pool(r, pooling) for r in rows]
        elif pooling != "none":
            rows = [r.reshape(-1) for r in rows]
        return Vectors(rows, [len(t) for t in tokens], pooling)

    def rerank(self, query: str, documents: Sequence[str], *, truncate: bool) -> Vectors:
        """Relevance scores of ``documents`` for ``query`` (one float each, raw)."""
        self.check_reranker()
        key = (False, LLAMA_POOLING["rank"])
        limit, where = self._limit(key)
        tokens = [
            fit(self._pair(query, d), limit, truncate=truncate, index=i, where=where)
            for i, d in enumerate(documents)
        ]
        rows = self._run(key, tokens)
        return Vectors([r.reshape(-1)[:1] for r in rows], [len(t) for t in tokens], "rank")

    def check_reranker(self) -> None:
        """Refuse a model that is not a reranker, saying why."""
        if self.model_pooling != "rank":
            raise InvalidInputError(
                f"this model ({self.architecture or 'unknown architecture'}, pooling "
                f"{self.model_pooling or 'unspecified'}) is not a reranker: reranking needs a "
                "GGUF with rank pooling and a classification head, such as bge-reranker or "
                "Qwen3-Reranker; to compare texts with this model, embed them and take cosines"
            )
        if self.architecture not in RERANK_ARCHITECTURES:
            raise InvalidInputError(
                f"this GGUF names rank pooling but llama.cpp reads no classification head for "
                f"its architecture ({self.architecture}), so its 'scores' would be a raw "
                "hidden-state value; use a reranker GGUF (bert, modern-bert, qwen3 families)"
            )

    def close(self) -> None:
        """Free the context (on the engine thread, after any batch it is running)."""
        with self._lock:
            self._closed = True
            if self._ctx is None:
                return
        try:
            self._engine.call(self._free)
        except SessionClosedError:
            self._free()

    # -- tokens (caller's thread) -------------------------------------------------------------

    def _tokens(self, item: str | Sequence[int]) -> list[int]:
        if isinstance(item, str):
            return self._model.tokenize(item, special=True)
        tokens = list(item)
        n_vocab = self.n_vocab
        for t in tokens:
            if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < n_vocab:
                raise InvalidInputError(f"token id {t!r} is not in [0, {n_vocab})")
        return tokens

    def _pair(self, query: str, document: str) -> list[int]:
        """A query and a document as one reranker input (llama-server's
        ``format_prompt_rerank``): the GGUF's ``rerank`` template, else BOS, query, EOS/SEP,
        document, EOS as the vocabulary asks."""
        model, ll = self._model, self._model.ll
        template = ll.llama_model_chat_template(model.ptr, b"rerank")
        if template:
            text = template.decode("utf-8", "replace")
            text = text.replace("{query}", query).replace("{document}", document)
            tokens = model.tokenize(text, special=True)
            bos_text = model.token_text(model.bos)
            if tokens and tokens[0] == model.bos and not text.startswith(bos_text or "\0"):
                del tokens[0]  # llama-server tokenizes the template without adding BOS
            return tokens
        vocab = model.vocab
        eos = model.eos if model.eos >= 0 else int(ll.llama_vocab_sep(vocab))
        out: list[int] = []
        if ll.llama_vocab_get_add_bos(vocab):
            out.append(model.bos)
        out += model.tokenize(query, special=False)
        if ll.llama_vocab_get_add_eos(vocab):
            out.append(eos)
        if ll.llama_vocab_get_add_sep(vocab):
            out.append(int(ll.llama_vocab_sep(vocab)))
        out += model.tokenize(document, special=False)
        if ll.llama_vocab_get_add_eos(vocab):
            out.append(eos)
        return out

    def _limit(self, key: tuple[bool, int]) -> tuple[int, str]:
        """The most tokens one input may have in a context of ``key``, and its name."""
        hidden = key[0]
        if hidden and self.causal:
            return self._n_ctx, "the context"
        n = min(self._n_ctx, max(_BATCH_MAX, self.batch_tokens))
        return n, "one batch (llama.cpp pools a text within one batch)"

    # -- decoding (engine thread, one batch per call) --------------------------------------

    def _call(self, fn: Callable[[], T]) -> T:
        def guarded() -> T:
            if self._closed:
                raise SessionClosedError("the session is closed; create a new Session")
            return fn()

        return self._engine.call(guarded)

    def _run(self, key: tuple[bool, int], tokens: list[list[int]]) -> list[npt.NDArray[Any]]:
        import numpy as np

        ctx = self._call(partial(self._context, key))
        if not ctx.can_split:  # llama.cpp would pool a piece, or assert: refuse it here
            for i, t in enumerate(tokens):
                fit(t, ctx.n_batch, truncate=False, index=i, where="one batch")
        parts: list[list[npt.NDArray[np.float32]]] = [[] for _ in tokens]
        for spans in plan_batches([len(t) for t in tokens], ctx.n_batch, N_SEQ):
            out = self._call(partial(self._decode, key, tokens, spans))
            for span, rows in zip(spans, out, strict=True):
                parts[span.item].append(rows)
        return [p[0] if len(p) == 1 else np.concatenate(p) for p in parts]

    def _context(self, key: tuple[bool, int]) -> _Ctx:
        """The context for ``key`` (made now, replacing one that pools otherwise)."""
        if self._ctx is not None and self._key == key:
            return self._ctx
        self._free()
        hidden, llama_pooling = key
        ll, model = self._model.ll, self._model
        can_split = hidden and self.causal
        n_batch = self.batch_tokens if can_split else self._limit(key)[0]
        n_ctx = self._n_ctx if can_split else n_batch
        params = ll.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = N_SEQ
        params.kv_unified = True
        params.n_threads = self._threads
        params.n_threads_batch = self._threads
        params.embeddings = True
        params.pooling_type = llama_pooling
        params.flash_attn_type = 1 if self._flash else 0
        if hidden:
            if self._stop is None:
                try:
                    self._stop = _GraphStop(ll)
                except (ImportError, OSError, AttributeError) as e:
                    logger.info("embedding without skipping the output head: %s", e)
            if self._stop is not None:
                params.cb_eval = self._stop.callback
        with capture() as said:
            ptr = ll.llama_init_from_model(model.ptr, params)
        if not ptr:
            raise ModelLoadError(
                f"llama.cpp could not create an embedding context of {n_ctx} tokens: "
                f"{said.reason('no reason given')}. Try a smaller context_length"
            )
        n_batch = int(min(ll.llama_n_batch(ptr), ll.llama_n_ubatch(ptr)))
        batch = ll.llama_batch_init(n_batch, 0, 1)
        self._ctx = _Ctx(
            ptr=ptr,
            mem=ll.llama_get_memory(ptr),
            batch=batch,
            n_batch=n_batch,
            n_ctx=int(ll.llama_n_ctx(ptr)),
            llama_pooling=int(ll.llama_pooling_type(ptr)),
            hidden=hidden,
            can_split=can_split,
        )
        self._key = key
        logger.debug(
            "embedding context: %d cells, batches of %d tokens, llama.cpp pooling %s%s",
            self._ctx.n_ctx,
            n_batch,
            pooling_name(self._ctx.llama_pooling),
            ", output head skipped" if hidden and self._stop is not None else "",
        )
        return self._ctx

    def _decode(
        self, key: tuple[bool, int], tokens: list[list[int]], spans: list[Span]
    ) -> list[npt.NDArray[Any]]:
        """Evaluate one batch; each span's rows (token vectors, or its pooled vector)."""
        import numpy as np

        ctx = self._context(key)
        ll, b = self._model.ll, ctx.batch
        if all(s.first for s in spans):
            ll.llama_memory_clear(ctx.mem, True)
        n = sum(s.end - s.start for s in spans)
        if n > ctx.n_batch:  # llama.cpp asserts on this: never let it
            raise LLMError(f"an embedding batch of {n} tokens exceeds {ctx.n_batch} (a bug)")
        tok = np.ctypeslib.as_array(b.token, shape=(ctx.n_batch,))
        pos = np.ctypeslib.as_array(b.pos, shape=(ctx.n_batch,))
        at = 0
        seq_id = b.seq_id
        for seq, span in enumerate(spans):
            size = span.end - span.start
            tok[at : at + size] = tokens[span.item][span.start : span.end]
            pos[at : at + size] = np.arange(span.start, span.end)
            for i in range(at, at + size):
                seq_id[i][0] = seq
            at += size
        np.ctypeslib.as_array(b.n_seq_id, shape=(ctx.n_batch,))[:n] = 1
        np.ctypeslib.as_array(b.logits, shape=(ctx.n_batch,))[:n] = 1
        b.n_tokens = n
        with capture() as said:
            rc = ll.llama_decode(ctx.ptr, b)
        if rc != 0:
            raise LLMError(
                f"llama.cpp could not evaluate an embedding batch of {n} tokens (code {rc}): "
                f"{said.reason('no reason given')}"
            )
        d = self.n_embd
        out: list[npt.NDArray[Any]] = []
        if ctx.llama_pooling == LLAMA_POOLING["none"]:
            ptr = ll.llama_get_embeddings(ctx.ptr)
            if not ptr:
                raise LLMError("llama.cpp returned no embeddings for a batch (a bug)")
            allrows = np.ctypeslib.as_array(ptr, shape=(n, d))
            at = 0
            for span in spans:
                size = span.end - span.start
                out.append(np.array(allrows[at : at + size], dtype=np.float32))
                at += size
            return out
        width = 1 if ctx.llama_pooling == LLAMA_POOLING["rank"] else d
        for seq in range(len(spans)):
            ptr = ll.llama_get_embeddings_seq(ctx.ptr, seq)
            if not ptr:
                raise LLMError(f"llama.cpp returned no pooled embedding for sequence {seq}")
            out.append(np.array(np.ctypeslib.as_array(ptr, shape=(width,)), dtype=np.float32))
        return out

    def _free(self) -> None:
        ctx, self._ctx, self._key = self._ctx, None, None
        if ctx is not None:
            ll = self._model.ll
            ll.llama_batch_free(ctx.batch)
            ll.llama_free(ctx.ptr)
