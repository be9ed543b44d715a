"""Where llm_inproc keeps its files.

One function, so the session, ``pull``, ``models`` and the build cache agree on the
per-user cache directory: ``$LLM_INPROC_CACHE`` when set, otherwise the platform's user
cache directory (``$XDG_CACHE_HOME/llm-inproc`` or ``~/.cache/llm-inproc`` on Linux).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["CACHE_ENV", "default_cache_dir", "resolve_cache_dir"]

CACHE_ENV = "LLM_INPROC_CACHE"
"""Environment variable that overrides the cache directory."""

_APP = "llm-inproc"


def default_cache_dir() -> Path:
    """The per-user cache directory; it is not created here."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / _APP / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / _APP
    xdg = os.environ.get("XDG_CACHE_HOME")
    # XDG says a relative value is invalid and must be ignored.
    base_dir = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base_dir / _APP


def resolve_cache_dir(value: str | os.PathLike[str] | None) -> Path:
    """An explicit cache dir (``~`` expanded), else :func:`default_cache_dir`."""
    return Path(value).expanduser() if value else default_cache_dir()
