"""Turn ``Options.model`` into a local GGUF path: a file, an installed package, or the Hub."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .embedded import embedded_model_path, find_embedded
from .errors import InvalidInputError, ModelNotFoundError
from .references import PackedFileRef

__all__ = ["resolve_model"]

logger = logging.getLogger(__name__)


def resolve_model(model: str, cache_dir: Path, *, hf: Callable[[], Any] | None = None) -> Path:
    """Local path of ``model``, downloading it first if it is an ``hf:`` reference.

    ``hf`` returns the ``HfApi`` to download with; it is only called for a download.
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

        return download_model(ref, cache_dir, api=hf() if hf else None)
    path = Path(model).expanduser()
    if not path.is_file():
        raise ModelNotFoundError(
            f"model file {model!r} does not exist; pass an existing .gguf path "
            "or an hf:author/repo/revision/file reference"
        )
    return path
