"""A GGUF model loaded by llama.cpp: its vocabulary, its metadata, and its context.

Everything that needs only the model (tokenizing, rendering the chat template)
lives here, behind a lock that :meth:`Model.free` also takes, so a tokenization
in a caller's thread never races the session being closed.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ...config import CONTEXT_CAP
from ...errors import (
    ContextOverflowError,
    InvalidInputError,
    ModelLoadError,
    ModelNotFoundError,
    SessionClosedError,
)
from ...prompting.chat_template import render_chat_template
from ...prompting.messages import Message
from ...tools.types import Tool
from ._llama import capture, lib

__all__ = ["Context", "Model", "can_load_in_place", "check_gguf"]

logger = logging.getLogger(__name__)

_GGUF_MAGIC = b"GGUF"
_FLASH_ATTN_DISABLED = 0
_FLASH_ATTN_ENABLED = 1
_N_BATCH = 512


def check_gguf(path: Path) -> None:
    """Refuse what is plainly not a GGUF file (or a llamafile holding one) before llama.cpp
    sees it."""
    from ...models.llamafile import is_llamafile, open_llamafile

    if path.is_file() and is_llamafile(path):
        open_llamafile(path)  # raises, saying why, when it holds no usable GGUF
        return
    if path.is_dir():
        raise ModelNotFoundError(
            f"model path {str(path)!r} is a directory; pass the .gguf file inside it"
        )
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


class Model:
    """Owns a ``llama_model``; thread-safe tokenization until :meth:`free`."""

    def __init__(
        self,
        path: Path,
        gpu_layers: int,
        *,
        repack: bool = True,
        devices: Any = None,
        tensor_split: Sequence[float] = (),
    ) -> None:
        check_gguf(path)
        self.path = path
        self.ll = ll = lib()
        self._lock = threading.Lock()
        mparams = ll.llama_model_default_params()
        mparams.n_gpu_layers = 999 if gpu_layers < 0 else gpu_layers
        # Repacked weights take ggml's faster CPU kernels (AMX among them; see .repack).
        mparams.use_extra_bufts = repack
        if devices is not None:  # RPC in this process: this model's devices only (see .rpc)
            mparams.devices = ctypes.cast(devices, ctypes.c_void_p)
        split = None
        if tensor_split:
            split = (ctypes.c_float * max(len(tensor_split), ll.LLAMA_MAX_DEVICES))(*tensor_split)
            mparams.tensor_split = ctypes.cast(split, ctypes.POINTER(ctypes.c_float))
        with capture() as said:
            ptr = _load(ll, path, mparams)
        if not ptr:
            raise ModelLoadError(
                f"llama.cpp could not load {str(path)!r}: {said.reason('no reason given')}. "
                "The file may be truncated or corrupt: delete it and download it again"
            )
        self.ptr: Any = ptr
        self.offloaded = said.offloaded[0] if said.offloaded else 0
        del split  # read during the load only
        self.layer_devices = dict(said.layers)
        """Layer index -> device name, as llama.cpp placed them (index n_layers: output)."""
        self.vocab = ll.llama_model_get_vocab(ptr)
        self.n_ctx_train = int(ll.llama_model_n_ctx_train(ptr))
        self.n_layers = int(ll.llama_model_n_layer(ptr))
        self.architecture = self.meta("general.architecture")
        self.description = self._desc()
        tmpl = ll.llama_model_chat_template(ptr, None)
        self.chat_template = tmpl.decode("utf-8", errors="replace") if tmpl else None
        self.bos = int(ll.llama_vocab_bos(self.vocab))
        self._eog: list[int] | None = None
        self.eos = int(ll.llama_vocab_eos(self.vocab))

    def meta(self, key: str) -> str:
        buf = ctypes.create_string_buffer(256)
        n = self.ll.llama_model_meta_val_str(self.ptr, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace") if n >= 0 else ""

    def _desc(self) -> str:
        buf = ctypes.create_string_buffer(256)
        self.ll.llama_model_desc(self.ptr, buf, len(buf))
        return buf.value.decode("utf-8", errors="replace")

    def context_size(self, requested: int) -> int:
        """The context to allocate for ``requested`` (0: trained length capped), checked."""
        if requested == 0:
            return min(self.n_ctx_train, CONTEXT_CAP) if self.n_ctx_train > 0 else CONTEXT_CAP
        if self.n_ctx_train > 0 and requested > self.n_ctx_train:
            raise InvalidInputError(
                f"context_length {requested} exceeds the {self.n_ctx_train} tokens this model "
                f"was trained with; use at most {self.n_ctx_train} (0 picks "
                f"{min(self.n_ctx_train, CONTEXT_CAP)})"
            )
        return requested

    # -- tokens ------------------------------------------------------------------------------

    def _check(self) -> None:
        if self.ptr is None:
            raise SessionClosedError("the session is closed; create a new Session")

    def tokenize(self, text: str, *, special: bool = True) -> list[int]:
        """Tokens of ``text``; with ``special``, BOS added once and control tokens parsed."""
        ll = self.ll
        data = text.encode("utf-8")
        with self._lock:
            self._check()
            cap = len(data) + 16
            arr = (ll.llama_token * cap)()
            n = ll.llama_tokenize(self.vocab, data, len(data), arr, cap, special, special)
            if n < 0:
                cap = -n
                arr = (ll.llama_token * cap)()
                n = ll.llama_tokenize(self.vocab, data, len(data), arr, cap, special, special)
        tokens = list(arr[:n])
        if len(tokens) >= 2 and tokens[0] == self.bos and tokens[1] == self.bos:
            del tokens[0]  # the prompt text already carried its BOS
        return tokens

    def detokenize(self, tokens: Sequence[int]) -> str:
        """The text of ``tokens``, special tokens rendered."""
        ll = self.ll
        n_vocab = self.n_vocab
        for t in tokens:
            if not 0 <= t < n_vocab:
                raise InvalidInputError(f"token id {t} is out of range [0, {n_vocab})")
        arr = (ll.llama_token * max(1, len(tokens)))(*tokens)
        cap = 16 + 8 * len(tokens)
        with self._lock:
            self._check()
            buf = ctypes.create_string_buffer(cap)
            n = ll.llama_detokenize(self.vocab, arr, len(tokens), buf, cap, False, True)
            if n < 0:
                cap = -n
                buf = ctypes.create_string_buffer(cap)
                n = ll.llama_detokenize(self.vocab, arr, len(tokens), buf, cap, False, True)
        return buf.raw[:n].decode("utf-8", errors="replace")

    def eog_tokens(self) -> list[int]:
        """Every end-of-generation token (computed once: one C call per vocabulary entry)."""
        if self._eog is None:
            is_eog, vocab = self.ll.llama_vocab_is_eog, self.vocab
            self._eog = [t for t in range(self.n_vocab) if is_eog(vocab, t)]
        return self._eog

    @property
    def n_vocab(self) -> int:
        return int(self.ll.llama_vocab_n_tokens(self.vocab))

    def token_text(self, token: int) -> str:
        if token < 0:
            return ""
        text = self.ll.llama_vocab_get_text(self.vocab, token)
        return text.decode("utf-8", errors="replace") if text else ""

    def render(
        self,
        messages: Sequence[Message],
        tools: Sequence[Tool] = (),
        variables: Mapping[str, Any] | None = None,
    ) -> str:
        """The prompt text for ``messages`` (and ``tools``, and the template's other
        ``variables``) through the model's own chat template."""
        if not self.chat_template:
            raise InvalidInputError("this model has no chat template; use a raw prompt encoding")
        return render_chat_template(
            self.chat_template,
            messages,
            bos_token=self.token_text(self.bos),
            eos_token=self.token_text(self.eos),
            tools=tools,
            variables=variables,
        )

    def free(self) -> None:
        with self._lock:
            if self.ptr is not None:
                self.ll.llama_model_free(self.ptr)
                self.ptr = None


def _load(ll: Any, path: Path, mparams: Any) -> Any:
    """``llama_model_load_from_file``, or for a llamafile whose GGUF is stored and aligned,
    ``llama_model_load_from_file_ptr`` at the GGUF's offset: loaded in place, no copy."""
    from ...models.llamafile import is_llamafile, open_llamafile

    if not is_llamafile(path):
        return ll.llama_model_load_from_file(str(path).encode(), mparams)
    found = open_llamafile(path)
    if not found.in_place or _libc is None:
        raise ModelLoadError(
            f"{found.member} in {str(path)!r} is compressed or not aligned, so llama.cpp "
            "cannot load it in place; load the copy extract_gguf() writes into the cache"
        )
    fp = _libc.fopen(str(path).encode(), b"rb")
    if not fp:
        raise ModelLoadError(f"cannot open llamafile {str(path)!r}; check its permissions")
    try:
        if _libc.fseeko(fp, found.offset, os.SEEK_SET) != 0:
            raise ModelLoadError(f"cannot seek to {found.offset} in {str(path)!r}")
        # llama.cpp reads the GGUF from here; mmap keeps the mapping once the FILE closes.
        return ll.llama_model_load_from_file_ptr(ctypes.c_void_p(fp), mparams)
    finally:
        _libc.fclose(fp)


def _open_libc() -> Any:
    """The C library's stdio (POSIX); None where a ``FILE *`` from ctypes' C runtime might
    not be the one llama.cpp was built against (Windows): llamafiles are extracted there."""
    if os.name != "posix":
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.fopen.restype = ctypes.c_void_p
        libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        libc.fseeko.restype = ctypes.c_int
        libc.fseeko.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int]
        libc.fclose.restype = ctypes.c_int
        libc.fclose.argtypes = [ctypes.c_void_p]
    except (OSError, AttributeError):
        return None
    return libc


_libc = _open_libc()


def can_load_in_place() -> bool:
    """Whether this platform loads a llamafile's GGUF in place (else it is extracted)."""
    return _libc is not None


GGML_TYPES = {
    "f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8,
    "iq4_nl": 20, "bf16": 30,
}  # fmt: skip
"""ggml's type ids (``enum ggml_type``) of the KV cache types llama-server accepts."""


class Context:
    """A ``llama_context`` for ``parallel`` sequences sharing one unified KV cache."""

    def __init__(
        self,
        model: Model,
        n_ctx: int,
        threads: int,
        parallel: int,
        *,
        flash_attention: bool,
        cache_type_k: str = "f16",
        cache_type_v: str = "f16",
        batch_size: int = _N_BATCH,
        ubatch_size: int = _N_BATCH,
    ) -> None:
        ll = self.ll = model.ll
        cparams = ll.llama_context_default_params()
        cparams.type_k = GGML_TYPES[cache_type_k]
        cparams.type_v = GGML_TYPES[cache_type_v]
        cparams.n_ctx = n_ctx
        cparams.n_batch = min(batch_size, n_ctx)
        cparams.n_ubatch = min(ubatch_size, batch_size, n_ctx)
        cparams.n_seq_max = parallel
        # One pool of cells for every slot: a lone request may use the whole context, and
        # idle slots' cached prefixes are given up when a busy one needs the room.
        cparams.kv_unified = True
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        # Keep the whole sliding window so that conversation prefixes stay reusable.
        cparams.swa_full = True
        # Flash attention makes a token's logits depend on the batch it was evaluated in, so a
        # reused KV cache would change greedy and seeded replies (see Options.flash_attention).
        cparams.flash_attn_type = _FLASH_ATTN_ENABLED if flash_attention else _FLASH_ATTN_DISABLED
        with capture() as said:
            ptr = ll.llama_init_from_model(model.ptr, cparams)
        if not ptr:
            raise ModelLoadError(
                f"llama.cpp could not create a context of {n_ctx} tokens for "
                f"{str(model.path)!r} (KV cache {cache_type_k}/{cache_type_v}): "
                f"{said.reason('no reason given')}. Try a smaller context_length, or the "
                "default f16 cache types"
            )
        self.ptr: Any = ptr
        self.mem = ll.llama_get_memory(ptr)
        self.n_ctx = int(ll.llama_n_ctx(ptr))
        # Size every batch from what llama.cpp allocated, never from what we asked for:
        # a batch larger than n_batch is an assertion that aborts the process.
        self.n_batch = int(min(ll.llama_n_batch(ptr), ll.llama_n_ubatch(ptr)))
        self.parallel = int(ll.llama_n_seq_max(ptr))
        self.flash_attention = flash_attention
        self.cache_types = (cache_type_k, cache_type_v)

    def free(self) -> None:
        if self.ptr is not None:
            self.ll.llama_free(self.ptr)
            self.ptr = None


def clamp_threads(threads: int | None, physical: int) -> int:
    """The thread count to use: physical cores by default, never more than logical CPUs."""
    logical = os.cpu_count() or 1
    if threads is None:
        return physical
    if threads > logical:
        logger.warning(
            "threads=%d is more than the %d logical CPUs; using %d (more threads than CPUs "
            "only makes llama.cpp wait on itself)",
            threads,
            logical,
            logical,
        )
        return logical
    return threads


def check_prompt_fits(n_tokens: int, n_ctx: int) -> None:
    if n_tokens >= n_ctx:
        raise ContextOverflowError(
            f"the prompt is {n_tokens} tokens but the context holds {n_ctx} "
            "(one more is needed for the reply); drop older messages or raise context_length"
        )
