"""The in-process backend: llama.cpp through llama-cpp-python's low-level bindings.

We drive llama.cpp's native sampler chains and our own decode loop instead of
``Llama.create_completion``: sampling over a large vocabulary in Python (numpy
copies of the logits per token) is what makes the high-level loop slower than
``llama-server``. One engine thread owns the context and decodes every running
request in one batch per step (:mod:`.engine`); slots keep each conversation's
KV cache so its next turn only evaluates what is new (:mod:`.slot`); requests
beyond the slots wait in a bounded queue (:mod:`.admission`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...config import DEFAULT_BATCH, DEFAULT_CACHE_RAM, UNQUANTIZED_KV
from ...errors import InvalidInputError
from ...host.hardware import physical_cores
from ...metrics import Metrics
from ...paths import default_cache_dir
from ..base import (
    ConversationStore,
    DeviceUse,
    GenerationRequest,
    ModelInfo,
    SlotFile,
    SlotInfo,
    Vectors,
)
from ..stream import RawStream
from ._llama import lib, signals_blocked

# numpy (OpenBLAS) starts threads when imported: they must leave SIGINT to the main thread,
# or Ctrl-C at a chat prompt can land on one of them and go unheard.
with signals_blocked():
    from .embedder import InprocEmbedder
    from .engine import Engine
    from .model import (
        Context,
        Model,
        can_load_in_place,
        check_gguf,
        check_prompt_fits,
        clamp_threads,
    )
    from .repack import resolve_repack
    from .request import Request
    from .rpc import devices_for, list_devices, register_servers
    from .sampler import build_sampler
    from .state_file import read_states, write_states

__all__ = ["InprocBackend"]


def _device_use(model: Model) -> tuple[DeviceUse, ...]:
    """Every device in ggml's registry that holds layers of ``model`` (the CPU always)."""
    counts: dict[str, int] = {}
    for layer, device in model.layer_devices.items():
        if layer < model.n_layers:
            counts[device] = counts.get(device, 0) + 1
    try:
        found = list_devices()
    except (ImportError, OSError, AttributeError):  # a llama_cpp without ggml bindings
        return ()
    return tuple(
        DeviceUse(d.name, d.description, d.memory_free, d.memory_total, counts.get(d.name, 0))
        for d in found
        if d.name in counts or d.kind == "CPU"
    )


def _loadable(path: Path, cache_dir: Path) -> Path:
    """``path``, unless it is a llamafile whose GGUF cannot be loaded where it lies
    (compressed, misaligned, or no C stdio here): then its copy extracted into the cache."""
    from ...models.llamafile import extract_gguf, is_llamafile, open_llamafile

    if not (path.is_file() and is_llamafile(path)):
        return path
    found = open_llamafile(path)
    if found.in_place and can_load_in_place():
        return path
    return extract_gguf(found, cache_dir)


class InprocBackend:
    """Loads one GGUF file and generates up to ``parallel`` replies from it at once."""

    name = "inproc"
    in_process = True
    served_model = None

    @property
    def conversations(self) -> ConversationStore:
        return self

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        context_length: int = 0,
        gpu_layers: int = -1,
        threads: int | None = None,
        parallel: int = 1,
        max_pending: int = 64,
        flash_attention: bool | None = None,
        repack: bool | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_ram: int = DEFAULT_CACHE_RAM,
        cache_type_k: str = "f16",
        cache_type_v: str = "f16",
        speculative: tuple[int, int] | None = None,
        batch_size: int = DEFAULT_BATCH,
        ubatch_size: int = DEFAULT_BATCH,
        context_shift: bool = False,
        rpc_servers: Sequence[str] = (),
        tensor_split: Sequence[float] = (),
    ) -> None:
        threads = clamp_threads(threads, physical_cores())
        probes = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.path = _loadable(Path(path), probes)
        check_gguf(self.path)
        system_info = lib().llama_print_system_info().decode("utf-8", "replace")
        repack, self.repack_reason = resolve_repack(repack, self.path, probes, system_info)
        # RPC servers are registered (after a connection check) before the model loads;
        # see .rpc for why a Session runs them in a child process.
        # Once any server is registered in this process, each model gets its own list.
        devices = devices_for(register_servers(rpc_servers))
        with signals_blocked():  # for any thread llama.cpp starts while loading
            self._model = model = Model(
                self.path, gpu_layers, repack=repack, devices=devices, tensor_split=tensor_split
            )
            try:
                # Auto: on where layers run on a GPU (a large win there), off on the CPU,
                # unless the V cache is quantized, which needs it.
                flash = flash_attention
                if flash is None:
                    flash = model.offloaded > 0 or cache_type_v not in UNQUANTIZED_KV
                n_ctx = model.context_size(context_length)
                ctx = Context(
                    model,
                    n_ctx,
                    threads,
                    parallel,
                    flash_attention=flash,
                    cache_type_k=cache_type_k,
                    cache_type_v=cache_type_v,
                    batch_size=batch_size,
                    ubatch_size=ubatch_size,
                )
            except BaseException:
                model.free()
                raise
        self.info = ModelInfo(
            architecture=model.architecture,
            description=model.description,
            chat_template=model.chat_template,
            n_ctx=ctx.n_ctx,
            n_ctx_train=model.n_ctx_train,
            n_layers=model.n_layers,
            gpu_layers_offloaded=model.offloaded,
            gpu_offload_supported=bool(model.ll.llama_supports_gpu_offload()),
            threads=threads,
            parallel=ctx.parallel,
            flash_attention=ctx.flash_attention,
            repack=repack,
            devices=_device_use(model),
            template_tokens=(model.token_text(model.bos), model.token_text(model.eos)),
        )
        self._n_ctx = ctx.n_ctx
        limit = None if cache_ram == -1 else cache_ram * 2**20
        self._engine = Engine(
            model,
            ctx,
            max_pending,
            cache_limit=limit,
            speculative=speculative,
            context_shift=context_shift,
        )
        self._embedder = InprocEmbedder(
            model, self._engine, n_ctx=ctx.n_ctx, threads=threads, flash_attention=flash
        )

    # -- prompts -----------------------------------------------------------------------------

    def _tokens(self, request: GenerationRequest) -> list[int]:
        if request.tokens is not None:
            tokens = list(request.tokens)
            n_vocab = self._model.n_vocab
            bad = [t for t in tokens if not isinstance(t, int) or not 0 <= t < n_vocab]
            if bad:
                raise InvalidInputError(f"token id {bad[0]!r} is not in [0, {n_vocab})")
        elif request.prompt is not None:
            tokens = self._model.tokenize(request.prompt)
        else:
            tokens = self._model.tokenize(self.render(request))
        if not tokens:
            raise InvalidInputError("the prompt is empty; give the model some text")
        return tokens

    def submit(self, request: GenerationRequest) -> RawStream:
        tokens = self._tokens(request)
        check_prompt_fits(len(tokens), self._n_ctx)
        sampler = build_sampler(self._model, request.sampling, request.constraint)
        sampler.prime(tokens)
        stream = RawStream()
        req = Request(request, tokens, stream.put, sampler)
        stream.on_cancel = lambda: self._engine.cancel(req)
        stream.on_abandon = req.abandon
        try:
            self._engine.submit(req)
        except BaseException:
            self._engine.free_sampler(req)
            raise
        return stream

    def render(self, request: GenerationRequest) -> str:
        """The prompt text the model sees for ``request``."""
        if request.prompt is not None:
            return request.prompt
        tools = request.tools.offered if request.tools is not None else ()
        return self._model.render(request.messages, tools, request.template_kwargs)

    def count_tokens(self, request: GenerationRequest) -> int:
        return len(self._tokens(request))

    def tokenize(self, text: str, *, special: bool = True) -> list[int]:
        return self._model.tokenize(text, special=special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self._model.detokenize(tokens)

    # -- vectors -----------------------------------------------------------------------------

    def model_pooling(self) -> str | None:
        return self._embedder.model_pooling

    def embed(
        self, inputs: Sequence[str | Sequence[int]], pooling: str | None, *, truncate: bool
    ) -> Vectors:
        return self._embedder.embed(inputs, pooling, truncate=truncate)

    def rerank(self, query: str, documents: Sequence[str], *, truncate: bool) -> Vectors:
        return self._embedder.rerank(query, documents, truncate=truncate)

    # -- state -------------------------------------------------------------------------------

    def health(self) -> str:
        return "ok" if self._model.ptr is not None else "closed"

    def metrics(self) -> Metrics:
        engine = self._engine
        c = engine.counters
        kv = engine.kv_tokens
        n_ctx = self._n_ctx
        return Metrics(
            prompt=engine.prompt,
            generated=engine.generated,
            kv_cache_usage=kv / n_ctx if n_ctx else 0.0,
            kv_cache_tokens=kv,
            requests_processing=engine.processing,
            requests_pending=engine.pending,
            prompt_cache_bytes=engine.cache_bytes,
            prompt_cache_tokens=engine.cache_tokens,
            prompt_cached_tokens=c.prompt_cached,
            decode_calls=c.decode_calls,
            busy_slots_per_decode=c.busy_slots / max(c.decode_calls, 1),
            max_sequence_tokens=c.max_tokens,
            draft_tokens=c.drafted,
            draft_accepted_tokens=c.draft_accepted,
            draft_steps=c.draft_steps,
        )

    # -- conversations on disk ----------------------------------------------------------------

    def _identity(self) -> dict[str, Any]:
        """What a saved KV state is only valid for: this model, KV layout and llama.cpp."""
        import llama_cpp

        m, ll = self._model, self._model.ll
        return {
            "architecture": m.architecture,
            "description": m.description,
            "n_params": int(ll.llama_model_n_params(m.ptr)),
            "model_bytes": int(ll.llama_model_size(m.ptr)),
            "n_vocab": m.n_vocab,
            "n_layers": m.n_layers,
            "cache_types": list(self._engine.ctx.cache_types),
            "llama_cpp_python": llama_cpp.__version__,
        }

    def save_conversations(self, path: str | os.PathLike[str]) -> int:
        states = self._engine.call(self._engine.states)
        write_states(path, self._identity(), states)
        return len(states)

    def load_conversations(self, path: str | os.PathLike[str]) -> int:
        states = read_states(path, self._identity())
        return self._engine.call(lambda: self._engine.keep(states))

    def save_slot(self, slot: int, path: str | os.PathLike[str]) -> SlotFile:
        tokens, data = self._engine.call(lambda: self._engine.slot_state(slot))
        return SlotFile(len(tokens), write_states(path, self._identity(), [(tokens, data)]))

    def restore_slot(self, slot: int, path: str | os.PathLike[str]) -> SlotFile:
        states = read_states(path, self._identity())
        if len(states) != 1:
            raise InvalidInputError(
                f"{path} holds {len(states)} conversations, not one slot's; load it with "
                "Session.load_conversations"
            )
        tokens, data = states[0]
        self._engine.call(lambda: self._engine.restore_slot(slot, tokens, data))
        return SlotFile(len(tokens), len(data))

    def erase_slot(self, slot: int) -> int:
        return self._engine.call(lambda: self._engine.erase_slot(slot))

    def slots(self) -> tuple[SlotInfo, ...]:
        # Read from this thread, not queued behind the engine's step: /slots answers at
        # once, even while a long prompt is evaluated.
        return tuple(s.report() for s in self._engine.slots)

    def close(self) -> None:
        self._embedder.close()  # before the engine frees the model it shares
        self._engine.close()
