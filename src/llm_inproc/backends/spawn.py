"""Spawned backends: a ``llama-server`` binary, or our own server, in a child process.

``backend="llama-server"`` runs the binary found by :func:`..build.servers.find_llama_server`;
``backend="python"`` (or ``model="python"``) runs ``python -m llm_inproc.server``. Either
gets the session's model, context, threads, GPU layers and parallel slots, listens on a
free loopback port with a fresh random API key, and logs to ``<cache>/logs``. The
:class:`~.child.ChildServer` ends it on :meth:`close` or when our process dies; requests
go through a :class:`~.http.RemoteBackend` (composed, not subclassed).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ..config import CONTEXT_CAP, UNQUANTIZED_KV, Options
from ..errors import BackendError, InvalidInputError
from ..host.hardware import physical_cores
from ..metrics import Metrics
from ..models.gguf_header import read_gguf_header, read_gguf_pooling
from .base import GenerationRequest, Vectors
from .child import ChildServer, free_port
from .http.backend import API_KEY_ENV, RemoteBackend
from .stream import RawStream

__all__ = ["SpawnedBackend"]

logger = logging.getLogger(__name__)

_EXIT_GRACE = 5.0
"""Seconds ``health`` waits to see a server that stopped answering exit."""

READY_TIMEOUT = 180.0
"""Seconds a spawned server may take to load its model and answer ``/health``."""

_BUILD_HINT = "llm-inproc build --target llama-server"


@functools.lru_cache(maxsize=8)
def _help(binary: str) -> str:
    try:
        out = subprocess.run(
            [binary, "--help"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout + out.stderr


def _supports(binary: str, flag: str) -> bool:
    """Whether ``binary --help`` mentions ``flag`` (older builds lack some)."""
    return flag in _help(binary)


def _threads(options: Options) -> int:
    threads = options.threads or physical_cores()
    logical = os.cpu_count() or threads
    if threads > logical:
        logger.warning("threads=%d is more than the %d logical CPUs; using those", threads, logical)
        threads = logical
    return threads


def _llama_server_command(path: Path, options: Options, port: int, cache_dir: Path) -> list[str]:
    from ..build.servers import find_llama_server

    binary = find_llama_server(cache_dir)
    if binary is None:
        raise BackendError(
            "backend 'llama-server' needs the llama-server binary, and none was found "
            f"($LLAMA_SERVER, PATH, or the build cache); build it with: {_BUILD_HINT}"
        )
    header = read_gguf_header(path)
    n_ctx = options.context_length or min(header.context_length or CONTEXT_CAP, CONTEXT_CAP)
    # Flash attention stays off unless asked for (or needed by a quantized V cache), as
    # in-process: replies then match the in-process ones.
    quantized_v = options.cache_type_v not in UNQUANTIZED_KV
    flash = (
        "on"
        if options.flash_attention or (options.flash_attention is None and quantized_v)
        else "off"
    )
    cmd = [
        str(binary),
        *("-m", str(path), "--host", "127.0.0.1", "--port", str(port)),
        *("-c", str(n_ctx), "-t", str(_threads(options))),
        *("-ngl", str(999 if options.gpu_layers < 0 else options.gpu_layers)),
        *("-np", str(options.parallel), "-fa", flash, "--metrics"),
        *("-b", str(options.batch_size), "-ub", str(options.ubatch_size)),
    ]
    if _supports(str(binary), "--kv-unified"):
        cmd.append("--kv-unified")  # the slots share the whole context, as in-process
    if _supports(str(binary), "--swa-full"):
        cmd.append("--swa-full")  # a full-size sliding-window cache, as in-process
    if not _repack(path, options, cache_dir) and _supports(str(binary), "--no-repack"):
        cmd.append("--no-repack")  # the CPU reports AMX but cannot run it
    if _supports(str(binary), "--cache-ram"):
        cmd += ["--cache-ram", str(options.cache_ram)]
    if options.rpc_servers and not _supports(str(binary), "--rpc"):
        raise BackendError(
            f"rpc_servers needs a llama-server built with RPC, and {binary} is not; build one "
            "with: llm-inproc build --target llama-server --preset rpc (or a GPU *-rpc preset)"
        )
    if options.context_shift:
        cmd.append("--context-shift")
    return cmd + _cache_types(options) + _speculative(options) + _rpc(options)


def _rpc(options: Options) -> list[str]:
    """``--rpc`` and ``-ts``, as both servers spell them."""
    out = []
    if options.rpc_servers:
        out += ["--rpc", ",".join(options.rpc_servers)]
    if options.tensor_split:
        out += ["-ts", ",".join(f"{v:g}" for v in options.tensor_split)]
    return out


def _speculative(options: Options) -> list[str]:
    """``--spec-type`` and its n-gram sizes, as both servers spell them."""
    if options.speculative != "ngram-simple":
        return []
    return [
        *("--spec-type", "ngram-simple"),
        *("--spec-ngram-simple-size-n", str(options.spec_ngram_size_n)),
        *("--spec-ngram-simple-size-m", str(options.spec_ngram_size_m)),
    ]


def _cache_types(options: Options) -> list[str]:
    """``-ctk``/``-ctv`` where they differ from the default f16 (both servers take them)."""
    out = []
    if options.cache_type_k != "f16":
        out += ["-ctk", options.cache_type_k]
    if options.cache_type_v != "f16":
        out += ["-ctv", options.cache_type_v]
    return out


def _repack(path: Path, options: Options, cache_dir: Path) -> bool:
    """Whether a spawned llama-server may repack: the in-process verdict for this CPU."""
    if options.repack is not None:
        return options.repack
    from ..host.sysinfo import llama_system_info
    from .inproc.repack import resolve_repack

    return resolve_repack(None, path, cache_dir, llama_system_info())[0]


def _python_command(path: Path, options: Options, port: int, cache_dir: Path) -> list[str]:
    cmd = [
        sys.executable,
        *("-m", "llm_inproc.server", "-m", str(path), "--host", "127.0.0.1"),
        *("--port", str(port), "-c", str(options.context_length)),
        *("-ngl", str(options.gpu_layers), "-np", str(options.parallel)),
        *("-b", str(options.batch_size), "-ub", str(options.ubatch_size)),
        *("--max-pending", str(options.max_pending), "--metrics", "--cache-dir", str(cache_dir)),
    ]
    if options.threads is not None:
        cmd += ["-t", str(_threads(options))]
    if options.flash_attention is not None:
        cmd += ["-fa", "on" if options.flash_attention else "off"]
    if options.repack is not None:
        cmd.append("--repack" if options.repack else "--no-repack")
    if options.context_shift:
        cmd.append("--context-shift")
    return [
        *cmd,
        *_python_embedding(path),
        *("--cache-ram", str(options.cache_ram)),
        *_cache_types(options),
        *_speculative(options),
        *_rpc(options),
    ]


@functools.lru_cache(maxsize=8)
def _child_pooling(path: Path) -> str:
    """How our spawned server pools, as the model pools in-process: the GGUF's pooling
    type, else mean (``rank`` for a reranker)."""
    from ..embeddings.pooling import pooling_name

    value = read_gguf_pooling(path)
    return (pooling_name(value) if value is not None else None) or "mean"


def _python_embedding(path: Path) -> list[str]:
    """Embeddings on in our spawned server (its completions keep working, unlike
    llama-server's with ``--embedding``), pooled as in-process."""
    pooling = _child_pooling(path)
    return ["--reranking"] if pooling == "rank" else ["--embedding", "--pooling", pooling]


def _child_env(kind: str, key: str) -> dict[str, str]:
    # The child imports this very package, wherever it was imported from here.
    package_root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH", "")
    env = {"PYTHONPATH": package_root + (os.pathsep + path if path else "")}
    env["LLAMA_API_KEY" if kind == "llama-server" else API_KEY_ENV] = key
    return env


class SpawnedBackend:
    """A server in a child process, spoken to over HTTP; ``kind`` is ``"llama-server"`` or
    ``"python"``."""

    in_process = False
    conversations = None

    def __init__(
        self,
        kind: str,
        path: Path,
        options: Options,
        cache_dir: Path,
        *,
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        self.name = kind
        self._path = path
        port = free_port()
        build = _llama_server_command if kind == "llama-server" else _python_command
        command = build(path, options, port, cache_dir)
        key = secrets.token_urlsafe(24)
        self._child = ChildServer(
            kind, command, port, cache_dir / "logs", env=_child_env(kind, key)
        )
        try:
            self._child.wait_healthy(ready_timeout)
            self._http = RemoteBackend(self._child.url, api_key=key, name=kind, trust_env=False)
        except BaseException:
            self._child.close()
            raise
        header = read_gguf_header(path)
        self.info = dataclasses.replace(
            self._http.info,
            architecture=header.architecture,
            description=f"{path.name} in {kind} at {self._child.url}",
            n_ctx_train=self._http.info.n_ctx_train or header.context_length,
            threads=_threads(options),
            flash_attention=bool(options.flash_attention) and kind == "llama-server",
        )

    @property
    def served_model(self) -> str | None:
        return self._http.served_model

    def _check(self) -> None:
        if not self._child.running:
            raise BackendError(
                f"the {self.name} server exited: {self._child.log_tail()} "
                f"(full log: {self._child.log_path}); this session cannot continue: close it "
                "and create a new Session"
            )

    def submit(self, request: GenerationRequest) -> RawStream:
        self._check()
        return self._http.submit(request)

    def render(self, request: GenerationRequest) -> str:
        return self._http.render(request)

    # -- vectors (our server only) -----------------------------------------------------------

    def _embeds(self) -> RemoteBackend:
        if self.name != "python":
            raise InvalidInputError(
                "a spawned llama-server does not embed: its --embedding turns completions "
                "off; use backend='python' (our server) or the model in-process"
            )
        self._check()
        return self._http

    def model_pooling(self) -> str | None:
        return _child_pooling(self._path) if self.name == "python" else None

    def embed(
        self, inputs: Sequence[str | Sequence[int]], pooling: str | None, *, truncate: bool
    ) -> Vectors:
        http = self._embeds()
        own = _child_pooling(self._path)
        if pooling not in (None, own):
            raise InvalidInputError(
                f"pooling={pooling!r}: the spawned server pools as it was started ({own}, "
                "the model's own); leave pooling out, or run the model in-process "
                "(backend='inproc') to choose it per call"
            )
        # One vector per token comes only from /embedding; pooled ones from /v1/embeddings.
        return http.embed(inputs, "none" if own == "none" else None, truncate=truncate)

    def rerank(self, query: str, documents: Sequence[str], *, truncate: bool) -> Vectors:
        return self._embeds().rerank(query, documents, truncate=truncate)

    def count_tokens(self, request: GenerationRequest) -> int:
        return self._http.count_tokens(request)

    def tokenize(self, text: str, *, special: bool = True) -> list[int]:
        return self._http.tokenize(text, special=special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self._http.detokenize(tokens)

    def health(self) -> str:
        self._check()
        try:
            return self._http.health()
        except BackendError:
            # Unreachable: if the server just died (an RPC server it used went away, say),
            # say so once its process is seen gone, rather than "cannot be reached".
            deadline = time.monotonic() + _EXIT_GRACE
            while self._child.running and time.monotonic() < deadline:
                time.sleep(0.05)
            self._check()
            raise

    def metrics(self) -> Metrics:
        return self._http.metrics()

    def close(self) -> None:
        """Close the connections, then terminate the server (killed if it lingers). The log
        of a server that ran until now goes with it; one that died is kept for its reason."""
        healthy = self._child.running
        try:
            self._http.close()
        finally:
            self._child.close()
            if healthy:
                self._child.log_path.unlink(missing_ok=True)
