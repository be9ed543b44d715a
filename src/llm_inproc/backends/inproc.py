"""The in-process backend: llama.cpp through llama-cpp-python's low-level bindings.

We drive llama.cpp's native sampler chain and our own decode loop instead of
``Llama.create_completion``: sampling over a 262k vocabulary in Python (numpy
logits copies per token) is what makes the high-level loop slower than
``llama-server``. Per token, the loop makes four C calls and no allocation.
The KV cache keeps the previous prompt and reply, so the next turn of a
conversation only evaluates what is new.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from ..chat_template import render_chat_template
from ..errors import (
    ContextOverflowError,
    InvalidInputError,
    LLMError,
    ModelLoadError,
    ModelNotFoundError,
    SessionClosedError,
)
from ..hardware import physical_cores
from ..metrics import Metrics, TokenPerformance
from ..sampling import Sampling
from ._llama import lib, log
from .base import GenerationRequest
from .gate import Gate

__all__ = ["InprocBackend", "ModelInfo"]

logger = logging.getLogger(__name__)

_GGUF_MAGIC = b"GGUF"
_N_BATCH = 512
_FLASH_ATTN_DISABLED = 0
_DECODE_ABORTED = 2


@dataclass(frozen=True)
class ModelInfo:
    """Facts about the loaded model, read from llama.cpp after loading."""

    architecture: str
    """``general.architecture`` from the GGUF, e.g. ``gemma3``."""
    description: str
    """llama.cpp's one-line description (size and quantization)."""
    chat_template: str | None
    """``tokenizer.chat_template``, or None when the file has none."""
    n_ctx: int
    """The context window actually allocated, in tokens."""
    n_ctx_train: int
    """The context length the model was trained with."""
    n_layers: int
    gpu_layers_offloaded: int
    """Layers llama.cpp reported offloading to a GPU (0 on a CPU-only build)."""
    gpu_offload_supported: bool
    """Whether this llama-cpp-python build can offload at all."""
    threads: int


def _check_gguf(path: Path) -> None:
    if not path.is_file():
        raise ModelNotFoundError(f"model file {str(path)!r} does not exist; check the path")
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise ModelLoadError(f"cannot read model file {str(path)!r}: {e.strerror}") from e
    if magic != _GGUF_MAGIC:
        raise ModelLoadError(
            f"{str(path)!r} is not a GGUF file (it starts with {magic!r}, not b'GGUF'); "
            "convert the model to GGUF or download a .gguf file"
        )


class InprocBackend:
    """Loads one GGUF file and generates from it, one request at a time."""

    name = "inproc"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        context_length: int = 0,
        gpu_layers: int = -1,
        threads: int | None = None,
        max_pending: int = 64,
    ) -> None:
        self.path = Path(path)
        _check_gguf(self.path)
        self._ll = ll = lib()
        self._gate = Gate(max_pending)
        self._free_lock = threading.Lock()
        self._threads = threads or physical_cores()
        self._model: Any = None
        self._ctx: Any = None
        self._load(ll, context_length, gpu_layers)
        self._cached: list[int] = []
        self._prompt = TokenPerformance()
        self._generated = TokenPerformance()
        self._piece = ctypes.create_string_buffer(256)
        self._one = (ll.llama_token * 1)()
        self._cancel = threading.Event()
        self._abort_cb = ll.ggml_abort_callback(self._should_abort)
        self._no_abort = ll.ggml_abort_callback()  # NULL: no callback

    def _should_abort(self, _data: object) -> bool:
        return self._cancel.is_set() or self._gate.closed

    # -- loading -----------------------------------------------------------------------------

    def _load(self, ll: Any, context_length: int, gpu_layers: int) -> None:
        mparams = ll.llama_model_default_params()
        mparams.n_gpu_layers = 999 if gpu_layers < 0 else gpu_layers
        log.take_errors()
        log.offloaded = None
        started = time.perf_counter()
        model = ll.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not model:
            why = log.take_errors() or "no reason given"
            raise ModelLoadError(
                f"llama.cpp could not load {str(self.path)!r}: {why}. The file may be truncated "
                "or corrupt: delete it and download it again"
            )
        self._model = model
        self._vocab = ll.llama_model_get_vocab(model)
        cparams = ll.llama_context_default_params()
        cparams.n_ctx = context_length
        cparams.n_batch = _N_BATCH
        cparams.n_ubatch = _N_BATCH
        cparams.n_threads = self._threads
        cparams.n_threads_batch = self._threads
        # Keep the whole sliding window so that conversation prefixes stay reusable.
        cparams.swa_full = True
        # Flash attention makes a token's logits depend on the batch it was evaluated in, so a
        # reused KV cache would change greedy and seeded replies. Without it they are bit-exact.
        cparams.flash_attn_type = _FLASH_ATTN_DISABLED
        ctx = ll.llama_init_from_model(model, cparams)
        if not ctx:
            why = log.take_errors() or "no reason given"
            ll.llama_model_free(model)
            self._model = None
            raise ModelLoadError(
                f"llama.cpp could not create a context of {context_length or 'the trained'} tokens "
                f"for {str(self.path)!r}: {why}. Try a smaller context_length"
            )
        self._ctx = ctx
        self._mem = ll.llama_get_memory(ctx)
        self.n_ctx = int(ll.llama_n_ctx(ctx))
        supported = bool(ll.llama_supports_gpu_offload())
        offloaded = log.offloaded[0] if log.offloaded else 0
        if gpu_layers != 0 and not supported:
            level = logging.WARNING if gpu_layers > 0 else logging.INFO
            logger.log(
                level,
                "this llama-cpp-python build cannot offload to a GPU; running on the CPU "
                "(rebuild it with `llm-inproc build --preset cuda` or another GPU preset)",
            )
        tmpl = ll.llama_model_chat_template(model, None)
        self.info = ModelInfo(
            architecture=self._meta("general.architecture"),
            description=self._desc(),
            chat_template=tmpl.decode("utf-8", errors="replace") if tmpl else None,
            n_ctx=self.n_ctx,
            n_ctx_train=int(ll.llama_model_n_ctx_train(model)),
            n_layers=int(ll.llama_model_n_layer(model)),
            gpu_layers_offloaded=offloaded,
            gpu_offload_supported=supported,
            threads=self._threads,
        )
        logger.info(
            "loaded %s (%s) in %.2fs: context %d tokens, %d threads, %d/%d layers on GPU",
            self.path.name,
            self.info.description,
            time.perf_counter() - started,
            self.n_ctx,
            self._threads,
            offloaded,
            self.info.n_layers,
        )

    def _meta(self, key: str) -> str:
        buf = ctypes.create_string_buffer(256)
        n = self._ll.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace") if n >= 0 else ""

    def _desc(self) -> str:
        buf = ctypes.create_string_buffer(256)
        self._ll.llama_model_desc(self._model, buf, len(buf))
        return buf.value.decode("utf-8", errors="replace")

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        text = self._ll.llama_vocab_get_text(self._vocab, token)
        return text.decode("utf-8", errors="replace") if text else ""

    # -- tokens ------------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        """Tokens of ``text``, with the model's BOS added once, special tokens parsed."""
        ll = self._ll
        data = text.encode("utf-8")
        cap = len(data) + 16
        arr = (ll.llama_token * cap)()
        n = ll.llama_tokenize(self._vocab, data, len(data), arr, cap, True, True)
        if n < 0:
            cap = -n
            arr = (ll.llama_token * cap)()
            n = ll.llama_tokenize(self._vocab, data, len(data), arr, cap, True, True)
        tokens = list(arr[:n])
        bos = ll.llama_vocab_bos(self._vocab)
        if len(tokens) >= 2 and tokens[0] == bos and tokens[1] == bos:
            del tokens[0]  # the prompt text already carried its BOS
        return tokens

    def _prompt_text(self, request: GenerationRequest) -> str:
        if request.prompt is not None:
            return request.prompt
        if not self.info.chat_template:
            raise InvalidInputError("this model has no chat template; use a raw prompt encoding")
        return render_chat_template(
            self.info.chat_template,
            request.messages,
            bos_token=self._token_text(self._ll.llama_vocab_bos(self._vocab)),
            eos_token=self._token_text(self._ll.llama_vocab_eos(self._vocab)),
        )

    def count_tokens(self, request: GenerationRequest) -> int:
        self._check_open()
        return len(self.tokenize(self._prompt_text(request)))

    # -- generation --------------------------------------------------------------------------

    def _sampler(self, s: Sampling) -> Any:
        ll = self._ll
        chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
        if s.greedy:
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_greedy())
        else:
            # llama-server's default chain, all native.
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_k(40))
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_p(0.95, 1))
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_min_p(0.05, 1))
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_temp(float(s.temperature)))
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_dist(s.effective_seed()))
        return chain

    def _decode(self, tokens: list[int]) -> bool:
        """Evaluate a batch of prompt tokens; False when the abort callback stopped it."""
        ll = self._ll
        arr = (ll.llama_token * len(tokens))(*tokens)
        rc = ll.llama_decode(self._ctx, ll.llama_batch_get_one(arr, len(tokens)))
        if rc == _DECODE_ABORTED:
            # Finished micro-batches stay in the KV cache: drop them, keep the rest exact.
            if not ll.llama_memory_seq_rm(self._mem, 0, len(self._cached), -1):
                self._forget_cache()
            return False
        if rc != 0:
            self._forget_cache()
            why = log.take_errors() or f"llama_decode returned {rc}"
            raise LLMError(f"llama.cpp failed to evaluate the prompt: {why}")
        self._cached.extend(tokens)
        return True

    def _forget_cache(self) -> None:
        self._ll.llama_memory_clear(self._mem, True)
        self._cached.clear()

    def _eval_prompt(self, tokens: list[int], cancel: threading.Event) -> int:
        """Evaluate what the KV cache does not already hold; return how many tokens that was."""
        cached = self._cached
        common = 0
        for a, b in zip(cached, tokens, strict=False):
            if a != b:
                break
            common += 1
        if common == len(tokens):
            common -= 1  # re-evaluate the last token to get fresh logits
        if common < len(cached):
            if not self._ll.llama_memory_seq_rm(self._mem, 0, common, -1):
                self._forget_cache()
                common = 0
            else:
                del cached[common:]
        # While the prompt is evaluated, llama.cpp asks between graph nodes whether to stop,
        # so cancelling a long prompt takes effect within milliseconds, not a whole batch.
        # (Not during generation: a Python call per node would cost ~5 % of throughput.)
        self._cancel = cancel
        self._ll.llama_set_abort_callback(self._ctx, self._abort_cb, None)
        try:
            for i in range(common, len(tokens), _N_BATCH):
                if cancel.is_set() or not self._decode(tokens[i : i + _N_BATCH]):
                    break
        finally:
            self._ll.llama_set_abort_callback(self._ctx, self._no_abort, None)
        return max(0, len(self._cached) - common)

    def generate(self, request: GenerationRequest, cancel: threading.Event) -> Iterator[str]:
        with self._gate:
            try:
                self._check_open()
                yield from self._generate(request, cancel)
            finally:
                if self._gate.closed:
                    self._free()

    def _generate(self, request: GenerationRequest, cancel: threading.Event) -> Iterator[str]:
        ll = self._ll
        tokens = self.tokenize(self._prompt_text(request))
        if len(tokens) >= self.n_ctx:
            raise ContextOverflowError(
                f"the prompt is {len(tokens)} tokens but the context holds {self.n_ctx}; "
                "drop older messages or raise context_length"
            )
        t0 = time.perf_counter()
        evaluated = self._eval_prompt(tokens, cancel)
        self._prompt += TokenPerformance(evaluated, timedelta(seconds=time.perf_counter() - t0))
        if len(self._cached) != len(tokens):
            return  # cancelled or closed while the prompt was evaluated
        budget = self.n_ctx - len(tokens)
        if request.sampling.max_tokens:
            budget = min(budget, request.sampling.max_tokens)
        sampler = self._sampler(request.sampling)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        vocab, ctx, buf, one = self._vocab, self._ctx, self._piece, self._one
        batch = ll.llama_batch_get_one(one, 1)
        sample, is_eog, to_piece, decode = (
            ll.llama_sampler_sample,
            ll.llama_vocab_is_eog,
            ll.llama_token_to_piece,
            ll.llama_decode,
        )
        cached, gate = self._cached, self._gate
        stops = frozenset(request.stops)
        n_gen = 0
        busy = 0.0
        t = time.perf_counter()
        try:
            while n_gen < budget and not (cancel.is_set() or gate.closed):
                tok = sample(sampler, ctx, -1)
                if is_eog(vocab, tok):
                    break
                n = to_piece(vocab, tok, buf, len(buf), 0, False)
                if n == 0 and self._is_stop_token(tok, stops):
                    break  # a control token such as <start_of_turn>: the reply is over
                if n < 0:  # a piece longer than the buffer: grow it once and retry
                    buf = self._piece = ctypes.create_string_buffer(-n)
                    n = to_piece(vocab, tok, buf, len(buf), 0, False)
                n_gen += 1
                text = decoder.decode(ctypes.string_at(buf, n)) if n > 0 else ""
                if text:
                    # Hand the text over before evaluating the token: the caller sees it
                    # one decode (~the time of a token) earlier.
                    busy += time.perf_counter() - t
                    yield text
                    t = time.perf_counter()
                    if cancel.is_set() or gate.closed:
                        break  # closed while the caller held the text: the context may be gone
                if n_gen < budget:
                    one[0] = tok
                    if decode(ctx, batch) != 0:
                        self._forget_cache()
                        raise LLMError(
                            "llama.cpp failed to evaluate a generated token: "
                            + (log.take_errors() or "unknown error")
                        )
                    cached.append(tok)
            tail = decoder.decode(b"", final=True)
            if tail:
                yield tail
        finally:
            busy += time.perf_counter() - t
            ll.llama_sampler_free(sampler)
            self._generated += TokenPerformance(n_gen, timedelta(seconds=busy))

    def _is_stop_token(self, token: int, stops: frozenset[str]) -> bool:
        """Whether ``token`` is a control token (rendered as nothing) that ends a reply."""
        if not self._ll.llama_vocab_is_control(self._vocab, token):
            return False
        return self._token_text(token) in stops

    # -- state -------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._ctx is None:
            raise SessionClosedError("the session is closed; create a new Session")

    def health(self) -> str:
        return "ok" if self._ctx is not None else "closed"

    def metrics(self) -> Metrics:
        kv = len(self._cached)
        return Metrics(
            prompt=self._prompt,
            generated=self._generated,
            kv_cache_usage=kv / self.n_ctx if self.n_ctx else 0.0,
            kv_cache_tokens=kv,
            requests_processing=self._gate.processing,
            requests_pending=self._gate.pending,
        )

    def close(self) -> None:
        if self._gate.close():
            self._free()

    def _free(self) -> None:
        with self._free_lock:
            if self._ctx is not None:
                self._ll.llama_free(self._ctx)
                self._ctx = None
            if self._model is not None:
                self._ll.llama_model_free(self._model)
                self._model = None
            self._cached.clear()
