"""Backends run the model; the Session facade validates, encodes and measures for all of them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Options
from ..errors import InvalidInputError
from .base import Backend, GenerationRequest, ModelInfo, Outcome

__all__ = ["Backend", "GenerationRequest", "ModelInfo", "Outcome", "open_backend"]


def open_backend(
    options: Options, model: str, cache_dir: Path, hf: Callable[[], Any]
) -> tuple[Backend, Path | None]:
    """Start the backend ``options`` asks for; also return the local model file, if any."""
    kind = options.resolved_backend()
    if kind == "inproc":
        from ..models.resolve import resolve_model
        from .inproc import InprocBackend

        path = resolve_model(model, cache_dir, hf=hf)
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
        from ..models.resolve import resolve_model
        from .spawn import SpawnedBackend

        path = resolve_model(model, cache_dir, hf=hf)
        return SpawnedBackend(kind, path, options, cache_dir), path
    raise InvalidInputError(f"unknown backend {kind!r}; use inproc, python, llama-server or remote")
