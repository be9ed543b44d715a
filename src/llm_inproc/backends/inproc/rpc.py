"""llama.cpp's RPC backend in this process: remote devices registered before a model loads.

llama-server's ``--rpc host:port,…`` (``add_rpc_devices`` in ``common/arg.cpp``) finds the
``RPC`` backend in ggml's registry, looks up its ``ggml_backend_rpc_add_server`` through
``ggml_backend_reg_get_proc_address`` and registers the backend it returns. This module
does the same through ctypes, and reads ggml's device API for :func:`list_devices`.

Two hazards of ggml's RPC client decide how it is used:

- ``ggml_backend_rpc_add_server`` calls ``GGML_ABORT`` (``abort()``: the whole process
  dies) when it cannot connect. :func:`check_reachable` therefore opens a TCP connection
  to every server first, and names the one that does not answer in a
  :class:`~llm_inproc.errors.BackendError` before anything is registered or loaded.
- Every later call that finds the connection broken (``RPC_STATUS_ASSERT`` in
  ``ggml-rpc.cpp``) aborts too: an RPC server that dies mid-generation kills the process
  that holds the model. A :class:`~llm_inproc.Session` with ``rpc_servers`` therefore runs
  the model in a child process (see ``backends/__init__.py``); this module is what that
  child (``llm-inproc serve --rpc``) uses.

Registered devices stay in ggml's registry until the process exits, and llama.cpp would
offload every later model to all of them. So once any is registered, :func:`devices_for`
gives each load an explicit device list: its own servers' devices, then the local GPUs.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import BackendError, InvalidInputError

__all__ = [
    "RPC_BUILD_HINT",
    "Device",
    "check_reachable",
    "devices_for",
    "list_devices",
    "parse_endpoint",
    "register_servers",
    "rpc_supported",
]

logger = logging.getLogger(__name__)

RPC_BUILD_HINT = (
    "rebuild llama-cpp-python with the RPC backend: llm-inproc build --preset rpc "
    "(or cuda-rpc, vulkan-rpc, metal-rpc, hip-rpc for a GPU as well)"
)
CONNECT_TIMEOUT = 5.0
"""Seconds :func:`check_reachable` waits for each server's TCP handshake."""

# enum ggml_backend_dev_type
_DEVICE_TYPES = {0: "CPU", 1: "GPU", 2: "IGPU", 3: "ACCEL", 4: "META"}
_GPU, _IGPU = 1, 2

_lock = threading.Lock()
_registered: dict[str, list[int]] = {}  # endpoint -> its devices (pointers as ints)
_ggml: Any = None


@dataclass(frozen=True)
class Device:
    """One device in ggml's registry, as llama.cpp sees it."""

    name: str
    """ggml's name, e.g. ``CPU`` or ``RPC0[127.0.0.1:50052]``."""
    description: str
    """What it is (the CPU model, the GPU, or the remote device behind an RPC server)."""
    kind: str
    """``CPU``, ``GPU``, ``IGPU`` or ``ACCEL`` (RPC devices count as ``GPU``)."""
    backend: str
    """The registry it belongs to: ``CPU``, ``CUDA``, ``RPC``…"""
    memory_free: int
    """Free memory in bytes, as the device reports it."""
    memory_total: int
    """Total memory in bytes."""


def _lib() -> Any:
    """libggml beside the libllama llama_cpp loaded, with the prototypes used here."""
    global _ggml
    if _ggml is not None:
        return _ggml
    from ._llama import lib

    lib()  # llama_backend_init first
    # The libggml beside the libllama that llama_cpp loaded, $LLAMA_CPP_LIB_PATH honoured
    # (llama_cpp._ggml ignores it, and would read another library's registry).
    binding = importlib.import_module("llama_cpp.llama_cpp")
    loader = importlib.import_module("llama_cpp._ctypes_extensions")
    g = loader.load_shared_library("ggml", binding._base_path)
    vp, cp, sz = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
    for name, restype, argtypes in (
        ("ggml_backend_reg_by_name", vp, [cp]),
        ("ggml_backend_reg_get_proc_address", vp, [vp, cp]),
        ("ggml_backend_register", None, [vp]),
        ("ggml_backend_reg_name", cp, [vp]),
        ("ggml_backend_reg_dev_count", sz, [vp]),
        ("ggml_backend_reg_dev_get", vp, [vp, sz]),
        ("ggml_backend_dev_count", sz, []),
        ("ggml_backend_dev_get", vp, [sz]),
        ("ggml_backend_dev_name", cp, [vp]),
        ("ggml_backend_dev_description", cp, [vp]),
        ("ggml_backend_dev_type", ctypes.c_int, [vp]),
        ("ggml_backend_dev_backend_reg", vp, [vp]),
        ("ggml_backend_dev_memory", None, [vp, ctypes.POINTER(sz), ctypes.POINTER(sz)]),
    ):
        fn = getattr(g, name)
        fn.restype, fn.argtypes = restype, argtypes
    _ggml = g
    return g


def rpc_supported() -> bool:
    """Whether the llama.cpp this process loaded was built with the RPC backend."""
    return bool(_lib().ggml_backend_reg_by_name(b"RPC"))


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``(host, port)`` of ``host:port`` or ``[v6]:port``; :class:`InvalidInputError` else."""
    host, sep, port = endpoint.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InvalidInputError(
            f"RPC server {endpoint!r} is not host:port; write it as llama-server's --rpc "
            "does, e.g. 192.168.1.10:50052"
        )
    return host, int(port)


def check_reachable(servers: Sequence[str], timeout: float = CONNECT_TIMEOUT) -> None:
    """Connect to each server once; the first that refuses or times out is named in a
    :class:`BackendError` (ggml would abort the process on it)."""
    for endpoint in servers:
        host, port = parse_endpoint(endpoint)
        try:
            with socket.create_connection((host, port), timeout=timeout):
                pass
        except OSError as e:
            reason = e.strerror or type(e).__name__
            raise BackendError(
                f"RPC server {endpoint} is unreachable ({reason}); start it there with "
                f"`llm-inproc rpc-server --host <address> --port {port}` (or llama.cpp's "
                "rpc-server), check the address and firewall, or remove it from rpc_servers"
            ) from e


def register_servers(servers: Sequence[str]) -> list[int]:
    """Register each server's devices with ggml (once per endpoint and process); return
    them, in the order given. Checks reachability first: nothing is registered when one
    server is down."""
    if not servers:
        return []
    g = _lib()
    reg = g.ggml_backend_reg_by_name(b"RPC")
    if not reg:
        raise InvalidInputError(
            f"rpc_servers needs llama.cpp's RPC backend, which this build lacks; {RPC_BUILD_HINT}"
        )
    add = g.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_rpc_add_server")
    if not add:
        raise InvalidInputError(
            "this llama.cpp's RPC backend has no ggml_backend_rpc_add_server; "
            f"{RPC_BUILD_HINT} from the current llama-cpp-python sources"
        )
    add_server = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)(add)
    with _lock:
        check_reachable(servers)  # a registered server may have died since
        devices: list[int] = []
        for endpoint in servers:
            if endpoint not in _registered:
                server_reg = add_server(endpoint.encode())
                if not server_reg:
                    raise BackendError(f"ggml could not add RPC server {endpoint}")
                g.ggml_backend_register(server_reg)
                count = g.ggml_backend_reg_dev_count(server_reg)
                _registered[endpoint] = [
                    int(g.ggml_backend_reg_dev_get(server_reg, i)) for i in range(count)
                ]
                logger.info("RPC server %s: %d device(s) registered", endpoint, count)
            devices += _registered[endpoint]
    return devices


def devices_for(rpc_devices: Sequence[int]) -> Any:
    """The NULL-terminated ``devices`` array for ``llama_model_params``: ``rpc_devices``
    first (as llama.cpp orders them), then the local GPUs. None (llama.cpp's default: every
    device) while this process has registered no RPC server."""
    with _lock:
        if not _registered:
            return None
    g = _lib()
    local, igpus = [], []
    for i in range(g.ggml_backend_dev_count()):
        dev = g.ggml_backend_dev_get(i)
        backend = g.ggml_backend_reg_name(g.ggml_backend_dev_backend_reg(dev)) or b""
        kind = g.ggml_backend_dev_type(dev)
        if backend == b"RPC":
            continue
        if kind == _GPU:
            local.append(dev)
        elif kind == _IGPU:
            igpus.append(dev)
    chosen = [*rpc_devices, *(local or igpus)]
    return (ctypes.c_void_p * (len(chosen) + 1))(*chosen, None)


def list_devices() -> list[Device]:
    """Every device in ggml's registry: local ones, and the RPC servers registered here."""
    g = _lib()
    out = []
    for i in range(g.ggml_backend_dev_count()):
        dev = g.ggml_backend_dev_get(i)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        g.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        reg = g.ggml_backend_dev_backend_reg(dev)
        out.append(
            Device(
                name=(g.ggml_backend_dev_name(dev) or b"").decode("utf-8", "replace"),
                description=(g.ggml_backend_dev_description(dev) or b"").decode("utf-8", "replace"),
                kind=_DEVICE_TYPES.get(g.ggml_backend_dev_type(dev), "?"),
                backend=(g.ggml_backend_reg_name(reg) or b"").decode("utf-8", "replace"),
                memory_free=int(free.value),
                memory_total=int(total.value),
            )
        )
    return out
