"""Pooling and normalisation of embeddings: pure functions on numpy arrays.

llama.cpp's pooling types are spelled as llama-server's ``--pooling`` spells them. When a
generative model is embedded, the session pools the per-token hidden states itself (see
:mod:`llm_inproc.backends.inproc.embedder` for why), with these functions; normalising
follows llama.cpp's ``common_embd_normalize`` so that ``embd_normalize`` means the same
on our server as on llama-server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from ..errors import InvalidInputError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "LLAMA_POOLING",
    "POOLINGS",
    "Pooling",
    "check_pooling",
    "normalize",
    "pool",
    "pooling_name",
]

Pooling = Literal["mean", "cls", "last", "none"]
"""How one vector is made of a text's token vectors: their mean, the first token's, the last
token's, or none (one vector per token)."""

POOLINGS: tuple[str, ...] = ("none", "mean", "cls", "last", "rank")
"""llama.cpp's pooling types, in the order of their ids (``LLAMA_POOLING_TYPE_*``)."""

LLAMA_POOLING: dict[str, int] = {name: i for i, name in enumerate(POOLINGS)}
"""A pooling name to llama.cpp's id."""


def pooling_name(value: int) -> str | None:
    """The name of llama.cpp's pooling id ``value``; None for unspecified (-1) or unknown."""
    return POOLINGS[value] if 0 <= value < len(POOLINGS) else None


def check_pooling(pooling: object) -> Pooling | None:
    """``pooling`` as given to ``Session.embed``, checked (None: the model's own)."""
    if pooling is None:
        return None
    if pooling == "rank":
        raise InvalidInputError(
            'pooling="rank" scores a query against documents; call Session.rerank(query, '
            "documents) instead of embed"
        )
    if pooling not in ("mean", "cls", "last", "none"):
        raise InvalidInputError(
            f"pooling must be 'mean', 'cls', 'last', 'none' or None (the model's own), "
            f"not {pooling!r}"
        )
    return pooling


def pool(hidden: npt.NDArray[np.float32], pooling: str) -> npt.NDArray[np.float32]:
    """One text's vector from its token vectors ``hidden`` (tokens x dimensions); for
    ``none``, a copy of them all."""
    import numpy as np

    if pooling == "mean":
        return np.asarray(hidden.mean(axis=0, dtype=np.float32), dtype=np.float32)
    if pooling == "cls":
        return np.array(hidden[0], dtype=np.float32)
    if pooling == "last":
        return np.array(hidden[-1], dtype=np.float32)
    if pooling == "none":
        return np.array(hidden, dtype=np.float32)
    raise InvalidInputError(f"pooling {pooling!r} cannot be computed from token vectors")


def normalize(vectors: npt.NDArray[np.float32], p: int = 2) -> npt.NDArray[np.float32]:
    """Each row (or the one vector) of ``vectors`` scaled as llama.cpp's
    ``common_embd_normalize``: ``p`` -1 none, 0 max absolute into int16's range, 1 taxicab,
    2 Euclidean (unit length), larger a p-norm. A zero row stays zero."""
    import numpy as np

    v = np.asarray(vectors, dtype=np.float32)
    if p == -1:
        return v
    wide = v.astype(np.float64)
    if p == 0:
        norm = np.abs(wide).max(axis=-1, keepdims=True) / 32760.0
    elif p == 2:
        norm = np.sqrt((wide * wide).sum(axis=-1, keepdims=True))
    elif p > 0:
        norm = (np.abs(wide) ** p).sum(axis=-1, keepdims=True) ** (1.0 / p)
    else:
        raise InvalidInputError(
            f"embd_normalize {p} is not a norm; use -1 (none), 0 (max absolute), 1, 2 "
            "(Euclidean) or a larger p"
        )
    scale = np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0)
    return np.asarray(wide * scale, dtype=np.float32)
