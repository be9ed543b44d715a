"""Token probabilities from raw logits: a pure function, so the maths is tested alone."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["token_probs"]


def token_probs(
    logits: npt.NDArray[np.float32], token: int, n: int
) -> tuple[float, list[tuple[int, float]]]:
    """The softmax probability of ``token`` and the ``n`` most likely tokens with theirs,
    most likely first (llama-server's ``n_probs``: before any sampler ran)."""
    top = np.argpartition(logits, -n)[-n:]
    top = top[np.argsort(logits[top])[::-1]]
    m = float(logits.max())
    log_z = m + float(np.log(np.exp(logits - m, dtype=np.float64).sum()))
    return (
        float(np.exp(float(logits[token]) - log_z)),
        [(int(t), float(np.exp(float(logits[t]) - log_z))) for t in top],
    )
