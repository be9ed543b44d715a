"""Make real GGUF variants of the default model for tests, by copying its bytes.

The default model is a base model without a chat template; to test the
chat-template path for real, we copy it with ``tokenizer.chat_template`` added, and we
split it into shards as ``gguf-split`` does. The metadata and tensor-info records are
copied as raw bytes (gguf-py's reader takes ~15 s to parse Gemma's 262k-token
vocabulary; walking it here takes a fraction of a second).
"""

from __future__ import annotations

import ctypes
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

_SCALAR_SIZE = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY, _UINT16, _INT32 = 8, 9, 2, 5


@dataclass
class Layout:
    """Where each part of a GGUF file lies: byte spans of its KV records and tensor infos."""

    version: int
    kv: list[tuple[str, bytes]]  # key, the whole raw record
    tensors: list[tuple[bytes, int, int]]  # raw info without its offset, offset, padded size
    alignment: int
    data_offset: int


def read_layout(path: Path) -> Layout:
    buf = memoryview(path.read_bytes())
    assert bytes(buf[:4]) == b"GGUF"
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
    pos = 24

    def string(at: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<Q", buf, at)
        return bytes(buf[at + 8 : at + 8 + n]).decode(), at + 8 + n

    def skip_value(kind: int, at: int) -> int:
        if kind == _STRING:
            return string(at)[1]
        if kind == _ARRAY:
            item, count = struct.unpack_from("<IQ", buf, at)
            at += 12
            if item in _SCALAR_SIZE:
                return at + count * _SCALAR_SIZE[item]
            for _ in range(count):
                at = skip_value(item, at)
            return at
        return at + _SCALAR_SIZE[kind]

    kv, alignment = [], 32
    for _ in range(n_kv):
        start = pos
        key, pos = string(pos)
        (kind,) = struct.unpack_from("<I", buf, pos)
        end = skip_value(kind, pos + 4)
        if key == "general.alignment":
            (alignment,) = struct.unpack_from("<I", buf, pos + 4)
        kv.append((key, bytes(buf[start:end])))
        pos = end
    infos = []
    for _ in range(n_tensors):
        start = pos
        _, pos = string(pos)
        (n_dims,) = struct.unpack_from("<I", buf, pos)
        pos += 4 + 8 * n_dims + 4
        (offset,) = struct.unpack_from("<Q", buf, pos)
        infos.append((bytes(buf[start:pos]), offset))
        pos += 8
    data_offset = -(-pos // alignment) * alignment
    ends = [o for _, o in infos[1:]] + [len(buf) - data_offset]
    tensors = [(raw, off, end - off) for (raw, off), end in zip(infos, ends, strict=True)]
    return Layout(version, kv, tensors, alignment, data_offset)


def _kv_string(key: str, value: str) -> bytes:
    k, v = key.encode(), value.encode()
    return struct.pack("<Q", len(k)) + k + struct.pack("<IQ", _STRING, len(v)) + v


def _kv_scalar(key: str, kind: int, fmt: str, value: int) -> bytes:
    k = key.encode()
    return struct.pack("<Q", len(k)) + k + struct.pack("<I" + fmt, kind, value)


def _write(
    src: Path, dst: Path, layout: Layout, kv: list[bytes], tensors: list[tuple[bytes, int, int]]
) -> None:
    """Write a file with these KV records and these tensors (copied from ``src``)."""
    head = bytearray(b"GGUF" + struct.pack("<IQQ", layout.version, len(tensors), len(kv)))
    for record in kv:
        head += record
    offset = 0
    for raw, _, size in tensors:
        head += raw + struct.pack("<Q", offset)
        offset += -(-size // layout.alignment) * layout.alignment
    head += b"\0" * (-len(head) % layout.alignment)
    with src.open("rb") as f, dst.open("wb") as out:
        out.write(head)
        written = 0
        for _, off, size in tensors:
            out.write(b"\0" * (-written % layout.alignment))
            written += -written % layout.alignment
            f.seek(layout.data_offset + off)
            out.write(f.read(size))
            written += size


def copy_with_metadata(src: Path, dst: Path, extra: dict[str, str]) -> Path:
    """Copy the GGUF file ``src`` to ``dst`` adding (or replacing) string metadata."""
    layout = read_layout(src)
    kv = [raw for key, raw in layout.kv if key not in extra]
    kv += [_kv_string(k, v) for k, v in extra.items()]
    _write(src, dst, layout, kv, layout.tensors)
    return dst


def split_gguf(src: Path, dst: Path, shards: int) -> list[Path]:
    """Write ``src`` as ``shards`` files ``<dst stem>-0000N-of-0000M.gguf``, as gguf-split
    does: tensors split by count, ``split.no``/``split.count``/``split.tensors.count`` in
    every shard, the rest of the metadata in the first."""
    layout = read_layout(src)
    per = math.ceil(len(layout.tensors) / shards)
    paths = []
    for i in range(shards):
        split = [
            _kv_scalar("split.no", _UINT16, "H", i),
            _kv_scalar("split.count", _UINT16, "H", shards),
            _kv_scalar("split.tensors.count", _INT32, "i", len(layout.tensors)),
        ]
        kv = [raw for key, raw in layout.kv if not key.startswith("split.")] if i == 0 else []
        path = dst.with_name(f"{dst.stem}-{i + 1:05d}-of-{shards:05d}.gguf")
        _write(src, path, layout, kv + split, layout.tensors[i * per : (i + 1) * per])
        paths.append(path)
    return paths


def requantized_q8_0(src: Path, cache: Path) -> Path:
    """``src`` requantized to Q8_0 with llama.cpp's own quantizer, made once per machine.

    For tests where the default model only carries long prompts (a chat template's tool
    preamble): its Q4_1 weights evaluate a prompt at half Q8_0's speed on CPUs where
    llama.cpp has no repacked Q4_1 kernel (176 against 358 tokens/s on one AVX-512 core),
    and Q8_0 holds Q4_1's values almost exactly, so the replies are the same model's."""
    import llama_cpp  # here: the other helpers only read and write bytes

    stat = src.stat()
    dst = cache / "requantized" / f"{src.stem}-{stat.st_size}-{int(stat.st_mtime)}.q8_0.gguf"
    if dst.exists():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    part = dst.with_name(f"{dst.name}.{os.getpid()}.part")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    params.allow_requantize = True
    params.nthread = 1
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(part).encode(), ctypes.byref(params))
    if rc != 0:
        part.unlink(missing_ok=True)
        raise RuntimeError(f"llama_model_quantize({src}) returned {rc}")
    part.replace(dst)  # whole or not at all: another worker may be reading it
    return dst
