"""The few GGUF header facts a spawned server needs, read without loading llama.cpp.

``backend="llama-server"`` must choose the context size before the server starts
(``context_length=0`` means the model's trained length capped at 8,192), so it reads
``general.architecture`` and ``<architecture>.context_length`` from the file's
key/value header (GGUF v2 and v3, little-endian), stopping as soon as it has them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import ModelLoadError

__all__ = ["GGUFHeader", "read_gguf_header"]

# GGUF value type -> struct format (8 is a string, 9 an array).
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?"}
_SCALARS.update({10: "Q", 11: "q", 12: "d"})
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class GGUFHeader:
    architecture: str
    """``general.architecture``, e.g. ``llama`` or ``gemma3``; empty when absent."""
    context_length: int
    """The trained context length; 0 when the header does not say."""


def _read(f: BinaryIO, fmt: str) -> object:
    size = struct.calcsize("<" + fmt)
    data = f.read(size)
    if len(data) != size:
        raise EOFError
    return struct.unpack("<" + fmt, data)[0]


def _string(f: BinaryIO) -> str:
    n = int(_read(f, "Q"))  # type: ignore[call-overload]
    data = f.read(n)
    if len(data) != n:
        raise EOFError
    return data.decode("utf-8", errors="replace")


def _value(f: BinaryIO, kind: int) -> object:
    if kind == _STRING:
        return _string(f)
    if kind in _SCALARS:
        return _read(f, _SCALARS[kind])
    if kind == _ARRAY:
        item = int(_read(f, "I"))  # type: ignore[call-overload]
        count = int(_read(f, "Q"))  # type: ignore[call-overload]
        if item in _SCALARS:
            f.seek(count * struct.calcsize("<" + _SCALARS[item]), 1)
        else:
            for _ in range(count):
                _value(f, item)
        return None
    raise ValueError(f"unknown GGUF value type {kind}")


def read_gguf_header(path: Path) -> GGUFHeader:
    """Architecture and trained context length of the GGUF file at ``path``."""
    try:
        with path.open("rb") as f:
            if f.read(4) != b"GGUF":
                raise ModelLoadError(f"{path} is not a GGUF file (wrong magic bytes)")
            version = int(_read(f, "I"))  # type: ignore[call-overload]
            if version < 2:
                raise ModelLoadError(f"{path} is GGUF version {version}; re-convert it (v2+)")
            _read(f, "Q")  # tensor count
            n_kv = int(_read(f, "Q"))  # type: ignore[call-overload]
            found: dict[str, object] = {}
            arch = ""
            for _ in range(n_kv):
                key = _string(f)
                value = _value(f, int(_read(f, "I")))  # type: ignore[call-overload]
                if key == "general.architecture" and isinstance(value, str):
                    arch = value
                found[key] = value
                if arch and f"{arch}.context_length" in found:
                    break
    except (EOFError, ValueError, struct.error) as e:
        raise ModelLoadError(f"{path} has a truncated or corrupt GGUF header ({e})") from None
    except OSError as e:
        raise ModelLoadError(f"cannot read {path}: {e}") from None
    ctx = found.get(f"{arch}.context_length", 0)
    return GGUFHeader(arch, int(ctx) if isinstance(ctx, int) else 0)


def read_gguf_pooling(path: Path) -> int | None:
    """``<arch>.pooling_type`` of the GGUF at ``path`` (llama.cpp's pooling id), or None
    when the header names none (every chat model). Reads the whole header (the vocabulary
    arrays are skipped, not decoded): a spawned server needs it once."""
    try:
        with path.open("rb") as f:
            if f.read(4) != b"GGUF":
                raise ModelLoadError(f"{path} is not a GGUF file (wrong magic bytes)")
            _read(f, "I")  # version
            _read(f, "Q")  # tensor count
            n_kv = int(_read(f, "Q"))  # type: ignore[call-overload]
            found: dict[str, object] = {}
            for _ in range(n_kv):
                key = _string(f)
                found[key] = _value(f, int(_read(f, "I")))  # type: ignore[call-overload]
    except (EOFError, ValueError, struct.error) as e:
        raise ModelLoadError(f"{path} has a truncated or corrupt GGUF header ({e})") from None
    except OSError as e:
        raise ModelLoadError(f"cannot read {path}: {e}") from None
    value = found.get(f"{found.get('general.architecture', '')}.pooling_type")
    return value if isinstance(value, int) and not isinstance(value, bool) else None
