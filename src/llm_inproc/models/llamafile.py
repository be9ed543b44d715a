"""llamafiles as a model source: the GGUF stored in an executable's appended zip.

A llamafile is a program (a shell or APE stub) followed by a zip archive. The archive
holds the GGUF *stored* (not compressed) and aligned, as ``zipalign`` writes it, plus an
``.args`` member with default command-line arguments, one per line.

llama.cpp can load such a GGUF where it lies: ``llama_model_load_from_file_ptr`` reads
a model from an open ``FILE *`` at its current position, and memory-maps the tensors at
their offsets in the whole file, which only needs the GGUF's data section to be aligned
to ggml's 32-byte tensor alignment (``zipalign`` aligns members to far more). The
in-process backend therefore loads a stored, aligned member in place: no copy, no extra
disk, a load as fast as the plain file's. Everything that needs a plain path (a spawned
``llama-server``, a compressed or misaligned member) gets a copy extracted once into the
cache by :func:`extract_gguf`: written atomically, checked against the zip's size and
CRC-32, and reused while the llamafile is unchanged.

Pure Python; nothing here imports llama_cpp.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError, ModelLoadError, ModelNotFoundError

if TYPE_CHECKING:
    from ..config import Options

__all__ = [
    "ARG_OPTIONS",
    "Llamafile",
    "apply_llamafile_args",
    "extract_gguf",
    "is_llamafile",
    "open_llamafile",
    "plain_gguf",
]

logger = logging.getLogger(__name__)

SUFFIX = ".llamafile"
_GGUF_MAGIC = b"GGUF"
_LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")  # a zip local file header (30 bytes)
_LOCAL_SIGNATURE = 0x04034B50
TENSOR_ALIGNMENT = 32
"""ggml's CPU tensor alignment: an in-place load needs the GGUF to start on a multiple."""
_CHUNK = 8 << 20


@dataclass(frozen=True)
class Llamafile:
    """Where a llamafile keeps its model, and the defaults its ``.args`` carries."""

    path: Path
    """The llamafile itself."""
    member: str
    """Name of the GGUF inside the zip."""
    offset: int
    """Where the member's bytes start in :attr:`path` (absolute file offset)."""
    size: int
    """The GGUF's size in bytes (uncompressed)."""
    crc32: int
    """The zip's CRC-32 of the GGUF, checked when it is extracted."""
    stored: bool
    """True when the member is stored uncompressed (only then can it be used in place)."""
    args: tuple[str, ...] = ()
    """The ``.args`` member, one argument per line (empty when there is none)."""

    @property
    def in_place(self) -> bool:
        """Whether llama.cpp can load the GGUF where it lies (stored and aligned)."""
        return self.stored and self.offset % TENSOR_ALIGNMENT == 0


def _starts_with_gguf(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) == _GGUF_MAGIC
    except OSError:
        return False


def is_llamafile(path: Path) -> bool:
    """Whether ``path`` should be read as a llamafile: named ``*.llamafile``, or not a GGUF
    but carrying a zip archive (a renamed llamafile)."""
    if path.suffix.lower() == SUFFIX:
        return True
    if not path.is_file() or _starts_with_gguf(path):
        return False
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def open_llamafile(path: Path) -> Llamafile:
    """Read the zip directory of ``path`` and locate its GGUF.

    Raises :class:`InvalidInputError` when ``path`` is not a llamafile (no zip archive),
    :class:`ModelLoadError` when it holds no GGUF, :class:`ModelNotFoundError` when it
    does not exist.
    """
    if not path.is_file():
        raise ModelNotFoundError(f"llamafile {str(path)!r} does not exist; check the path")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            args = _read_args(zf)
            info = _choose_member(path, infos, args)
            offset = _data_offset(path, info)
    except zipfile.BadZipFile as e:
        raise InvalidInputError(
            f"{str(path)!r} is not a llamafile: it carries no zip archive ({e}); pass a "
            ".llamafile that embeds its model, or a .gguf file"
        ) from e
    except OSError as e:
        raise ModelLoadError(f"cannot read llamafile {str(path)!r}: {e}") from e
    stored = info.compress_type == zipfile.ZIP_STORED
    if stored and not _gguf_at(path, offset):
        raise ModelLoadError(
            f"{info.filename} in llamafile {str(path)!r} does not start with the GGUF "
            "magic; the llamafile is damaged: download it again"
        )
    return Llamafile(path, info.filename, offset, info.file_size, info.CRC, stored, args)


def _read_args(zf: zipfile.ZipFile) -> tuple[str, ...]:
    try:
        raw = zf.read(".args")
    except KeyError:
        return ()
    lines = (line.strip() for line in raw.decode("utf-8", errors="replace").splitlines())
    return tuple(line for line in lines if line)


def _choose_member(path: Path, infos: list[zipfile.ZipInfo], args: tuple[str, ...]) -> Any:
    """The GGUF that ``-m`` in ``.args`` names, else the one model (projectors aside)."""
    ggufs = [i for i in infos if i.filename.lower().endswith(".gguf") and not i.is_dir()]
    named = _arg_value(args, ("-m", "--model"))
    if named is not None:
        for info in ggufs:
            if info.filename == named or info.filename.rsplit("/", 1)[-1] == named:
                return info
    models = [i for i in ggufs if "mmproj" not in i.filename.lower()]
    if not models:
        held = ", ".join(i.filename for i in infos[:8]) or "nothing"
        raise ModelLoadError(
            f"llamafile {str(path)!r} holds no GGUF model (its zip holds: {held}); it is a "
            "bare llamafile runtime: pass the .gguf file itself, or a llamafile that embeds one"
        )
    if len(models) > 1:
        logger.warning(
            "%s holds %d GGUF files and its .args names none; using %s",
            path,
            len(models),
            models[0].filename,
        )
    return models[0]


def _data_offset(path: Path, info: zipfile.ZipInfo) -> int:
    """Where a member's data starts: after its local header, whose extra field (the
    padding ``zipalign`` adds) may differ in length from the central directory's."""
    with path.open("rb") as f:
        f.seek(info.header_offset)
        raw = f.read(_LOCAL_HEADER.size)
    if len(raw) != _LOCAL_HEADER.size:
        raise zipfile.BadZipFile(f"truncated local header of {info.filename}")
    fields = _LOCAL_HEADER.unpack(raw)
    if fields[0] != _LOCAL_SIGNATURE:
        raise zipfile.BadZipFile(f"bad local header signature for {info.filename}")
    name_len, extra_len = fields[9], fields[10]
    return int(info.header_offset + _LOCAL_HEADER.size + name_len + extra_len)


def _gguf_at(path: Path, offset: int) -> bool:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(4) == _GGUF_MAGIC


def _arg_value(args: tuple[str, ...], names: tuple[str, ...]) -> str | None:
    """The value after the last of ``names`` in ``args`` (``--flag=value`` too)."""
    found = None
    for i, arg in enumerate(args):
        if arg in names and i + 1 < len(args):
            found = args[i + 1]
        for name in names:
            if name.startswith("--") and arg.startswith(name + "="):
                found = arg.split("=", 1)[1]
    return found


# -- .args -> Options ------------------------------------------------------------------------


def _flash(value: str) -> bool | None:
    return {"on": True, "1": True, "true": True, "off": False, "0": False, "false": False}.get(
        value.lower()
    )


def _gpu_layers(value: str) -> int:
    n = int(value)
    return -1 if n >= 999 else n  # llamafile's "-ngl 9999" means every layer


ARG_OPTIONS: dict[str, tuple[tuple[str, ...], Any]] = {
    "context_length": (("-c", "--ctx-size"), int),
    "gpu_layers": (("-ngl", "--gpu-layers", "--n-gpu-layers"), _gpu_layers),
    "threads": (("-t", "--threads"), int),
    "batch_size": (("-b", "--batch-size"), int),
    "ubatch_size": (("-ub", "--ubatch-size"), int),
    "flash_attention": (("-fa", "--flash-attn"), _flash),
}
"""Options field -> (the llama.cpp flags in ``.args`` that set it, how to read the value).
Other flags (``--host``, ``-m``, sampling, the ``...`` placeholder) are not options of a
session and are ignored."""


def apply_llamafile_args(options: Options, args: tuple[str, ...]) -> Options:
    """``options`` with the defaults of a llamafile's ``.args`` filled in: each mapped
    field that still holds its default value (an explicit setting wins; an explicit
    setting equal to the default cannot be told apart and is treated as unset)."""
    from ..config import Options

    defaults = Options()
    changes: dict[str, Any] = {}
    for name, (flags, convert) in ARG_OPTIONS.items():
        value = _arg_value(args, flags)
        if value is None or getattr(options, name) != getattr(defaults, name):
            continue
        try:
            converted = convert(value)
        except ValueError:
            logger.warning("ignoring %s %r from the llamafile's .args: not valid", flags[0], value)
            continue
        if converted is not None and converted != getattr(options, name):
            changes[name] = converted
    if changes:
        logger.info("llamafile .args defaults applied: %s", changes)
        candidate = dataclasses.replace(options, **changes)
        try:
            candidate.validate()
        except InvalidInputError as e:
            logger.warning("ignoring the llamafile's .args defaults %s: %s", changes, e)
            return options
        return candidate
    return options


# -- extraction ------------------------------------------------------------------------------


def _extract_dir(cache_dir: Path) -> Path:
    return cache_dir / "llamafile"


def _identity(lf: Llamafile) -> dict[str, Any]:
    st = lf.path.stat()
    return {
        "source": str(lf.path.resolve()),
        "source_size": st.st_size,
        "source_mtime_ns": st.st_mtime_ns,
        "member": lf.member,
        "size": lf.size,
        "crc32": lf.crc32,
    }


def extract_gguf(lf: Llamafile, cache_dir: Path) -> Path:
    """The llamafile's GGUF as a plain file in ``<cache_dir>/llamafile/``, extracted once.

    The copy is written to a temporary file, its size and CRC-32 compared with the zip's
    (a sha256 is recorded beside it), and renamed into place: an interrupted extraction
    never leaves a file that looks finished. A later call reuses it while the llamafile's
    path, size and modification time, and the member's size and CRC-32, are unchanged.
    """
    directory = _extract_dir(cache_dir)
    key = hashlib.sha256(f"{lf.path.resolve()}\0{lf.member}".encode()).hexdigest()[:16]
    name = Path(lf.member).name
    target = directory / f"{key}-{name}"
    manifest = target.with_name(target.name + ".json")
    identity = _identity(lf)
    if _reusable(target, manifest, identity):
        return target
    directory.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(str(directory / f".{key}.lock")):
        if _reusable(target, manifest, identity):
            return target  # another process extracted it while we waited
        logger.info("extracting %s from %s into %s (once)", lf.member, lf.path, directory)
        sha256 = _copy_verified(lf, directory, target)
        _write_json(manifest, {**identity, "sha256": sha256})
    return target


def _reusable(target: Path, manifest: Path, identity: dict[str, Any]) -> bool:
    try:
        recorded = json.loads(manifest.read_text(encoding="utf-8"))
        size = target.stat().st_size
    except (OSError, ValueError):
        return False
    same = all(recorded.get(k) == v for k, v in identity.items())
    return bool(same and size == identity["size"])


def _copy_verified(lf: Llamafile, directory: Path, target: Path) -> str:
    fd, tmp_name = tempfile.mkstemp(prefix=".extract-", suffix=".gguf", dir=directory)
    tmp = Path(tmp_name)
    try:
        crc, size, digest = 0, 0, hashlib.sha256()
        with os.fdopen(fd, "wb") as out, zipfile.ZipFile(lf.path) as zf:
            with zf.open(lf.member) as src:
                while chunk := src.read(_CHUNK):
                    out.write(chunk)
                    crc = zlib.crc32(chunk, crc)
                    digest.update(chunk)
                    size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        if size != lf.size or crc != lf.crc32:
            raise ModelLoadError(
                f"{lf.member} extracted from {str(lf.path)!r} is {size} bytes with CRC-32 "
                f"{crc:08x}, but the zip says {lf.size} bytes, {lf.crc32:08x}; the "
                "llamafile is damaged: download it again"
            )
        os.replace(tmp, target)
    except zipfile.BadZipFile as e:  # zipfile's own CRC check fails this way
        tmp.unlink(missing_ok=True)
        raise ModelLoadError(
            f"cannot extract {lf.member} from {str(lf.path)!r}: {e}; the llamafile is "
            "damaged: download it again"
        ) from e
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ModelLoadError(
            f"cannot extract {lf.member} from {str(lf.path)!r} into {directory}: {e}; free "
            "some disk space or choose another cache_dir"
        ) from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return digest.hexdigest()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def plain_gguf(path: Path, cache_dir: Path) -> Path:
    """``path`` itself for a GGUF; for a llamafile, its GGUF extracted into the cache (what a
    program that takes only a file name, like ``llama-server``, needs)."""
    if not is_llamafile(path):
        return path
    return extract_gguf(open_llamafile(path), cache_dir)
