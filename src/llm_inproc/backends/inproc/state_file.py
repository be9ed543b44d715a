"""Conversations' KV states on disk: written atomically, verified when read back.

One file holds one or more states (a slot's, or a whole session's prompt cache). Its
layout: a magic line, one JSON header line (format version, what the states belong to,
each state's tokens and byte count), then the states' bytes back to back. A state is
only usable by the model and KV layout that wrote it, so the header names them and a
file from elsewhere is refused before anything in the context is touched. Files are
written to a temporary name, flushed to disk and renamed: a crash leaves the old file.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import tempfile
from collections.abc import Sequence, Sized
from pathlib import Path
from typing import Any

from ...errors import InvalidInputError

__all__ = ["FORMAT_VERSION", "read_states", "write_states"]

MAGIC = b"llm-inproc kv states\n"
FORMAT_VERSION = 1


def write_states(
    path: str | os.PathLike[str],
    identity: dict[str, Any],
    states: Sequence[tuple[Sequence[int], Sized]],
) -> int:
    """Write ``states`` (tokens, llama.cpp's bytes) for the model ``identity``; the bytes
    written."""
    target = Path(path)
    header = {
        "version": FORMAT_VERSION,
        "identity": identity,
        "states": [{"tokens": list(t), "bytes": len(d)} for t, d in states],
    }
    head = MAGIC + json.dumps(header, separators=(",", ":")).encode() + b"\n"
    directory = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as e:
        raise InvalidInputError(
            f"cannot write {target}: {e.strerror or e}; check that {directory} exists and is "
            "writable"
        ) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(head)
            for _, data in states:
                f.write(memoryview(data))  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):  # a full disk, a path that is a directory
            raise InvalidInputError(f"cannot write {target}: {e.strerror or e}") from None
        raise
    return len(head) + sum(len(d) for _, d in states)


def read_states(
    path: str | os.PathLike[str], identity: dict[str, Any]
) -> list[tuple[list[int], Any]]:
    """The states in ``path`` (tokens, bytes as a ctypes array), checked against this
    model's ``identity``; raises
    :class:`InvalidInputError` saying what is wrong, having changed nothing."""
    where = str(path)
    try:
        with open(path, "rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                raise InvalidInputError(f"{where} is not a llm-inproc state file")
            try:
                header = json.loads(f.readline())
                if header["version"] != FORMAT_VERSION:
                    raise InvalidInputError(
                        f"{where} has state format {header['version']}; this llm-inproc reads "
                        f"{FORMAT_VERSION}: save it again with this version"
                    )
                wanted = [(list(s["tokens"]), int(s["bytes"])) for s in header["states"]]
                theirs = dict(header["identity"])
            except (ValueError, KeyError, TypeError):
                raise InvalidInputError(f"{where} has a damaged header") from None
            if theirs != identity:
                diff = sorted(
                    k for k in identity.keys() | theirs.keys() if theirs.get(k) != identity.get(k)
                )
                raise InvalidInputError(
                    f"{where} was saved by another model or KV layout (differs in "
                    f"{', '.join(diff)}: {theirs.get(diff[0])!r} there, {identity.get(diff[0])!r} "
                    "here); load it with the model that saved it"
                )
            out = []
            for tokens, size in wanted:
                data = (ctypes.c_uint8 * size)()  # what llama.cpp reads, filled in place
                if f.readinto(data) != size or not all(isinstance(t, int) for t in tokens):
                    raise InvalidInputError(f"{where} is truncated or damaged")
                out.append((tokens, data))
            if f.read(1):
                raise InvalidInputError(f"{where} has trailing bytes: it is damaged")
    except FileNotFoundError:
        raise InvalidInputError(f"{where} does not exist") from None
    except IsADirectoryError:
        raise InvalidInputError(f"{where} is a directory, not a state file") from None
    except OSError as e:
        raise InvalidInputError(f"cannot read {where}: {e.strerror or e}") from None
    return out
