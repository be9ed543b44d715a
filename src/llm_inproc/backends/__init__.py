"""Backends run the model; the Session facade validates, encodes and measures for all of them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Options
from ..errors import InvalidInputError
from .base import Backend, GenerationRequest, ModelInfo, Outcome

__all__ = ["Backend", "GenerationRequest", "ModelInfo", "Outcome", "open_backend"]

logger = logging.getLogger(__name__)


def open_backend(
    options: Options, model: str, cache_dir: Path, hf: Callable[[], Any]
) -> tuple[Backend, Path | None]:
    """Start the backend ``options`` asks for; also return the local model file, if any."""
    kind = options.resolved_backend()
    if kind == "inproc":
        from ..models.resolve import resolve_model
        from .inproc import InprocBackend

        path = resolve_model(model, cache_dir, hf=hf)
        options = _with_llamafile_args(options, path)
        if options.rpc_servers:
            logger.warning(
                "rpc_servers with backend 'inproc': if an RPC server dies, llama.cpp aborts "
                "this whole process; leave backend empty to run the model in a child process"
            )
        backend = InprocBackend(
            path,
            context_length=options.context_length,
            gpu_layers=options.gpu_layers,
            threads=options.threads,
            parallel=options.parallel,
            flash_attention=options.flash_attention,
            repack=options.repack,
            cache_dir=cache_dir,
            max_pending=options.max_pending,
            cache_ram=options.cache_ram,
            cache_type_k=options.cache_type_k,
            cache_type_v=options.cache_type_v,
            batch_size=options.batch_size,
            ubatch_size=options.ubatch_size,
            context_shift=options.context_shift,
            rpc_servers=options.rpc_servers,
            tensor_split=options.tensor_split,
            speculative=(options.spec_ngram_size_n, options.spec_ngram_size_m)
            if options.speculative == "ngram-simple"
            else None,
        )
        return backend, path
    if kind == "remote":
        from .http.backend import RemoteBackend, api_key_from, base_url

        remote = RemoteBackend(base_url(options.remote), api_key=api_key_from(options.api_key))
        return remote, None
    if kind in ("llama-server", "python"):
        from ..models.llamafile import plain_gguf
        from ..models.resolve import resolve_model
        from .spawn import SpawnedBackend

        if options.rpc_servers:
            from .inproc.rpc import check_reachable

            check_reachable(options.rpc_servers)  # before any download or load
        path = resolve_model(model, cache_dir, hf=hf)
        options = _with_llamafile_args(options, path)
        # A server takes a file name, not an offset: a llamafile's GGUF is extracted once.
        path = plain_gguf(path, cache_dir)
        return SpawnedBackend(kind, path, options, cache_dir), path
    raise InvalidInputError(f"unknown backend {kind!r}; use inproc, python, llama-server or remote")


def _with_llamafile_args(options: Options, path: Path) -> Options:
    """``options`` with the defaults of a llamafile's ``.args`` (context size, GPU layers,
    threads, batch sizes, flash attention) where the caller left the default."""
    from ..models.llamafile import apply_llamafile_args, is_llamafile, open_llamafile

    if not is_llamafile(path):
        return options
    return apply_llamafile_args(options, open_llamafile(path).args)
