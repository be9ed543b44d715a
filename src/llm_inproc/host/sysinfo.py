"""What this installation can do, for ``llm-inproc info`` and bug reports.

Answers the questions people ask after a GPU rebuild: which llama-cpp-python is
installed, what llama.cpp was compiled with, whether layers can be offloaded and
to which devices, how many threads a session will use, and what is cached.
Everything is read from llama.cpp itself, never guessed from the build flags.
"""

from __future__ import annotations

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
    """The devices ggml registered (name, description, type, memory, and the RPC servers
    this process registered), or [] if unreadable: read through the ``libggml`` beside the
    ``libllama`` that llama_cpp loaded (``rpc.list_devices``)."""
    from ..backends.inproc.rpc import list_devices

    try:
        found = list_devices()
    except (ImportError, OSError, AttributeError) as e:
        log.info("ggml device registry not reachable: %s", e)
        return []
    return [
        {
            "name": d.name,
            "description": d.description,
            "type": d.kind.lower(),
            "backend": d.backend,
            "memory_free": d.memory_free,
            "memory_total": d.memory_total,
        }
        for d in found
    ]


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
