"""File hashes, checked once: a model file is hashed the first time it is used.

Hashing 250 MB to multi-GB files on every load would cost seconds, so a check that
passed leaves a marker in ``<cache_dir>/verified/<digest>`` stamped with the file's
size and modification time; a later call costs one ``stat`` unless the file changed.
Downloads from the Hub and models assembled from PyPI packages share this.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

__all__ = ["file_digest", "forget_verified", "is_verified", "mark_verified"]


def file_digest(path: Path, *, git: bool = False) -> str:
    """sha256 of the file, or with ``git`` its git blob id (sha1 of a header and the bytes)."""
    h = hashlib.sha1() if git else hashlib.sha256()
    if git:
        h.update(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as f:
        while piece := f.read(1 << 20):
            h.update(piece)
    return h.hexdigest()


def _marker(digest: str, cache_dir: Path) -> Path:
    return cache_dir / "verified" / digest


def _stamp(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size} {stat.st_mtime_ns}"


def is_verified(path: Path, digest: str, cache_dir: Path) -> bool:
    """Whether ``path`` was found to hash to ``digest`` and has not changed since."""
    try:
        return _marker(digest, cache_dir).read_text() == _stamp(path)
    except OSError:
        return False


def mark_verified(path: Path, digest: str, cache_dir: Path) -> None:
    """Record that ``path`` hashes to ``digest`` (written atomically)."""
    marker = _marker(digest, cache_dir)
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(f"{marker.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(_stamp(path))
    os.replace(tmp, marker)


def forget_verified(digest: str, cache_dir: Path) -> None:
    """Drop the marker of ``digest`` (its file was found corrupt or deleted)."""
    _marker(digest, cache_dir).unlink(missing_ok=True)
