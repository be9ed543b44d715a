"""One place that imports llama_cpp, owns its log callback and translates its failures.

llama.cpp reports load failures only through its log, so the callback keeps the
last error lines to put in our exception messages, and records how many layers
were offloaded to a GPU.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import re
import threading
from types import ModuleType
from typing import Any

__all__ = ["LlamaLog", "lib", "log"]

logger = logging.getLogger("llm_inproc.llama_cpp")

_LEVELS = {
    0: logging.DEBUG,
    1: logging.DEBUG,
    2: logging.WARNING,
    3: logging.ERROR,
    4: logging.DEBUG,
}
_OFFLOADED = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")


class LlamaLog:
    """What llama.cpp said recently: error lines and the last offload report."""

    def __init__(self) -> None:
        self.errors: collections.deque[str] = collections.deque(maxlen=8)
        self.offloaded: tuple[int, int] | None = None
        self._partial = ""
        self._level = logging.DEBUG
        self._mu = threading.Lock()

    def handle(self, level: int, text: str) -> None:
        with self._mu:
            if level != 5:
                self._level = _LEVELS.get(level, logging.DEBUG)
            self._partial += text
            if not self._partial.endswith("\n"):
                return
            line, self._partial = self._partial.rstrip("\n"), ""
            lvl = self._level
        if lvl >= logging.ERROR:
            self.errors.append(line.strip())
        m = _OFFLOADED.search(line)
        if m:
            self.offloaded = (int(m.group(1)), int(m.group(2)))
        # llama.cpp's warnings are about its internals; keep the user's stderr quiet.
        logger.log(logging.DEBUG if lvl < logging.ERROR else logging.INFO, "%s", line)

    def take_errors(self) -> str:
        """The recent error lines, joined, and forgotten."""
        with self._mu:
            text = "; ".join(e for e in self.errors if e)
            self.errors.clear()
        return text


log = LlamaLog()
_lib: ModuleType | None = None
_callback: Any = None
_init_lock = threading.Lock()


def lib() -> ModuleType:
    """Import llama_cpp once, route its logs through :mod:`logging`, init the backend."""
    global _lib, _callback
    if _lib is not None:
        return _lib
    with _init_lock:
        if _lib is None:
            import llama_cpp

            @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
            def _on_log(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
                log.handle(level, text.decode("utf-8", errors="replace"))

            _callback = _on_log
            llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))
            llama_cpp.llama_backend_init()
            _lib = llama_cpp
    return _lib
