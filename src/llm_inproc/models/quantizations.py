"""The quantization names a GGUF file name may end with: what llama.cpp loads, as people name it.

The names come from llama.cpp itself: the file types of ``llama_ftype`` (``llama.h``, gguf-py's
``LlamaFileType``, without ``MOSTLY_``/``ALL_``) and the tensor types of ``ggml_type`` that
hold weights (gguf-py's ``GGMLQuantizationType``), which publishers also use to name files
(``MXFP4`` for gpt-oss, ``Q4_K``). On top of those come the publishers' variants of the
K-quants (embeddings and output kept at higher precision): bartowski's ``_L``/``_XL`` and
unsloth's ``_XL``, which unsloth marks as dynamic quants with a ``UD-`` prefix
(``…-UD-Q4_K_XL``).

The table is written out rather than read from ``gguf`` or ``llama_cpp`` because importing
either costs about a second (numpy, ctypes) and ``gguf`` is only a development dependency;
``tests/test_references.py`` compares it with both so it cannot drift.
"""

from __future__ import annotations

import re

__all__ = [
    "GGML_WEIGHT_TYPES",
    "LLAMA_FILE_TYPES",
    "PUBLISHER_VARIANTS",
    "QUANTIZATIONS",
    "UNSLOTH_DYNAMIC",
    "quantization_rank",
    "split_quantization",
]

LLAMA_FILE_TYPES: frozenset[str] = frozenset(
    {
        "F32", "F16", "BF16", "Q8_0", "Q5_0", "Q5_1", "Q4_0", "Q4_1", "Q1_0", "Q2_0",
        "Q2_K", "Q2_K_S", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S",
        "Q5_K_M", "Q6_K", "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M",
        "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0",
        "MXFP4_MOE", "NVFP4",
    }
)  # fmt: skip
"""llama.cpp's ``llama_ftype`` names (``LLAMA_FTYPE_MOSTLY_Q4_K_M`` → ``Q4_K_M``)."""

GGML_WEIGHT_TYPES: frozenset[str] = frozenset(
    {
        "F32", "F16", "BF16", "Q8_0", "Q5_0", "Q5_1", "Q4_0", "Q4_1", "Q1_0", "Q2_0",
        "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS",
        "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "MXFP4", "NVFP4",
    }
)  # fmt: skip
"""ggml tensor types that store weights: not the activation-only ``Q8_1``/``Q8_K``, ints or F64."""

PUBLISHER_VARIANTS: frozenset[str] = frozenset(
    {
        "Q2_K_L", "Q4_K_L", "Q5_K_L", "Q6_K_L",
        "Q2_K_XL", "Q3_K_XL", "Q4_K_XL", "Q5_K_XL", "Q6_K_XL", "Q8_K_XL",
    }
)  # fmt: skip
"""K-quants with embeddings and output kept at more bits (bartowski's ``_L``, unsloth's ``_XL``)."""

UNSLOTH_DYNAMIC = "UD-"
"""unsloth's marker for its dynamic quants, written before the quantization: ``-UD-Q4_K_XL``."""


def quantization_rank(quant: str) -> tuple[int, bool, str]:
    """Sort key: most bits first (``F32`` … ``Q8_0`` … ``IQ1_S``), then by name, ``UD-`` after."""
    dynamic = quant.startswith(UNSLOTH_DYNAMIC)
    base = quant[len(UNSLOTH_DYNAMIC) :] if dynamic else quant
    bits = re.search(r"\d+", base)
    return (-int(bits.group()) if bits else 0, dynamic, base)


QUANTIZATIONS: tuple[str, ...] = tuple(
    sorted(LLAMA_FILE_TYPES | GGML_WEIGHT_TYPES | PUBLISHER_VARIANTS, key=quantization_rank)
)
"""Every quantization a reference's basename may end with, canonical upper case, most bits first."""

# Longest first, so "Q6_K_L" wins over "Q6_K" should both ever match.
_BY_LENGTH = sorted(QUANTIZATIONS, key=len, reverse=True)
_SEPARATORS = "-._"
_SHARD_SUFFIX = re.compile(r"-\d{5}-of-\d{5}$")


def split_quantization(name: str) -> tuple[str, str] | None:
    """Split ``"gemma-3-270m-q4_k_m"`` into ``("gemma-3-270m", "Q4_K_M")``.

    The quantization must be a known one (case-insensitive), separated from the stem by
    ``-``, ``.`` or ``_``; an unsloth ``UD-`` before it belongs to it (``"UD-Q4_K_XL"``).
    A trailing ``.gguf`` and a split file's ``-00001-of-00003`` are ignored, so names from
    a repository listing can be passed as they are. None when the name has no known suffix.
    """
    if name.lower().endswith(".gguf"):
        name = name[: -len(".gguf")]
    name = _SHARD_SUFFIX.sub("", name)
    upper = name.upper()
    for quant in _BY_LENGTH:
        stem_len = len(name) - len(quant) - 1
        if stem_len >= 1 and upper.endswith(quant) and name[stem_len] in _SEPARATORS:
            stem = name[:stem_len]
            if stem.endswith("/"):
                return None
            # "<stem>-UD" before the quantization: the "UD" and the separator before it.
            cut = len(UNSLOTH_DYNAMIC)
            dynamic = stem.upper().endswith(UNSLOTH_DYNAMIC[:-1]) and len(stem) > cut
            if dynamic and stem[-cut] in _SEPARATORS and not stem[:-cut].endswith("/"):
                return stem[:-cut], UNSLOTH_DYNAMIC + quant
            return stem, quant
    return None
