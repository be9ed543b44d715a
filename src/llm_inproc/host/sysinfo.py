"""What this installation can do, for ``llm-inproc info`` and bug reports.

Answers the questions people ask after a GPU rebuild: which llama-cpp-python is
installed, what llama.cpp was compiled with, whether layers can be offloaded and
to which devices, how many threads a session will use, and what is cached.
Everything is read from llama.cpp itself, never guessed from the build flags.
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path
from typing import Any

from ..build.python import installed_llama_cpp_version
from ..build.servers import list_server_builds
from ..errors import LLMError
from .hardware import physical_cores

__all__ = ["DEVICE_TYPES", "llama_cpp_devices", "llama_system_info", "system_info"]

log = logging.getLogger(__name__)

DEVICE_TYPES = ("cpu", "gpu", "igpu", "accel", "meta")
"""ggml's ``enum ggml_backend_dev_type``, in order."""


def system_info(cache_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON-ready report: versions, llama.cpp features, devices, threads and caches."""
    cache = Path(cache_dir)
    info: dict[str, Any] = {"cache_dir": str(cache), "default_threads": physical_cores()}
    try:
        info["llama_cpp_python_version"] = installed_llama_cpp_version()
    except LLMError:
        info["llama_cpp_python_version"] = None
    info.update(_llama_cpp_info())
    info["repack"] = _repack_info(cache, info.get("system_info") or "")
    info["llama_server_builds"] = [b.to_json() for b in list_server_builds(cache)]
    info["cached_models"] = _cached_models(cache)
    return info


def _llama_cpp_info() -> dict[str, Any]:
    try:
        import llama_cpp
    except (ImportError, OSError) as e:  # OSError: the shared library failed to load
        log.warning("llama_cpp cannot be imported: %s", e)
        return {
            "llama_cpp_error": f"{type(e).__name__}: {e}",
            "system_info": None,
            "gpu_offload": False,
            "max_devices": 0,
            "devices": [],
        }
    text = llama_system_info()
    return {
        "system_info": text.strip(),
        "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
        "max_devices": int(llama_cpp.llama_max_devices()),
        "devices": llama_cpp_devices(),
    }


def llama_system_info() -> str:
    """llama.cpp's feature line (``AVX2 = 1 | AMX_INT8 = 1 | ...``) for this build."""
    import llama_cpp

    raw = llama_cpp.llama_print_system_info()
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def llama_cpp_devices() -> list[dict[str, Any]]:
    """The devices ggml registered (name, description, type, memory), or [] if unreadable.

    llama-cpp-python does not bind ggml's device registry, so this calls it through
    the ``libggml`` it already loaded.
    """
    try:
        from llama_cpp import _ggml

        lib = _ggml.libggml
        count_fn = lib.ggml_backend_dev_count
        get_fn = lib.ggml_backend_dev_get
        name_fn = lib.ggml_backend_dev_name
        desc_fn = lib.ggml_backend_dev_description
        type_fn = lib.ggml_backend_dev_type
        memory_fn = lib.ggml_backend_dev_memory
    except (ImportError, OSError, AttributeError) as e:
        log.info("ggml device registry not reachable: %s", e)
        return []
    count_fn.restype, count_fn.argtypes = ctypes.c_size_t, []
    get_fn.restype, get_fn.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    for fn in (name_fn, desc_fn):
        fn.restype, fn.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
    type_fn.restype, type_fn.argtypes = ctypes.c_int, [ctypes.c_void_p]
    memory_fn.restype = None
    memory_fn.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_size_t),
        ctypes.POINTER(ctypes.c_size_t),
    ]
    devices = []
    for i in range(int(count_fn())):
        dev = get_fn(i)
        if not dev:
            continue
        kind = int(type_fn(dev))
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        memory_fn(dev, ctypes.byref(free), ctypes.byref(total))
        devices.append(
            {
                "name": (name_fn(dev) or b"").decode("utf-8", "replace"),
                "description": (desc_fn(dev) or b"").decode("utf-8", "replace"),
                "type": DEVICE_TYPES[kind] if 0 <= kind < len(DEVICE_TYPES) else str(kind),
                "memory_free": int(free.value),
                "memory_total": int(total.value),
            }
        )
    return devices


def _cached_models(cache_dir: Path) -> list[dict[str, Any]] | None:
    """The models ``llm-inproc models`` lists (embedded, then Hub), None if unreadable."""
    from ..models.resolve import list_models

    try:
        models = list_models(cache_dir)
    except (LLMError, OSError) as e:
        log.warning("cannot list cached models: %s", e)
        return None
    return [m.to_json() for m in models]


def _repack_info(cache_dir: Path, text: str) -> dict[str, Any]:
    """Whether sessions repack weights by default here, and why (the probe's cached verdict)."""
    from ..backends.inproc.repack import RepackProbe, build_has_amx, fingerprint

    if not text:
        return {"auto": None, "reason": "llama_cpp cannot be imported"}
    if not build_has_amx(text):
        return {"auto": True, "reason": "this llama.cpp build has no AMX kernels"}
    verdict = RepackProbe(cache_dir, fingerprint(text)).cached()
    if verdict is None:
        return {"auto": None, "reason": "not probed yet: the first model load decides"}
    return {"auto": verdict.safe, "reason": verdict.reason}
